/**
 * The service task for the legacy protocol of the original C++ message server, served on
 * LEGACY_PORT so existing clients can switch servers untouched. No handshake and no auth: each
 * message is one fixed 1,160-byte frame, `u32 client_id | u32 msg_id | name[128] | message[1024]`
 * (big-endian ids; name and message are text up to the first NUL), answered by the three bytes
 * `ack` once its record is done as ACK_MODE says, one per frame, in order.
 *
 * Records go through the same queue and writer as native messages, as
 * {@linkcode RECORD_WITH_CLIENT} records since each frame names its own client.
 *
 * @module
 */

import { closeQuietly } from "../io/close_quietly.ts";
import { within } from "../io/within.ts";
import { readU32, writeU32 } from "../protocol/frames.ts";
import { nameProblem } from "../protocol/name.ts";
import { type Entry, RECORD_WITH_CLIENT, type RecordSource } from "./entry.ts";
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
import type { Transport } from "./tls_front.ts";

/** Bytes in one legacy frame. */
export const LEGACY_FRAME_BYTES = 1160;
/** Bytes of the name field. */
export const LEGACY_NAME_BYTES = 128;
/** Bytes of the message field. */
export const LEGACY_MESSAGE_BYTES = 1024;
/** Written in place of a name that cannot be a field (empty, whitespace, control characters). */
export const LEGACY_NAME_FALLBACK = "-";

const FRAMES_PER_READ = 16;
// An internal record: length, type, client_id, msg_id, name_len, name, payload.
const RECORD_OVERHEAD = 4 + 1 + 4 + 4 + 1;
const ACK = new TextEncoder().encode("ack");
const DASH = 0x2d;

/** Length of the text at `d[start, start + max)` up to its first NUL. */
function textLength(d: Uint8Array, start: number, max: number): number {
  for (let i = 0; i < max; i++) if (d[start + i] === 0) return i;
  return max;
}

/**
 * One legacy client connection.
 *
 * @example
 * ```ts
 * declare const conn: Deno.Conn;
 * declare const context: import("./served.ts").ServerContext;
 * const connection = new LegacyConnection(conn, context, 1);
 * await connection.serve();
 * ```
 */
export class LegacyConnection implements RecordSource, Served {
  /** Unused: every legacy record carries its own client_id. */
  readonly clientId = 0;
  /** Legacy records belong to no session. */
  readonly session = 0n;
  readonly sessionKey = "";
  batchSeq = -1;
  batchLastId = 0;
  batchRecords = 0;
  readonly openedAt = performance.now();
  lastActivity = this.openedAt;
  readonly awaitingHello = false;
  /** True while it waits for room in the queue: the idle timeout does not run. */
  waitingOnServer = false;
  readonly id: number;
  readonly remote: string;

  readonly #conn: Transport;
  readonly #ctx: ServerContext;
  readonly #ackOnReceipt: boolean;
  readonly #buf = new Uint8Array(LEGACY_FRAME_BYTES * FRAMES_PER_READ);
  /** The acks owed; they can pass OUTBOX_HIGH_WATER, as the writer does not wait for reads to stop. */
  readonly #outbox: Outbox;
  #end = 0;
  #closed = false;
  /** Records queued but not yet stored or refused by the writer. */
  readonly #unsettled = new Unsettled();
  /** Resolved when the read loop has ended (the peer closed, or the socket did). */
  readonly #readDone = Promise.withResolvers<void>();

  constructor(conn: Transport, ctx: ServerContext, id: number) {
    this.#conn = conn;
    this.#ctx = ctx;
    this.id = id;
    this.remote = describeRemote(conn.remoteAddr);
    this.#outbox = new Outbox(conn, { onError: () => this.#close() });
    this.#ackOnReceipt = ctx.config.ACK_MODE === "received";
  }

  /** Ack bytes not yet taken by the socket. */
  get pendingReplyBytes(): number {
    return this.#outbox.pending;
  }

  /** True once the connection is closed or closing. */
  get isClosed(): boolean {
    return this.#closed;
  }

