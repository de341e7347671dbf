/**
 * TLS on the message port, terminated behind the server's own TCP listener.
 *
 * Why not `Deno.listenTls` on PORT directly: Deno starts the handshake of every connection it
 * accepts in a task of its own that holds the socket until the handshake ends, and closing the
 * connection does not end that task. A peer that connects and sends nothing (or half a
 * ClientHello) would hold a file descriptor for ever, whatever HANDSHAKE_TIMEOUT_MS says.
 *
 * So PORT is a plain TCP listener whose connections the server owns and can always close. Each
 * is joined to a private TLS listener on loopback by a second connection, and bytes are pumped
 * between the two; the server reads and writes the private listener's TLS connection, which
 * decrypts. Closing a fronted connection closes all three sockets: the private handshake then
 * sees the end of its input and gives the socket up. The price is two more descriptors per TLS
 * connection and one more copy of each byte.
 *
 * @module
 */

import { closeQuietly } from "../io/close_quietly.ts";
import { writeAll } from "../io/write_all.ts";
import type { Logger } from "../log.ts";
import { ListenError } from "./listener.ts";

/** What a connection's service task needs of its socket; a `Deno.Conn` is one. */
export interface Transport {
  readonly remoteAddr: Deno.Addr;
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  closeWrite(): Promise<void>;
  close(): void;
}

/** How long a private connection that matches no fronted one is kept before it is closed. */
const UNMATCHED_MS = 5000;
/** Bytes each pump moves per read. */
const PUMP_BYTES = 16 * 1024;

/** The two sockets that join a fronted connection to the private listener. */
interface Joined {
  /** The server's own connection to the private listener. */
  bridge: Deno.TcpConn;
  /** The private listener's side of `bridge`, once accepted. */
  inner: Promise<Deno.TlsConn>;
  /** Stops waiting for `inner`. */
  forget(): void;
}

/**
 * One fronted TLS connection: the peer's TCP socket outside, the private TLS connection inside.
 */
class FrontedConn implements Transport {
  readonly remoteAddr: Deno.Addr;
  readonly #outer: Deno.Conn;
  #joined: Joined | null = null;
  #inner: Deno.TlsConn | null = null;
  /** Resolves with the private TLS connection, or null if the connection closed first. */
  readonly #ready: Promise<Deno.TlsConn | null>;
  #closed = false;
  #signalClosed!: (v: null) => void;

