/**
 * The writer task: the one consumer of the queue. It formats the queued records into one buffer
 * per batch, hands the batch to the store (`../store/store.ts`), and only then releases the acks
 * for that batch, one cumulative ACK per connection per batch. When the store keeps failing it
 * retries for a bounded time, then refuses the batch's records with NACK 4.
 *
 * A batch is stored when it holds MSG_PER_WRITE records, when it reaches {@linkcode
 * MAX_BATCH_BYTES}, when FLUSH_INTERVAL_MS has passed since its first record, or, with
 * FLUSH_INTERVAL_MS=0, as soon as the queue runs dry (group commit: while one batch is being
 * stored the next gathers).
 *
 * One batch is with the store at a time, unless the store says it takes more (`Store.pipeline`,
 * a JetStream stream, whose append is a network round trip): then the next batch goes as soon
 * as it is gathered, up to that many, and each is settled (acked or refused) in batch order.
 *
 * (Over 400 lines: batching, acks, refusals and the retry window around the store all turn on the
 * batch in flight.)
 *
 * @module
 */

import type { AckMode } from "../config.ts";
import { delay } from "../io/within.ts";
import type { Logger } from "../log.ts";
import { FrameType, NackCode, readU32 } from "../protocol/frames.ts";
import { type Batch, type BatchRun, PartialAppendError, type Store } from "../store/store.ts";
import type { Channel } from "./channel.ts";
import { type Entry, RECORD_WITH_CLIENT, type RecordSource } from "./entry.ts";
import type { BufferPool } from "./buffer_pool.ts";
import { LineBuffer, Stopped } from "./line.ts";
import { BATCH_SIZE_BOUNDS, BucketHistogram } from "./metrics.ts";

/** A batch is stored once its lines reach this many bytes, whatever MSG_PER_WRITE says. */
export const MAX_BATCH_BYTES = 4 * 1024 * 1024;
const INITIAL_BATCH_BYTES = 256 * 1024;
/** What a failed append kept, from a store that keeps a batch whole or not at all. */
const NOTHING_KEPT: ReadonlySet<BatchRun> = new Set();
/** Once storage has failed past the retry time, a write failure is logged at most this often. */
const DOWN_LOG_MS = 10_000;

/** Counters the writer keeps. */
export interface WriterStats {
  /** Records stored. */
  records: number;
  /** Batches stored. */
  batches: number;
  /** Bytes stored. */
  bytes: number;
  /** Records refused after storage kept failing. */
  failedRecords: number;
  /** Records acked by the writer (ACK_MODE written or durable). */
  acked: number;
  /** Records per batch stored. */
  batchSize: BucketHistogram;
}

/** Options of {@linkcode Writer}. */
export interface WriterOptions {
  ackMode: AckMode;
  msgPerWrite: number;
  flushIntervalMs: number;
  /** Rotate the store before a batch would take it past this many bytes; 0 = never. */
  maxFileBytes: number;
  /** How long a failing batch is retried before it is refused with NACK 4 (default 5000 ms). */
  writeRetryMs?: number;
  /**
   * Where queue entries' buffers go back once the writer is done with them: when the batch
   * holding an entry's last record is settled (acked or refused). Absent: none goes back.
   */
  pool?: BufferPool;
  log: Logger;
}

const NO_SOURCE: RecordSource = {
  clientId: 0,
  session: 0n,
  sessionKey: "",
  batchSeq: -1,
  batchLastId: 0,
  batchRecords: 0,
  written() {},
  refuse() {},
};
const NO_ENTRY: Entry = { source: NO_SOURCE, data: new Uint8Array(0), count: 0, bytes: 0 };

/** A run of the current batch, with where its records sit in their queue entry. */
class Run implements BatchRun {
  // A spare run points at nothing, so it keeps no queue entry (up to a read's worth) alive.
  source: RecordSource = NO_SOURCE;
  entry: Entry = NO_ENTRY;
  /** Its records are the frames `entry.data[from, to)` (refused frames among them skipped). */
  from = 0;
  to = 0;
  lineStart = 0;
  lineEnd = 0;
  firstId = 0;
  lastId = 0;
  records = 0;
}

/**
 * A batch handed to the store: its lines and runs, and what each source it touches has in it,
 * kept apart from the batch being gathered so that a store with `pipeline` > 1 can have several.
 */