  /** Reads frames until the peer leaves or the server ends the connection. */
  async serve(): Promise<void> {
    const buf = this.#buf;
    try {
      while (!this.#closed) {
        const outbox = this.#outbox;
        if (outbox.buffered > OUTBOX_HIGH_WATER && outbox.flushing !== null) {
          await outbox.flushing;
        }
        const n = await this.#conn.read(buf.subarray(this.#end));
        if (n === null) {
          await this.#awaitAcks();
          break;
        }
        if (this.#ctx.stopping) continue;
        this.#end += n;
        const frames = Math.floor(this.#end / LEGACY_FRAME_BYTES);
        if (frames === 0) continue;
        this.lastActivity = performance.now(); // idleness counts whole frames
        const used = frames * LEGACY_FRAME_BYTES;
        const data = this.#records(frames);
        buf.copyWithin(0, used, this.#end);
        this.#end -= used;
        await this.#queue(data, frames);
      }
    } catch (e) {
      if (!this.#closed) {
        this.#ctx.log.debug("legacy connection read failed", {
          conn: this.id,
          error: (e as Error).message,
        });
      }
    } finally {
      this.#readDone.resolve();
      this.#close();
      this.#ctx.closed(this);
    }
  }

  /** Turns `frames` whole frames at the start of the buffer into queue records. */
  #records(frames: number): Uint8Array {
    const buf = this.#buf;
    const out = new Uint8Array(
      frames * (RECORD_OVERHEAD + LEGACY_NAME_BYTES + LEGACY_MESSAGE_BYTES),
    );
    let p = 0;
    for (let f = 0; f < frames; f++) {
      const at = f * LEGACY_FRAME_BYTES;
      const nameStart = at + 8;
      let nameLength = textLength(buf, nameStart, LEGACY_NAME_BYTES);
      const messageStart = nameStart + LEGACY_NAME_BYTES;
      const messageLength = textLength(buf, messageStart, LEGACY_MESSAGE_BYTES);
      const problem = nameProblem(buf, nameStart, nameStart + nameLength);
      if (problem !== "") {
        if (this.#ctx.log.enabled("debug")) {
          this.#ctx.log.debug("legacy name replaced by '-'", {
            conn: this.id,
            msg_id: readU32(buf, at + 4),
            reason: problem,
          });
        }
        nameLength = 0;
      }
      const length = 1 + 4 + 4 + 1 + Math.max(nameLength, 1) + messageLength;
      writeU32(out, p, length);
      out[p + 4] = RECORD_WITH_CLIENT;
      out.set(buf.subarray(at, at + 8), p + 5); // client_id and msg_id, as sent
      if (nameLength === 0) {
        out[p + 13] = 1;
        out[p + 14] = DASH;
      } else {
        out[p + 13] = nameLength;
        out.set(buf.subarray(nameStart, nameStart + nameLength), p + 14);
      }
      const payloadAt = p + 14 + Math.max(nameLength, 1);
      out.set(buf.subarray(messageStart, messageStart + messageLength), payloadAt);
      p += 4 + length;
    }
    this.#ctx.stats.received += frames;
    // A copy of just the records: the queue counts `data.length` bytes, and a view would hold
    // the whole worst-case buffer (up to 30 times more for short messages) behind that count.
    return out.slice(0, p);
  }

  /** As `Connection`'s, async on purpose: see there. */
  async #queue(data: Uint8Array, count: number): Promise<void> {
    const entry: Entry = { source: this, data, count, bytes: data.length };
    this.#unsettled.add(count);
    const queued = enqueue(this.#ctx.queue, entry, this);
    // No await when there was room: an ack on receipt leaves before the writer runs.
    if (queued !== true && !await queued) {
      this.#unsettled.settle(count); // shutting down: not accepted, so never acked
      return;
    }
    if (this.#ackOnReceipt) {
      this.#ctx.stats.ackedOnReceipt += count;
      this.#ack(count);
    }
  }

  written(_msgId: number, records: number): void {
    this.#unsettled.settle(records);
    if (!this.#ackOnReceipt) this.#ack(records);
  }

  #ack(records: number): void {
    if (!this.#closed) this.#outbox.repeat(ACK, records);
  }

  /** After the peer's end of input, waits (bounded) until what it sent is acked and sent. */
  async #awaitAcks(): Promise<void> {
    const deadline = performance.now() + this.#ctx.config.SHUTDOWN_TIMEOUT_MS;
    await this.#unsettled.wait(this.#ctx.config.SHUTDOWN_TIMEOUT_MS);
    await within(this.#outbox.flushing, Math.max(deadline - performance.now(), 0));
  }

  /** The legacy protocol has no refusal: a record that cannot be written ends the connection. */
  refuse(msgId: number, code: number, reason: string): void {
    this.#unsettled.settle(1);
    if (this.#closed) return;
    this.#ctx.log.warn("closing legacy connection: a record was not written", {
      conn: this.id,
      msg_id: msgId,
      code,
      reason,
    });
    this.#close();
  }

  /** Shutdown: closes once the acks already owed are out (there is no goodbye frame). */
  async finish(): Promise<void> {
    if (await within(this.#outbox.flushing, ERROR_FLUSH_MS) && !this.#closed) {
      // Half-close and read on until the peer closes too, so that closing with its unread input
      // does not reset the connection under the acks it has not read yet (see LINGER_MS).
      try {
        await this.#conn.closeWrite();
        await within(this.#readDone.promise, LINGER_MS);
      } catch {
        // the peer is gone already
      }
    }
    this.#close();
  }

  abort(): void {
    this.#close();
  }

  timeout(reason: string): void {
    this.#ctx.log.warn("closing legacy connection", { conn: this.id, remote: this.remote, reason });
    this.#close();
  }

  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#outbox.discard();
    closeQuietly(this.#conn);
  }
}
