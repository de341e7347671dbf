/**
 * What the client library rejects with: a refused message, or a lost connection.
 *
 * @module
 */

/**
 * The server refused one message (NACK); the connection goes on.
 *
 * @example
 * ```ts
 * import { NackError } from "./errors.ts";
 * import { NackCode } from "../protocol/frames.ts";
 * const e = new NackError(5, NackCode.BAD_NAME, "bad name");
 * e.message; // "Message 5 refused: code 2: bad name"
 * ```
 */
export class NackError extends Error {
  /** The refused message's msg_id. */
  readonly msgId: number;
  /** The NACK code (1 too large, 2 bad name, 3 duplicate, 4 storage error). */
  readonly code: number;
  /** `reason` is the text the server sent with the NACK. */
  constructor(msgId: number, code: number, reason: string) {
    super(`Message ${msgId} refused: code ${code}: ${reason}`);
    this.name = "NackError";
    this.msgId = msgId;
    this.code = code;
  }
}

/**
 * The server sent ERROR and closed the connection, or the connection broke.
 *
 * @example
 * ```ts
 * import { ConnectionError } from "./errors.ts";
 * new ConnectionError(0, "closed by the server").message; // "Connection lost: closed by the server"
 * new ConnectionError(5, "timeout").message; // "Server error 5: timeout"
 * ```
 */
export class ConnectionError extends Error {
  /** The ERROR code, or 0 when the connection broke without one. */
  readonly code: number;
  /** `code` 0 means the connection broke without an ERROR; `reason` says how. */
  constructor(code: number, reason: string) {
    super(code === 0 ? `Connection lost: ${reason}` : `Server error ${code}: ${reason}`);
    this.name = "ConnectionError";
    this.code = code;
  }
}
