/**
 * The hot path of the load tool: one connection's send/ack loop. Everything per message happens
 * here, so it is kept lean: frames are built once per connection and only their msg_ids are
 * rewritten before each write, send times live in a typed array indexed by msg_id modulo the
 * window, and ACKs are decoded in place from the reply decoder's buffer.
 *
 * (Over 400 lines: the per-connection hot loop, its reply decoding, the resume after ERROR 8 and
 * the ledger share one connection's state.)
 *
 * @module
 */

import { closeQuietly } from "../../src/io/close_quietly.ts";
import { writeAll } from "../../src/io/write_all.ts";
import { Decoded, type FrameDecoder } from "../../src/protocol/decoder.ts";
import { encodeMsg, ErrorCode, FrameType } from "../../src/protocol/frames.ts";
import { decodeAck, decodeError, decodeNack } from "../../src/protocol/replies.ts";
import type { Histogram } from "../histogram.ts";

const NAME = new TextEncoder().encode("bench");
/** Most bytes of frames handed to one socket write. */
const MAX_WRITE_BYTES = 256 * 1024;

/**
 * What the connections of one phase count into and read from (`PhaseState` in `phase.ts`
 * implements it).
 */
export interface PhaseCounters {
  /** Send-to-ACK latencies in microseconds. */
  readonly hist: Histogram;
  /** Set when a timed phase ends: no more sends. */
  stopping: boolean;
  /** Messages sent, acked and NACKed by all the phase's connections. */
  sent: number;
  acked: number;
  nacked: number;
  /** NACK code to count. */
  readonly nackCodes: Map<number, number>;
  /** Sessions resumed after ERROR 8, and the messages in flight then that were not stored. */
  resumed: number;
  abandoned: number;
  /** `performance.now()` of the latest ACK (0 before the first). */
  lastAckAt: number;
  /** The longest wait for an ACK so far, in ms; see `ackGap`. */
  longestAckGapMs: number;
  /**
   * Called on an ACK at `now` that ends a wait longer than `longestAckGapMs` since the latest
   * ACK (or the first send), to keep it as the longest.
   */
  ackGap(now: number): void;
  /** Called once by each connection when it is done. */
  connectionDone(): void;
  /** Counts an error and keeps its message as a sample. */
  error(message: string): void;
  /** Keeps a message as a sample, without counting an error. */
  note(message: string): void;
}

/** What a {@linkcode LoadConnection} is made of. */
export interface LoadConnectionOptions {
  /** The socket, after HELLO/WELCOME. */
  conn: Deno.TcpConn;
  /** The decoder the handshake read WELCOME with (it may hold bytes that came after it). */
  decoder: FrameDecoder;
  /** The phase's shared counters. */
  phase: PhaseCounters;
  /** The client_id it said HELLO with. */
  clientId: number;
  /** Messages to send; Infinity when the phase is timed. */
  quota: number;
  /** Messages in flight at most. */
  window: number;
  /** WELCOME's last_msg_id: the first message sent is this plus 1. */
  lastMsgId: number;
  /** The payload of every message. */
  payload: Uint8Array;
  /**
   * Opens a new connection in the same session (HELLO/WELCOME) after the server ended this one
   * with ERROR 8 (unavailable: a shared store failed, resume the session); absent: ERROR 8 is an
   * error like any other.
   */
  resume?: () => Promise<{ conn: Deno.TcpConn; decoder: FrameDecoder; lastMsgId: number }>;
}

/** Wait between attempts to resume a session while the server cannot take it back yet. */
const RESUME_RETRY_MS = 100;

