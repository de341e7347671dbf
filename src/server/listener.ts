/**
 * The listeners: opening them (TCP, TLS) and the accept loop every port shares. Accept errors
 * (such as running out of file descriptors) are counted, logged and retried after a pause; they
 * never end the server.
 *
 * @module
 */

import type { Logger } from "../log.ts";
import { encodeError, ErrorCode } from "../protocol/frames.ts";
import { closeQuietly } from "../io/close_quietly.ts";
import { within } from "../io/within.ts";

/** A listener could not be opened; the message names the address, the key and the cause. */
export class ListenError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ListenError";
  }
}

/**
 * Opens a TCP listener with the given backlog; throws {@linkcode ListenError} naming `key`, the
 * setting that chose the port.
 *
 * @example
 * ```ts
 * import { listen } from "./listener.ts";
 * const listener = listen("127.0.0.1", 0, 4096, "PORT");
 * listener.close();
 * ```
 */
export function listen(
  hostname: string,
  port: number,
  backlog: number,
  key: string,
): Deno.TcpListener {
  try {
    return Deno.listen(
      { hostname, port, transport: "tcp", tcpBacklog: backlog } as Deno.TcpListenOptions,
    );
  } catch (e) {
    throw new ListenError(
      `Cannot listen on ${hostname}:${port} (${key}): ${(e as Error).message}`,
      {
        cause: e,
      },
    );
  }
}

/** What accept loops count, for /metrics. */
export interface AcceptStats {
  /** Accepts that failed (out of file descriptors, connection aborted, ...). */
  acceptErrors: number;
  /** Connections taken with the reserve descriptor while out of descriptors, and refused. */
  shed: number;
}

/** Options of {@linkcode acceptLoop}. */
export interface AcceptOptions {
  /** The setting that chose the port ("PORT", "LEGACY_PORT", "METRICS_PORT"), for log lines. */
  name: string;
  log: Logger;
  stats: AcceptStats;
  /**
   * Refuses a connection accepted while the process is out of file descriptors: says so if the
   * protocol can, then closes it, resolving once it is closed. Without it such a connection is
   * closed at once.
   */
  shed?: (conn: Deno.Conn) => Promise<void>;
}

/** Longest pause between accepts that keep failing. */
const MAX_ACCEPT_BACKOFF_MS = 1000;
/** A failure that repeats on every accept is logged at most this often. */
const ACCEPT_LOG_MS = 10_000;

/** EMFILE or ENFILE: the process or the system is out of file descriptors. */
function outOfDescriptors(e: unknown): boolean {
  return /os error 2[34]\)/.test((e as Error)?.message ?? "");
}

/**
 * One file descriptor held back for the moment the process runs out: giving it up lets an accept
 * take one waiting connection, which is then refused at once, instead of leaving every new peer
 * hanging in the kernel's backlog until it gives up.
 */
class Reserve {
  #file: Deno.FsFile | null = null;
  #busy = false;

  /** Takes the descriptor back if it is not held (it may fail while descriptors are short). */
  hold(): void {
    if (this.#file !== null) return;
    try {
      this.#file = Deno.openSync("/dev/null", { read: true });
    } catch {
      // out of descriptors still: tried again after the next accept
    }
  }

  /** Gives the descriptor up for `use`, then takes it back; false if it was not held. */
  async spend(use: () => Promise<void>): Promise<boolean> {
    if (this.#file === null || this.#busy) return false;
    this.#busy = true;
    closeQuietly(this.#file);
    this.#file = null;
    try {
      await use();
    } finally {
      this.#busy = false;
      this.hold();
    }
    return true;
  }
}

const reserve = new Reserve();

/**
 * Accepts until the listener is closed, handing each connection to `onConn`. An accept that
 * fails (out of file descriptors, a connection aborted before it was taken) never ends the loop:
 * it is counted, logged at most every 10 s, and retried after a pause that doubles up to 1 s.
 * While the process is out of descriptors, waiting connections are refused one at a time through a
 * reserved descriptor, so peers learn at once rather than hang.
 *
 * @example
 * ```ts
 * import { acceptLoop } from "./listener.ts";
 * import { Logger } from "../log.ts";
 * declare const listener: Deno.Listener;
 * const stats = { acceptErrors: 0, shed: 0 };
 * await acceptLoop(listener, (conn) => conn.close(), {
 *   name: "PORT",
 *   log: new Logger("info"),
 *   stats,
 * });
 * ```
 */
export async function acceptLoop(
  listener: Deno.Listener,
  onConn: (conn: Deno.Conn) => void,
  options: AcceptOptions,
): Promise<void> {
  const { name, log, stats } = options;
  reserve.hold();
  let backoff = 0;
  for (;;) {
    let conn: Deno.Conn;
    try {
      conn = await listener.accept();
    } catch (e) {
      if (e instanceof Deno.errors.BadResource || e instanceof Deno.errors.Interrupted) return;
      stats.acceptErrors++;
      log.throttled(`accept ${name}`, ACCEPT_LOG_MS, "warn", "accept failed: retrying", {
        listener: name,
        error: (e as Error).message,
        accept_errors: stats.acceptErrors,
      });
      if (outOfDescriptors(e)) {
        await reserve.spend(async () => {
          try {
            const waiting = await listener.accept();
            stats.shed++;
            // Closed before the reserve is taken back, so the process ends where it began.
            if (options.shed === undefined) closeQuietly(waiting);
            else await options.shed(waiting);
          } catch {
            // nothing was waiting after all, or the listener closed
          }
        });
      }
      backoff = Math.min(Math.max(backoff * 2, 10), MAX_ACCEPT_BACKOFF_MS);
      await new Promise((r) => setTimeout(r, backoff));
      continue;
    }
    backoff = 0;
    onConn(conn);
  }
}

/** Longest wait for a refused peer to take its ERROR 4 before the socket is closed anyway. */
const REFUSE_WRITE_MS = 1000;

/**
 * Refuses a connection on the message port with `ERROR 4` and closes it; resolves once it is
 * closed (the write is bounded: a peer that takes nothing does not hold it).
 *
 * @example
 * ```ts
 * import { refuse } from "./listener.ts";
 * declare const conn: Deno.Conn;
 * await refuse(conn, "too many connections");
 * ```
 */
export async function refuse(conn: Deno.Conn, reason: string): Promise<void> {
  await within(conn.write(encodeError(ErrorCode.TOO_MANY_CONNECTIONS, reason)), REFUSE_WRITE_MS);
  closeQuietly(conn);
}
