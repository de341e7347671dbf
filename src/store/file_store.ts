/**
 * The default store: one append-only data file (created with mode 0640). It keeps each batch
 * whole or not at all, cutting the file back after a failed write; it rotates by renaming the
 * file aside and starting a new one, recovering when the new one cannot be opened at once; and at
 * open it moves a torn last line, left by a crash mid-write, to `<FILE_NAME>.torn`.
 *
 * (Over 400 lines: append with rollback, sync, rotation with its retries and reopen all share the
 * open file's state; data_file.ts and journal.ts hold what stands alone.)
 *
 * @module
 */

import { closeQuietly } from "../io/close_quietly.ts";
import { writeAll, writeAllSync } from "../io/write_all.ts";
import { exists } from "../io/exists.ts";
import { openDataFile, type Opened, type OpenFile, recoverWith } from "./data_file.ts";
import type { Logger } from "../log.ts";
import { BucketHistogram, LATENCY_BOUNDS, type Metric } from "../server/metrics.ts";
import { concat } from "../io/concat.ts";
import { syncDirectoryOf } from "../io/sync_directory.ts";
import {
  BatchRecordEncoder,
  type DataFileState,
  encodeFile,
  encodeSeal,
  fingerprint,
  FINGERPRINT_BYTES,
  Journal,
  type JournalEntry,
  type Recovered,
  sessionKey,
} from "./journal.ts";

export type { OpenFile };
import type { Batch, Store, StoreStats } from "./store.ts";

/** Batches up to this size are written synchronously (see `append`). */
const SYNC_WRITE_BYTES = 64 * 1024;
/** A failure that repeats with every batch is logged at most this often. */
const REPEAT_LOG_MS = 10_000;

/** Options of {@linkcode FileStore.open}. */
export interface FileStoreOptions {
  /**
   * ACK_MODE durable: sync each batch before `append` resolves, and the directory after the
   * file is created, rotated or reopened.
   */
  durable: boolean;
  log: Logger;
  /** How files are opened; `Deno.open` unless a test injects failures. */
  openFile?: OpenFile;
  /** Sessions the journal remembers (MAX_SESSIONS); the least recently written go first. */
  maxSessions?: number;
}

/**
 * The data file as a {@linkcode Store}, with its session journal (`journal.ts`).
 *
 * @example
 * ```ts
 * import { FileStore } from "./file_store.ts";
 * import { Logger } from "../log.ts";
 * const store = await FileStore.open("/tmp/messages.log", {
 *   durable: false,
 *   log: new Logger("info"),
 * });
 * await store.append({ bytes: new TextEncoder().encode("1 1 a hi\n"), records: 1, runs: [] });
 * await store.close();
 * ```
 */
export class FileStore implements Store {
  /** The data file's path (FILE_NAME). */
  readonly name: string;
  /** Bytes moved to `<FILE_NAME>.torn` when the store was opened. */
  readonly tornBytes: number;
  readonly stats: StoreStats = {
    writeSeconds: new BucketHistogram(LATENCY_BOUNDS),
    syncSeconds: new BucketHistogram(LATENCY_BOUNDS),
  };
  /** Files the store renamed aside; for /metrics. */
  rotations = 0;

  readonly #durable: boolean;
  readonly #log: Logger;
  readonly #open: OpenFile;
  readonly #maxSessions: number;
  #file: Deno.FsFile;
  #size: number;
  /** The data file's last (up to) 64 bytes, kept for the journal's fingerprints. */
  #tail: Uint8Array;
  /** Set while the file may end in part of a failed batch that could not yet be cut off. */
  #torn = false;
  /** Where the file was renamed by a rotation whose new file is not open yet, else null. */
  #rotatedTo: string | null = null;
  readonly #journal: Journal;
  /** Encodes the journal's BATCH records; appends never overlap, so one buffer serves them all. */
  readonly #records = new BatchRecordEncoder();
  /** Where each session stands in the data file, least recently written first. */
  readonly #table: Map<string, JournalEntry>;
  /** Set after a switch of files until the journal has said so (FILE, or a snapshot). */
  #fileRecordOwed = false;

  private constructor(parts: {
    path: string;
    opened: Opened;
    journal: Journal;
    table: Map<string, JournalEntry>;
    options: FileStoreOptions;
  }) {
    const { path, opened, journal, table, options } = parts;
    this.name = path;
    this.tornBytes = opened.tornBytes;
    this.#file = opened.file;
    this.#size = opened.size;
    this.#tail = opened.tail;
    this.#journal = journal;
    this.#table = table;
    this.#durable = options.durable;
    this.#log = options.log;
    this.#open = options.openFile ?? Deno.open;
    this.#maxSessions = options.maxSessions ?? 100_000;
  }