/**
 * One connection after HELLO/WELCOME: a window of pipelined MSG frames settled by ACKs (and
 * NACKs), counted into the phase's {@linkcode PhaseCounters}. Sending writes only the msg_ids into
 * frames built once; settling walks the ids an ACK covers; neither allocates per message.
 *
 * Given `resume`, a session the server ends with ERROR 8 is resumed as a client would: the
 * messages in flight at or below WELCOME's last_msg_id count as acked (the server holds them),
 * those above it as abandoned, and sending goes on with new msg_ids (gaps are allowed), so that
 * each msg_id is sent once and the file check knows which may be missing.
 *
 * @example
 * ```ts
 * import { replyDecoder } from "../../src/protocol/replies.ts";
 * import { handshake } from "../../src/client/handshake.ts";
 * import { PhaseState } from "./phase.ts";
 *
 * const conn = await Deno.connect({ port: 9000 });
 * const decoder = replyDecoder();
 * const { lastMsgId } = await handshake(conn, decoder, { clientId: 1, session: 1n });
 * const phase = new PhaseState();
 * phase.expect(1);
 * const payload = new Uint8Array(100).fill(0x61);
 * new LoadConnection({ conn, decoder, phase, clientId: 1, quota: 1000, window: 64, lastMsgId, payload })
 *   .start();
 * await phase.finished; // 1000 messages sent and settled
 * ```
 */
export class LoadConnection {
  readonly clientId: number;
  /** Messages this connection sends; Infinity when the phase is timed. */
  readonly quota: number;
  acked = 0;
  nacked = 0;
  /** The msg_ids refused with NACK, in the order the NACKs came (allowed missing). */
  readonly refusedIds: number[] = [];
  /** The msg_ids in flight when a session was resumed, above its last_msg_id (not stored). */
  readonly abandonedRanges: { first: number; last: number }[] = [];
  /** Times the session was resumed after ERROR 8. */
  resumed = 0;
  latencySumUs = 0;
  done = false;

  #conn: Deno.TcpConn;
  #decoder: FrameDecoder;
  readonly #resume: LoadConnectionOptions["resume"];
  /** Set while the session is being resumed: no sends, and the old socket's errors are moot. */
  #resuming = false;
  readonly #phase: PhaseCounters;
  readonly #window: number;
  /** Send time of id i at `i % window`. */
  readonly #sendTimes: Float64Array;
  /** Frames with name and payload in place; only the msg_ids are written before each send. */
  readonly #frames: Uint8Array;
  readonly #frameBytes: number;
  readonly #framesPerWrite: number;
  readonly #firstId: number;
  /** Highest id sent. */
  #sent: number;
  /** Every id up to this one is settled. */
  #head: number;
  #nackedIds: Set<number> | null = null;
  #writing = false;
  #dead = false;
  #closing = false;

  constructor(options: LoadConnectionOptions) {
    const { window, lastMsgId } = options;
    this.#conn = options.conn;
    this.#decoder = options.decoder;
    this.#resume = options.resume;
    this.#phase = options.phase;
    this.clientId = options.clientId;
    this.quota = options.quota;
    this.#window = window;
    this.#sendTimes = new Float64Array(window);
    this.#firstId = lastMsgId;
    this.#sent = lastMsgId;
    this.#head = lastMsgId;
    const frame = encodeMsg(0, NAME, options.payload);
    this.#frameBytes = frame.length;
    this.#framesPerWrite = Math.max(
      1,
      Math.min(window, Math.floor(MAX_WRITE_BYTES / frame.length)),
    );
    this.#frames = new Uint8Array(this.#framesPerWrite * frame.length);
    for (let i = 0; i < this.#framesPerWrite; i++) this.#frames.set(frame, i * frame.length);
  }

  /** Messages sent so far. */
  get sent(): number {
    return this.#sent - this.#firstId;
  }

  /** WELCOME's last_msg_id: every msg_id this connection sent is above it. */
  get firstId(): number {
    return this.#firstId;
  }

  /** The highest msg_id sent. */
  get lastSent(): number {
    return this.#sent;
  }

  /** Every msg_id up to this one was acked or refused; those above it up to `lastSent` are not. */
  get settledThrough(): number {
    return this.#head;
  }

  /** Starts the read loop and the first send. */
  start(): void {
    this.#readLoop();
    this.pump();
  }

