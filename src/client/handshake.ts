/**
 * The client's opening of a connection: HELLO out, WELCOME (or ERROR) back. Shared by
 * {@linkcode MsgClient} and the load tool's lean connections, which then read from the same
 * decoder.
 *
 * @module
 */

import { writeAll } from "../io/write_all.ts";
import { Decoded, type FrameDecoder } from "../protocol/decoder.ts";
import {
  encodeHello,
  FrameType,
  MIN_PROTOCOL_VERSION,
  PROTOCOL_VERSION,
} from "../protocol/frames.ts";
import { decodeError, decodeWelcome, type Welcome } from "../protocol/replies.ts";
import { ConnectionError } from "./errors.ts";

/** What HELLO says. */
export interface HelloFields {
  /** u32 client id written at the start of each line. */
  clientId: number;
  /** u64 session id; 0n for none. */
  session: bigint;
  /** The server's AUTH_TOKEN, if it has one. */
  token?: string;
  /** The protocol version to speak; {@linkcode PROTOCOL_VERSION} unless given. */
  version?: number;
}

/**
 * Sends HELLO on `conn` and reads the reply through `decoder` (a {@linkcode replyDecoder}),
 * which keeps any bytes that came after WELCOME. Resolves with the WELCOME; rejects with
 * {@linkcode ConnectionError} for an ERROR, a malformed reply or a connection closed first.
 * Does not close `conn`.
 *
 * @example
 * ```ts
 * import { handshake } from "./handshake.ts";
 * import { replyDecoder } from "../protocol/replies.ts";
 * const conn = await Deno.connect({ port: 9000 });
 * const decoder = replyDecoder();
 * const welcome = await handshake(conn, decoder, { clientId: 1, session: 42n });
 * console.log(welcome.lastMsgId);
 * ```
 */
export async function handshake(
  conn: Deno.Conn,
  decoder: FrameDecoder,
  hello: HelloFields,
): Promise<Welcome> {
  await writeAll(conn, encodeHello(hello));
  for (;;) {
    const r = decoder.next();
    if (r === Decoded.NEED_MORE) {
      const n = await conn.read(decoder.readTarget());
      if (n === null) throw new ConnectionError(0, "closed before WELCOME");
      decoder.commit(n);
      continue;
    }
    if (r !== Decoded.FRAME) throw new ConnectionError(0, `bad reply: ${decoder.error}`);
    const { buffer: b, bodyStart: body, frameEnd: end } = decoder;
    try {
      if (decoder.type === FrameType.ERROR) {
        const error = decodeError(b, body, end);
        throw new ConnectionError(error.code, error.reason);
      }
      if (decoder.type !== FrameType.WELCOME) {
        throw new ConnectionError(
          0,
          `expected WELCOME, got frame type 0x${decoder.type.toString(16)}`,
        );
      }
      const welcome = decodeWelcome(b, body, end);
      const asked = hello.version ?? PROTOCOL_VERSION;
      // A server answers in the version asked for, or an older one it speaks instead.
      if (welcome.version > asked || welcome.version < MIN_PROTOCOL_VERSION) {
        throw new ConnectionError(
          0,
          `asked for version ${asked}, server speaks ${welcome.version}`,
        );
      }
      return welcome;
    } catch (e) {
      // A malformed reply is the connection's failure, reported like any other.
      throw e instanceof SyntaxError ? new ConnectionError(0, `bad reply: ${e.message}`) : e;
    }
  }
}
