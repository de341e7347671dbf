/**
 * The data file on disk, below the store: opening it (created with mode 0640) after moving a torn
 * tail aside to `<path>.torn`, reading its ends, and checking the session journal against it.
 *
 * @module
 */

import { writeAll } from "../io/write_all.ts";
import { FINGERPRINT_BYTES, type Recovered, recoverJournal } from "./journal_format.ts";

const LF = 0x0a;
const TAIL_CHUNK = 64 * 1024;

/** How the store opens files; tests pass one that fails on demand. */
export type OpenFile = (path: string, options: Deno.OpenOptions) => Promise<Deno.FsFile>;

/** An open data file and where its end is. */
export interface Opened {
  file: Deno.FsFile;
  size: number;
  /** Bytes moved to `<path>.torn` (0 if the file ended cleanly). */
  tornBytes: number;
  /** Its last (up to) 64 bytes, which the session journal fingerprints. */
  tail: Uint8Array;
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
 * Moves the bytes of the file `path` from `from` to its end to `<path>.torn` (appending, synced),
 * then cuts the file back to `from`: nothing is destroyed. Returns the bytes moved.
 */
export async function moveTailAside(path: string, from: number, open: OpenFile): Promise<number> {
  const probe = await open(path, { read: true, write: true });
  try {
    const size = (await probe.stat()).size;
    if (size <= from) return 0;
    const tail = new Uint8Array(size - from);
    const got = await readAt(probe, from, tail);
    const aside = await open(`${path}.torn`, { append: true, create: true, mode: 0o640 });
    try {
      await writeAll(aside, tail.subarray(0, got));
      await aside.syncData();
    } finally {
      aside.close();
    }
    await probe.truncate(from);
    await probe.syncData();
    return size - from;
  } finally {
    probe.close();
  }
}

/** The last (up to) 64 bytes of the first `size` bytes of the file at `path`. */
export async function readTail(path: string, size: number, open: OpenFile): Promise<Uint8Array> {
  const n = Math.min(FINGERPRINT_BYTES, size);
  if (n === 0) return new Uint8Array(0);
  const handle = await open(path, { read: true });
  try {
    const tail = new Uint8Array(n);
    return tail.subarray(0, await readAt(handle, size - n, tail));
  } finally {
    handle.close();
  }
}

/**
 * Recovers the journal `bytes` against the data file at `path`, as if it ended at `size`. Reads
 * the file synchronously: recovery reads a few hundred bytes of it, once, at start.
 */
export function recoverWith(bytes: Uint8Array, path: string, size: number): Recovered {
  const handle = Deno.openSync(path, { read: true });
  try {
    return recoverJournal(bytes, {
      size,
      read(offset: number, length: number): Uint8Array {
        const buf = new Uint8Array(length);
        handle.seekSync(offset, Deno.SeekMode.Start);
        let got = 0;
        while (got < length) {
          const n = handle.readSync(buf.subarray(got));
          if (n === null) break;
          got += n;
        }
        return buf.subarray(0, got);
      },
    });
  } finally {
    handle.close();
  }
}

/**
 * The size of the file at `path` (created if missing) and where its last whole line ends: past
 * that is a torn last line.
 */
export async function measure(
  path: string,
  open: OpenFile,
): Promise<{ size: number; whole: number }> {
  const probe = await open(path, { read: true, write: true, create: true, mode: 0o640 });
  try {
    const size = (await probe.stat()).size;
    return { size, whole: size > 0 ? await endOfLastLine(probe, size) : 0 };
  } finally {
    probe.close();
  }
}

/**
 * Opens `path` for appending, first moving everything from `keep` bytes on (by default a torn
 * last line: the bytes after the last line feed) to `<path>.torn`, so that nothing is
 * destroyed. `keep` may be asked for by the caller, once it knows the file's measure.
 */
export async function openDataFile(
  path: string,
  open: OpenFile,
  keep?: (measured: { size: number; whole: number }) => number,
): Promise<Opened> {
  const measured = await measure(path, open);
  const kept = keep?.(measured) ?? measured.whole;
  // One move, so .torn holds what was cut off in the order it was in the file.
  const tornBytes = kept < measured.size ? await moveTailAside(path, kept, open) : 0;
  const file = await open(path, { append: true, create: true, mode: 0o640 });
  const size = measured.size - tornBytes;
  try {
    return { file, size, tornBytes, tail: await readTail(path, size, open) };
  } catch (e) {
    file.close();
    throw e;
  }
}
