/**
 * The writer task: the one consumer of the queue. It formats the queued records into one buffer
 * per batch, writes the batch to the file (syncing it in `durable` mode), and only then releases
 * the acks for that batch, one cumulative ACK per connection per batch.
 *
 * A batch is written when it holds MSG_PER_WRITE records, when it reaches {@linkcode
 * MAX_BATCH_BYTES}, when FLUSH_INTERVAL_MS has passed since its first record, or, with
 * FLUSH_INTERVAL_MS=0, as soon as the queue runs dry (group commit: while one write is under way
 * the next batch gathers).
 *
 * @module
 */

import type { AckMode } from "../config.ts";
import type { Logger } from "../log.ts";
import { FrameType, NackCode } from "../protocol/frames.ts";
import type { Channel } from "./channel.ts";
import { writeAll } from "./data_file.ts";
import { LineBuffer } from "./line.ts";

/** Where queued records come from and where their outcome goes: a connection. */
export interface RecordSource {
  /** The client_id written at the start of each of its lines. */
  readonly clientId: number;
  /** Writer bookkeeping: the batch this source was last seen in. */
  batchSeq: number;
  /** Writer bookkeeping: the highest msg_id of this source in the current batch. */
  batchLastId: number;
  /** Every record of this source up to `msgId` is done; send the cumulative ACK. */
  acknowledge(msgId: number): void;
  /** This record was not written. */
  refuse(msgId: number, code: number, reason: string): void;
}

/**
 * One queue item: the MSG frames one read of one connection produced, copied out of the read
 * buffer as they came off the wire. A frame whose type byte is 0 was refused and is skipped.
 */
export interface Entry {
  readonly source: RecordSource;
  readonly data: Uint8Array;
  /** Records (accepted MSG frames) in `data`. */
  readonly count: number;
  /** `data.length`, for the channel's byte bound. */
  readonly bytes: number;
}

/** A batch is written once its lines reach this many bytes, whatever MSG_PER_WRITE says. */
export const MAX_BATCH_BYTES = 4 * 1024 * 1024;
const INITIAL_BATCH_BYTES = 256 * 1024;

/** Counters the writer keeps. */
export interface WriterStats {
  /** Records written to the file. */
  records: number;
  /** Batches written. */
  batches: number;
  /** Bytes written. */
  bytes: number;
  /** Records refused after storage kept failing. */
  failedRecords: number;
}

/** Options of {@linkcode Writer}. */
export interface WriterOptions {
  ackMode: AckMode;
  msgPerWrite: number;
  flushIntervalMs: number;
  /** How long a failing write is retried before the batch is refused with NACK 4. */
  writeRetryMs?: number;
  log: Logger;
}

function u32(d: Uint8Array, p: number): number {
  return ((d[p]! << 24) | (d[p + 1]! << 16) | (d[p + 2]! << 8) | d[p + 3]!) >>> 0;
}

/**
 * Drains a {@linkcode Channel} of {@linkcode Entry} into a file.
 *
 * @example
 * ```ts
 * const writer = new Writer(queue, file, size, { ackMode: "written", msgPerWrite: 4096,
 *   flushIntervalMs: 0, log });
 * const done = writer.run(); // resolves once the queue is closed and drained
 * ```
 */
export class Writer {
  readonly #queue: Channel<Entry>;
  readonly #file: Deno.FsFile;
  readonly #opts: WriterOptions;
  readonly #ackOnWrite: boolean;
  readonly #out = new LineBuffer(INITIAL_BATCH_BYTES);
  readonly #touched: RecordSource[] = [];
  // The parts of entries in the current batch, kept to refuse them if storage fails.
  readonly #segEntries: Entry[] = [];
  readonly #segStarts: number[] = [];
  readonly #segEnds: number[] = [];
  #offset: number;
  #seq = 0;
  #batchCount = 0;
  #firstAt = 0;
  /** Counters, for logs and tests. */
  readonly stats: WriterStats = { records: 0, batches: 0, bytes: 0, failedRecords: 0 };

  constructor(queue: Channel<Entry>, file: Deno.FsFile, offset: number, options: WriterOptions) {
    this.#queue = queue;
    this.#file = file;
    this.#offset = offset;
    this.#opts = options;
    this.#ackOnWrite = options.ackMode !== "received";
  }

  /** Bytes in the file as far as the writer knows. */
  get offset(): number {
    return this.#offset;
  }

