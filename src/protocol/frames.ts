/**
 * Wire protocol v1: frame types, codes, size limits and the encoders for every frame.
 *
 * Every frame is `u32 length | u8 type | body`, all integers unsigned big-endian, where `length`
 * counts the type byte and the body. The byte-by-byte description lives in `docs/protocol.md`;
 * this file and that document must never disagree.
 *
 * @module
 */

/**
 * The newest protocol version this implementation speaks: what the client sends in HELLO. The
 * server also answers version 1 clients, exactly as before version 2 existed.
 */
export const PROTOCOL_VERSION = 2;
/** The oldest version the server still answers. */
export const MIN_PROTOCOL_VERSION = 1;

/** WELCOME `session_state` values (version 2): whether the server knows the session. */
export const SessionState = {
  /** The server holds no record of this session: new, or forgotten (see docs/protocol.md). */
  UNKNOWN: 0,
  /** The server knows it: `last_msg_id` is exactly where it stands. */
  KNOWN: 1,
} as const;

/** Bytes in the length prefix. */
export const LENGTH_BYTES = 4;
/** Bytes in the length prefix plus the type byte. */
export const HEADER_BYTES = 5;

/** Frame type bytes. Client to server are below 0x80, server to client at or above it. */
export const FrameType = {
  HELLO: 0x01,
  MSG: 0x02,
  WELCOME: 0x81,
  ACK: 0x82,
  NACK: 0x83,
  ERROR: 0x84,
} as const;

/** NACK codes: the message was not written, the connection stays usable. */
export const NackCode = {
  PAYLOAD_TOO_LARGE: 1,
  BAD_NAME: 2,
  DUPLICATE: 3,
  STORAGE_ERROR: 4,
} as const;

/** ERROR codes: the server closes the connection right after sending one. */
export const ErrorCode = {
  PROTOCOL_VIOLATION: 1,
  UNSUPPORTED_VERSION: 2,
  AUTH_FAILED: 3,
  TOO_MANY_CONNECTIONS: 4,
  TIMEOUT: 5,
  SHUTTING_DOWN: 6,
  SESSION_TAKEN_OVER: 7,
  /** The server cannot reach its store just now (a replicated store, say): retry later. */
  UNAVAILABLE: 8,
} as const;

/** Fixed part of a HELLO body: version, client_id, session, token_len. */
export const HELLO_FIXED_BYTES = 1 + 4 + 8 + 2;
/** Fixed part of a MSG body before the name: msg_id, name_len. */
export const MSG_FIXED_BYTES = 4 + 1;
/** Longest allowed message name in bytes. */
export const MAX_NAME_BYTES = 255;
/**
 * Longest frame of any type other than MSG, as counted by the length prefix (64 KiB + 16):
 * enough for a HELLO with a 65,535-byte token.
 */
export const MAX_CONTROL_FRAME_LENGTH = 64 * 1024 + 16;
/** A MSG whose payload is above MAX_MESSAGE_BYTES but at most this many times it is NACKed. */
export const OVERSIZE_FACTOR = 16;

/**
 * The largest `length` of a MSG frame whose payload can be within `maxMessageBytes`.
 *
 * @example
 * ```ts
 * msgFrameLimit(100); // 1 + 5 + 255 + 100
 * ```
 */
export function msgFrameLimit(maxMessageBytes: number): number {
  return 1 + MSG_FIXED_BYTES + MAX_NAME_BYTES + maxMessageBytes;
}

function frame(type: number, bodyBytes: number): { bytes: Uint8Array; view: DataView } {
  const bytes = new Uint8Array(HEADER_BYTES + bodyBytes);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, 1 + bodyBytes);
  bytes[4] = type;
  return { bytes, view };
}

const encoder = new TextEncoder();

/**
 * Encodes a HELLO frame.
 *
 * @example
 * ```ts
 * const bytes = encodeHello({ clientId: 7, session: 42n, token: "" });
 * ```
 */
export function encodeHello(
  hello: { clientId: number; session: bigint; token?: string; version?: number },
): Uint8Array {
  const token = encoder.encode(hello.token ?? "");
  if (token.length > 0xffff) throw new RangeError("Cannot encode HELLO: token is over 65535 bytes");
  const { bytes, view } = frame(FrameType.HELLO, HELLO_FIXED_BYTES + token.length);
  bytes[5] = hello.version ?? PROTOCOL_VERSION;
  view.setUint32(6, hello.clientId);
  view.setBigUint64(10, hello.session);
  view.setUint16(18, token.length);
  bytes.set(token, 20);
  return bytes;
}

/**
 * Encodes a MSG frame. `name` and `payload` may be strings (sent as UTF-8) or raw bytes.
 *
 * @example
 * ```ts
 * const bytes = encodeMsg(1, "client_1", "hello");
 * ```
 */
