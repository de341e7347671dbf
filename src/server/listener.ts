/**
 * The listener: accepts connections and hands each to the server, refusing those past
 * MAX_CONNECTIONS with `ERROR 4`. Accept errors (such as running out of file descriptors) are
 * logged and retried after a pause instead of ending the server.
 *
 * @module
 */

import type { Logger } from "../log.ts";
import { encodeError, ErrorCode } from "../protocol/frames.ts";
import { closeQuietly } from "../io/close_quietly.ts";

/** What the accept loop asks of the server. */
export interface AcceptHandler {
  /** Whether another connection may be served now. */
  hasRoom(): boolean;
  /** Serves an accepted connection. */
  serve(conn: Deno.Conn): void;
  /** True for the legacy port, whose protocol has no ERROR frame: refusals just close. */
  legacy?: boolean;
}

const ACCEPT_RETRY_MS = 100;

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

/**
 * Opens a TLS listener with the certificate and key files named by TLS_CERT and TLS_KEY.
 *
 * @example
 * ```ts
 * import { DEFAULTS } from "../config.ts";
 * const listener = await listenTls({ ...DEFAULTS, TLS_CERT: "cert.pem", TLS_KEY: "key.pem" });
 * ```
 */
export async function listenTls(
  config: { IP: string; PORT: number; TCP_BACKLOG: number; TLS_CERT: string; TLS_KEY: string },
): Promise<Deno.TlsListener> {
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
    return Deno.listenTls(
      {
        hostname: config.IP,
        port: config.PORT,
        cert,
        key,
        tcpBacklog: config.TCP_BACKLOG,
      } as Deno.ListenTlsOptions & Deno.TlsCertifiedKeyPem,
    );
  } catch (e) {
    throw new ListenError(
      `Cannot listen with TLS on ${config.IP}:${config.PORT} (PORT): ${(e as Error).message}`,
      { cause: e },
    );
  }
}

/**
 * Accepts until the listener is closed.
 *
 * @example
 * ```ts
 * declare const listener: Deno.Listener;
 * declare const log: import("../log.ts").Logger;
 * await acceptLoop(listener, { hasRoom: () => true, serve: (conn) => conn.close() }, log);
 * ```
 */
export async function acceptLoop(
  listener: Deno.Listener,
  handler: AcceptHandler,
  log: Logger,
): Promise<void> {
  const refusal = encodeError(ErrorCode.TOO_MANY_CONNECTIONS, "too many connections");
  for (;;) {
    let conn: Deno.Conn;
    try {
      conn = await listener.accept();
    } catch (e) {
      if (e instanceof Deno.errors.BadResource || e instanceof Deno.errors.Interrupted) return;
      log.warn("accept failed", { error: (e as Error).message });
      await new Promise((r) => setTimeout(r, ACCEPT_RETRY_MS));
      continue;
    }
    if (!handler.hasRoom()) {
      log.warn("refusing connection: too many connections", {
        remote: `${(conn.remoteAddr as Deno.NetAddr).hostname}`,
      });
      (handler.legacy ? Promise.resolve(0) : conn.write(refusal)).catch(() => 0).finally(() => {
        closeQuietly(conn);
      });
      continue;
    }
    handler.serve(conn);
  }
}
