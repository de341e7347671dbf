/**
 * A log-bucketed latency histogram in the manner of HdrHistogram: values (microseconds) are
 * counted in buckets whose width is at most 1/128 of their value (under 0.8% error), exact below
 * 256, from 0 up to a highest trackable value (60 s by default). Recording is a few integer
 * operations and no allocation; memory is fixed (about 3,600 buckets for 60 s).
 *
 * @module
 */

/** Buckets per power of two above the exact range; sets the precision (1/128 < 1%). */
const SUB_BUCKETS = 128;
/** Values below this are counted exactly, one bucket per integer. */
const EXACT_LIMIT = 2 * SUB_BUCKETS;
/** log2(SUB_BUCKETS). */
const SUB_BITS = 7;

/** Default highest trackable value: 60 seconds in microseconds. */
export const DEFAULT_HIGHEST_US = 60_000_000;

/**
 * The bucket index of a non-negative integer value (below 2^32).
 *
 * @example
 * ```ts
 * bucketIndex(100); // 100 (exact below 256)
 * bucketIndex(256); // 256
 * ```
 */
export function bucketIndex(value: number): number {
  if (value < EXACT_LIMIT) return value;
  const msb = 31 - Math.clz32(value);
  const shift = msb - SUB_BITS;
  return EXACT_LIMIT + (shift - 1) * SUB_BUCKETS + ((value >>> shift) - SUB_BUCKETS);
}

/**
 * The lowest and highest integer value counted in bucket `index`.
 *
 * @example
 * ```ts
 * bucketRange(256); // [256, 257]
 * ```
 */
export function bucketRange(index: number): [number, number] {
  if (index < EXACT_LIMIT) return [index, index];
  const shift = Math.floor((index - EXACT_LIMIT) / SUB_BUCKETS) + 1;
  const top = SUB_BUCKETS + ((index - EXACT_LIMIT) % SUB_BUCKETS);
  const low = top * 2 ** shift;
  return [low, low + 2 ** shift - 1];
}

/**
 * A histogram of latencies in microseconds.
 *
 * @example
 * ```ts
 * const h = new Histogram();
 * h.record(120.5);
 * h.record(980);
 * h.valueAtPercentile(50); // about 120
 * ```
 */
export class Histogram {
  /** Highest value counted in its own bucket; larger values are counted as this one. */
  readonly highestTrackable: number;
  readonly #counts: Float64Array;
  #count = 0;
  #sum = 0;
  #min = Infinity;
  #max = -Infinity;
  #clamped = 0;

  /** Makes an empty histogram tracking values from 0 to `highestTrackable` (60 s default). */
  constructor(highestTrackable: number = DEFAULT_HIGHEST_US) {
    if (!(highestTrackable >= 1 && highestTrackable < 2 ** 32)) {
      throw new RangeError(`Cannot make histogram: highest value ${highestTrackable} out of range`);
    }
    this.highestTrackable = Math.floor(highestTrackable);
    this.#counts = new Float64Array(bucketIndex(this.highestTrackable) + 1);
  }

  /** Values recorded. */
  get count(): number {
    return this.#count;
  }

  /** Smallest value recorded, exactly (NaN when empty). */
  get min(): number {
    return this.#count === 0 ? NaN : this.#min;
  }

  /** Largest value recorded, exactly, even above the trackable range (NaN when empty). */
  get max(): number {
    return this.#count === 0 ? NaN : this.#max;
  }

  /** Exact mean of the values recorded (NaN when empty). */
  get mean(): number {
    return this.#count === 0 ? NaN : this.#sum / this.#count;
  }

  /** Values that were above `highestTrackable` and counted in the top bucket. */
  get clamped(): number {
    return this.#clamped;
  }

  /** Counts `value` (microseconds) `times` times; negative values count as 0. */
  record(value: number, times = 1): void {
    let v = value > 0 ? Math.floor(value) : 0;
    if (v > this.highestTrackable) {
      v = this.highestTrackable;
      this.#clamped += times;
    }
    this.#counts[bucketIndex(v)]! += times;
    this.#count += times;
    const exact = value > 0 ? value : 0;
    this.#sum += exact * times;
    if (exact < this.#min) this.#min = exact;
    if (exact > this.#max) this.#max = exact;
  }

  /** Adds every value of `other`, which must have the same `highestTrackable`. */
  add(other: Histogram): void {
    if (other.highestTrackable !== this.highestTrackable) {
      throw new RangeError("Cannot add histograms with different ranges");
    }
    const from = other.#counts;
    const to = this.#counts;
    for (let i = 0; i < from.length; i++) if (from[i]! !== 0) to[i]! += from[i]!;
    this.#count += other.#count;
    this.#sum += other.#sum;
    this.#clamped += other.#clamped;
    if (other.#min < this.#min) this.#min = other.#min;
    if (other.#max > this.#max) this.#max = other.#max;
  }

  /** Forgets every value. */
  reset(): void {
    this.#counts.fill(0);
    this.#count = 0;
    this.#sum = 0;
    this.#min = Infinity;
    this.#max = -Infinity;
    this.#clamped = 0;
  }

  /**
   * The value at or below which `percentile` percent of the values lie, to within the bucket
   * precision: the highest value of the bucket the rank falls into, or the exact largest value
   * recorded when that is in the bucket (NaN when empty).
   */
  valueAtPercentile(percentile: number): number {
    if (this.#count === 0) return NaN;
    const p = Math.min(Math.max(percentile, 0), 100);
    const rank = Math.max(1, Math.ceil((p / 100) * this.#count));
    let seen = 0;
    const counts = this.#counts;
    for (let i = 0; i < counts.length; i++) {
      seen += counts[i]!;
      if (seen >= rank) {
        const high = bucketRange(i)[1];
        // The bucket holding the largest value reports it exactly.
        if (high >= Math.floor(this.#max)) return this.#max;
        return Math.max(high, this.#min);
      }
    }
    return this.#max;
  }
}
