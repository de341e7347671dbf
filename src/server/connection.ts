/**
 * The service task: one per accepted connection. It reads into the decoder's reused buffer,
 * checks each frame, copies the accepted MSG frames of one read into one queue entry, and sends
 * what the peer is owed (WELCOME, ACK, NACK, ERROR) through an outbox that keeps one socket write
 * in flight at a time, so frames never interleave and many small replies become one write.
 *
 * @module
 */

import type { Config } from "../config.ts";
import type { Logger } from "../log.ts";
import { Decoded, type DecoderLimits, FrameDecoder } from "../protocol/decoder.ts";
import {
  ACK_FRAME_BYTES,
  encodeError,
  encodeNack,
  encodeWelcome,
  ErrorCode,
  FrameType,
  MSG_FIXED_BYTES,
  NackCode,
  readU32,
  writeAck,
} from "../protocol/frames.ts";
import { decodeHello } from "../protocol/hello.ts";
import { nameProblem } from "../protocol/name.ts";
import { timingSafeEqual } from "./auth.ts";
import { type Channel, ChannelClosedError } from "./channel.ts";
import { writeAll } from "../io/write_all.ts";
import { within } from "../io/within.ts";
import { Session, type SessionOwner, type SessionTable } from "./sessions.ts";
import type { Entry, RecordSource } from "./entry.ts";
import { closeQuietly } from "../io/close_quietly.ts";

/** Counters shared by all connections. */
export interface ConnectionStats {
  received: number;
  /** Records acked on receipt (ACK_MODE received); the writer counts the others. */
  ackedOnReceipt: number;
  nacked: number;
  duplicates: number;
  protocolErrors: number;
}

/** What the server needs of any connection it serves, native or legacy. */
export interface Served {
  readonly isClosed: boolean;
  /** True while a handshake is still owed (never for the legacy protocol). */
  readonly awaitingHello: boolean;
  /** When it was accepted (ms, `performance.now()`). */
  readonly openedAt: number;
  /** True while it waits on the server (queue room, session resume): timeouts do not run. */
  readonly waitingOnServer: boolean;
  /** When the last whole frame arrived (ms, `performance.now()`). */
  readonly lastActivity: number;
  /** Reply bytes not yet taken by the socket. */
  readonly pendingReplyBytes: number;
  /** Reads and serves until the connection ends. */
  serve(): Promise<void>;
  /** Shutdown: closes after every ack owed is sent. */
  finish(): Promise<void>;
  /** Closes at once. */
  abort(): void;
  /** Closes for a timeout, telling the peer if the protocol can. */
  timeout(reason: string): void;
}

/** What a connection needs from the server it belongs to. */
export interface ServerContext {
  readonly config: Config;
  readonly queue: Channel<Entry>;
  readonly sessions: SessionTable;
  readonly log: Logger;
  readonly stats: ConnectionStats;
  readonly limits: DecoderLimits;
  /** The AUTH_TOKEN as bytes, or null when none is required. */
  readonly token: Uint8Array | null;
  /** True from the moment shutdown begins: no new record is accepted. */
  readonly stopping: boolean;
  /** Called once when the connection has ended. */
  closed(connection: Served): void;
}

const State = { AWAIT_HELLO: 0, READY: 1, CLOSED: 2 } as const;
/**
 * Past this many unsent reply bytes, a connection stops reading and decoding until the peer
 * catches up (the legacy protocol's acks count too).
 */
export const OUTBOX_HIGH_WATER = 64 * 1024;
/**
 * The outbox grows by doubling, but not past this on the way (unless one reply needs it): it stops
 * taking replies just past OUTBOX_HIGH_WATER, so doubling to 128 KiB would only waste memory.
 */
const OUTBOX_GROWTH_LIMIT = OUTBOX_HIGH_WATER + 4 * 1024;
/** How long a goodbye (an ERROR, the last acks) may take to reach the peer before the socket is closed anyway. */
export const ERROR_FLUSH_MS = 1000;

/**
 * One client connection and its service task.
 *
 * @example
 * ```ts
 * const connection = new Connection(conn, context, 1);
 * await connection.serve(); // returns when the peer or the server ends it
 * ```
 */
