/**
 * The session journal's file (`<FILE_NAME>.sessions`): appending records whole or not at all,
 * syncing, and compacting it into one snapshot. What the records hold and how the journal is read
 * back at start are in `journal_format.ts`.
 *
 * @module
 */

import { closeQuietly } from "../io/close_quietly.ts";
import { syncDirectoryOf } from "../io/sync_directory.ts";
import { writeAll, writeAllSync } from "../io/write_all.ts";
import { type DataFileState, encodeSnapshot, type JournalEntry } from "./journal_format.ts";

export * from "./journal_format.ts";

/** Options of {@linkcode Journal.open}. */
export interface JournalOptions {
  /** Sync the journal with each batch (ACK_MODE durable). */
  durable: boolean;
  /** How files are opened; `Deno.open` unless a test injects failures. */
  openFile?: (path: string, options: Deno.OpenOptions) => Promise<Deno.FsFile>;
}

/**
 * The journal file: appends records whole or not at all, and compacts itself.
 *
 * @example
 * ```ts
 * import { Journal } from "./journal.ts";
 * const journal = await Journal.create("/tmp/messages.log.sessions", new Map(), {
 *   size: 0,
 *   tail: 0,
 * }, { durable: false });
 * await journal.append(new Uint8Array(0));
 * journal.close();
 * ```
 */
export class Journal {
  readonly path: string;
  #file: Deno.FsFile;
  #size: number;
  /** Set while the journal may end in part of a record that could not be cut off. */
  #torn = false;
  readonly #durable: boolean;
  readonly #open: (path: string, options: Deno.OpenOptions) => Promise<Deno.FsFile>;
  /** Bytes of the last snapshot: compaction waits until the journal is well past it. */
  #snapshotBytes: number;

  private constructor(path: string, file: Deno.FsFile, size: number, options: JournalOptions) {
    this.path = path;
    this.#file = file;
    this.#size = size;
    this.#snapshotBytes = size;
    this.#durable = options.durable;
    this.#open = options.openFile ?? Deno.open;
  }

  /** Reads the journal at `path`; null if there is none. */
  static async read(path: string): Promise<Uint8Array | null> {
    try {
      return await Deno.readFile(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return null;
      throw e;
    }
  }

  /**
   * Writes a fresh journal holding one SNAPSHOT (aside, then renamed over `path`, so a crash
   * leaves the old journal or the new one, never half of one) and opens it for appending.
   */
  static async create(
    path: string,
    table: ReadonlyMap<string, JournalEntry>,
    file: DataFileState,
    options: JournalOptions,
  ): Promise<Journal> {
    const size = await writeSnapshot(path, table, file, options);
    const open = options.openFile ?? Deno.open;
    const handle = await open(path, { append: true });
    return new Journal(path, handle, size, options);
  }

  /** Bytes in the journal. */
  get size(): number {
    return this.#size;
  }

  /** True when it has grown enough past its last snapshot to be worth compacting. */
  get wantsCompaction(): boolean {
    return this.#size > Math.max(1024 * 1024, 4 * this.#snapshotBytes);
  }

  /** True while the journal may end in part of a record: `append` cuts it back first. */
  get torn(): boolean {
    return this.#torn;
  }

  /** Appends `record` whole, or throws with nothing of it left behind (or cut off later). */
  async append(record: Uint8Array): Promise<void> {
    const start = this.#size;
    if (this.#torn) await this.#cutBackTo(start);
    try {
      this.appendSync(record);
    } catch (e) {
      await this.#cutBackTo(start).catch(() => {});
      throw e;
    }
  }

  /**
   * Appends `record` with synchronous writes, on a journal that is not {@linkcode Journal.torn}.
   * A record is small and goes to the page cache: writing it synchronously costs a few
   * microseconds, where an asynchronous write would cost a trip through the runtime's blocking
   * pool per batch (measured: about a tenth of the server's time at full load). On a failure it
   * throws, leaving the journal torn until {@linkcode Journal.repair} (or the next `append`) cuts
   * the part written off.
   */
  appendSync(record: Uint8Array): void {
    const start = this.#size;
    try {
      writeAllSync(this.#file, record);
    } catch (e) {
      this.#torn = true;
      throw e;
    }
    this.#size = start + record.length;
  }

  /** Cuts off what a failed append may have left; resolves at once when nothing is torn. */
  async repair(): Promise<void> {
    if (this.#torn) await this.#cutBackTo(this.#size);
  }

  /** Takes back the last `bytes` appended (a batch whose data could not be written). */
  async takeBack(bytes: number): Promise<void> {
    this.#size -= bytes;
    this.#torn = true;
    await this.#cutBackTo(this.#size);
  }

  /** Makes what was appended durable. */
  sync(): Promise<void> {
    return this.#file.syncData();
  }

  async #cutBackTo(size: number): Promise<void> {
    if ((await this.#file.stat()).size !== size) await this.#file.truncate(size);
    const now = (await this.#file.stat()).size;
    if (now !== size) {
      throw new Error(`Cannot cut the session journal back to ${size} bytes: it has ${now}`);
    }
    this.#torn = false;
  }

  /** Rewrites the journal as one SNAPSHOT of `table` for `file`. */
  async compact(table: ReadonlyMap<string, JournalEntry>, file: DataFileState): Promise<void> {
    const size = await writeSnapshot(this.path, table, file, {
      durable: this.#durable,
      openFile: this.#open,
    });
    const handle = await this.#open(this.path, { append: true });
    closeQuietly(this.#file);
    this.#file = handle;
    this.#size = size;
    this.#snapshotBytes = size;
    this.#torn = false;
  }

  close(): void {
    closeQuietly(this.#file);
  }
}

async function writeSnapshot(
  path: string,
  table: ReadonlyMap<string, JournalEntry>,
  file: DataFileState,
  options: JournalOptions,
): Promise<number> {
  const open = options.openFile ?? Deno.open;
  const bytes = encodeSnapshot(table, file);
  const aside = `${path}.tmp`;
  const handle = await open(aside, { write: true, create: true, truncate: true, mode: 0o640 });
  try {
    await writeAll(handle, bytes);
    if (options.durable) await handle.syncData();
  } finally {
    handle.close();
  }
  await Deno.rename(aside, path);
  if (options.durable) await syncDirectoryOf(path);
  return bytes.length;
}
