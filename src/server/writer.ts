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
import { FrameType, NackCode, readU32 } from "../protocol/frames.ts";
import type { Channel } from "./channel.ts";
import { writeAll } from "../io/write_all.ts";
import { type DataFile, openDataFile, syncDirectoryOf } from "./data_file.ts";
import { LineBuffer } from "./line.ts";
import { BATCH_SIZE_BOUNDS, Histogram, LATENCY_BOUNDS } from "./metrics.ts";
import { closeQuietly } from "../io/close_quietly.ts";

/** Where queued records come from and where their outcome goes: a connection. */
export interface RecordSource {
  /** The client_id written at the start of each of its lines. */
  readonly clientId: number;
  /** Writer bookkeeping: the batch this source was last seen in. */
  batchSeq: number;
  /** Writer bookkeeping: the highest msg_id of this source in the current batch. */
  batchLastId: number;
  /** Writer bookkeeping: records of this source in the current batch. */
  batchRecords: number;
  /**
   * `records` more records of this source are in the file (synced in durable mode), the last
   * with `msgId`. The source acks them unless it acked on receipt.
   */
  written(msgId: number, records: number): void;
  /** This record was not written. */
  refuse(msgId: number, code: number, reason: string): void;
}

/**
 * One queue item: the MSG frames one read of one connection produced, copied out of the read
 * buffer as they came off the wire. A frame whose type byte is 0 was refused and is skipped.
 * Sources whose records each carry their own client_id (the legacy protocol) queue
 * {@linkcode RECORD_WITH_CLIENT} frames instead.
 */
export interface Entry {
  readonly source: RecordSource;
  readonly data: Uint8Array;
  /** Records (accepted MSG frames) in `data`. */
  readonly count: number;
  /** `data.length`, for the channel's byte bound. */
  readonly bytes: number;
}

/**
 * Type byte of an internal queue record that names its client: `u32 length | 0x7e |
 * u32 client_id | u32 msg_id | u8 name_len | name | payload`. Never on the wire.
 */
export const RECORD_WITH_CLIENT = 0x7e;

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
  /** Records acked by the writer (ACK_MODE written or durable). */
  acked: number;
  /** Records per batch written. */
  batchSize: Histogram;
  /** Seconds per batch write. */
  writeSeconds: Histogram;
  /** Seconds per sync (durable mode). */
  syncSeconds: Histogram;
}

/** Options of {@linkcode Writer}. */
export interface WriterOptions {
  /** The data file's path, for rotation and reopening. */
  path: string;
  /** Rotate before a batch would take the file past this size; 0 = never. */
  maxFileBytes: number;
  ackMode: AckMode;
  msgPerWrite: number;
  flushIntervalMs: number;
  /** How long a failing write is retried before the batch is refused with NACK 4. */
  writeRetryMs?: number;
  log: Logger;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/**
 * Drains a {@linkcode Channel} of {@linkcode Entry} into a file.
 *
 * @example
 * ```ts
 * const writer = new Writer(queue, await openDataFile("messages.log"), {
 *   path: "messages.log", maxFileBytes: 0, ackMode: "written", msgPerWrite: 4096,
 *   flushIntervalMs: 0, log });
 * const done = writer.run(); // resolves once the queue is closed and drained
 * ```
 */
export class Writer {
  readonly #queue: Channel<Entry>;
  #file: Deno.FsFile;
  #reopenWanted = false;
  readonly #opts: WriterOptions;
  readonly #ackOnWrite: boolean;
  readonly #out = new LineBuffer(INITIAL_BATCH_BYTES);
  readonly #touched: RecordSource[] = [];
  // The parts of entries in the current batch, kept to refuse them if storage fails.
  readonly #segEntries: Entry[] = [];
  readonly #segStarts: number[] = [];
  readonly #segEnds: number[] = [];
  #offset: number;
  readonly #maxFileBytes: number;
  /** Set by `#append` when the batch is full, for whatever reason. */
  #mustFlush = false;
  /** Set when the batch was cut because the next record might not fit under FILE_MAX_BYTES. */
  #cutForFileSize = false;
  /** Set when a batch was cut short because the file is nearly at FILE_MAX_BYTES. */
  #fileFull = false;
  #storageDown = false;
  /** Set while the file may end in a partial batch that could not yet be cut off. */
  #tornTail = false;
  #seq = 0;
  #batchCount = 0;
  #firstAt = 0;
  /** Counters, for logs and tests. */
  readonly stats: WriterStats = {
    records: 0,
    batches: 0,
    bytes: 0,
    failedRecords: 0,
    acked: 0,
    batchSize: new Histogram(BATCH_SIZE_BOUNDS),
    writeSeconds: new Histogram(LATENCY_BOUNDS),
    syncSeconds: new Histogram(LATENCY_BOUNDS),
  };

