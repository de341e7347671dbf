/**
 * A loopback TCP proxy for tests: it accepts connections, connects each to a target port, and
 * leaves moving the bytes (and meddling with them) to the test.
 *
 * @module
 */

import { closeQuietly } from "../../src/io/close_quietly.ts";
import { writeAll } from "../../src/io/write_all.ts";

/** One proxied connection: the client side, the server side, and a way to cut both. */
export class Link {
  readonly client: Deno.Conn;
  readonly upstream: Deno.Conn;
  readonly #onCut: (() => void)[] = [];
  #cut = false;

  constructor(client: Deno.Conn, upstream: Deno.Conn) {
    this.client = client;
    this.upstream = upstream;
  }

  /** Whether {@linkcode Link.cut} was called. */
  get isCut(): boolean {
    return this.#cut;
  }

  /** Runs `fn` when the link is cut, just before both sides are closed. */
  onCut(fn: () => void): void {
    this.#onCut.push(fn);
  }

  /** Closes both sides; only the first call does anything. */
  cut(): void {
    if (this.#cut) return;
    this.#cut = true;
    for (const fn of this.#onCut) fn();
    closeQuietly(this.client);
    closeQuietly(this.upstream);
  }
}

/**
 * Moves the bytes of one link: called once per accepted connection with the link and its number
 * (0 for the first); returns the tasks that pump the link, which {@linkcode TcpProxy.close}
 * waits for.
 */
export type Serve = (link: Link, index: number) => Promise<void>[];

/**
 * A proxy on a free 127.0.0.1 port to `target` on 127.0.0.1. A connection the target refuses is
 * closed on the client side and not counted as a link.
 */
export class TcpProxy {
  readonly port: number;
  /** Every link so far, in accept order. */
  readonly links: Link[] = [];
  readonly #listener: Deno.Listener;
  readonly #tasks: Promise<void>[] = [];
  readonly #accepting: Promise<void>;

  constructor(target: number, serve: Serve) {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#listener = listener;
    this.port = (listener.addr as Deno.NetAddr).port;
    this.#accepting = (async () => {
      for (;;) {
        let client: Deno.Conn;
        try {
          client = await listener.accept();
        } catch {
          return;
        }
        let upstream: Deno.Conn;
        try {
          upstream = await Deno.connect({ hostname: "127.0.0.1", port: target });
        } catch {
          closeQuietly(client);
          continue;
        }
        const link = new Link(client, upstream);
        const index = this.links.length;
        this.links.push(link);
        this.#tasks.push(...serve(link, index));
      }
    })();
  }

  /** Closes the listener and cuts every link, and waits for every task. */
  async close(): Promise<void> {
    closeQuietly(this.#listener);
    await this.#accepting;
    for (const link of this.links) link.cut();
    await Promise.all(this.#tasks);
  }
}

/** Copies `from` to `to` through `transform` until either side ends; then cuts the link. */
export async function pump(
  link: Link,
  from: Deno.Conn,
  to: Deno.Conn,
  transform: (chunk: Uint8Array) => Uint8Array,
): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  try {
    for (;;) {
      const n = await from.read(buf);
      if (n === null) break;
      const out = transform(buf.slice(0, n));
      if (out.length > 0) await writeAll(to, out);
    }
  } catch {
    // cut
  } finally {
    link.cut();
  }
}

/**
 * A loopback TCP proxy to `target`. `serverToClient(link, chunk, offset)` may rewrite or swallow
 * (return an empty array) what the server sends on link number `link` (0 for the first
 * connection), `offset` being where `chunk` starts in that link's server-to-client stream.
 */
export function rewritingProxy(
  target: number,
  serverToClient: (link: number, chunk: Uint8Array, offset: number) => Uint8Array,
): TcpProxy {
  return new TcpProxy(target, (link, index) => {
    let offset = 0;
    return [
      pump(link, link.client, link.upstream, (c) => c),
      pump(link, link.upstream, link.client, (chunk) => {
        const out = serverToClient(index, chunk, offset);
        offset += chunk.length;
        return out;
      }),
    ];
  });
}

/** A loopback TCP proxy to `target` that passes every byte both ways as it is. */
export function passThroughProxy(target: number): TcpProxy {
  return rewritingProxy(target, (_link, chunk) => chunk);
}