  /**
   * Opens (or creates) the data file at `path`, moving a torn last line aside first, and
   * recovers the session journal beside it (`<path>.sessions`). Throws if either cannot be
   * opened.
   */
  static async open(path: string, options: FileStoreOptions): Promise<FileStore> {
    const open = options.openFile ?? Deno.open;
    const log = options.log;
    const journalPath = `${path}.sessions`;
    const bytes = await Journal.read(journalPath);
    const recovery: { found: Recovered | null } = { found: null };
    // The journal is checked against the file without its torn last line (no batch ends there),
    // and may ask for more to be cut: the whole lines of a batch the crash tore, none acked.
    const opened = await openDataFile(path, open, (measured) => {
      if (bytes === null) return measured.whole;
      const found = recoverWith(bytes, path, measured.whole);
      recovery.found = found;
      return found.cutBackTo ?? measured.whole;
    });
    const found = recovery.found;
    try {
      if (opened.tornBytes > 0) {
        log.warn(
          found === null || found.cutBackTo === null
            ? "moved a torn last line aside"
            : "moved a torn batch aside: none of its records was acked",
          { file: path, bytes: opened.tornBytes, to: `${path}.torn` },
        );
      }
      let table = new Map<string, JournalEntry>();
      if (found === null) {
        if (opened.size > 0) {
          log.warn("no session journal: sessions of records already in the file start unknown", {
            file: path,
            journal: journalPath,
          });
        }
      } else {
        for (const problem of found.problems) {
          log.warn(
            found.trusted
              ? "session journal recovered with a problem"
              : "session journal not trusted: sessions start unknown",
            { journal: journalPath, problem },
          );
        }
        table = found.table;
        log.info("sessions recovered from the journal", {
          journal: journalPath,
          sessions: table.size,
        });
      }
      while (table.size > (options.maxSessions ?? 100_000)) {
        table.delete(table.keys().next().value!);
      }
      const journal = await Journal.create(journalPath, table, {
        size: opened.size,
        tail: fingerprint(opened.tail),
      }, options);
      if (options.durable) await syncDirectoryOf(path);
      return new FileStore({ path, opened, journal, table, options });
    } catch (e) {
      opened.file.close();
      throw e;
    }
  }

  /** Bytes in the data file being appended to. */
  get size(): number {
    return this.#size;
  }

  /**
   * Keeps the batch. A small batch (up to 64 KiB) in `written` mode, with nothing to repair or
   * compact first, is kept synchronously: the journal record and the lines go to the page cache
   * with synchronous writes, and `append` returns undefined once both have returned. Anything
   * else, and every failure, goes through the promise it returns instead.
   */
  append(batch: Batch): Promise<void> | undefined {
    const preparing = this.#prepare();
    return preparing === undefined ? this.#write(batch) : preparing.then(() => this.#write(batch));
  }

