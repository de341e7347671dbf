/**
 * A seeded PRNG, so a test that draws at random checks the same cases on every run.
 *
 * @module
 */

/**
 * mulberry32: a small seeded PRNG, uniform in [0, 1). The same seed always gives the same
 * sequence, so a test that draws from it checks the same cases on every run.
 *
 * @example
 * ```ts
 * const random = mulberry32(7);
 * const coin = random() < 0.5;
 * ```
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