export function encodeMsg(
  msgId: number,
  name: string | Uint8Array,
  payload: string | Uint8Array,
): Uint8Array {
  const nameBytes = typeof name === "string" ? encoder.encode(name) : name;
  const payloadBytes = typeof payload === "string" ? encoder.encode(payload) : payload;
  if (nameBytes.length > MAX_NAME_BYTES) {
    throw new RangeError(`Cannot encode MSG: name is ${nameBytes.length} bytes, at most 255`);
  }
  const { bytes, view } = frame(
    FrameType.MSG,
    MSG_FIXED_BYTES + nameBytes.length + payloadBytes.length,
  );
  view.setUint32(5, msgId);
  bytes[9] = nameBytes.length;
  bytes.set(nameBytes, 10);
  bytes.set(payloadBytes, 10 + nameBytes.length);
  return bytes;
}

/**
 * Encodes a WELCOME frame, the server's reply to HELLO, in the version the client spoke: version 1
 * (9 body bytes) unless `options.version` is 2, which adds `session_state`.
 *
 * @example
 * ```ts
 * const v1 = encodeWelcome(1048576, 0);
 * const v2 = encodeWelcome(1048576, 7, { version: 2, sessionState: SessionState.KNOWN });
 * ```
 */
export function encodeWelcome(
  maxMessageBytes: number,
  lastMsgId: number,
  options: { version?: number; sessionState?: number } = {},
): Uint8Array {
  const version = options.version ?? MIN_PROTOCOL_VERSION;
  const { bytes, view } = frame(FrameType.WELCOME, version >= 2 ? 10 : 9);
  bytes[5] = version;
  view.setUint32(6, maxMessageBytes);
  view.setUint32(10, lastMsgId);
  if (version >= 2) bytes[14] = options.sessionState ?? SessionState.UNKNOWN;
  return bytes;
}

/**
 * Reads a big-endian u32 at `offset` without a DataView (so without allocating one per buffer).
 *
 * @example
 * ```ts
 * readU32(new Uint8Array([0, 0, 1, 2]), 0); // 258
 * ```
 */
export function readU32(bytes: Uint8Array, offset: number): number {
  return ((bytes[offset]! << 24) | (bytes[offset + 1]! << 16) | (bytes[offset + 2]! << 8) |
    bytes[offset + 3]!) >>> 0;
}

/**
 * Writes `n` as a big-endian u32 at `offset`, the counterpart of {@linkcode readU32}.
 *
 * @example
 * ```ts
 * const b = new Uint8Array(4);
 * writeU32(b, 0, 258); // b is [0, 0, 1, 2]
 * ```
 */
export function writeU32(bytes: Uint8Array, offset: number, n: number): void {
  bytes[offset] = n >>> 24;
  bytes[offset + 1] = (n >>> 16) & 0xff;
  bytes[offset + 2] = (n >>> 8) & 0xff;
  bytes[offset + 3] = n & 0xff;
}

/** Bytes in an encoded ACK frame. */
export const ACK_FRAME_BYTES = HEADER_BYTES + 4;

/**
 * Writes an ACK frame into `target` at `offset` without allocating; returns the new offset.
 *
 * @example
 * ```ts
 * const out = new Uint8Array(ACK_FRAME_BYTES);
 * writeAck(out, 0, 17); // 9
 * ```
 */
export function writeAck(target: Uint8Array, offset: number, msgId: number): number {
  writeU32(target, offset, 5);
  target[offset + 4] = FrameType.ACK;
  writeU32(target, offset + 5, msgId);
  return offset + ACK_FRAME_BYTES;
}

/**
 * Encodes an ACK frame.
 *
 * @example
 * ```ts
 * encodeAck(3); // Uint8Array(9) [0, 0, 0, 5, 0x82, 0, 0, 0, 3]
 * ```
 */
export function encodeAck(msgId: number): Uint8Array {
  const bytes = new Uint8Array(ACK_FRAME_BYTES);
  writeAck(bytes, 0, msgId);
  return bytes;
}

/**
 * Encodes a NACK frame: this message was not written.
 *
 * @example
 * ```ts
 * encodeNack(5, NackCode.BAD_NAME, "name has whitespace");
 * ```
 */
export function encodeNack(msgId: number, code: number, reason: string): Uint8Array {
  const text = encoder.encode(reason);
  const { bytes, view } = frame(FrameType.NACK, 6 + text.length);
  view.setUint32(5, msgId);
  view.setUint16(9, code);
  bytes.set(text, 11);
  return bytes;
}

/**
 * Encodes an ERROR frame; the server closes the connection after it.
 *
 * @example
 * ```ts
 * encodeError(ErrorCode.PROTOCOL_VIOLATION, "unknown frame type 0x07");
 * ```
 */
export function encodeError(code: number, reason: string): Uint8Array {
  const text = encoder.encode(reason);
  const { bytes, view } = frame(FrameType.ERROR, 2 + text.length);
  view.setUint16(5, code);
  bytes.set(text, 7);
  return bytes;
}
