/**
 * A frame decoder over one reusable byte buffer: a small state machine that knows bytes, not
 * sockets. The owner reads into {@linkcode FrameDecoder.readTarget}, reports the count with
 * {@linkcode FrameDecoder.commit}, then calls {@linkcode FrameDecoder.next} until it returns
 * `NEED_MORE`. Frames are handed out as offsets into {@linkcode FrameDecoder.buffer}, valid until
 * the next `readTarget()` call; nothing is copied unless a frame outgrows the buffer.
 *
 * @module
 */

import { FrameType, HEADER_BYTES, LENGTH_BYTES, readU32 } from "./frames.ts";
import { MSG_SCAN_WINDOW, MsgScanner } from "./msg_scan.ts";

/** What {@linkcode FrameDecoder.next} found. */
export const Decoded = {
  /** No complete frame is buffered: read more. */
  NEED_MORE: 0,
  /** A whole frame: see `type`, `frameStart`, `bodyStart`, `frameEnd`. */
  FRAME: 1,
  /** A MSG too large to buffer: `oversizedMsgId` holds its id; its bytes are being skipped. */
  OVERSIZED_MSG: 2,
  /** The stream is broken beyond repair: `error` says why. Stop reading. */
  ERROR: 3,
} as const;

/** Size limits of a {@linkcode FrameDecoder}, all counted like the length prefix. */
export interface DecoderLimits {
  /** Bytes the buffer starts with and shrinks back to (16 KiB by default). */
  initialBytes?: number;
  /**
   * How far the buffer's resting size may grow while reads keep filling it (default:
   * `initialBytes`, no growth). Lets idle connections stay small and busy ones read in bulk.
   */
  maxReadBytes?: number;
  /** Largest MSG frame that is buffered whole. */
  maxMsgLength: number;
  /** Largest MSG frame that is skipped and reported; anything longer is an ERROR. */
  maxSkippedMsgLength: number;
  /** Largest frame of any other type. */
  maxControlLength: number;
  /**
   * Judges a frame type the moment its header is in, before anything is buffered for it:
   * returns "" to go on, or why the stream is refused (then `next()` reports ERROR).
   */
  checkType?: (type: number) => string;
  /**
   * The largest MSG payload a greeted connection accepts (MAX_MESSAGE_BYTES); needed only by
   * {@linkcode FrameDecoder.nextMsgRun}.
   */
  maxPayloadBytes?: number;
}

/** Below this much free space at the end of the buffer, the unread bytes are moved to its start. */
const MIN_READ_SPACE = 4096;
/**
 * Bytes {@linkcode FrameDecoder.nextMsgRun} hands the scanner after a run that stopped at a frame
 * it does not take; it doubles (up to MSG_SCAN_WINDOW) while runs take all they are given. So a
 * stream of refused frames costs a small copy per frame, and a stream of good ones a copy per read.
 */
const MIN_SCAN_BYTES = 2048;

/**
 * Splits a byte stream into frames, with every size checked before anything is allocated.
 *
 * @example
 * ```ts
 * declare const conn: Deno.Conn;
 * declare function handle(bytes: Uint8Array, body: number, end: number): void;
 * const decoder = new FrameDecoder({
 *   maxMsgLength: 1024,
 *   maxSkippedMsgLength: 16384,
 *   maxControlLength: 65552,
 * });
 * const n = await conn.read(decoder.readTarget());
 * if (n !== null) decoder.commit(n);
 * for (let r = decoder.next(); r !== Decoded.NEED_MORE; r = decoder.next()) {
 *   if (r === Decoded.FRAME) handle(decoder.buffer, decoder.bodyStart, decoder.frameEnd);
 * }
 * ```
 */
export class FrameDecoder {
  #buf: Uint8Array;
  #start = 0;
  #end = 0;
  #skip = 0;
  /** The resting size: what the buffer shrinks back to when drained. */
  #base: number;
  readonly #maxBase: number;
  #lastTarget = 0;
  readonly #limits: DecoderLimits;
  #scanner: MsgScanner | null = null;
  #scanBytes = MIN_SCAN_BYTES;
  /** Where the last run stopped at a frame it does not take (-1: none), so it is not rescanned. */
  #runStoppedAt = -1;
  /** The longest MSG frame nextMsgRun takes. */
  readonly #runMaxLength: number;

