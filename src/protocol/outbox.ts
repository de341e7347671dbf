/**
 * The outbox: frames on their way to one peer, used by both ends (the server's replies, the
 * client's messages). Frames are appended to a buffer; one write is in flight at a time, and
 * whatever arrives meanwhile goes out with the next, so frames never interleave and many small
 * frames become one write. Cumulative ACKs still waiting in the buffer are raised in place
 * instead of adding another.
 *
 * It knows bytes and a `write`, not sockets or the protocol beyond the ACK frame, so it is
 * tested without a socket.
 *
 * @module
 */

import { writeAll, type Writer } from "../io/write_all.ts";
import { ACK_FRAME_BYTES, FrameType, HEADER_BYTES, writeAck, writeU32 } from "./frames.ts";

const encoder = new TextEncoder();

/** Options of {@linkcode Outbox}. */
export interface OutboxOptions {
  /** Buffer bytes to start with (256 by default). */
  initialBytes?: number;
  /**
   * The buffer doubles as it grows, but not past this on the way unless one frame needs more
   * (default: no limit). A connection that stops taking replies just past its high-water mark
   * sets it a little above that mark, as doubling beyond would only waste memory.
   */
  growthLimit?: number;
  /** Called once when a write fails; the outbox then drops what it holds and takes nothing more. */
  onError?: (error: Error) => void;
}

/**
 * Frames for one peer, written in order with one write in flight.
 *
 * @example
 * ```ts
 * import { Outbox } from "./outbox.ts";
 * import { encodeWelcome } from "../protocol/frames.ts";
 * const conn = await Deno.connect({ port: 9000 });
 * const outbox = new Outbox(conn, { onError: () => conn.close() });
 * outbox.send(encodeWelcome(1024, 0));
 * outbox.ack(1);
 * outbox.ack(2); // raises the ACK still waiting to 2 rather than adding one
 * await outbox.flushing;
 * ```
 */
export class Outbox {
  readonly #sink: Writer;
  readonly #growthLimit: number;
  readonly #onError: ((error: Error) => void) | undefined;
  #out: Uint8Array;
  #length = 0;
  #spare: Uint8Array;
  /** Where the last ACK in `#out` starts while it is the last frame there, else -1. */
  #lastAckAt = -1;
  #flushing: Promise<void> | null = null;
  /** Bytes of the write under way, until all are taken. */
  #inFlight = 0;
  #failed = false;

  constructor(sink: Writer, options: OutboxOptions = {}) {
    this.#sink = sink;
    const initial = options.initialBytes ?? 256;
    this.#out = new Uint8Array(initial);
    this.#spare = new Uint8Array(initial);
    this.#growthLimit = options.growthLimit ?? Infinity;
    this.#onError = options.onError;
  }

  /** Bytes not yet taken by the sink: buffered, and in the write under way. */
  get pending(): number {
    return this.#length + this.#inFlight;
  }

  /** Bytes buffered behind the write under way. */
  get buffered(): number {
    return this.#length;
  }

  /** Bytes the buffer holds before it must grow (memory held per peer). */
  get capacity(): number {
    return this.#out.length;
  }

  /** The flush under way (resolves once everything buffered so far is written), or null. */
  get flushing(): Promise<void> | null {
    return this.#flushing;
  }

  /** True once a write has failed: nothing more is taken. */
  get failed(): boolean {
    return this.#failed;
  }

  /** Queues a whole frame. */
  send(frame: Uint8Array): void {
    if (this.#failed) return;
    this.#reserve(frame.length);
    this.#out.set(frame, this.#length);
    this.#length += frame.length;
    this.#lastAckAt = -1;
    this.#kick();
  }

  /** Queues a cumulative ACK up to `msgId`, raising one still waiting at the end instead. */
  ack(msgId: number): void {
    if (this.#failed) return;
    if (this.#lastAckAt >= 0) {
      writeAck(this.#out, this.#lastAckAt, msgId);
      return;
    }
    this.#reserve(ACK_FRAME_BYTES);
    this.#lastAckAt = this.#length;
    this.#length = writeAck(this.#out, this.#length, msgId);
    this.#kick();
  }

  /**
   * Queues a NACK built in place, without allocating: a peer that earns many (each refused
   * frame does) costs the server as little as can be. The reason is written as UTF-8.
   */
  nack(msgId: number, code: number, reason: string): void {
    if (this.#failed) return;
    // At most 3 bytes of UTF-8 per UTF-16 unit.
    this.#reserve(HEADER_BYTES + 6 + reason.length * 3);
    const out = this.#out;
    const start = this.#length;
    let at = start + HEADER_BYTES;
    writeU32(out, at, msgId);
    out[at + 4] = code >>> 8;
    out[at + 5] = code & 0xff;
    at += 6;
    let i = 0;
    for (; i < reason.length; i++) {
      const c = reason.charCodeAt(i);
      if (c >= 0x80) break;
      out[at++] = c;
    }
    if (i < reason.length) {
      at += encoder.encodeInto(reason.slice(i), out.subarray(at)).written;
    }
    writeU32(out, start, at - start - 4);
    out[start + 4] = FrameType.NACK;
    this.#length = at;
    this.#lastAckAt = -1;
    this.#kick();
  }

  /** Queues `pattern` `times` times over (the legacy protocol's `ack` per frame). */
  repeat(pattern: Uint8Array, times: number): void {
    if (this.#failed || times <= 0) return;
    const bytes = pattern.length * times;
    this.#reserve(bytes);
    const start = this.#length;
    this.#out.set(pattern, start);
    // Copy what is there already, doubling it, instead of one set() per repetition.
    for (let done = pattern.length; done < bytes; done *= 2) {
      this.#out.copyWithin(start + done, start, start + Math.min(done, bytes - done));
    }
    this.#length += bytes;
    this.#lastAckAt = -1;
    this.#kick();
  }

  /** Drops everything not yet written and takes nothing more (the connection is going away). */
  discard(): void {
    this.#failed = true;
    this.#length = 0;
    this.#lastAckAt = -1;
  }

  #reserve(n: number): void {
    const need = this.#length + n;
    if (need <= this.#out.length) return;
    const grown = new Uint8Array(
      Math.max(need, Math.min(this.#out.length * 2, this.#growthLimit)),
    );
    grown.set(this.#out.subarray(0, this.#length));
    this.#out = grown;
  }

  #kick(): void {
    if (this.#flushing === null) this.#flushing = this.#flushLoop();
  }

  async #flushLoop(): Promise<void> {
    try {
      // Double-buffered: appends go to the other buffer while one is being written.
      while (this.#length > 0) {
        const bytes = this.#out;
        const length = this.#length;
        this.#out = this.#spare;
        this.#length = 0;
        this.#lastAckAt = -1;
        this.#inFlight = length;
        await writeAll(this.#sink, bytes.subarray(0, length));
        this.#inFlight = 0;
        this.#spare = bytes;
      }
    } catch (e) {
      const first = !this.#failed;
      this.discard();
      if (first) this.#onError?.(e as Error);
    } finally {
      this.#inFlight = 0;
      this.#flushing = null;
    }
  }
}