class Sealed {
  out: LineBuffer;
  runs: Run[] = [];
  touched: RecordSource[] = [];
  /** Entries whose last record (or last frame) is in this batch or an earlier one. */
  finished: Entry[] = [];
  /** Per source of `touched`: the last msg_id it has in the batch, and how many records. */
  readonly lastIds: number[] = [];
  readonly counts: number[] = [];
  records = 0;
  /** The batch as handed to the store (the same object for every try). */
  handed: Batch | null = null;
  /** What the store kept, once it has answered (pipelined batches only). */
  kept: true | ReadonlySet<BatchRun> | null = null;
  /** Settles once the store has answered (pipelined batches only). */
  answered: Promise<void> | null = null;

  constructor(out: LineBuffer) {
    this.out = out;
  }

  get batch(): Batch {
    return {
      bytes: this.out.bytes.subarray(0, this.out.length),
      records: this.records,
      runs: this.runs,
    };
  }
}

/**
 * Drains a {@linkcode Channel} of {@linkcode Entry} into a {@linkcode Store}.
 *
 * @example
 * ```ts
 * import { Writer } from "./writer.ts";
 * import { Channel } from "./channel.ts";
 * import type { Entry } from "./entry.ts";
 * import { FileStore } from "../store/file_store.ts";
 * import { Logger } from "../log.ts";
 * const log = new Logger("info");
 * const queue = new Channel<Entry>({ maxRecords: 65536, maxBytes: 1 << 26 });
 * const store = await FileStore.open("/tmp/messages.log", { durable: false, log });
 * const writer = new Writer(queue, store, {
 *   ackMode: "written",
 *   msgPerWrite: 4096,
 *   flushIntervalMs: 0,
 *   maxFileBytes: 0,
 *   log,
 * });
 * const done = writer.run(); // resolves once the queue is closed and drained
 * queue.close();
 * await done;
 * await store.close();
 * ```
 */
export class Writer {
  readonly #queue: Channel<Entry>;
  readonly #store: Store;
  readonly #opts: WriterOptions;
  readonly #ackOnWrite: boolean;
  /** MAX_BATCH_BYTES, or less where the store can keep less at once. */
  readonly #maxBatchBytes: number;
  /** The batch being gathered: its lines, the sources it touches (each once), its runs. */
  #out = new LineBuffer(INITIAL_BATCH_BYTES);
  #touched: RecordSource[] = [];
  #runs: Run[] = [];
  /** Entries the batch being gathered finished: done with once it is settled. */
  #finished: Entry[] = [];
  /** Batches handed to the store and not yet settled, oldest first (pipelined stores). */
  readonly #inFlight: Sealed[] = [];
  /** Sealed batches settled, for reuse (their buffers with them). */
  readonly #spareSealed: Sealed[] = [];
  /** How many batches may be with the store at once: `Store.pipeline`, 1 by default. */
  readonly #pipeline: number;
  /** Run objects from earlier batches, for reuse. */
  readonly #spareRuns: Run[] = [];
  #reopenWanted = false;
  /** Set by `#append` when the batch is full, for whatever reason. */
  #mustFlush = false;
  /** Set when the batch was cut because the next record might not fit under FILE_MAX_BYTES. */
  #cutForFileSize = false;
  /** Set when a batch was cut short because the file is nearly at FILE_MAX_BYTES. */
  #fileFull = false;
  #storageDown = false;
  #seq = 0;
  #records = 0;
  #firstAt = 0;
  /** Counters, for logs and tests. */
  readonly stats: WriterStats = {
    records: 0,
    batches: 0,
    bytes: 0,
    failedRecords: 0,
    acked: 0,
    batchSize: new BucketHistogram(BATCH_SIZE_BOUNDS),
  };

  constructor(queue: Channel<Entry>, store: Store, options: WriterOptions) {
    this.#queue = queue;
    this.#store = store;
    this.#opts = options;
    this.#ackOnWrite = options.ackMode !== "received";
    this.#maxBatchBytes = Math.min(MAX_BATCH_BYTES, store.maxBatchBytes ?? Infinity);
    this.#pipeline = Math.max(1, store.pipeline ?? 1);
  }

