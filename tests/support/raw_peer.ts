/**
 * A raw peer: sends whatever bytes a test gives it and reads the server's frames one at a time,
 * described as text for assertions.
 *
 * @module
 */

import { closeQuietly } from "../../src/io/close_quietly.ts";
import { writeAll } from "../../src/io/write_all.ts";
import { Decoded } from "../../src/protocol/decoder.ts";
import { encodeHello, FrameType } from "../../src/protocol/frames.ts";
import {
  decodeAck,
  decodeError,
  decodeNack,
  decodeWelcome,
  replyDecoder,
} from "../../src/protocol/replies.ts";

/** One frame received by a {@linkcode RawPeer}. */
export interface Frame {
  type: number;
  body: Uint8Array;
}

/** Decodes a WELCOME, ACK, NACK or ERROR body for assertions. */
export function describeFrame(f: Frame): string {
  const { body } = f;
  switch (f.type) {
    case FrameType.WELCOME: {
      const w = decodeWelcome(body, 0, body.length);
      const state = w.sessionKnown === null ? "" : w.sessionKnown ? " known" : " unknown";
      return `WELCOME v${w.version} max=${w.maxMessageBytes} last=${w.lastMsgId}${state}`;
    }
    case FrameType.ACK:
      return `ACK ${decodeAck(body, 0, body.length)}`;
    case FrameType.NACK: {
      const n = decodeNack(body, 0, body.length);
      return `NACK ${n.msgId} ${n.code} ${n.reason}`;
    }
    case FrameType.ERROR: {
      const e = decodeError(body, 0, body.length);
      return `ERROR ${e.code} ${e.reason}`;
    }
    default:
      return `TYPE 0x${f.type.toString(16)}`;
  }
}

/** A client that sends raw bytes and reads frames one at a time. */
export class RawPeer {
  readonly conn: Deno.TcpConn;
  readonly #decoder = replyDecoder();
  #closed = false;

  private constructor(conn: Deno.TcpConn) {
    this.conn = conn;
  }

  /** Connects to the server on `port`. */
  static async connect(port: number): Promise<RawPeer> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.setNoDelay(true);
    return new RawPeer(conn);
  }

  /** Connects and completes HELLO/WELCOME; returns the peer and the WELCOME text. */
  static async hello(
    port: number,
    clientId: number,
    session = 0n,
    token = "",
  ): Promise<{ peer: RawPeer; welcome: string }> {
    const peer = await RawPeer.connect(port);
    await peer.write(encodeHello({ clientId, session, token }));
    return { peer, welcome: describeFrame(await peer.read()) };
  }

  /** Writes every byte. */
  write(bytes: Uint8Array): Promise<void> {
    return writeAll(this.conn, bytes);
  }

  /** Reads the next frame; throws if the connection closes first or nothing comes in time. */
  async read(timeoutMs = 5000): Promise<Frame> {
    const frame = await this.readOrClose(timeoutMs);
    if (frame === null) throw new Error("Connection closed while a frame was expected");
    return frame;
  }

  /** Reads the next frame, or null if the server closed the connection. */
  async readOrClose(timeoutMs = 5000): Promise<Frame | null> {
    const d = this.#decoder;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`No frame within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    try {
      for (;;) {
        const r = d.next();
        if (r === Decoded.FRAME) {
          return { type: d.type, body: d.buffer.slice(d.bodyStart, d.frameEnd) };
        }
        if (r !== Decoded.NEED_MORE) throw new Error(`Bad frame from server: ${d.error}`);
        if (this.#closed) return null;
        const n = await Promise.race([this.conn.read(d.readTarget()), timeout]);
        if (n === null) {
          this.#closed = true;
          return null;
        }
        d.commit(n);
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** Reads frames until the server closes; returns them described. */
  async readUntilClose(timeoutMs = 5000): Promise<string[]> {
    const seen: string[] = [];
    for (;;) {
      let frame: Frame | null;
      try {
        frame = await this.readOrClose(timeoutMs);
      } catch (e) {
        if (e instanceof Deno.errors.ConnectionReset) return seen;
        throw e;
      }
      if (frame === null) return seen;
      seen.push(describeFrame(frame));
    }
  }

  /** Closes the socket. */
  close(): void {
    closeQuietly(this.conn);
  }
}
