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
