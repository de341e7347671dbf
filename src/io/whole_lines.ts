/**
 * Reading a file of lines in large chunks that end at a line feed, so that a caller's per-line
 * loop never meets a line cut by a read.
 *
 * @module
 */

const LF = 0x0a;

/** Bytes read at a time, unless a longer line needs more. */
const CHUNK = 1024 * 1024;

/** What {@linkcode readWholeLines} read. */
export interface WholeLinesResult {
  /** Bytes in the file, torn tail included. */
  bytes: number;
  /** Bytes after the last line feed: a last line without one (0 when the file ends with one). */
  tornBytes: number;
}

/**
 * Reads `path` from the start and calls `onLines` with each run of whole lines, each ending with
 * its line feed: a view into one buffer that is reused, valid only during the call. A line
 * longer than the buffer grows it. Bytes after the last line feed are not passed on but counted
 * in `tornBytes`.
 *
 * @example
 * ```ts
 * import { readWholeLines } from "./whole_lines.ts";
 * let lines = 0;
 * const { tornBytes } = await readWholeLines("messages.log", (chunk) => {
 *   for (const byte of chunk) if (byte === 0x0a) lines++;
 * });
 * console.log(`${lines} lines, ${tornBytes} bytes torn at the end`);
 * ```
 */
export async function readWholeLines(
  path: string,
  onLines: (chunk: Uint8Array) => void,
  chunkBytes = CHUNK,
): Promise<WholeLinesResult> {
  const file = await Deno.open(path, { read: true });
  try {
    let bytes = 0;
    let buf = new Uint8Array(chunkBytes);
    let filled = 0;
    for (;;) {
      if (filled === buf.length) {
        const grown = new Uint8Array(buf.length * 2); // a line longer than the buffer
        grown.set(buf);
        buf = grown;
      }
      const n = await file.read(buf.subarray(filled));
      if (n === null) break;
      bytes += n;
      // Search only the new bytes: the ones kept from before hold no line feed.
      const last = buf.subarray(filled, filled + n).lastIndexOf(LF);
      filled += n;
      if (last < 0) continue;
      const end = filled - n + last + 1;
      onLines(buf.subarray(0, end));
      buf.copyWithin(0, end, filled);
      filled -= end;
    }
    return { bytes, tornBytes: filled };
  } finally {
    file.close();
  }
}
