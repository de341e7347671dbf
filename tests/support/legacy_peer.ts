/**
 * A client of the original C++ server's protocol (LEGACY_PORT): fixed 1,160-byte frames out,
 * three bytes `ack` back per frame.
 *
 * @module
 */

import { closeQuietly } from "../../src/io/close_quietly.ts";
import { writeAll } from "../../src/io/write_all.ts";
import {
  LEGACY_FRAME_BYTES,
  LEGACY_MESSAGE_BYTES,
  LEGACY_NAME_BYTES,
} from "../../src/server/legacy_connection.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/**
 * One frame as the original clients send it.
 *
 * @example
 * ```ts
 * import { legacyFrame } from "./legacy_peer.ts";
 * legacyFrame(7, 1, "client_7", "hello").length; // 1160
 * ```
 */
export function legacyFrame(
  clientId: number,
  msgId: number,
  name: string,
  message: string,
): Uint8Array {
  const frame = new Uint8Array(LEGACY_FRAME_BYTES);
  const view = new DataView(frame.buffer);
  view.setUint32(0, clientId);
  view.setUint32(4, msgId);
  frame.set(enc.encode(name).subarray(0, LEGACY_NAME_BYTES), 8);
  frame.set(enc.encode(message).subarray(0, LEGACY_MESSAGE_BYTES), 8 + LEGACY_NAME_BYTES);
  return frame;
}

/**
 * A legacy client: writes frames, counts the `ack` bytes that come back.
 *
 * @example
 * ```ts
 * import { LegacyPeer, legacyFrame } from "./legacy_peer.ts";
 * const peer = await LegacyPeer.connect(9001);
 * await peer.write(legacyFrame(7, 1, "client_7", "hello"));
 * await peer.acks(1);
 * peer.close();
 * ```
 */
export class LegacyPeer {
  readonly conn: Deno.TcpConn;
  #received = "";

  constructor(conn: Deno.TcpConn) {
    this.conn = conn;
  }

  /** Connects to LEGACY_PORT `port` on loopback. */
  static async connect(port: number): Promise<LegacyPeer> {
    return new LegacyPeer(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  /** Writes every byte. */
  write(bytes: Uint8Array): Promise<void> {
    return writeAll(this.conn, bytes);
  }

  /** Everything received so far, as text. */
  get received(): string {
    return this.#received;
  }

  /** Waits until `n` acks in total have arrived; returns the raw text received. */
  async acks(n: number, timeoutMs = 10000): Promise<string> {
    const buf = new Uint8Array(4096);
    const deadline = Date.now() + timeoutMs;
    while (this.#received.length < n * 3) {
      if (Date.now() > deadline) throw new Error(`Got ${this.#received.length / 3} acks of ${n}`);
      const got = await this.conn.read(buf);
      if (got === null) throw new Error(`Closed after ${this.#received.length / 3} acks of ${n}`);
      this.#received += dec.decode(buf.subarray(0, got));
    }
    return this.#received;
  }

  /** Reads until the server closes (or resets) the connection; returns all text received. */
  async readUntilClose(timeoutMs = 10000): Promise<string> {
    const buf = new Uint8Array(4096);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (Date.now() > deadline) throw new Error(`Still open after ${timeoutMs} ms`);
      let got: number | null;
      try {
        got = await this.conn.read(buf);
      } catch (e) {
        if (e instanceof Deno.errors.ConnectionReset) return this.#received;
        throw e;
      }
      if (got === null) return this.#received;
      this.#received += dec.decode(buf.subarray(0, got));
    }
  }

  /** Closes the socket. */
  close(): void {
    closeQuietly(this.conn);
  }
}