  constructor(queue: Channel<Entry>, data: DataFile, options: WriterOptions) {
    this.#queue = queue;
    this.#file = data.file;
    this.#offset = data.size;
    this.#opts = options;
    this.#ackOnWrite = options.ackMode !== "received";
    this.#maxFileBytes = options.maxFileBytes;
  }

  /**
   * Whether a record of `frameBytes` (as queued) could take the file past FILE_MAX_BYTES if
   * added to this batch; escaping at most doubles its payload.
   */
  #wouldOverflow(frameBytes: number): boolean {
    const base = this.#fileFull ? 0 : this.#offset; // a full file is rotated before the next write
    return base + this.#out.length + 24 + 2 * frameBytes > this.#maxFileBytes;
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
      if (this.#reopenWanted && this.#batchCount === 0) await this.#reopen();
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
          if (this.#mustFlush) await this.#flush();
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
    // Once per entry (entries never change once queued), and again if a flush that cut the
    // entry short started a new buffer.
    if (!out.isStaged(d)) out.stage(d);
    if (source.batchSeq !== this.#seq) {
      source.batchSeq = this.#seq;
      source.batchLastId = 0;
      source.batchRecords = 0;
      this.#touched.push(source);
    }
    while (pos < d.length) {
      const end = pos + 4 + readU32(d, pos);
      const type = d[pos + 4];
      if (this.#maxFileBytes > 0 && out.length > 0 && this.#wouldOverflow(end - pos)) {
        this.#mustFlush = true;
        this.#cutForFileSize = true;
        break;
      }
      // A RECORD_WITH_CLIENT is a MSG frame with its client_id in front of the msg_id.
      const at = type === FrameType.MSG ? pos + 5 : type === RECORD_WITH_CLIENT ? pos + 9 : -1;
      if (at >= 0) {
        const clientId = at === pos + 5 ? source.clientId : readU32(d, pos + 5);
        const msgId = readU32(d, at);
        const nameStart = at + 5;
        const nameEnd = nameStart + d[at + 4]!;
        out.writeStaged(clientId, msgId, nameStart, nameEnd, end);
        source.batchLastId = msgId;
        source.batchRecords++;
        this.#batchCount++;
      }
      pos = end;
      if (this.#batchCount >= limit || out.length >= MAX_BATCH_BYTES) {
        this.#mustFlush = true;
        break;
      }
    }
    this.#segEntries.push(entry);
    this.#segStarts.push(start);
    this.#segEnds.push(pos);
    return pos;
  }

  /**
   * Closes and reopens the file at its path once the batch being written is done: after
   * logrotate has moved the file, SIGHUP makes the server continue in a new one.
   */
  reopen(): void {
    this.#reopenWanted = true;
    this.#queue.wake();
  }

  /** Closes the file; call after `run()` has returned. */
  close(): void {
    closeQuietly(this.#file);
  }

  async #reopen(): Promise<void> {
    this.#reopenWanted = false;
    const path = this.#opts.path;
    try {
      const data = await openDataFile(path);
      this.close();
      this.#file = data.file;
      this.#offset = data.size;
      if (this.#opts.ackMode === "durable") await syncDirectoryOf(path).catch(() => {});
      this.#opts.log.info("reopened the data file", { file: path, size: data.size });
    } catch (e) {
      this.#opts.log.error("cannot reopen the data file: still writing to the old one", {
        file: path,
        error: (e as Error).message,
      });
    }
  }