export class Connection implements RecordSource, SessionOwner, Served {
  /** The client_id from HELLO (0 until then). */
  clientId = 0;
  /** The session id from HELLO (0n until then, and for session 0). */
  session = 0n;
  batchSeq = -1;
  batchLastId = 0;
  batchRecords = 0;
  /** When this connection was accepted (ms, `performance.now()`). */
  readonly openedAt = performance.now();
  /** When the last whole frame arrived (ms, `performance.now()`). */
  lastActivity = this.openedAt;
  readonly id: number;
  readonly remote: string;

  readonly #conn: Deno.Conn;
  readonly #ctx: ServerContext;
  readonly #decoder: FrameDecoder;
  #state: number = State.AWAIT_HELLO;
  #session: Session | null = null;
  /** True while it waits on the server (queue room, a session resume): timeouts do not run. */
  #serverBusy = false;
  readonly #ackOnReceipt: boolean;
  #closing: Promise<void> | null = null;
  /** Records queued but not yet acked or refused by the writer. */
  #unacked = 0;
  #allSettled: (() => void) | null = null;

  // Outbox: replies are appended to #out; #flushLoop writes it while appends go to the other buffer.
  #out = new Uint8Array(256);
  #outLen = 0;
  #spare = new Uint8Array(256);
  #lastAckAt = -1;
  #flushing: Promise<void> | null = null;
  /** Bytes of the socket write under way, until all are taken. */
  #inFlight = 0;

  constructor(conn: Deno.Conn, ctx: ServerContext, id: number) {
    this.#conn = conn;
    this.#ctx = ctx;
    this.id = id;
    const addr = conn.remoteAddr as Deno.NetAddr;
    this.remote = `${addr.hostname}:${addr.port}`;
    this.#decoder = new FrameDecoder({ ...ctx.limits, checkType: (type) => this.#checkType(type) });
    this.#ackOnReceipt = ctx.config.ACK_MODE === "received";
  }

  /** True once the connection has been closed (or is closing). */
  get isClosed(): boolean {
    return this.#state === State.CLOSED;
  }

  /** True while the connection has not yet completed its HELLO. */
  get awaitingHello(): boolean {
    return this.#state === State.AWAIT_HELLO;
  }

  /** Reply bytes not yet taken by the socket. */
  get pendingReplyBytes(): number {
    return this.#outLen + this.#inFlight;
  }

  /** True while the connection waits on the server (queue room, a session resume). */
  get waitingOnServer(): boolean {
    return this.#serverBusy;
  }

