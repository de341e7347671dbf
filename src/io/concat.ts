/**
 * Joining byte arrays.
 *
 * @module
 */

/**
 * Concatenates `parts` into one new array.
 *
 * @example
 * ```ts
 * import { concat } from "./concat.ts";
 * concat([new Uint8Array([1]), new Uint8Array([2, 3])]); // Uint8Array(3) [1, 2, 3]
 * ```
 */
export function concat(parts: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const p of parts) total += p.length;
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
