/**
 * A small HTTP/1.1 server for the monitoring endpoints (`/metrics`, `/healthz`, the status page
 * and its event stream), written over the same accept loop as the message ports so that it is as
 * hard to bring down: it caps its connections, gives each request a deadline for its head and a
 * size limit, answers GET and HEAD only, and closes every connection after one response. An
 * accept error (out of file descriptors, say) is counted and retried, never fatal.
 *
 * @module
 */

import { closeQuietly } from "../io/close_quietly.ts";
import { writeAll } from "../io/write_all.ts";
import type { Logger } from "../log.ts";
import { acceptLoop, type AcceptStats, listen } from "../server/listener.ts";

/** A request, as far as a monitoring endpoint needs one. */
export interface HttpRequest {
  method: "GET" | "HEAD";
  /** The path, without the query. */
  path: string;
  query: URLSearchParams;
  /** Header names in lower case. */
  headers: Map<string, string>;
}

/** A whole response. */
export interface HttpResponse {
  status: number;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
}

/**
 * A response that stays open (Server-Sent Events): `run` writes to it with `send` until `send`
 * resolves false (the peer left, or did not take a write in time) or `closed` resolves. Nothing is
 * queued: `send` holds its one chunk until the peer takes it, so a writer that waits for each
 * `send` (or skips while one is pending) holds at most one chunk per stream, and a peer that takes
 * nothing for the write timeout is cut. The same `Uint8Array` may go to many streams. `run` is
 * called once for every stream a handler returns, even when its head could not be written (`send`
 * then resolves false and `closed` is resolved), so a handler may reserve in advance what `run`
 * gives back.
 */
export interface HttpStream {
  status: number;
  headers: Record<string, string>;
  run(send: (chunk: string | Uint8Array) => Promise<boolean>, closed: Promise<void>): Promise<void>;
}

/** What a handler returns. */
export type HttpReply = HttpResponse | HttpStream;

/** Options of {@linkcode HttpServer.listen}. */
export interface HttpServerOptions {
  hostname: string;
  port: number;
  /** The setting that chose the port, for errors and log lines. */
  name: string;
  log: Logger;
  /** Connections at once; past it a connection gets 503 and is closed (default 64). */
  maxConnections?: number;
  /** Time to send the request head (default 5000 ms). */
  headerTimeoutMs?: number;
  /** Largest request head in bytes (default 8 KiB). */
  maxHeaderBytes?: number;
  /** Longest wait for a peer to take one write of a stream before it is dropped (default 5000 ms). */
  writeTimeoutMs?: number;
}

/** Counters of an {@linkcode HttpServer}. */
export interface HttpStats extends AcceptStats {
  /** Requests answered. */
  requests: number;
  /** Connections refused for the connection cap. */
  refused: number;
  /** Connections cut for not sending a whole request head in time, or one too large. */
  timedOut: number;
  /** Connections open now. */
  open: number;
}

const REASONS: Record<number, string> = {
  200: "OK",
  204: "No Content",
  303: "See Other",
  400: "Bad Request",
  401: "Unauthorized",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  503: "Service Unavailable",
};

const enc = new TextEncoder();
const dec = new TextDecoder();
const HEAD_END = enc.encode("\r\n\r\n");

