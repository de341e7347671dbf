/**
 * The service task: one per accepted connection. It reads into the decoder's reused buffer,
 * checks each frame, copies the accepted MSG frames of one read into one queue entry, and sends
 * what the peer is owed (WELCOME, ACK, NACK, ERROR) through an outbox that keeps one socket write
 * in flight at a time, so frames never interleave and many small replies become one write.
 *
 * (Over 400 lines: one state machine, from HELLO through the per-frame checks to the goodbye;
 * what it shares with the legacy connection is in `served.ts`, its codec in `src/protocol/`.)
 *
 * @module
 */

import { closeQuietly } from "../io/close_quietly.ts";
import { within } from "../io/within.ts";
import { Decoded, FrameDecoder } from "../protocol/decoder.ts";
import {
  encodeError,
  encodeWelcome,
  ErrorCode,
  FrameType,
  MSG_FIXED_BYTES,
  NackCode,
  readU32,
  SessionState,
} from "../protocol/frames.ts";
import { decodeHello } from "../protocol/hello.ts";
import { nameProblem } from "../protocol/name.ts";
import { timingSafeEqual } from "./auth.ts";
import type { Entry, RecordSource } from "./entry.ts";
import { Outbox } from "../protocol/outbox.ts";
import {
  describeRemote,
  enqueue,
  ERROR_FLUSH_MS,
  LINGER_MS,
  OUTBOX_HIGH_WATER,
  type Served,
  type ServerContext,
  Unsettled,
} from "./served.ts";
import { Session, type SessionOwner } from "./sessions.ts";
import type { Transport } from "./tls_front.ts";

const State = { AWAIT_HELLO: 0, READY: 1, CLOSED: 2 } as const;
/**
 * The outbox grows by doubling, but not past this on the way (unless one reply needs it): reading
 * stops just past OUTBOX_HIGH_WATER, so doubling to 128 KiB would only waste memory.
 */
const OUTBOX_GROWTH_LIMIT = OUTBOX_HIGH_WATER + 4 * 1024;

/**
 * One client connection and its service task.
 *
 * @example
 * ```ts
 * declare const conn: Deno.Conn;
 * declare const context: import("./served.ts").ServerContext;
 * const connection = new Connection(conn, context, 1);
 * await connection.serve(); // returns when the peer or the server ends it
 * ```
 */
export class Connection implements RecordSource, SessionOwner, Served {
  /** The client_id from HELLO (0 until then). */
  clientId = 0;
  /** The session id from HELLO (0n until then, and for session 0). */
  session = 0n;
  /** `client_id/session` once a session is greeted, else "". */
  sessionKey = "";
  batchSeq = -1;
  batchLastId = 0;
  batchRecords = 0;
  /** When this connection was accepted (ms, `performance.now()`). */
  readonly openedAt = performance.now();
  /** When the last whole frame arrived (ms, `performance.now()`). */
  lastActivity = this.openedAt;
  /** True while it waits on the server (queue room, a session resume): timeouts do not run. */
  waitingOnServer = false;
  readonly id: number;
  readonly remote: string;

  readonly #conn: Transport;
  readonly #ctx: ServerContext;
  readonly #decoder: FrameDecoder;
  /** While a push waits for room, a read buffer grown for a big frame is dead weight. */
  readonly #releaseRead = () => this.#decoder.releaseIfDrained();
  readonly #outbox: Outbox;
  #state: number = State.AWAIT_HELLO;
  #session: Session | null = null;
  readonly #ackOnReceipt: boolean;
  #closing: Promise<void> | null = null;
  /** Records queued but not yet stored or refused by the writer. */
  readonly #unsettled = new Unsettled();
  /** Set once a refusal has scheduled the end of the connection (shared store). */
  #endAfterRefusals = false;
  /** Resolved when the read loop has ended (the peer closed, or the socket did). */
  readonly #readDone = Promise.withResolvers<void>();

