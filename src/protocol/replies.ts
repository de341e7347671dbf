/**
 * The client's side of the codec: decoding what a server sends (WELCOME, ACK, NACK, ERROR). The
 * encoders are in `frames.ts`; the framing is `decoder.ts`. Each decoder reads one frame body in
 * place, `bytes[body, end)`, as {@linkcode FrameDecoder} hands it out.
 *
 * @module
 */

import { FrameDecoder } from "./decoder.ts";
import { MAX_CONTROL_FRAME_LENGTH, readU32, SessionState } from "./frames.ts";

/** Bytes in a WELCOME body of protocol version 1 (version 2 adds one). */
export const WELCOME_BODY_BYTES = 9;

const text = new TextDecoder();

/**
 * A decoder for a stream of server frames: none is a MSG, so every frame, whatever its type,
 * may be up to MAX_CONTROL_FRAME_LENGTH long (an ERROR or NACK reason, say).
 *
 * @example
 * ```ts
 * import { replyDecoder } from "./replies.ts";
 * const decoder = replyDecoder();
 * decoder.readTarget().set([0, 0, 0, 5, 0x82, 0, 0, 0, 7]);
 * decoder.commit(9);
 * decoder.next(); // Decoded.FRAME, an ACK
 * ```
 */
export function replyDecoder(initialBytes = 2048): FrameDecoder {
  return new FrameDecoder({
    initialBytes,
    maxMsgLength: MAX_CONTROL_FRAME_LENGTH,
    maxSkippedMsgLength: MAX_CONTROL_FRAME_LENGTH,
    maxControlLength: MAX_CONTROL_FRAME_LENGTH,
  });
}

/** A decoded WELCOME. */
export interface Welcome {
  /** The protocol version the server speaks on this connection. */
  version: number;
  /** The largest payload the server accepts. */
  maxMessageBytes: number;
  /** The highest msg_id of the session the server holds; 0 if none. */
  lastMsgId: number;
  /**
   * Version 2: whether the server knows the session (`last_msg_id` is exactly where it stands)
   * or holds no record of it (new, or forgotten). Null from a version 1 server, which cannot say.
   */
  sessionKnown: boolean | null;
}

/** A decoded NACK: one message refused, the connection goes on. */
export interface Nack {
  msgId: number;
  /** A {@linkcode NackCode}. */
  code: number;
  reason: string;
}

/** A decoded ERROR: the server closes the connection after it. */
export interface ErrorReply {
  /** An {@linkcode ErrorCode}. */
  code: number;
  reason: string;
}

function tooShort(frame: string, length: number, least: number): never {
  throw new SyntaxError(`Cannot decode ${frame}: body is ${length} bytes, at least ${least}`);
}

/**
 * Decodes a WELCOME body. Throws `SyntaxError` if it is too short.
 *
 * @example
 * ```ts
 * import { decodeWelcome } from "./replies.ts";
 * import { encodeWelcome } from "./frames.ts";
 * const frame = encodeWelcome(1024, 3);
 * decodeWelcome(frame, 5, frame.length);
 * // { version: 1, maxMessageBytes: 1024, lastMsgId: 3, sessionKnown: null }
 * ```
 */
export function decodeWelcome(bytes: Uint8Array, body: number, end: number): Welcome {
  if (end - body < WELCOME_BODY_BYTES) tooShort("WELCOME", end - body, WELCOME_BODY_BYTES);
  const version = bytes[body]!;
  if (version >= 2 && end - body < WELCOME_BODY_BYTES + 1) {
    tooShort("WELCOME", end - body, WELCOME_BODY_BYTES + 1);
  }
  return {
    version,
    maxMessageBytes: readU32(bytes, body + 1),
    lastMsgId: readU32(bytes, body + 5),
    sessionKnown: version >= 2 ? bytes[body + 9] === SessionState.KNOWN : null,
  };
}

/**
 * Decodes an ACK body: the msg_id up to which every message is done. Allocates nothing, as a
 * busy client decodes many. Throws `SyntaxError` if the body is too short.
 *
 * @example
 * ```ts
 * import { decodeAck } from "./replies.ts";
 * import { encodeAck } from "./frames.ts";
 * const frame = encodeAck(17);
 * decodeAck(frame, 5, frame.length); // 17
 * ```
 */
export function decodeAck(bytes: Uint8Array, body: number, end: number): number {
  if (end - body < 4) tooShort("ACK", end - body, 4);
  return readU32(bytes, body);
}

/**
 * Decodes a NACK body. Throws `SyntaxError` if it is too short.
 *
 * @example
 * ```ts
 * import { decodeNack } from "./replies.ts";
 * import { encodeNack, NackCode } from "./frames.ts";
 * const frame = encodeNack(5, NackCode.BAD_NAME, "bad name");
 * decodeNack(frame, 5, frame.length); // { msgId: 5, code: 2, reason: "bad name" }
 * ```
 */
export function decodeNack(bytes: Uint8Array, body: number, end: number): Nack {
  if (end - body < 6) tooShort("NACK", end - body, 6);
  return {
    msgId: readU32(bytes, body),
    code: (bytes[body + 4]! << 8) | bytes[body + 5]!,
    reason: text.decode(bytes.subarray(body + 6, end)),
  };
}

/**
 * Decodes an ERROR body. Throws `SyntaxError` if it is too short.
 *
 * @example
 * ```ts
 * import { decodeError } from "./replies.ts";
 * import { encodeError, ErrorCode } from "./frames.ts";
 * const frame = encodeError(ErrorCode.TIMEOUT, "timeout");
 * decodeError(frame, 5, frame.length); // { code: 5, reason: "timeout" }
 * ```
 */
export function decodeError(bytes: Uint8Array, body: number, end: number): ErrorReply {
  if (end - body < 2) tooShort("ERROR", end - body, 2);
  return {
    code: (bytes[body]! << 8) | bytes[body + 1]!,
    reason: text.decode(bytes.subarray(body + 2, end)),
  };
}