  /** Moves the full file aside as `<path>.<UTC timestamp>` and starts a new one. */
  async #rotate(): Promise<void> {
    const path = this.#opts.path;
    const stamp = new Date().toISOString().replace(/[-:]/g, "");
    let target = `${path}.${stamp}`;
    try {
      for (let n = 1; await exists(target); n++) target = `${path}.${stamp}-${n}`;
      if (this.#opts.ackMode !== "durable") await this.#file.syncData();
      await Deno.rename(path, target);
    } catch (e) {
      this.#opts.log.error("cannot rotate the data file: still writing to it", {
        file: path,
        error: (e as Error).message,
      });
      return;
    }
    let data: DataFile;
    try {
      data = await openDataFile(path);
    } catch (e) {
      this.#opts.log.error("cannot open a new data file: still writing to the rotated one", {
        file: target,
        error: (e as Error).message,
      });
      return;
    }
    this.close();
    this.#file = data.file;
    this.#offset = data.size;
    if (this.#opts.ackMode === "durable") {
      try {
        await syncDirectoryOf(path);
      } catch (e) {
        this.#opts.log.error("cannot sync the data file's directory", {
          file: path,
          error: (e as Error).message,
        });
      }
    }
    this.#opts.log.info("rotated the data file", { file: path, to: target });
  }

  async #flush(): Promise<void> {
    const out = this.#out;
    const max = this.#maxFileBytes;
    if (max > 0 && this.#offset > 0 && (this.#fileFull || this.#offset + out.length > max)) {
      await this.#rotate();
    }
    this.#fileFull = false;
    const start = this.#offset;
    const ok = await this.#writeBatch(out.bytes.subarray(0, out.length), start);
    const touched = this.#touched;
    if (ok) {
      this.#offset = start + out.length;
      this.stats.records += this.#batchCount;
      this.stats.batches++;
      this.stats.bytes += out.length;
      this.stats.batchSize.observe(this.#batchCount);
      for (let i = 0; i < touched.length; i++) {
        const source = touched[i]!;
        if (source.batchRecords > 0) source.written(source.batchLastId, source.batchRecords);
      }
      if (this.#ackOnWrite) this.stats.acked += this.#batchCount;
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
    this.#fileFull = this.#cutForFileSize;
    this.#cutForFileSize = false;
    this.#mustFlush = false;
    this.#seq++;
    if (this.#reopenWanted) await this.#reopen();
  }

  /**
   * Writes (and in durable mode syncs) one batch at `start`. On failure the file is cut back to
   * `start`, so no partial line stays, and the write is retried with backoff until the retry
   * time runs out. Returns whether the batch is in the file.
   */
  async #writeBatch(bytes: Uint8Array, start: number): Promise<boolean> {
    // Once storage has failed past the retry time, later batches get one try each until a
    // write succeeds, so refusals do not queue up behind a full retry window apiece.
    const retryMs = this.#storageDown ? 0 : this.#opts.writeRetryMs ?? 5000;
    const deadline = performance.now() + retryMs;
    let delay = 10;
    for (let attempt = 1;; attempt++) {
      // Appending after a partial line would glue the next record onto it: write only once the
      // file is known to end at `start`.
      if (this.#tornTail && !(await this.#cutBackTo(start))) {
        if (performance.now() + delay > deadline) {
          this.#storageDown = true;
          return false;
        }
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 1000);
        continue;
      }
      try {
        const t0 = performance.now();
        await writeAll(this.#file, bytes);
        const t1 = performance.now();
        this.stats.writeSeconds.observe((t1 - t0) / 1000);
        if (this.#opts.ackMode === "durable") {
          await this.#file.syncData();
          this.stats.syncSeconds.observe((performance.now() - t1) / 1000);
        }
        if (attempt > 1 || this.#storageDown) this.#opts.log.warn("storage recovered", { attempt });
        this.#storageDown = false;
        return true;
      } catch (e) {
        this.#opts.log.error("write failed", {
          error: (e as Error).message,
          attempt,
          offset: start,
          bytes: bytes.length,
        });
        this.#tornTail = true;
        await this.#cutBackTo(start);
        if (performance.now() + delay > deadline) {
          this.#storageDown = true;
          return false;
        }
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 1000);
      }
    }
  }

  /** Truncates the file to `size` and checks it took; clears `#tornTail` when it did. */
  async #cutBackTo(size: number): Promise<boolean> {
    try {
      if ((await this.#file.stat()).size !== size) await this.#file.truncate(size);
      if ((await this.#file.stat()).size !== size) throw new Error("the size did not change");
      this.#tornTail = false;
      return true;
    } catch (e) {
      this.#opts.log.error("cannot cut the file back after a failed write", {
        error: (e as Error).message,
        offset: size,
      });
      return false;
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
    }
    for (let s = 0; s < this.#segEntries.length; s++) {
      const entry = this.#segEntries[s]!;
      const d = entry.data;
      for (let pos = this.#segStarts[s]!; pos < this.#segEnds[s]!; pos += 4 + readU32(d, pos)) {
        const type = d[pos + 4];
        if (type === FrameType.MSG) {
          entry.source.refuse(readU32(d, pos + 5), NackCode.STORAGE_ERROR, "storage error");
        } else if (type === RECORD_WITH_CLIENT) {
          entry.source.refuse(readU32(d, pos + 9), NackCode.STORAGE_ERROR, "storage error");
        }
      }
    }
  }
}