  /** Runs until the queue is closed and everything in it is written and acked. */
  async run(): Promise<void> {
    const queue = this.#queue;
    const interval = this.#opts.flushIntervalMs;
    for (;;) {
      const entries = queue.takeAll();
      if (entries.length === 0) {
        if (this.#batchCount > 0) {
          if (interval > 0 && !queue.closed) {
            const left = this.#firstAt + interval - performance.now();
            if (left > 0) {
              await queue.wait(left);
              continue;
            }
          }
          await this.#flush();
          continue;
        }
        if (queue.closed && queue.drained) return;
        await queue.wait();
        continue;
      }
      for (let i = 0; i < entries.length; i++) {
        const entry = entries[i]!;
        let pos = 0;
        while (pos < entry.data.length) {
          pos = this.#append(entry, pos);
          if (this.#batchCount >= this.#opts.msgPerWrite || this.#out.length >= MAX_BATCH_BYTES) {
            await this.#flush();
          }
        }
      }
    }
  }

  /** Formats records of `entry` from `pos` until it ends or the batch is full; returns where it stopped. */
  #append(entry: Entry, pos: number): number {
    const d = entry.data;
    const source = entry.source;
    const out = this.#out;
    const limit = this.#opts.msgPerWrite;
    const start = pos;
    if (this.#batchCount === 0) this.#firstAt = performance.now();
    if (source.batchSeq !== this.#seq) {
      source.batchSeq = this.#seq;
      source.batchLastId = 0;
      this.#touched.push(source);
    }
    while (pos < d.length) {
      const end = pos + 4 + u32(d, pos);
      if (d[pos + 4] === FrameType.MSG) {
        const msgId = u32(d, pos + 5);
        const nameStart = pos + 10;
        const nameEnd = nameStart + d[pos + 9]!;
        out.writeRecord(source.clientId, msgId, d, nameStart, nameEnd, d, nameEnd, end);
        source.batchLastId = msgId;
        this.#batchCount++;
      }
      pos = end;
      if (this.#batchCount >= limit || out.length >= MAX_BATCH_BYTES) break;
    }
    this.#segEntries.push(entry);
    this.#segStarts.push(start);
    this.#segEnds.push(pos);
    return pos;
  }

  async #flush(): Promise<void> {
    const out = this.#out;
    const start = this.#offset;
    const ok = await this.#writeBatch(out.bytes.subarray(0, out.length), start);
    const touched = this.#touched;
    if (ok) {
      this.#offset = start + out.length;
      this.stats.records += this.#batchCount;
      this.stats.batches++;
      this.stats.bytes += out.length;
      if (this.#ackOnWrite) {
        for (let i = 0; i < touched.length; i++) {
          const source = touched[i]!;
          if (source.batchLastId > 0) source.acknowledge(source.batchLastId);
        }
      }
    } else {
      this.#refuseBatch();
    }
    touched.length = 0;
    this.#segEntries.length = 0;
    this.#segStarts.length = 0;
    this.#segEnds.length = 0;
    out.clear();
    out.shrinkTo(2 * MAX_BATCH_BYTES);
    this.#batchCount = 0;
    this.#seq++;
  }

  /**
   * Writes (and in durable mode syncs) one batch at `start`. On failure the file is cut back to
   * `start`, so no partial line stays, and the write is retried with backoff until the retry
   * time runs out. Returns whether the batch is in the file.
   */
  async #writeBatch(bytes: Uint8Array, start: number): Promise<boolean> {
    const retryMs = this.#opts.writeRetryMs ?? 5000;
    const deadline = performance.now() + retryMs;
    let delay = 10;
    for (let attempt = 1;; attempt++) {
      try {
        await writeAll(this.#file, bytes);
        if (this.#opts.ackMode === "durable") await this.#file.syncData();
        if (attempt > 1) this.#opts.log.warn("storage recovered", { attempt });
        return true;
      } catch (e) {
        this.#opts.log.error("write failed", {
          error: (e as Error).message,
          attempt,
          offset: start,
          bytes: bytes.length,
        });
        try {
          await this.#file.truncate(start);
        } catch (t) {
          this.#opts.log.error("cannot cut the file back after a failed write", {
            error: (t as Error).message,
            offset: start,
          });
        }
        if (performance.now() + delay > deadline) return false;
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 1000);
      }
    }
  }

  #refuseBatch(): void {
    const log = this.#opts.log;
    log.error("storage keeps failing: refusing the batch with NACK 4", {
      records: this.#batchCount,
    });
    this.stats.failedRecords += this.#batchCount;
    if (!this.#ackOnWrite) {
      log.error("ACK_MODE=received: these records were acked already and are lost", {
        records: this.#batchCount,
      });
      return;
    }
    for (let s = 0; s < this.#segEntries.length; s++) {
      const entry = this.#segEntries[s]!;
      const d = entry.data;
      for (let pos = this.#segStarts[s]!; pos < this.#segEnds[s]!; pos += 4 + u32(d, pos)) {
        if (d[pos + 4] === FrameType.MSG) {
          entry.source.refuse(u32(d, pos + 5), NackCode.STORAGE_ERROR, "storage error");
        }
      }
    }
  }
}
