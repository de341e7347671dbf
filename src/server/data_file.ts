/**
 * Opening the data file: append-only, created with mode 0640, and checked for a torn last line
 * left by a crash mid-write, which is moved aside to `<FILE_NAME>.torn` before anything new is
 * appended.
 *
 * @module
 */

import { writeAll } from "../io/write_all.ts";

const LF = 0x0a;
const TAIL_CHUNK = 64 * 1024;

/** An open data file and where its end is. */
export interface DataFile {
  file: Deno.FsFile;
  /** Bytes in the file: where the next batch starts. */
  size: number;
  /** Bytes moved to `<path>.torn` at open (0 if the file ended cleanly). */
  tornBytes: number;
}

/** Finds the offset just past the last line feed, reading backwards from `size`; 0 if none. */
async function endOfLastLine(file: Deno.FsFile, size: number): Promise<number> {
  const chunk = new Uint8Array(TAIL_CHUNK);
  let end = size;
  while (end > 0) {
    const start = Math.max(0, end - TAIL_CHUNK);
    await file.seek(start, Deno.SeekMode.Start);
    let got = 0;
    while (got < end - start) {
      const n = await file.read(chunk.subarray(got, end - start));
      if (n === null) break;
      got += n;
    }
    const at = chunk.subarray(0, got).lastIndexOf(LF);
    if (at >= 0) return start + at + 1;
    end = start;
  }
  return 0;
}

/**
 * Opens `path` for appending, first cutting off a torn last line (bytes after the last line
 * feed), which is appended to `<path>.torn` so that nothing is destroyed.
 *
 * @example
 * ```ts
 * const { file, size, tornBytes } = await openDataFile("messages.log");
 * ```
 */
export async function openDataFile(path: string): Promise<DataFile> {
  const probe = await Deno.open(path, { read: true, write: true, create: true, mode: 0o640 });
  let size: number;
  let tornBytes = 0;
  try {
    size = (await probe.stat()).size;
    if (size > 0) {
      const whole = await endOfLastLine(probe, size);
      if (whole < size) {
        const torn = new Uint8Array(size - whole);
        await probe.seek(whole, Deno.SeekMode.Start);
        let got = 0;
        while (got < torn.length) {
          const n = await probe.read(torn.subarray(got));
          if (n === null) break;
          got += n;
        }
        const aside = await Deno.open(`${path}.torn`, {
          append: true,
          create: true,
          mode: 0o640,
        });
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
    }
  } finally {
    probe.close();
  }
  const file = await Deno.open(path, { append: true, create: true, mode: 0o640 });
  return { file, size, tornBytes };
}

/**
 * Syncs the directory holding `path`, so that a file created or renamed there survives a power
 * loss (durable mode does this after creating, rotating or reopening the data file).
 *
 * @example
 * ```ts
 * await syncDirectoryOf("/var/lib/msgserver/messages.log");
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