  /** Reads and serves frames until the peer leaves, breaks the protocol, or the server stops. */
  async serve(): Promise<void> {
    const conn = this.#conn;
    const decoder = this.#decoder;
    let eof = false;
    try {
      while (this.#state !== State.CLOSED) {
        const n = await conn.read(decoder.readTarget());
        if (n === null) {
          eof = true;
          break;
        }
        if (this.#ctx.stopping || this.#state === State.CLOSED) continue;
        decoder.commit(n);
        await this.#process();
      }
    } catch (e) {
      if (this.#state !== State.CLOSED) {
        this.#ctx.log.debug("connection read failed", {
          conn: this.id,
          error: (e as Error).message,
        });
      }
    } finally {
      await this.#end(eof);
    }
  }

  /** Decodes every complete frame in the buffer; queues the accepted records as one entry. */
  async #process(): Promise<void> {
    const decoder = this.#decoder;
    const buf = decoder.buffer;
    let regionStart = -1;
    let regionEnd = 0;
    let count = 0;
    let first = true;
    while (this.#state !== State.CLOSED) {
      if (this.#outLen > OUTBOX_HIGH_WATER && this.#flushing !== null) {
        // Before each frame, not only before each read: one read of tiny refused frames can owe
        // several times its size in NACKs. Stop decoding (and so reading) until the peer takes
        // its replies.
        if (count > 0) {
          await this.#queue(buf.slice(regionStart, regionEnd), count);
          regionStart = -1;
          count = 0;
        }
        await this.#flushing;
        continue;
      }
      const result = decoder.next();
      if (result === Decoded.NEED_MORE) break;
      if (first) {
        // Idleness is measured in whole frames, so a peer trickling bytes is still cut.
        this.lastActivity = performance.now();
        first = false;
      }
      if (result === Decoded.FRAME) {
        const type = decoder.type;
        if (type === FrameType.MSG && this.#state === State.READY) {
          const outcome = this.#checkMsg(buf, decoder.frameStart, decoder.frameEnd);
          if (outcome === ACCEPTED) {
            if (regionStart < 0) regionStart = decoder.frameStart;
            regionEnd = decoder.frameEnd;
            count++;
            continue;
          }
          if (outcome === REFUSED) {
            buf[decoder.frameStart + 4] = 0; // marks it skipped if it lies inside the region
            continue;
          }
        } else if (type === FrameType.HELLO && this.#state === State.AWAIT_HELLO) {
          if (await this.#hello(buf, decoder.bodyStart, decoder.frameEnd)) continue;
        }
        // Otherwise #hello or #checkMsg closed the connection (#checkType let the type through).
      } else if (result === Decoded.OVERSIZED_MSG) {
        if (count > 0) {
          await this.#queue(buf.slice(regionStart, regionEnd), count);
          regionStart = -1;
          count = 0;
        }
        this.#ctx.stats.nacked++;
        this.#nack(
          decoder.oversizedMsgId,
          NackCode.PAYLOAD_TOO_LARGE,
          `payload too large: over ${this.#ctx.config.MAX_MESSAGE_BYTES} bytes`,
        );
        continue;
      } else {
        this.#protocolError(decoder.error);
      }
      break; // an ERROR was sent: the connection is closing
    }
    if (count > 0) await this.#queue(buf.slice(regionStart, regionEnd), count);
  }

  /** Decides from the header alone whether a frame of `type` may come now (see the decoder). */
  #checkType(type: number): string {
    if (this.#state === State.READY) {
      return type === FrameType.MSG
        ? ""
        : type === FrameType.HELLO
        ? "HELLO after HELLO"
        : unknownType(type);
    }
    if (this.#state === State.AWAIT_HELLO) {
      return type === FrameType.HELLO
        ? ""
        : type === FrameType.MSG
        ? "MSG before HELLO"
        : unknownType(type);
    }
    return "";
  }

  /** Checks one MSG frame against the rules and the session; NACKs it if refused. */
  #checkMsg(buf: Uint8Array, frameStart: number, frameEnd: number): number {
    const body = frameStart + 5;
    const bodyLength = frameEnd - body;
    const nameLength = buf[body + 4]!;
    if (bodyLength < MSG_FIXED_BYTES || MSG_FIXED_BYTES + nameLength > bodyLength) {
      this.#protocolError(`MSG frame too short for its name (length ${bodyLength + 1})`);
      return BROKEN;
    }
    const msgId = readU32(buf, body);
    if (msgId === 0) {
      this.#protocolError("msg_id 0 (ids start at 1)");
      return BROKEN;
    }
    const session = this.#session!;
    const stats = this.#ctx.stats;
    stats.received++;
    if (msgId <= session.lastId) {
      stats.duplicates++;
      this.#nack(
        msgId,
        NackCode.DUPLICATE,
        `duplicate: msg_id ${msgId} is not above ${session.lastId}`,
      );
      return REFUSED;
    }
    const payloadLength = bodyLength - MSG_FIXED_BYTES - nameLength;
    if (payloadLength > this.#ctx.config.MAX_MESSAGE_BYTES) {
      stats.nacked++;
      this.#nack(
        msgId,
        NackCode.PAYLOAD_TOO_LARGE,
        `payload too large: ${payloadLength} bytes, at most ${this.#ctx.config.MAX_MESSAGE_BYTES}`,
      );
      return REFUSED;
    }
    const problem = nameProblem(buf, body + MSG_FIXED_BYTES, body + MSG_FIXED_BYTES + nameLength);
    if (problem !== "") {
      stats.nacked++;
      this.#nack(msgId, NackCode.BAD_NAME, `bad name: ${problem}`);
      return REFUSED;
    }
    session.lastId = msgId;
    return ACCEPTED;
  }

  /** Puts one entry on the queue, waiting for room; in `received` mode acks it at once. */
  async #queue(data: Uint8Array, count: number): Promise<void> {
    const entry: Entry = { source: this, data, count, bytes: data.length };
    const session = this.#session!;
    const lastId = session.lastId;
    const queue = this.#ctx.queue;
    this.#unacked += count;
    session.pending += count;
    try {
      if (!queue.tryPush(entry)) {
        // While this waits for room, a read buffer grown for a big frame is dead weight.
        this.#decoder.releaseIfDrained();
        this.#serverBusy = true;
        try {
          await queue.push(entry);
        } finally {
          this.#serverBusy = false;
        }
        this.lastActivity = performance.now(); // the wait was the server's, not the peer's
      }
    } catch (e) {
      if (e instanceof ChannelClosedError) {
        this.#unacked -= count; // shutting down: not written, so not acked
        session.refused(count);
        return;
      }
      throw e;
    }
    if (this.#ackOnReceipt) {
      this.#ctx.stats.ackedOnReceipt += count;
      this.#ack(lastId);
    }
  }

  /** Handles HELLO; returns false if it closed the connection. */
  async #hello(buf: Uint8Array, body: number, end: number): Promise<boolean> {
    const hello = decodeHello(buf, body, end);
    if ("reason" in hello) {
      if (hello.code === ErrorCode.PROTOCOL_VIOLATION) this.#protocolError(hello.reason);
      else this.#fail(hello.code, hello.reason);
      return false;
    }
    const token = this.#ctx.token;
    if (token !== null && !timingSafeEqual(token, buf.subarray(hello.tokenStart, end))) {
      this.#fail(ErrorCode.AUTH_FAILED, "authentication failed");
      return false;
    }
    const { clientId, session: sessionId } = hello;
    this.clientId = clientId;
    this.session = sessionId;
    let session: Session;
    let resumeAt = 0;
    if (sessionId === 0n) {
      session = new Session();
      session.owner = this;
    } else {
      session = this.#ctx.sessions.open(clientId, sessionId);
      const previous = session.owner;
      session.owner = this;
      this.#session = session; // so that ending now releases it
      this.#serverBusy = true; // the timeouts do not count the server's own waiting
      if (previous !== null && previous !== this) previous.takeOver();
      // WELCOME promises that everything up to last_msg_id is in the file: wait for what the
      // session's earlier connections queued to be written (or refused) first.
      resumeAt = await session.resume(this.#ctx.config.SHUTDOWN_TIMEOUT_MS);
      this.#serverBusy = false;
      this.lastActivity = performance.now();
      if (this.#state === State.CLOSED || session.owner !== this) return false;
    }
    this.#session = session;
    this.#state = State.READY;
    this.#send(encodeWelcome(this.#ctx.config.MAX_MESSAGE_BYTES, resumeAt));
    this.#ctx.log.debug("hello", { conn: this.id, client_id: clientId, session: sessionId });
    return true;
  }

  /**
   * Another connection took this one's session: say so and close. What this one queued still
   * lands; the new connection's WELCOME waits for it through `Session.resume`.
   */
  takeOver(): void {
    if (this.#state === State.CLOSED) return;
    this.#ctx.log.info("session taken over", { conn: this.id, client_id: this.clientId });
    this.#fail(ErrorCode.SESSION_TAKEN_OVER, "session taken over");
  }

  written(msgId: number, records: number): void {
    this.#session!.written(msgId, records);
    this.#settled(records);
    if (!this.#ackOnReceipt) this.#ack(msgId);
  }

  #ack(msgId: number): void {
    // After an ERROR nothing more is sent; the peer learns what landed from WELCOME.last_msg_id.
    if (this.#state === State.CLOSED) return;
    // ACKs are cumulative: one still waiting in the outbox is raised instead of adding another.
    if (this.#lastAckAt >= 0 && this.#lastAckAt === this.#outLen - ACK_FRAME_BYTES) {
      writeAck(this.#out, this.#lastAckAt, msgId);
      return;
    }
    this.#reserve(ACK_FRAME_BYTES);
    this.#lastAckAt = this.#outLen;
    this.#outLen = writeAck(this.#out, this.#outLen, msgId);
    this.#kick();
  }

  /** The writer could not store this queued record. */
  refuse(msgId: number, code: number, reason: string): void {
    this.#session!.refused(1);
    this.#settled(1);
    this.#nack(msgId, code, reason);
  }

  #nack(msgId: number, code: number, reason: string): void {
    if (this.#state === State.CLOSED) return;
    this.#send(encodeNack(msgId, code, reason));
  }

  /** Counts queued records whose outcome is known; wakes an end-of-input wait at zero. */
  #settled(records: number): void {
    this.#unacked -= records;
    if (this.#unacked <= 0 && this.#allSettled !== null) {
      this.#allSettled();
      this.#allSettled = null;
    }
  }

  /**
   * Ends the connection during shutdown: sends ERROR 6 after every ack owed is out. Resolves
   * once the socket is closed.
   */
  async finish(): Promise<void> {
    if (this.#state === State.CLOSED) return;
    await this.#fail(ErrorCode.SHUTTING_DOWN, "shutting down");
  }

  /** Closes at once, without a goodbye (used when shutdown runs out of time). */
  abort(): void {
    this.#closeSocket();
  }

  /** Sends ERROR 5 and closes, for the timeout sweeper. */
  timeout(reason: string): void {
    this.#fail(ErrorCode.TIMEOUT, `timeout: ${reason}`);
  }

  #protocolError(reason: string): void {
    this.#ctx.stats.protocolErrors++;
    this.#fail(ErrorCode.PROTOCOL_VIOLATION, `protocol violation: ${reason}`);
  }

  /** Sends ERROR and closes once it is out (or after a short grace). */
  #fail(code: number, reason: string): Promise<void> {
    if (this.#state === State.CLOSED) return Promise.resolve();
    const level = code === ErrorCode.SHUTTING_DOWN || code === ErrorCode.SESSION_TAKEN_OVER
      ? "debug"
      : "warn";
    this.#ctx.log.log(level, "closing connection", {
      conn: this.id,
      remote: this.remote,
      client_id: this.clientId,
      code,
      reason,
    });
    this.#send(encodeError(code, reason));
    this.#state = State.CLOSED;
    this.#closing = within(this.#flushing, ERROR_FLUSH_MS).then(() => this.#closeSocket());
    return this.#closing;
  }

  #closeSocket(): void {
    this.#state = State.CLOSED;
    closeQuietly(this.#conn);
  }

  /**
   * Ends the service task. After the peer's end of input, what it sent is still owed its acks:
   * wait (bounded) for the writer to settle them and for the replies to go out. After an ERROR,
   * wait for the ERROR to go out.
   */
  async #end(eof: boolean): Promise<void> {
    if (eof && this.#state !== State.CLOSED) {
      if (this.#unacked > 0) {
        const settled = new Promise<void>((r) => this.#allSettled = r);
        await within(settled, this.#ctx.config.SHUTDOWN_TIMEOUT_MS);
        this.#allSettled = null;
      }
      await within(this.#flushing, ERROR_FLUSH_MS);
    }
    if (this.#closing !== null) await this.#closing;
    if (this.#session !== null && this.#session.owner === this) this.#session.owner = null;
    this.#closeSocket();
    this.#ctx.closed(this);
  }

  #reserve(n: number): void {
    const need = this.#outLen + n;
    if (need <= this.#out.length) return;
    const grown = new Uint8Array(
      Math.max(need, Math.min(this.#out.length * 2, OUTBOX_GROWTH_LIMIT)),
    );
    grown.set(this.#out.subarray(0, this.#outLen));
    this.#out = grown;
  }

  #send(frame: Uint8Array): void {
    this.#reserve(frame.length);
    this.#out.set(frame, this.#outLen);
    this.#outLen += frame.length;
    this.#lastAckAt = -1;
    this.#kick();
  }

  #kick(): void {
    if (this.#flushing === null) this.#flushing = this.#flushLoop();
  }

  async #flushLoop(): Promise<void> {
    try {
      while (this.#outLen > 0) {
        const bytes = this.#out;
        const length = this.#outLen;
        this.#out = this.#spare;
        this.#outLen = 0;
        this.#lastAckAt = -1;
        this.#inFlight = length;
        await writeAll(this.#conn, bytes.subarray(0, length));
        this.#inFlight = 0;
        this.#spare = bytes;
      }
    } catch (e) {
      if (this.#state !== State.CLOSED) {
        this.#ctx.log.debug("connection write failed", {
          conn: this.id,
          error: (e as Error).message,
        });
      }
      this.#outLen = 0;
      this.#closeSocket();
    } finally {
      this.#inFlight = 0;
      this.#flushing = null;
    }
  }
}

function unknownType(type: number): string {
  return `unknown frame type 0x${type.toString(16).padStart(2, "0")}`;
}

const ACCEPTED = 0;
const REFUSED = 1;
const BROKEN = 2;