function indexOfSequence(haystack: Uint8Array, needle: Uint8Array, from: number): number {
  outer: for (let i = Math.max(0, from); i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

function head(status: number, headers: Record<string, string>): Uint8Array {
  let text = `HTTP/1.1 ${status} ${REASONS[status] ?? "Status"}\r\n`;
  for (const [k, v] of Object.entries(headers)) text += `${k}: ${v}\r\n`;
  return enc.encode(text + "\r\n");
}

/**
 * The monitoring HTTP server.
 *
 * @example
 * ```ts
 * import { HttpServer } from "./http_server.ts";
 * import { Logger } from "../log.ts";
 * const server = HttpServer.listen(
 *   { hostname: "127.0.0.1", port: 0, name: "METRICS_PORT", log: new Logger("info") },
 *   (req) => req.path === "/healthz" ? { status: 200, body: "ok\n" } : { status: 404 },
 * );
 * await server.close();
 * ```
 */
export class HttpServer {
  /** Where it listens. */
  readonly addr: Deno.NetAddr;
  readonly stats: HttpStats = {
    acceptErrors: 0,
    shed: 0,
    requests: 0,
    refused: 0,
    timedOut: 0,
    open: 0,
  };

  readonly #listener: Deno.Listener;
  readonly #handler: (req: HttpRequest) => HttpReply | Promise<HttpReply>;
  readonly #log: Logger;
  readonly #max: number;
  readonly #headerTimeout: number;
  readonly #maxHeader: number;
  readonly #writeTimeout: number;
  readonly #conns = new Set<Deno.Conn>();
  /** Each connection's service, so that `close` can wait until every stream has ended. */
  readonly #serving = new Set<Promise<void>>();
  readonly #loop: Promise<void>;

  private constructor(
    listener: Deno.Listener,
    options: HttpServerOptions,
    handler: (req: HttpRequest) => HttpReply | Promise<HttpReply>,
  ) {
    this.#listener = listener;
    this.addr = listener.addr as Deno.NetAddr;
    this.#handler = handler;
    this.#log = options.log;
    this.#max = options.maxConnections ?? 64;
    this.#headerTimeout = options.headerTimeoutMs ?? 5000;
    this.#maxHeader = options.maxHeaderBytes ?? 8192;
    this.#writeTimeout = options.writeTimeoutMs ?? 5000;
    this.#loop = acceptLoop(listener, (conn) => this.#admit(conn), {
      name: options.name,
      log: options.log,
      stats: this.stats,
      shed: (conn) => this.#reject(conn, 503, "out of file descriptors\n"),
    });
  }

  /** Listens on `hostname:port`; throws `ListenError` naming `name` if it cannot. */
  static listen(
    options: HttpServerOptions,
    handler: (req: HttpRequest) => HttpReply | Promise<HttpReply>,
  ): HttpServer {
    const listener = listen(options.hostname, options.port, 128, options.name);
    return new HttpServer(listener, options, handler);
  }

  #admit(conn: Deno.Conn): void {
    if (this.#conns.size >= this.#max) {
      this.stats.refused++;
      this.#reject(conn, 503, "too many connections\n");
      return;
    }
    this.#conns.add(conn);
    this.stats.open = this.#conns.size;
    const serving: Promise<void> = this.#serve(conn).catch(() => {}).finally(() => {
      closeQuietly(conn);
      this.#conns.delete(conn);
      this.#serving.delete(serving);
      this.stats.open = this.#conns.size;
    });
    this.#serving.add(serving);
  }

  #reject(conn: Deno.Conn, status: number, text: string): Promise<void> {
    const body = enc.encode(text);
    const bytes = new Uint8Array([
      ...head(status, {
        "content-type": "text/plain; charset=utf-8",
        "content-length": String(body.length),
        "connection": "close",
      }),
      ...body,
    ]);
    return this.#writeWithin(conn, bytes).then(() => closeQuietly(conn));
  }

  async #serve(conn: Deno.Conn): Promise<void> {
    const request = await this.#readHead(conn);
    if (typeof request === "number") {
      if (request !== 0) {
        await this.#writeWithin(conn, this.#plain(request, `${REASONS[request]}\n`));
      }
      return;
    }
    this.stats.requests++;
    let reply: HttpReply;
    try {
      reply = await this.#handler(request);
    } catch (e) {
      this.#log.error("monitoring request failed", {
        path: request.path,
        error: (e as Error).message,
      });
      reply = { status: 500, body: "internal error\n" };
    }
    if ("run" in reply) {
      await this.#stream(conn, reply);
      return;
    }
    const body = reply.body === undefined
      ? new Uint8Array(0)
      : typeof reply.body === "string"
      ? enc.encode(reply.body)
      : reply.body;
    const headers = {
      "content-type": "text/plain; charset=utf-8",
      "cache-control": "no-store",
      ...reply.headers,
      "content-length": String(body.length),
      "connection": "close",
    };
    const bytes = request.method === "HEAD" ? head(reply.status, headers) : (() => {
      const h = head(reply.status, headers);
      const all = new Uint8Array(h.length + body.length);
      all.set(h);
      all.set(body, h.length);
      return all;
    })();
    await this.#writeWithin(conn, bytes);
  }

  #plain(status: number, text: string): Uint8Array {
    const body = enc.encode(text);
    const h = head(status, {
      "content-type": "text/plain; charset=utf-8",
      "content-length": String(body.length),
      "connection": "close",
      ...status === 405 ? { allow: "GET, HEAD" } : {},
    });
    const all = new Uint8Array(h.length + body.length);
    all.set(h);
    all.set(body, h.length);
    return all;
  }

  /** Writes all of `bytes` unless the peer takes longer than the write timeout; false then. */
  async #writeWithin(conn: Deno.Conn, bytes: Uint8Array): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      return await Promise.race([
        writeAll(conn, bytes).then(() => true, () => false),
        new Promise<boolean>((r) =>
          timer = setTimeout(() => {
            closeQuietly(conn);
            r(false);
          }, this.#writeTimeout)
        ),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Reads a request head within the deadline. Returns the request, or the status to answer
   * with (400, 405, 431), or 0 when the peer left first or ran out of time.
   */
  async #readHead(conn: Deno.Conn): Promise<HttpRequest | number> {
    const buf = new Uint8Array(this.#maxHeader);
    let filled = 0;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      this.stats.timedOut++;
      closeQuietly(conn); // ends the read below
    }, this.#headerTimeout);
    try {
      for (;;) {
        if (filled === buf.length) {
          this.stats.timedOut++;
          return 431;
        }
        let n: number | null;
        try {
          n = await conn.read(buf.subarray(filled));
        } catch {
          return 0;
        }
        // Timed out: the socket is closed already, and a peer that slow would not read a 408.
        if (n === null || timedOut) return 0;
        const from = Math.max(0, filled - 3);
        filled += n;
        const end = indexOfSequence(buf.subarray(0, filled), HEAD_END, from);
        if (end >= 0) return parseHead(dec.decode(buf.subarray(0, end)));
      }
    } finally {
      clearTimeout(timer);
    }
  }

  async #stream(conn: Deno.Conn, reply: HttpStream): Promise<void> {
    if (
      !await this.#writeWithin(conn, head(reply.status, { ...reply.headers, connection: "close" }))
    ) {
      await reply.run(() => Promise.resolve(false), Promise.resolve());
      return;
    }
    // The peer sends nothing more on this connection: a read that ends means it left.
    const closed = conn.read(new Uint8Array(1)).then(() => {}, () => {});
    let gone = false;
    closed.then(() => gone = true);
    const send = async (chunk: string | Uint8Array): Promise<boolean> =>
      !gone &&
      await this.#writeWithin(conn, typeof chunk === "string" ? enc.encode(chunk) : chunk);
    await reply.run(send, closed);
  }

  /** Stops accepting and closes every connection; resolves once every stream has ended. */
  async close(): Promise<void> {
    closeQuietly(this.#listener);
    for (const conn of this.#conns) closeQuietly(conn);
    await this.#loop;
    await Promise.all(this.#serving);
  }
}

/** Parses a request head; returns the request or the status to answer with. */
function parseHead(text: string): HttpRequest | number {
  const lines = text.split("\r\n");
  const m = /^([A-Z]+) (\S+) HTTP\/1\.[01]$/.exec(lines[0] ?? "");
  if (m === null) return 400;
  const method = m[1]!;
  if (method !== "GET" && method !== "HEAD") return 405;
  let url: URL;
  try {
    url = new URL(m[2]!, "http://localhost");
  } catch {
    return 400;
  }
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon <= 0) return 400;
    headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  return { method, path: url.pathname, query: url.searchParams, headers };
}
