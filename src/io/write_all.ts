/**
 * Writing a whole buffer to a stream that may take less than it is given.
 *
 * @module
 */

/** Anything with a `write` that may take only part of what it is given (sockets, files). */
export interface Writer {
  /** Writes some of `bytes`; resolves with how many were taken. */
  write(bytes: Uint8Array): Promise<number>;
}

/**
 * Writes every byte of `bytes`, looping over short writes.
 *
 * @example
 * ```ts
 * import { writeAll } from "./write_all.ts";
 * const file = await Deno.open("out.log", { append: true, create: true });
 * await writeAll(file, new TextEncoder().encode("1 1 a b\n"));
 * file.close();
 * ```
 */
export async function writeAll(writer: Writer, bytes: Uint8Array): Promise<void> {
  let done = 0;
  // The first write takes the caller's array as it is: no subarray unless a write came up short.
  while (done < bytes.length) done += await writer.write(done === 0 ? bytes : bytes.subarray(done));
}

/** Anything with a synchronous `writeSync` that may take only part of what it is given. */
export interface SyncWriter {
  /** Writes some of `bytes`; returns how many were taken. */
  writeSync(bytes: Uint8Array): number;
}

/**
 * Writes every byte of `bytes` with synchronous writes, looping over short writes. For small
 * writes to the page cache only: it holds the event loop for as long as the writes take.
 *
 * @example
 * ```ts
 * import { writeAllSync } from "./write_all.ts";
 * const file = Deno.openSync("out.log", { append: true, create: true });
 * writeAllSync(file, new TextEncoder().encode("1 1 a b\n"));
 * file.close();
 * ```
 */
export function writeAllSync(writer: SyncWriter, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) done += writer.writeSync(done === 0 ? bytes : bytes.subarray(done));
}