  /**
   * What must be done before the next batch goes in: a torn file or journal cut back (appending
   * after a partial line would glue the next record onto it), the journal compacted, the FILE
   * record it is owed. Undefined when none of it is due, as for almost every batch.
   */
  #prepare(): Promise<void> | undefined {
    const journal = this.#journal;
    if (!this.#torn && !journal.torn && !journal.wantsCompaction && !this.#fileRecordOwed) {
      return undefined;
    }
    return this.#prepareAsync();
  }

  async #prepareAsync(): Promise<void> {
    if (this.#torn) await this.#cutBackTo(this.#size);
    const journal = this.#journal;
    await journal.repair();
    if (journal.wantsCompaction) await this.#compact();
    if (this.#fileRecordOwed) {
      await journal.append(encodeFile(this.#state()));
      this.#fileRecordOwed = false;
    }
  }

  /**
   * Writes the batch's journal record, then its lines. Both are written synchronously when the
   * lines are small (they go to the page cache in microseconds, where an asynchronous write costs
   * a trip through the runtime's blocking pool); undefined then, unless durable mode has a sync
   * to wait for or the lines are large.
   */
  #write(batch: Batch): Promise<void> | undefined {
    const start = this.#size;
    const bytes = batch.bytes;
    const entries = sessionsOf(batch);
    // Recorded before the lines go in: every record but the last is then of a whole batch.
    const record = entries.length > 0 ? this.#records.encode(start, bytes, entries) : null;
    const t0 = performance.now();
    if (record !== null) {
      try {
        this.#journal.appendSync(record);
      } catch (e) {
        return this.#journal.repair().then(() => Promise.reject(e), () => Promise.reject(e));
      }
    }
    if (this.#durable || bytes.length > SYNC_WRITE_BYTES) {
      return this.#writeAsync(start, bytes, entries, record, t0);
    }
    try {
      writeAllSync(this.#file, bytes);
    } catch (e) {
      return this.#undo(start, record).then(() => Promise.reject(e));
    }
    this.stats.writeSeconds.observe((performance.now() - t0) / 1000);
    this.#appended(start, bytes, entries);
    return undefined;
  }

  /** `#write`'s lines when they are large, or must be synced before the batch is kept. */
  async #writeAsync(
    start: number,
    bytes: Uint8Array,
    entries: BatchSession[],
    record: Uint8Array | null,
    t0: number,
  ): Promise<void> {
    try {
      if (bytes.length <= SYNC_WRITE_BYTES) writeAllSync(this.#file, bytes);
      else await writeAll(this.#file, bytes);
      const t1 = performance.now();
      this.stats.writeSeconds.observe((t1 - t0) / 1000);
      if (this.#durable) {
        await Promise.all([this.#file.syncData(), record === null ? null : this.#journal.sync()]);
        this.stats.syncSeconds.observe((performance.now() - t1) / 1000);
      }
    } catch (e) {
      await this.#undo(start, record);
      throw e;
    }
    this.#appended(start, bytes, entries);
  }

  /**
   * After a failed write of the lines from `start`: cuts the file back there and takes the
   * batch's journal `record` back, as far as it can (what it cannot is logged, or undone by the
   * next batch). Never rejects.
   */
  async #undo(start: number, record: Uint8Array | null): Promise<void> {
    this.#torn = true;
    try {
      await this.#cutBackTo(start);
    } catch (cut) {
      this.#log.error("cannot cut the file back after a failed write", {
        error: (cut as Error).message,
        offset: start,
      });
    }
    // Best effort: a record left behind is undone by the next batch at the same offset.
    if (record !== null) await this.#journal.takeBack(record.length).catch(() => {});
  }

  /** The batch's `bytes` are in the file from `start`: the size, tail and sessions follow. */
  #appended(start: number, bytes: Uint8Array, entries: BatchSession[]): void {
    this.#size = start + bytes.length;
    const tail = this.#tail;
    if (bytes.length < FINGERPRINT_BYTES && tail.length === FINGERPRINT_BYTES) {
      tail.copyWithin(0, bytes.length); // shifted in place: one message at a time allocates none
      tail.set(bytes, FINGERPRINT_BYTES - bytes.length);
    } else if (bytes.length < FINGERPRINT_BYTES) {
      this.#tail = concat([tail, bytes]).slice(-FINGERPRINT_BYTES);
    } else if (this.#tail.length === FINGERPRINT_BYTES) {
      this.#tail.set(bytes.subarray(bytes.length - FINGERPRINT_BYTES)); // no allocation
    } else {
      this.#tail = bytes.slice(bytes.length - FINGERPRINT_BYTES);
    }
    const table = this.#table;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      table.delete(e.key);
      table.set(e.key, e); // made for this batch by sessionsOf, never changed after
    }
    while (table.size > this.#maxSessions) table.delete(table.keys().next().value!);
  }

  /** The data file as the journal fingerprints it. */
  #state(): DataFileState {
    return { size: this.#size, tail: fingerprint(this.#tail) };
  }

  /** Rewrites the journal as one snapshot; a failure is logged, not fatal (it can wait). */
  async #compact(): Promise<void> {
    try {
      await this.#journal.compact(this.#table, this.#state());
      this.#fileRecordOwed = false;
    } catch (e) {
      this.#log.throttled("compact", REPEAT_LOG_MS, "error", "cannot compact the session journal", {
        journal: this.#journal.path,
        error: (e as Error).message,
      });
    }
  }

  /** Truncates the file to `size` and checks that it took; clears the torn mark when it did. */
  async #cutBackTo(size: number): Promise<void> {
    if ((await this.#file.stat()).size !== size) await this.#file.truncate(size);
    const now = (await this.#file.stat()).size;
    if (now !== size) {
      throw new Error(`Cannot cut the file back to ${size} bytes: it still has ${now}`);
    }
    this.#torn = false;
  }

  /**
   * Moves the full file aside as `<path>.<UTC timestamp>` and starts a new one. If the new one
   * cannot be opened (out of file descriptors, say), the store keeps appending to the renamed
   * file and the next call tries the open again, until FILE_NAME exists once more.
   */
  async rotate(): Promise<void> {
    const path = this.name;
    if (this.#rotatedTo === null) {
      if (this.#torn) {
        this.#log.throttled("rotate", REPEAT_LOG_MS, "error", "cannot rotate the data file yet", {
          file: path,
          error: "it may end in part of a failed batch that could not be cut off",
        });
        return;
      }
      const stamp = new Date().toISOString().replace(/[-:]/g, "");
      let target = `${path}.${stamp}`;
      try {
        for (let n = 1; await exists(target); n++) target = `${path}.${stamp}-${n}`;
        // Whoever ships rotated files takes them as finished: make this one whole on disk.
        if (!this.#durable) await this.#file.syncData();
        // The journal's batches so far are all whole: say so before the file changes name, so
        // that a crash before the new file is recorded still counts them.
        await this.#journal.append(encodeSeal());
        await Deno.rename(path, target);
      } catch (e) {
        this.#log.throttled("rotate", REPEAT_LOG_MS, "error", "cannot rotate the data file", {
          file: path,
          error: (e as Error).message,
          still_writing_to: path,
        });
        return;
      }
      this.#rotatedTo = target;
    }
    const rotated = this.#rotatedTo;
    if (!await this.#switchTo("open", rotated)) return;
    this.rotations++;
    this.#log.info("rotated the data file", { file: path, to: rotated });
  }

  async reopen(): Promise<void> {
    if (this.#torn) {
      try {
        await this.#cutBackTo(this.#size);
      } catch (e) {
        this.#log.error("reopening: the old file may end in part of a failed batch", {
          file: this.name,
          offset: this.#size,
          error: (e as Error).message,
        });
        this.#torn = false; // it belongs to the old file now
      }
    }
    try {
      await this.#journal.append(encodeSeal());
    } catch (e) {
      this.#log.error("cannot reopen the data file: the session journal cannot be written", {
        file: this.name,
        error: (e as Error).message,
      });
      return;
    }
    if (await this.#switchTo("reopen", this.name)) {
      this.#log.info("reopened the data file", { file: this.name, size: this.#size });
    }
  }

  /** Opens FILE_NAME afresh and appends there from now on; false (logged) if it cannot. */
  async #switchTo(why: "open" | "reopen", old: string): Promise<boolean> {
    let opened: Opened;
    try {
      opened = await openDataFile(this.name, this.#open);
    } catch (e) {
      this.#log.throttled(
        why,
        REPEAT_LOG_MS,
        "error",
        why === "open"
          ? "cannot open a new data file: still writing to the rotated one, trying again before the next batch"
          : "cannot reopen the data file: still writing to the old one",
        { file: this.name, still_writing_to: old, error: (e as Error).message },
      );
      return false;
    }
    closeQuietly(this.#file);
    this.#file = opened.file;
    this.#size = opened.size;
    this.#tail = opened.tail;
    this.#rotatedTo = null;
    // Batches from now on go to another file: the journal must say so before the next one.
    this.#fileRecordOwed = true;
    await this.#compact();
    if (opened.tornBytes > 0) {
      this.#log.warn("moved a torn last line aside", {
        file: this.name,
        bytes: opened.tornBytes,
        to: `${this.name}.torn`,
      });
    }
    if (this.#durable) {
      try {
        await syncDirectoryOf(this.name);
      } catch (e) {
        this.#log.error("cannot sync the data file's directory", {
          file: this.name,
          error: (e as Error).message,
        });
      }
    }
    return true;
  }

  lastStored(clientId: number, session: bigint): Promise<number | null> {
    return Promise.resolve(this.#table.get(sessionKey(clientId, session))?.lastId ?? null);
  }

  /** The data file's size and how often it was rotated. */
  metrics(): Metric[] {
    return [
      {
        name: "msgserver_file_bytes",
        help: "Bytes in the data file being appended to.",
        type: "gauge",
        value: this.#size,
      },
      {
        name: "msgserver_file_rotations_total",
        help: "Data files rotated aside (FILE_MAX_BYTES).",
        type: "counter",
        value: this.rotations,
      },
    ];
  }

  /** Closes the data file and the journal, compacted so the next start reads little. */
  async close(): Promise<void> {
    if (!this.#torn) await this.#compact();
    this.#journal.close();
    closeQuietly(this.#file);
  }
}

/** A session of a batch, with the last msg_id it has in the batch. */
interface BatchSession extends JournalEntry {
  key: string;
}

/** The sessions of a batch, each once, with the last msg_id it has in the batch. */
function sessionsOf(batch: Batch): BatchSession[] {
  const runs = batch.runs;
  const out: BatchSession[] = [];
  for (let i = 0; i < runs.length; i++) {
    const r = runs[i]!;
    const key = r.source.sessionKey;
    if (key === "") continue;
    // Runs of one session come in msg_id order, mostly one run each: a short scan back finds
    // an earlier run of the same session, where a Map per batch would cost more.
    let j = out.length - 1;
    while (j >= 0 && out[j]!.key !== key) j--;
    if (j >= 0) out[j]!.lastId = r.lastId;
    else {out.push({
        key,
        clientId: r.source.clientId,
        session: r.source.session,
        lastId: r.lastId,
      });}
  }
  return out;
}
