/**
 * Token comparison for HELLO.
 *
 * @module
 */

/**
 * Compares two byte strings in time that depends only on `expected`'s length, so a peer cannot
 * learn the token byte by byte from response times.
 *
 * @example
 * ```ts
 * const enc = new TextEncoder();
 * timingSafeEqual(enc.encode("secret"), enc.encode("secret")); // true
 * ```
 */
export function timingSafeEqual(expected: Uint8Array, given: Uint8Array): boolean {
  let diff = expected.length ^ given.length;
  for (let i = 0; i < expected.length; i++) {
    diff |= expected[i]! ^ (given[i % Math.max(given.length, 1)] ?? 0);
  }
  return diff === 0;
}