  /** Type byte of the frame last returned. */
  type = 0;
  /** Offset in `buffer` of the frame's first length byte. */
  frameStart = 0;
  /** Offset in `buffer` of the frame's body (after the type byte). */
  bodyStart = 0;
  /** Offset in `buffer` just past the frame. */
  frameEnd = 0;
  /** The msg_id of the MSG last reported as `OVERSIZED_MSG`. */
  oversizedMsgId = 0;
  /** The payload size of the MSG last reported as `OVERSIZED_MSG` (an upper bound). */
  oversizedLength = 0;
  /** Why the stream was refused, after `ERROR`. */
  error = "";
  /** The msg_id of the last frame of the run last returned by `nextMsgRun`. */
  lastMsgId = 0;

  constructor(limits: DecoderLimits) {
    this.#limits = limits;
    this.#base = limits.initialBytes ?? 16 * 1024;
    this.#maxBase = Math.max(limits.maxReadBytes ?? this.#base, this.#base);
    this.#buf = new Uint8Array(this.#base);
    this.#runMaxLength = Math.min(limits.maxMsgLength, MSG_SCAN_WINDOW - LENGTH_BYTES);
  }

  /** The buffer that frame offsets point into; replaced when it grows or shrinks. */
  get buffer(): Uint8Array {
    return this.#buf;
  }

  /** Bytes received but not yet handed out as frames (a partial frame). */
  get pendingBytes(): number {
    return this.#end - this.#start;
  }

  /** True while the bytes of an oversized MSG are still being discarded. */
  get skipping(): boolean {
    return this.#skip > 0;
  }

