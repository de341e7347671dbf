/**
 * The default store: one append-only data file (created with mode 0640). It keeps each batch
 * whole or not at all, cutting the file back after a failed write; it rotates by renaming the
 * file aside and starting a new one, recovering when the new one cannot be opened at once; and at
 * open it moves a torn last line, left by a crash mid-write, to `<FILE_NAME>.torn`.
 *
 * @module
 */

import { closeQuietly } from "../io/close_quietly.ts";
import { writeAll } from "../io/write_all.ts";
import type { Logger } from "../log.ts";
import { BucketHistogram, LATENCY_BOUNDS } from "../server/metrics.ts";
import type { Batch, Store, StoreStats } from "./store.ts";

const LF = 0x0a;
const TAIL_CHUNK = 64 * 1024;
/** A failure that repeats with every batch is logged at most this often. */
const REPEAT_LOG_MS = 10_000;

/** How the store opens files; tests pass one that fails on demand. */
export type OpenFile = (path: string, options: Deno.OpenOptions) => Promise<Deno.FsFile>;

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
}

/** An open data file and where its end is. */
interface Opened {
  file: Deno.FsFile;
  size: number;
  /** Bytes moved to `<path>.torn` (0 if the file ended cleanly). */
  tornBytes: number;
}

/** Finds the offset just past the last line feed, reading backwards from `size`; 0 if none. */
async function endOfLastLine(file: Deno.FsFile, size: number): Promise<number> {
  const chunk = new Uint8Array(TAIL_CHUNK);
  let end = size;
  while (end > 0) {
    const start = Math.max(0, end - TAIL_CHUNK);
    const got = await readAt(file, start, chunk.subarray(0, end - start));
    const at = chunk.subarray(0, got).lastIndexOf(LF);
    if (at >= 0) return start + at + 1;
    end = start;
  }
  return 0;
}

/** Reads into `target` from `offset` until it is full or the file ends; returns the count. */
async function readAt(file: Deno.FsFile, offset: number, target: Uint8Array): Promise<number> {
  await file.seek(offset, Deno.SeekMode.Start);
  let got = 0;
  while (got < target.length) {
    const n = await file.read(target.subarray(got));
    if (n === null) break;
    got += n;
  }
  return got;
}

/**
 * Opens `path` for appending, first cutting off a torn last line (bytes after the last line
 * feed), which is appended to `<path>.torn` so that nothing is destroyed.
 */
async function openDataFile(path: string, open: OpenFile): Promise<Opened> {
  const probe = await open(path, { read: true, write: true, create: true, mode: 0o640 });
  let size: number;
  let tornBytes = 0;
  try {
    size = (await probe.stat()).size;
    const whole = size > 0 ? await endOfLastLine(probe, size) : 0;
    if (whole < size) {
      const torn = new Uint8Array(size - whole);
      const got = await readAt(probe, whole, torn);
      const aside = await open(`${path}.torn`, { append: true, create: true, mode: 0o640 });
      try {
        await writeAll(aside, torn.subarray(0, got));
        await aside.syncData();
      } finally {
        aside.close();
      }
      await probe.truncate(whole);
      await probe.syncData();
      tornBytes = size - whole;
      size = whole;
    }
  } finally {
    probe.close();
  }
  const file = await open(path, { append: true, create: true, mode: 0o640 });
  return { file, size, tornBytes };
}

/**
 * Syncs the directory holding `path`, so that a file created or renamed there survives a power
 * loss (durable mode does this after creating, rotating or reopening the data file).
 *
 * @example
 * ```ts
 * import { syncDirectoryOf } from "./file_store.ts";
 * await syncDirectoryOf("/tmp/messages.log");
 * ```
 */
export async function syncDirectoryOf(path: string): Promise<void> {
  const slash = path.lastIndexOf("/");
  const dir = slash < 0 ? "." : slash === 0 ? "/" : path.slice(0, slash);
  const handle = await Deno.open(dir, { read: true });
  try {
    await handle.sync();
  } finally {
    handle.close();
  }
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
 * The data file as a {@linkcode Store}.
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
  #file: Deno.FsFile;
  #size: number;
  /** Set while the file may end in part of a failed batch that could not yet be cut off. */
  #torn = false;
  /** Where the file was renamed by a rotation whose new file is not open yet, else null. */
  #rotatedTo: string | null = null;

  private constructor(path: string, opened: Opened, options: FileStoreOptions, open: OpenFile) {
    this.name = path;
    this.tornBytes = opened.tornBytes;
    this.#file = opened.file;
    this.#size = opened.size;
    this.#durable = options.durable;
    this.#log = options.log;
    this.#open = open;
  }

  /**
   * Opens (or creates) the data file at `path`, moving a torn last line aside first.
   * Throws if the file cannot be opened.
   */
  static async open(path: string, options: FileStoreOptions): Promise<FileStore> {
    const open = options.openFile ?? Deno.open;
    const opened = await openDataFile(path, open);
    try {
      if (options.durable) await syncDirectoryOf(path);
    } catch (e) {
      opened.file.close();
      throw e;
    }
    if (opened.tornBytes > 0) {
      options.log.warn("moved a torn last line aside", {
        file: path,
        bytes: opened.tornBytes,
        to: `${path}.torn`,
      });
    }
    return new FileStore(path, opened, options, open);
  }

  /** Bytes in the data file being appended to. */
  get size(): number {
    return this.#size;
  }

  async append(batch: Batch): Promise<void> {
    const start = this.#size;
    // Appending after a partial line would glue the next record onto it.
    if (this.#torn) await this.#cutBackTo(start);
    const bytes = batch.bytes;
    try {
      const t0 = performance.now();
      await writeAll(this.#file, bytes);
      const t1 = performance.now();
      this.stats.writeSeconds.observe((t1 - t0) / 1000);
      if (this.#durable) {
        await this.#file.syncData();
        this.stats.syncSeconds.observe((performance.now() - t1) / 1000);
      }
    } catch (e) {
      this.#torn = true;
      try {
        await this.#cutBackTo(start);
      } catch (cut) {
        this.#log.error("cannot cut the file back after a failed write", {
          error: (cut as Error).message,
          offset: start,
        });
      }
      throw e;
    }
    this.#size = start + bytes.length;
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
    this.#rotatedTo = null;
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

  close(): Promise<void> {
    closeQuietly(this.#file);
    return Promise.resolve();
  }
}