  constructor(outer: Deno.Conn, join: Promise<Joined>) {
    this.remoteAddr = outer.remoteAddr;
    this.#outer = outer;
    const closed = new Promise<null>((r) => this.#signalClosed = r);
    const inner = join.then((joined) => {
      this.#joined = joined;
      if (this.#closed) {
        this.close();
        return null;
      }
      pump(outer, joined.bridge).finally(() => this.close());
      pump(joined.bridge, outer).finally(() => this.close());
      return joined.inner;
    }).then((conn) => {
      if (conn !== null && this.#closed) closeQuietly(conn);
      return this.#inner = conn;
    });
    // A bridge that cannot be made ends the connection like a failed handshake.
    inner.catch(() => this.close());
    this.#ready = Promise.race([inner.catch(() => null), closed]);
  }

  async #conn(): Promise<Deno.TlsConn> {
    const conn = this.#inner ?? await this.#ready;
    if (conn === null || this.#closed) {
      throw new Deno.errors.BadResource("the connection is closed");
    }
    return conn;
  }

  async read(p: Uint8Array): Promise<number | null> {
    return await (await this.#conn()).read(p);
  }

  async write(p: Uint8Array): Promise<number> {
    return await (await this.#conn()).write(p);
  }

  async closeWrite(): Promise<void> {
    await (await this.#conn()).closeWrite();
  }

  close(): void {
    if (this.#closed && this.#joined === null) return;
    this.#closed = true;
    this.#signalClosed(null);
    // The outer socket and the bridge are the server's own: closing them ends the private
    // handshake, if it is still waiting, with the end of its input.
    closeQuietly(this.#outer);
    if (this.#joined !== null) {
      this.#joined.forget();
      closeQuietly(this.#joined.bridge);
      this.#joined = null;
    }
    closeQuietly(this.#inner);
  }
}

/** Copies `from` into `to` until either ends; passes a half-close on. */
async function pump(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(PUMP_BYTES);
  try {
    for (;;) {
      const n = await from.read(buf);
      if (n === null) {
        await to.closeWrite();
        // Keep the other direction going: only a read that ends or fails on both ends it.
        return await new Promise(() => {});
      }
      await writeAll(to, buf.subarray(0, n));
    }
  } catch {
    // either side went away: the caller closes everything
  }
}

/**
 * The private TLS listener and the matching of its connections to fronted ones.
 *
 * @example
 * ```ts
 * import { TlsFront } from "./tls_front.ts";
 * import { Logger } from "../log.ts";
 * const front = await TlsFront.open({ TLS_CERT: "cert.pem", TLS_KEY: "key.pem" }, new Logger("info"));
 * declare const outer: Deno.Conn; // accepted on PORT
 * const conn = front.wrap(outer); // read and write plaintext
 * conn.close();
 * front.close();
 * ```
 */
export class TlsFront {
  readonly #listener: Deno.TlsListener;
  readonly #port: number;
  readonly #log: Logger;
  /** Fronted connections waiting for their private half, by the bridge's local port. */
  readonly #waiting = new Map<number, (conn: Deno.TlsConn) => void>();
  /** Private connections that arrived before their fronted one was registered, by port. */
  readonly #early = new Map<number, Deno.TlsConn>();

  private constructor(listener: Deno.TlsListener, log: Logger) {
    this.#listener = listener;
    this.#port = (listener.addr as Deno.NetAddr).port;
    this.#log = log;
    this.#acceptLoop();
  }

  /**
   * Reads TLS_CERT and TLS_KEY and opens the private listener; throws {@linkcode ListenError}
   * naming the key that failed.
   */
  static async open(
    config: { TLS_CERT: string; TLS_KEY: string },
    log: Logger,
  ): Promise<TlsFront> {
    const read = async (key: "TLS_CERT" | "TLS_KEY") => {
      try {
        return await Deno.readTextFile(config[key]);
      } catch (e) {
        throw new ListenError(`Cannot read ${key} "${config[key]}": ${(e as Error).message}`, {
          cause: e,
        });
      }
    };
    const [cert, key] = [await read("TLS_CERT"), await read("TLS_KEY")];
    try {
      return new TlsFront(Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert, key }), log);
    } catch (e) {
      throw new ListenError(
        `Cannot listen with TLS_CERT "${config.TLS_CERT}" and TLS_KEY "${config.TLS_KEY}": ${
          (e as Error).message
        }`,
        { cause: e },
      );
    }
  }

  async #acceptLoop(): Promise<void> {
    for (;;) {
      let conn: Deno.TlsConn;
      try {
        conn = await this.#listener.accept();
      } catch (e) {
        if (e instanceof Deno.errors.BadResource || e instanceof Deno.errors.Interrupted) return;
        this.#log.throttled("tls accept", 10_000, "warn", "private TLS accept failed: retrying", {
          error: (e as Error).message,
        });
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      const port = (conn.remoteAddr as Deno.NetAddr).port;
      const resolve = this.#waiting.get(port);
      if (resolve !== undefined) {
        this.#waiting.delete(port);
        resolve(conn);
      } else {
        this.#early.set(port, conn);
        setTimeout(() => {
          // Not one of ours after all (another local process found the port): drop it.
          if (this.#early.get(port) === conn) {
            this.#early.delete(port);
            closeQuietly(conn);
          }
        }, UNMATCHED_MS);
      }
    }
  }

  /**
   * Joins `outer`, a connection accepted on PORT, to a private TLS connection; the result reads
   * and writes plaintext, and closing it closes every socket involved. It is returned at once,
   * so the connection counts from its accept; reads and writes wait for the join.
   */
  wrap(outer: Deno.Conn): Transport {
    return new FrontedConn(outer, this.#join());
  }

  async #join(): Promise<Joined> {
    const bridge = await Deno.connect({ hostname: "127.0.0.1", port: this.#port });
    bridge.setNoDelay(true);
    const port = (bridge.localAddr as Deno.NetAddr).port;
    const inner = new Promise<Deno.TlsConn>((resolve) => {
      const early = this.#early.get(port);
      if (early !== undefined) {
        this.#early.delete(port);
        resolve(early);
      } else {
        this.#waiting.set(port, resolve);
      }
    });
    return { bridge, inner, forget: () => this.#waiting.delete(port) };
  }

  /** Closes the private listener (connections already fronted go on until they end). */
  close(): void {
    closeQuietly(this.#listener);
    for (const conn of this.#early.values()) closeQuietly(conn);
    this.#early.clear();
  }
}