  /** Runs until the queue is closed and everything in it is stored (or refused) and acked. */
  async run(): Promise<void> {
    const queue = this.#queue;
    const interval = this.#opts.flushIntervalMs;
    for (;;) {
      this.#settleAnswered();
      if (this.#reopenWanted && this.#records === 0) await this.#reopen();
      const entries = queue.takeAll();
      if (entries.length === 0) {
        if (this.#records > 0 && this.#inFlight.length >= this.#pipeline) {
          // No room for another batch with the store: the oldest must settle first.
          await this.#inFlight[0]!.answered;
          continue;
        }
        if (this.#records > 0) {
          if (interval > 0 && !queue.closed) {
            const left = this.#firstAt + interval - performance.now();
            if (left > 0) {
              await queue.wait(left);
              continue;
            }
          }
          const flushing = this.#flush();
          if (flushing !== undefined) await flushing;
          continue;
        }
        if (queue.closed && queue.drained) {
          if (this.#inFlight.length === 0) return;
          await this.#inFlight[0]!.answered;
          continue;
        }
        // Woken by more records, or by the store answering a batch in flight; one answered
        // while this loop awaited something else (a reopen) is settled first.
        if (this.#inFlight.length > 0 && this.#inFlight[0]!.kept !== null) continue;
        await queue.wait();
        continue;
      }
      for (let i = 0; i < entries.length; i++) {
        const entry = entries[i]!;
        let pos = 0;
        while (pos < entry.data.length) {
          pos = this.#append(entry, pos);
          if (this.#mustFlush) {
            const flushing = this.#flush();
            if (flushing !== undefined) await flushing;
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
    const checkSize = this.#opts.maxFileBytes > 0;
    if (this.#records === 0) this.#firstAt = performance.now();
    // Once per entry (entries never change once queued), and again if a flush that cut the
    // entry short started a new buffer.
    if (!out.isStaged(d)) out.stage(d);
    if (source.batchSeq !== this.#seq) {
      source.batchSeq = this.#seq;
      source.batchLastId = 0;
      source.batchRecords = 0;
      this.#touched.push(source);
    }
    const run = this.#spareRuns.pop() ?? new Run();
    run.source = source;
    run.entry = entry;
    run.from = pos;
    run.lineStart = out.length;
    // One call formats the entry's records up to the batch's limits, in WebAssembly.
    pos = out.writeFrames(
      source.clientId,
      pos,
      limit - this.#records,
      this.#maxBatchBytes,
      // A full file is rotated first.
      checkSize ? this.#opts.maxFileBytes - (this.#fileFull ? 0 : this.#store.size) : undefined,
    );
    const records = out.records;
    run.records = records;
    if (records > 0) {
      run.firstId = out.firstId;
      run.lastId = out.lastId;
      source.batchLastId = out.lastId;
      source.batchRecords += records;
      this.#records += records;
    }
    if (out.stopped !== Stopped.END) {
      this.#mustFlush = true;
      if (out.stopped === Stopped.FILE_ROOM) this.#cutForFileSize = true;
    }
    run.to = pos;
    run.lineEnd = out.length;
    if (pos === d.length) {
      // With no record in this batch and none with the store, every batch that held the entry's
      // records has settled: it is done with now (its last frames were refused ones).
      if (this.#records === 0 && this.#inFlight.length === 0) this.#opts.pool?.give(d);
      else this.#finished.push(entry);
    }
    if (run.records > 0) {
      this.#runs.push(run);
    } else {
      run.source = NO_SOURCE;
      run.entry = NO_ENTRY;
      this.#spareRuns.push(run);
    }
    return pos;
  }

  /**
   * Reopens the store once the batch being stored is done: after logrotate has moved the file,
   * SIGHUP makes the server continue in a new one.
   */
  reopen(): void {
    this.#reopenWanted = true;
    this.#queue.wake();
  }

  async #reopen(): Promise<void> {
    this.#reopenWanted = false;
    await this.#store.reopen();
  }

  /**
   * Stores the batch and settles its records. Returns undefined when it is all done already (the
   * store kept the batch synchronously), else a promise: the acks of a batch kept at once go out
   * without a trip through the microtask queue.
   */
  #flush(): Promise<void> | undefined {
    const store = this.#store;
    const max = this.#opts.maxFileBytes;
    if (max > 0 && store.size > 0 && (this.#fileFull || store.size + this.#out.length > max)) {
      return this.#rotateAndFlush();
    }
    const sealed = this.#seal();
    const kept = this.#keep(sealed.handed = sealed.batch);
    if (kept === true && this.#inFlight.length === 0) return this.#settle(sealed, true);
    if (this.#pipeline === 1 && kept !== true) return kept.then((k) => this.#settle(sealed, k));
    // The next batch gathers while this one is with the store; acks go out in batch order, so
    // one kept at once still waits for those before it.
    if (kept === true) {
      sealed.kept = true;
      sealed.answered = Promise.resolve();
    } else {
      sealed.answered = kept.then((k) => {
        sealed.kept = k;
        this.#queue.wake();
      });
    }
    this.#inFlight.push(sealed);
    return this.#inFlight.length < this.#pipeline ? undefined : this.#settleOldest();
  }

  async #rotateAndFlush(): Promise<void> {
    await this.#store.rotate();
    const sealed = this.#seal();
    await this.#settle(sealed, await this.#keep(sealed.handed = sealed.batch));
  }

  /** Waits for the oldest batch in flight and settles it (and any answered after it). */
  async #settleOldest(): Promise<void> {
    await this.#inFlight[0]!.answered;
    this.#settleAnswered();
  }

  /** Settles the batches in flight that the store has answered, oldest first, up to one not. */
  #settleAnswered(): void {
    const inFlight = this.#inFlight;
    while (inFlight.length > 0 && inFlight[0]!.kept !== null) {
      const sealed = inFlight.shift()!;
      this.#settle(sealed, sealed.kept!, false); // a reopen waits for the run loop
    }
  }

  /**
   * Takes the batch gathered so far out of the writer, for the store, and starts the next one:
   * what each source has in it is noted now, since the sources' batch fields serve the next.
   */
  #seal(): Sealed {
    const sealed = this.#spareSealed.pop() ?? new Sealed(this.#out);
    if (this.#pipeline > 1) {
      // The next batch gathers while this one is with the store: it needs lines of its own.
      const out = sealed.out === this.#out ? new LineBuffer(INITIAL_BATCH_BYTES) : sealed.out;
      sealed.out = this.#out;
      this.#out = out;
    }
    const runs = this.#runs;
    this.#runs = sealed.runs;
    sealed.runs = runs;
    const touched = this.#touched;
    this.#touched = sealed.touched;
    sealed.touched = touched;
    const finished = this.#finished;
    this.#finished = sealed.finished;
    sealed.finished = finished;
    for (let i = 0; i < touched.length; i++) {
      sealed.lastIds[i] = touched[i]!.batchLastId;
      sealed.counts[i] = touched[i]!.batchRecords;
    }
    sealed.records = this.#records;
    sealed.kept = null;
    sealed.answered = null;
    this.#records = 0;
    this.#fileFull = this.#cutForFileSize;
    this.#cutForFileSize = false;
    this.#mustFlush = false;
    this.#seq++;
    return sealed;
  }

  /**
   * Acks a sealed batch's records (or refuses those the store did not keep) and keeps its
   * buffers for reuse; returns a promise only when a reopen is due and `reopen` allows it.
   */
  #settle(
    sealed: Sealed,
    kept: true | ReadonlySet<BatchRun>,
    reopen = true,
  ): Promise<void> | undefined {
    const out = sealed.out;
    const touched = sealed.touched;
    if (kept === true) {
      this.stats.records += sealed.records;
      this.stats.batches++;
      this.stats.bytes += out.length;
      this.stats.batchSize.observe(sealed.records);
      for (let i = 0; i < touched.length; i++) {
        const count = sealed.counts[i]!;
        if (count > 0) touched[i]!.written(sealed.lastIds[i]!, count);
      }
      if (this.#ackOnWrite) this.stats.acked += sealed.records;
    } else {
      this.#store.abandon?.(sealed.handed!);
      this.#refuseBatch(sealed, kept);
    }
    sealed.handed = null;
    touched.length = 0;
    sealed.lastIds.length = 0;
    sealed.counts.length = 0;
    for (const run of sealed.runs) {
      run.source = NO_SOURCE;
      run.entry = NO_ENTRY;
      this.#spareRuns.push(run);
    }
    sealed.runs.length = 0;
    // Batches settle in order, so every batch holding records of these entries has settled:
    // nothing reads their bytes any more (a refusal above was the last to).
    const pool = this.#opts.pool;
    if (pool !== undefined) {
      for (let i = 0; i < sealed.finished.length; i++) pool.give(sealed.finished[i]!.data);
      // Entries the batch being gathered finished without a record of their own in it.
      if (this.#records === 0 && this.#inFlight.length === 0) {
        for (let i = 0; i < this.#finished.length; i++) pool.give(this.#finished[i]!.data);
        this.#finished.length = 0;
      }
    }
    sealed.finished.length = 0;
    out.clear();
    out.shrinkTo(2 * MAX_BATCH_BYTES);
    this.#spareSealed.push(sealed);
    return reopen && this.#reopenWanted && this.#records === 0 ? this.#reopen() : undefined;
  }

  /**
   * Hands the batch to the store, retrying with backoff until the retry time runs out. Returns
   * true when the whole batch is stored (synchronously, when the store kept it at once), else a
   * promise of the same, or of the runs the store kept all the same (none, for a store that
   * keeps a batch whole or not at all).
   */
  #keep(batch: Batch): true | Promise<true | ReadonlySet<BatchRun>> {
    // Once storage has failed past the retry time, later batches get one try each until one
    // is stored, so refusals do not queue up behind a full retry window apiece.
    const retryMs = this.#storageDown ? 0 : this.#opts.writeRetryMs ?? 5000;
    const deadline = performance.now() + retryMs;
    const first = this.#tryAppend(batch);
    if (first === undefined) {
      this.#stored(1);
      return true;
    }
    return this.#keepRetrying(batch, first, deadline);
  }

  /** One append; a store that throws instead of rejecting is taken as rejecting. */
  #tryAppend(batch: Batch): Promise<void> | undefined {
    try {
      return this.#store.append(batch);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  #stored(attempt: number): void {
    if (attempt > 1 || this.#storageDown) this.#opts.log.warn("storage recovered", { attempt });
    this.#storageDown = false;
  }

  /** `#keep` once the first attempt has not kept the batch at once. */
  async #keepRetrying(
    batch: Batch,
    first: Promise<void>,
    deadline: number,
  ): Promise<true | ReadonlySet<BatchRun>> {
    const log = this.#opts.log;
    let wait = 10;
    let pending: Promise<void> | undefined = first;
    for (let attempt = 1;; attempt++) {
      try {
        await pending;
        this.#stored(attempt);
        return true;
      } catch (e) {
        const fields = {
          store: this.#store.name,
          error: (e as Error).message,
          attempt,
          offset: this.#store.size,
          bytes: batch.bytes.length,
        };
        if (this.#storageDown) {
          log.throttled("write failed", DOWN_LOG_MS, "error", "write failed", fields);
        } else log.error("write failed", fields);
        if (performance.now() + wait > deadline) {
          this.#storageDown = true;
          return e instanceof PartialAppendError ? e.stored : NOTHING_KEPT;
        }
        await delay(wait);
        wait = Math.min(wait * 2, 1000);
        pending = this.#tryAppend(batch);
      }
    }
  }

  /**
   * The store kept only `kept` of the batch (usually nothing): refuses every other record with
   * NACK 4, and reports the kept ones written. A source's runs in one batch are kept together.
   */
  #refuseBatch(sealed: Sealed, kept: ReadonlySet<BatchRun>): void {
    const log = this.#opts.log;
    let refused = 0;
    let stored = 0;
    const keptSources = new Set<RecordSource>();
    for (const run of kept) keptSources.add(run.source);
    for (const run of sealed.runs) {
      if (keptSources.has(run.source)) stored += run.records;
      else refused += run.records;
    }
    log.error("storage keeps failing: refusing the batch with NACK 4", {
      records: refused,
      ...(stored > 0 ? { kept_all_the_same: stored } : {}),
    });
    this.stats.failedRecords += refused;
    this.stats.records += stored;
    if (this.#ackOnWrite) this.stats.acked += stored;
    if (!this.#ackOnWrite) {
      log.error("ACK_MODE=received: these records were acked already and are lost", {
        records: refused,
      });
    }
    for (let i = 0; i < sealed.touched.length; i++) {
      const source = sealed.touched[i]!;
      const count = sealed.counts[i]!;
      if (count > 0 && keptSources.has(source)) source.written(sealed.lastIds[i]!, count);
    }
    for (const run of sealed.runs) {
      if (keptSources.has(run.source)) continue;
      const d = run.entry.data;
      for (let pos = run.from; pos < run.to; pos += 4 + readU32(d, pos)) {
        const type = d[pos + 4];
        if (type === FrameType.MSG) {
          run.source.refuse(readU32(d, pos + 5), NackCode.STORAGE_ERROR, "storage error");
        } else if (type === RECORD_WITH_CLIENT) {
          run.source.refuse(readU32(d, pos + 9), NackCode.STORAGE_ERROR, "storage error");
        }
      }
    }
  }
}
