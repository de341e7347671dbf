/**
 * The server's side of HELLO: checking and decoding its body, as a pure function over the bytes
 * so that every malformed case is tested without a socket. The token is compared by the server,
 * which knows it.
 *
 * @module
 */

import {
  ErrorCode,
  HELLO_FIXED_BYTES,
  MIN_PROTOCOL_VERSION,
  PROTOCOL_VERSION,
  readU32,
} from "./frames.ts";

/** A well-formed HELLO. */
export interface Hello {
  /** The version the client speaks; the server answers in the same. */
  version: number;
  clientId: number;
  /** The session id; 0n for none. */
  session: bigint;
  /** Where the token starts in the buffer that was decoded (it ends at the frame's end). */
  tokenStart: number;
}

/** A HELLO the server must refuse: the ERROR code to send and why. */
export interface HelloRefusal {
  /** {@linkcode ErrorCode.PROTOCOL_VIOLATION} or {@linkcode ErrorCode.UNSUPPORTED_VERSION}. */
  code: number;
  reason: string;
}

/**
 * Decodes the HELLO body `bytes[body, end)`, or says why it is refused.
 *
 * @example
 * ```ts
 * import { decodeHello } from "./hello.ts";
 * import { encodeHello } from "./frames.ts";
 * const frame = encodeHello({ clientId: 7, session: 42n });
 * const hello = decodeHello(frame, 5, frame.length);
 * if ("reason" in hello) throw new Error(hello.reason);
 * hello.clientId; // 7
 * ```
 */
export function decodeHello(bytes: Uint8Array, body: number, end: number): Hello | HelloRefusal {
  const length = end - body;
  if (length < 1) {
    return { code: ErrorCode.PROTOCOL_VIOLATION, reason: "HELLO has no version" };
  }
  const version = bytes[body]!;
  if (version < MIN_PROTOCOL_VERSION || version > PROTOCOL_VERSION) {
    return {
      code: ErrorCode.UNSUPPORTED_VERSION,
      reason:
        `unsupported version ${version}; this server speaks ${MIN_PROTOCOL_VERSION} to ${PROTOCOL_VERSION}`,
    };
  }
  if (length < HELLO_FIXED_BYTES) {
    return {
      code: ErrorCode.PROTOCOL_VIOLATION,
      reason: `HELLO body is ${length} bytes, at least ${HELLO_FIXED_BYTES}`,
    };
  }
  const tokenLength = (bytes[body + 13]! << 8) | bytes[body + 14]!;
  if (HELLO_FIXED_BYTES + tokenLength !== length) {
    return {
      code: ErrorCode.PROTOCOL_VIOLATION,
      reason: `HELLO token_len ${tokenLength} does not match the frame`,
    };
  }
  return {
    version,
    clientId: readU32(bytes, body + 1),
    session: (BigInt(readU32(bytes, body + 5)) << 32n) | BigInt(readU32(bytes, body + 9)),
    tokenStart: body + HELLO_FIXED_BYTES,
  };
}