  /** The free part of the buffer to read into; invalidates earlier frame offsets. */
  readTarget(): Uint8Array {
    this.#runStoppedAt = -1;
    const pending = this.#end - this.#start;
    if (pending === 0) {
      this.#start = this.#end = 0;
      if (this.#buf.length !== this.#base) this.#buf = new Uint8Array(this.#base);
      this.#lastTarget = this.#buf.length;
      return this.#buf;
    }
    // Room the partial frame still needs. Grow only for a frame whose header is in and whose
    // length next() has vetted; an oversized MSG needs just its msg_id before it is skipped.
    let required = 1;
    if (pending >= HEADER_BYTES && this.#skip === 0) {
      const b = this.#buf, s = this.#start;
      const length = readU32(b, s);
      const frameTotal = length > this.#limits.maxMsgLength && b[s + 4] === FrameType.MSG
        ? HEADER_BYTES + 4
        : LENGTH_BYTES + length;
      required = Math.max(frameTotal - pending, 1);
    }
    const free = this.#buf.length - this.#end;
    const minSpace = Math.min(MIN_READ_SPACE, this.#base >> 2);
    if (free >= required && (free >= minSpace || this.#start === 0)) {
      this.#lastTarget = free;
      return this.#buf.subarray(this.#end);
    }
    if (this.#buf.length >= pending + required) {
      this.#buf.copyWithin(0, this.#start, this.#end);
    } else {
      const grown = new Uint8Array(Math.max(pending + required, this.#base));
      grown.set(this.#buf.subarray(this.#start, this.#end));
      this.#buf = grown;
    }
    this.#start = 0;
    this.#end = pending;
    this.#lastTarget = this.#buf.length - pending;
    return this.#buf.subarray(this.#end);
  }

  /**
   * Drops a buffer grown for one big frame if nothing is pending in it, invalidating frame
   * offsets; call it before a long wait so idle memory stays small.
   */
  releaseIfDrained(): void {
    this.#runStoppedAt = -1;
    if (this.#end === this.#start && this.#buf.length > this.#base) {
      this.#buf = new Uint8Array(this.#base);
      this.#start = this.#end = 0;
    }
  }

  /**
   * Hands `[start, end)` of the buffer over without a copy when the buffer was grown past its
   * resting size for a large frame and holds nothing after `end`: drained, it would be dropped
   * at the next `readTarget()` anyway. Returns null (and changes nothing) otherwise. Frame
   * offsets are invalid afterwards, and the decoder never writes to the buffer handed over.
   */
  handOver(start: number, end: number): Uint8Array | null {
    if (
      this.#buf.length <= this.#maxBase || this.#skip > 0 || this.#start !== this.#end ||
      end !== this.#end || start < 0 || start > end
    ) {
      return null;
    }
    const taken = this.#buf.subarray(start, end);
    this.#buf = new Uint8Array(this.#base);
    this.#start = this.#end = 0;
    this.#runStoppedAt = -1;
    return taken;
  }

  /** Records that `n` bytes were read into the last `readTarget()`. */
  commit(n: number): void {
    this.#end += n;
    // A read that filled all the room it had: more is waiting, so read in bigger bites.
    if (n === this.#lastTarget && this.#base < this.#maxBase) this.#base *= 2;
  }

  /** Finds the next frame in what has been read; see {@linkcode Decoded}. */
  next(): number {
    const b = this.#buf;
    if (this.#skip > 0) {
      const take = Math.min(this.#skip, this.#end - this.#start);
      this.#skip -= take;
      this.#start += take;
      if (this.#skip > 0) return Decoded.NEED_MORE;
    }
    const s = this.#start;
    const avail = this.#end - s;
    if (avail < LENGTH_BYTES) return Decoded.NEED_MORE;
    const length = readU32(b, s);
    const limits = this.#limits;
    if (length === 0) return this.#fail("frame length is 0");
    if (length > limits.maxSkippedMsgLength && length > limits.maxControlLength) {
      return this.#fail(`frame length ${length} is over the limit`);
    }
    if (avail < HEADER_BYTES) return Decoded.NEED_MORE;
    const type = b[s + 4]!;
    if (limits.checkType !== undefined) {
      const problem = limits.checkType(type);
      if (problem !== "") return this.#fail(problem);
    }
    if (type === FrameType.MSG) {
      if (length > limits.maxMsgLength) {
        if (length > limits.maxSkippedMsgLength) {
          return this.#fail(`MSG frame length ${length} is over ${limits.maxSkippedMsgLength}`);
        }
        if (avail < HEADER_BYTES + 4) return Decoded.NEED_MORE;
        this.type = type;
        this.oversizedMsgId = readU32(b, s + 5);
        this.oversizedLength = length - 1;
        const total = LENGTH_BYTES + length;
        const take = Math.min(total, avail);
        this.#start += take;
        this.#skip = total - take;
        return Decoded.OVERSIZED_MSG;
      }
    } else if (length > limits.maxControlLength) {
      return this.#fail(
        `frame type 0x${
          type.toString(16).padStart(2, "0")
        } length ${length} is over ${limits.maxControlLength}`,
      );
    }
    if (avail < LENGTH_BYTES + length) return Decoded.NEED_MORE;
    this.type = type;
    this.frameStart = s;
    this.bodyStart = s + HEADER_BYTES;
    this.frameEnd = s + LENGTH_BYTES + length;
    this.#start = this.frameEnd;
    return Decoded.FRAME;
  }

  /**
   * Takes, in one step, the run of whole MSG frames at the front of what has been read that a
   * greeted connection accepts as they are (msg_ids above `lastId` and increasing, printable
   * ASCII names, payloads within `maxPayloadBytes`; see `msg_scan.wat`), and returns how many.
   * Returns 0 when the next frame is anything else, or not whole: decode it with `next()`, which
   * judges it. After a run, `frameStart` is its first frame's start, `frameEnd` its last frame's
   * end and `lastMsgId` its last frame's msg_id; the offsets are valid as `next()`'s are.
   */
  nextMsgRun(lastId: number): number {
    const s = this.#start;
    if (this.#skip > 0 || s === this.#runStoppedAt) return 0;
    const b = this.#buf;
    const avail = this.#end - s;
    // The first frame is looked at here, so that nothing is staged for a frame that is not whole
    // (a big one streaming in) or not a MSG.
    if (avail < HEADER_BYTES || b[s + 4] !== FrameType.MSG) return 0;
    const length = readU32(b, s);
    if (length > this.#runMaxLength || LENGTH_BYTES + length > avail) return 0;
    const scanner = this.#scanner ??= new MsgScanner({
      maxFrameLength: this.#runMaxLength,
      maxPayloadBytes: this.#limits.maxPayloadBytes ?? 0,
    });
    const take = Math.min(avail, Math.max(this.#scanBytes, LENGTH_BYTES + length));
    const count = scanner.scan(b.subarray(s, s + take), lastId);
    if (scanner.stoppedAtFrame) this.#scanBytes = MIN_SCAN_BYTES;
    else if (take < avail) this.#scanBytes = Math.min(this.#scanBytes * 2, MSG_SCAN_WINDOW);
    if (count === 0) return 0;
    this.type = FrameType.MSG;
    this.frameStart = s;
    this.bodyStart = s + HEADER_BYTES;
    this.frameEnd = s + scanner.end;
    this.lastMsgId = scanner.lastId;
    this.#start = this.frameEnd;
    if (scanner.stoppedAtFrame) this.#runStoppedAt = this.frameEnd;
    return count;
  }

  #fail(reason: string): number {
    this.error = reason;
    // Drop everything: a broken stream has no next frame.
    this.#start = this.#end;
    this.#skip = 0;
    return Decoded.ERROR;
  }
}