  constructor(conn: Transport, ctx: ServerContext, id: number) {
    this.#conn = conn;
    this.#ctx = ctx;
    this.id = id;
    this.remote = describeRemote(conn.remoteAddr);
    this.#decoder = new FrameDecoder({
      ...ctx.limits,
      checkType: (type) => this.#checkType(type),
      maxPayloadBytes: ctx.config.MAX_MESSAGE_BYTES,
    });
    this.#outbox = new Outbox(conn, {
      growthLimit: OUTBOX_GROWTH_LIMIT,
      onError: (e) => {
        if (this.#state !== State.CLOSED) {
          ctx.log.debug("connection write failed", { conn: this.id, error: e.message });
        }
        this.#closeSocket();
      },
    });
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
    return this.#outbox.pending;
  }

  /** Reads and serves frames until the peer leaves, breaks the protocol, or the server stops. */
  async serve(): Promise<void> {
    const conn = this.#conn;
    const decoder = this.#decoder;
    let eof = false;
    try {
      for (;;) {
        const n = await conn.read(decoder.readTarget());
        if (n === null) {
          eof = true;
          break;
        }
        // After the goodbye (see LINGER_MS), or once shutdown has begun, what comes is thrown away.
        if (this.#state === State.CLOSED || this.#ctx.stopping) continue;
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
      this.#readDone.resolve();
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
      const outbox = this.#outbox;
      if (outbox.buffered > OUTBOX_HIGH_WATER && outbox.flushing !== null) {
        // Before each frame, not only before each read: one read of tiny refused frames can owe
        // several times its size in NACKs. Stop decoding (and so reading) until the peer takes
        // its replies.
        if (count > 0) {
          await this.#queue(buf, regionStart, regionEnd, count);
          regionStart = -1;
          count = 0;
        }
        await outbox.flushing;
        continue;
      }
      if (this.#state === State.READY) {
        // The common case in one call: the run of MSG frames accepted as they are. The frame
        // that stops it (if whole) is decoded and checked one at a time below.
        const taken = decoder.nextMsgRun(this.#session!.lastId);
        if (taken > 0) {
          if (first) {
            this.lastActivity = performance.now();
            first = false;
          }
          this.#session!.lastId = decoder.lastMsgId;
          this.#ctx.stats.received += taken;
          if (regionStart < 0) regionStart = decoder.frameStart;
          regionEnd = decoder.frameEnd;
          count += taken;
          continue;
        }
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
            // Each refusal costs a NACK many times what the frame cost the peer: it is paid for
            // from the budget all connections share (REFUSALS_PER_SECOND), waiting when it is
            // spent, so that refusals cannot crowd out the others.
            if (!this.#ctx.refusals.take()) await this.#ctx.refusals.wait();
            continue;
          }
        } else if (type === FrameType.HELLO && this.#state === State.AWAIT_HELLO) {
          if (await this.#hello(buf, decoder.bodyStart, decoder.frameEnd)) continue;
        }
        // Otherwise #hello or #checkMsg closed the connection (#checkType let the type through).
      } else if (result === Decoded.OVERSIZED_MSG) {
        if (count > 0) {
          await this.#queue(buf, regionStart, regionEnd, count);
          regionStart = -1;
          count = 0;
        }
        this.#ctx.stats.nacked++;
        this.#nack(
          decoder.oversizedMsgId,
          NackCode.PAYLOAD_TOO_LARGE,
          `payload too large: over ${this.#ctx.config.MAX_MESSAGE_BYTES} bytes`,
        );
        if (!this.#ctx.refusals.take()) await this.#ctx.refusals.wait();
        continue;
      } else {
        this.#protocolError(decoder.error);
      }
      break; // an ERROR was sent: the connection is closing
    }
    if (count > 0) await this.#queue(buf, regionStart, regionEnd, count, true);
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

  /**
   * Puts one entry on the queue, waiting for room; in `received` mode acks it at once. Async on
   * purpose even when there is room: the writer the push woke runs (and acks) in the microtask
   * this await yields to, before the connection goes on to issue its next read. A version that
   * skipped the await measured p50 67 against 62 us (--preset latency, 5 interleaved runs, beside
   * other changes); with the await kept, 75 against 78 us. Within this machine's noise, but the
   * order (ack before read) is the one the latency timeline in docs/benchmarks.md asks for.
   */
  async #queue(
    buf: Uint8Array,
    start: number,
    end: number,
    count: number,
    last = false,
  ): Promise<void> {
    // A read buffer grown for a large frame is dropped once drained: the last region of a read
    // takes it over instead of a copy (half the memory a flood of large messages churns through).
    let data = last ? this.#decoder.handOver(start, end) : null;
    if (data === null) {
      // Copied out of the read buffer, which the next read reuses, into one the writer gives back.
      data = this.#ctx.pool.take(end - start);
      data.set(buf.subarray(start, end));
    }
    const entry: Entry = { source: this, data, count, bytes: data.buffer.byteLength };
    const session = this.#session!;
    const lastId = session.lastId;
    this.#unsettled.add(count);
    session.pending += count;
    const queued = enqueue(this.#ctx.queue, entry, this, this.#releaseRead);
    // No await when there was room: an ack on receipt leaves before the writer runs.
    if (queued !== true && !await queued) {
      this.#unsettled.settle(count); // shutting down: not accepted, so never acked
      session.refused(count);
      return;
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
    this.sessionKey = sessionId === 0n ? "" : `${clientId}/${sessionId}`;
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
      this.waitingOnServer = true; // the timeouts do not count the server's own waiting
      if (previous !== null && previous !== this) previous.takeOver();
      const lookup = () => this.#ctx.store.lastStored(clientId, sessionId);
      try {
        if (this.#ctx.store.shared === true) {
          // Other servers append to this store too: where the session stands is asked of the
          // store every time, once what this server queued for it has landed.
          resumeAt = await session.reread(lookup, this.#ctx.config.SHUTDOWN_TIMEOUT_MS);
        } else {
          // A session this process has not seen may be one the store knows (from before a
          // restart, or past the table's bound): ask it once.
          await session.recall(lookup);
          // WELCOME promises that everything up to last_msg_id is stored: wait for what the
          // session's earlier connections queued to be stored (or refused) first.
          resumeAt = await session.resume(this.#ctx.config.SHUTDOWN_TIMEOUT_MS);
        }
      } catch (e) {
        this.waitingOnServer = false;
        this.#ctx.log.error("cannot look the session up in the store", {
          conn: this.id,
          client_id: clientId,
          store: this.#ctx.store.name,
          error: (e as Error).message,
        });
        this.#fail(ErrorCode.UNAVAILABLE, "unavailable: the store cannot be reached, retry later");
        return false;
      }
      this.waitingOnServer = false;
      this.lastActivity = performance.now();
      if (this.#state === State.CLOSED || session.owner !== this) return false;
    }
    this.#session = session;
    this.#state = State.READY;
    this.#outbox.send(
      encodeWelcome(this.#ctx.config.MAX_MESSAGE_BYTES, resumeAt, {
        version: hello.version,
        sessionState: session.known ? SessionState.KNOWN : SessionState.UNKNOWN,
      }),
    );
    this.#ctx.log.debug("hello", {
      conn: this.id,
      client_id: clientId,
      session: sessionId,
      known: session.known,
      version: hello.version,
    });
    session.known = true; // greeted: from now on this process knows where it stands
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
    this.#unsettled.settle(records);
    if (!this.#ackOnReceipt) this.#ack(msgId);
  }

  #ack(msgId: number): void {
    // After an ERROR nothing more is sent; the peer learns what landed from WELCOME.last_msg_id.
    if (this.#state !== State.CLOSED) this.#outbox.ack(msgId);
  }

  /** The writer could not store this queued record. */
  refuse(msgId: number, code: number, reason: string): void {
    this.#session!.refused(1);
    this.#unsettled.settle(1);
    this.#nack(msgId, code, reason);
    if (this.#ctx.store.shared === true && this.session !== 0n && !this.#endAfterRefusals) {
      // A shared store takes nothing more of the session until it is resumed (see Store.shared):
      // end the connection once this batch's NACKs are out, so that the client resumes now.
      this.#endAfterRefusals = true;
      queueMicrotask(() =>
        this.#fail(ErrorCode.UNAVAILABLE, "unavailable: storage failed, resume the session")
      );
    }
  }

  #nack(msgId: number, code: number, reason: string): void {
    if (this.#state === State.CLOSED) return;
    this.#ctx.stats.nacks[code]!++;
    this.#outbox.nack(msgId, code, reason);
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
    this.#ctx.stats.errors[code]!++;
    this.#outbox.send(encodeError(code, reason));
    this.#state = State.CLOSED;
    this.#closing = this.#goodbye();
    return this.#closing;
  }

  /**
   * Closes the way careful servers do once the last frame is queued: wait (bounded) for it to be
   * written, half-close so the peer reads it and then the end, keep reading until the peer
   * closes too (at most LINGER_MS), then close. A peer that takes nothing is cut at once.
   */
  async #goodbye(): Promise<void> {
    if (await within(this.#outbox.flushing, ERROR_FLUSH_MS)) {
      try {
        await this.#conn.closeWrite();
        await within(this.#readDone.promise, LINGER_MS);
      } catch {
        // the peer is gone already
      }
    }
    this.#closeSocket();
  }

  #closeSocket(): void {
    this.#state = State.CLOSED;
    this.#outbox.discard();
    closeQuietly(this.#conn);
  }

  /**
   * Ends the service task. After the peer's end of input, what it sent is still owed its acks:
   * wait (bounded) for the writer to settle them and for the replies to go out. After an ERROR,
   * wait for the ERROR to go out.
   */
  async #end(eof: boolean): Promise<void> {
    if (eof && this.#state !== State.CLOSED) {
      await this.#unsettled.wait(this.#ctx.config.SHUTDOWN_TIMEOUT_MS);
      await within(this.#outbox.flushing, ERROR_FLUSH_MS);
    }
    if (this.#closing !== null) await this.#closing;
    if (this.#session !== null && this.#session.owner === this) this.#session.owner = null;
    this.#closeSocket();
    this.#ctx.closed(this);
  }
}

function unknownType(type: number): string {
  return `unknown frame type 0x${type.toString(16).padStart(2, "0")}`;
}

const ACCEPTED = 0;
const REFUSED = 1;
const BROKEN = 2;