  /** Sends as many messages as the window, the quota and the phase allow. */
  pump(): void {
    if (this.#writing || this.done || this.#resuming) return;
    const phase = this.#phase;
    const room = this.#window - (this.#sent - this.#head);
    const left = phase.stopping ? 0 : this.quota - this.sent;
    const n = Math.min(room, left, this.#framesPerWrite);
    if (n <= 0 || this.#dead) {
      this.#checkDone();
      return;
    }
    const frames = this.#frames;
    const size = this.#frameBytes;
    const now = performance.now();
    const times = this.#sendTimes;
    const window = this.#window;
    for (let i = 0; i < n; i++) {
      const id = this.#sent + 1 + i;
      const at = i * size + 5;
      frames[at] = id >>> 24;
      frames[at + 1] = (id >>> 16) & 0xff;
      frames[at + 2] = (id >>> 8) & 0xff;
      frames[at + 3] = id & 0xff;
      times[id % window] = now;
    }
    this.#sent += n;
    phase.sent += n;
    this.#writing = true;
    this.#write(frames.subarray(0, n * size));
  }

  async #write(bytes: Uint8Array): Promise<void> {
    const conn = this.#conn;
    try {
      await writeAll(conn, bytes);
    } catch (e) {
      // A socket given up for a resumed session's new one fails quietly.
      if (conn === this.#conn && !this.#resuming) {
        this.#fail(`write failed: ${(e as Error).message}`);
      }
    }
    this.#writing = false;
    this.pump();
  }

  async #readLoop(): Promise<void> {
    const decoder = this.#decoder;
    const conn = this.#conn;
    try {
      for (;;) {
        const n = await conn.read(decoder.readTarget());
        if (conn !== this.#conn || this.#resuming) return;
        if (n === null) {
          if (!this.done) this.#fail("closed by the server");
          return;
        }
        const now = performance.now();
        decoder.commit(n);
        for (let r = decoder.next(); r !== Decoded.NEED_MORE; r = decoder.next()) {
          if (r !== Decoded.FRAME) {
            this.#fail(`bad frame from the server: ${decoder.error}`);
            return;
          }
          this.#onFrame(decoder.buffer, decoder.type, decoder.bodyStart, decoder.frameEnd, now);
          if (this.#dead || this.#resuming) return;
        }
        this.pump();
      }
    } catch (e) {
      if (!this.#closing && conn === this.#conn && !this.#resuming) {
        this.#fail(`read failed: ${(e as Error).message}`);
      }
    }
  }

  #onFrame(b: Uint8Array, type: number, body: number, end: number, now: number): void {
    const phase = this.#phase;
    if (type === FrameType.ACK) {
      const upTo = decodeAck(b, body, end);
      if (upTo > this.#sent) {
        this.#fail(`ACK ${upTo} is above the highest msg_id sent, ${this.#sent}`);
        return;
      }
      if (upTo <= this.#head) return;
      const times = this.#sendTimes;
      const window = this.#window;
      const hist = phase.hist;
      const nackedIds = this.#nackedIds;
      let count = 0;
      let sum = 0;
      for (let id = this.#head + 1; id <= upTo; id++) {
        if (nackedIds !== null && nackedIds.delete(id)) continue;
        const us = (now - times[id % window]!) * 1000;
        hist.record(us);
        sum += us;
        count++;
      }
      this.#head = upTo;
      this.acked += count;
      this.latencySumUs += sum;
      phase.acked += count;
      // One comparison per ACK frame, not per message: the stall figure costs the hot path nothing.
      if (now - phase.lastAckAt > phase.longestAckGapMs) phase.ackGap(now);
      phase.lastAckAt = now;
      this.#popNacked();
    } else if (type === FrameType.NACK) {
      const { msgId, code, reason } = decodeNack(b, body, end);
      phase.nackCodes.set(code, (phase.nackCodes.get(code) ?? 0) + 1);
      if (msgId <= this.#head || msgId > this.#sent || this.#nackedIds?.has(msgId)) {
        phase.error(`client ${this.clientId}: NACK for msg_id ${msgId}, not in flight`);
        return;
      }
      (this.#nackedIds ??= new Set()).add(msgId);
      this.refusedIds.push(msgId);
      this.nacked++;
      phase.nacked++;
      if (phase.nacked <= 5) {
        phase.note(
          `client ${this.clientId}: NACK ${msgId} code ${code}: ${reason}`,
        );
      }
      this.#popNacked();
    } else if (type === FrameType.ERROR) {
      const { code, reason } = decodeError(b, body, end);
      if (code === ErrorCode.UNAVAILABLE && this.#resume !== undefined) {
        this.#resumeSession(`ERROR ${code}: ${reason}`);
        return;
      }
      this.#fail(`ERROR ${code}: ${reason}`);
    } else {
      this.#fail(`unexpected frame type 0x${type.toString(16)}`);
    }
  }

  /**
   * Opens the session again (retrying while the server cannot take it back), settles what was in
   * flight by WELCOME's last_msg_id, and goes on sending. Ends when the connection is closed or
   * abandoned meanwhile.
   */
  async #resumeSession(why: string): Promise<void> {
    this.#resuming = true;
    closeQuietly(this.#conn);
    const phase = this.#phase;
    let attempts = 0;
    let opened;
    for (;;) {
      attempts++;
      try {
        opened = await this.#resume!();
      } catch {
        if (this.#dead || this.#closing) return;
        await new Promise((r) => setTimeout(r, RESUME_RETRY_MS));
        if (this.#dead || this.#closing) return;
        continue;
      }
      if (this.#dead || this.#closing) {
        closeQuietly(opened.conn);
        return;
      }
      break;
    }
    const last = opened.lastMsgId;
    if (last > this.#sent) {
      this.#fail(`resumed at last_msg_id ${last}, above the highest msg_id sent, ${this.#sent}`);
      closeQuietly(opened.conn);
      return;
    }
    const nacked = this.#nackedIds;
    let confirmed = 0;
    let abandonedFrom = 0;
    let abandoned = 0;
    for (let id = this.#head + 1; id <= this.#sent; id++) {
      if (nacked !== null && nacked.delete(id)) continue;
      if (id <= last) {
        confirmed++;
      } else {
        if (abandonedFrom === 0) abandonedFrom = id;
        abandoned++;
      }
    }
    if (abandoned > 0) this.abandonedRanges.push({ first: abandonedFrom, last: this.#sent });
    this.#head = this.#sent;
    this.acked += confirmed;
    phase.acked += confirmed;
    phase.abandoned += abandoned;
    this.resumed++;
    phase.resumed++;
    if (phase.resumed <= 5) {
      phase.note(
        `client ${this.clientId}: ${why}; resumed after ${attempts} ${
          attempts === 1 ? "attempt" : "attempts"
        } at last_msg_id ${last}: ${confirmed} in flight stored, ${abandoned} not`,
      );
    }
    this.#conn = opened.conn;
    this.#decoder = opened.decoder;
    this.#resuming = false;
    this.#readLoop();
    this.pump();
  }

  #popNacked(): void {
    const ids = this.#nackedIds;
    if (ids === null) return;
    while (ids.size > 0 && ids.delete(this.#head + 1)) this.#head++;
  }

  #checkDone(): void {
    if (this.done) return;
    const idle = this.#sent === this.#head && (this.#phase.stopping || this.sent >= this.quota);
    if (this.#dead || idle) {
      this.done = true;
      this.#phase.connectionDone();
    }
  }

  #fail(reason: string): void {
    if (this.#dead) return;
    this.#dead = true;
    if (!this.#closing) this.#phase.error(`client ${this.clientId}: ${reason}`);
    this.close();
    this.#checkDone();
  }

  /** Closes the socket (and stops a resume under way); a read or write under way ends quietly. */
  close(): void {
    this.#closing = true;
    closeQuietly(this.#conn);
  }

  /** Marks the connection done without waiting for what is in flight (hard timeout). */
  abandon(): void {
    this.#dead = true;
    this.#checkDone();
  }
}
