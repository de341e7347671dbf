/**
 * Buffers for queue entries, used again once the writer is done with them. A connection copies
 * each read's accepted frames out of its read buffer into a buffer taken here; the writer gives
 * it back when the batch holding the entry's last record has been settled. A fresh buffer per
 * read instead (what `slice` does), for the garbage collector to track and free, cost about a
 * tenth of the throughput at 64 x 256 in flight (docs/benchmarks.md, "Queue entries in buffers
 * used again").
 *
 * @module
 */

/** The smallest buffer handed out: 1 KiB (a latency-bound read is one small frame). */
const MIN_SHIFT = 10;
/** The largest pooled buffer: 128 KiB, above the connections' largest read buffer (64 KiB). */
const MAX_SHIFT = 17;
/** Bytes kept idle in the pool at most, by default. */
const DEFAULT_MAX_IDLE_BYTES = 16 * 1024 * 1024;

/**
 * A pool of byte buffers in power-of-two sizes from 1 KiB to 128 KiB. {@linkcode BufferPool.take}
 * returns a view of exactly the length asked for on a buffer of the next size up, reused when
 * one was given back; {@linkcode BufferPool.give} takes a view it handed out back. Larger
 * requests get a buffer of their own, which is never pooled. At most `maxIdleBytes` wait in the
 * pool; what is given back beyond that is left to the garbage collector.
 *
 * Only views this pool handed out are taken back, and each only once until it is handed out
 * again: a buffer given back twice could otherwise go to two entries at once.
 *
 * @example
 * ```ts
 * import { BufferPool } from "./buffer_pool.ts";
 * const pool = new BufferPool();
 * const a = pool.take(300); // a.length === 300, on a 1 KiB buffer
 * a.set(new Uint8Array(300).fill(7));
 * pool.give(a); // the writer is done with it
 * const b = pool.take(700); // the same 1 KiB buffer again
 * b.buffer === a.buffer; // true
 * ```
 */
export class BufferPool {
  /** Idle buffers by size class (index = log2(size) - MIN_SHIFT). */
  readonly #idle: ArrayBuffer[][] = [];
  /** Every buffer this pool made and has handed out, for give() to recognise. */
  readonly #out = new WeakSet<ArrayBuffer>();
  readonly #maxIdleBytes: number;
  #idleBytes = 0;
  /** Buffers made, and handed out again from the pool (for tests and the benchmarks). */
  made = 0;
  reused = 0;

  constructor(maxIdleBytes = DEFAULT_MAX_IDLE_BYTES) {
    this.#maxIdleBytes = maxIdleBytes;
    for (let s = MIN_SHIFT; s <= MAX_SHIFT; s++) this.#idle.push([]);
  }

  /** Bytes waiting in the pool. */
  get idleBytes(): number {
    return this.#idleBytes;
  }

  /**
   * A view of `length` bytes (their content is whatever was there: the caller fills it) on a
   * buffer of the pool, or of its own when `length` is over 128 KiB.
   */
  take(length: number): Uint8Array {
    if (length > 1 << MAX_SHIFT) return new Uint8Array(length);
    const shift = length <= 1 << MIN_SHIFT ? MIN_SHIFT : 32 - Math.clz32(length - 1);
    const idle = this.#idle[shift - MIN_SHIFT]!;
    let buffer = idle.pop();
    if (buffer === undefined) {
      buffer = new ArrayBuffer(1 << shift);
      this.made++;
    } else {
      this.#idleBytes -= buffer.byteLength;
      this.reused++;
    }
    this.#out.add(buffer);
    return new Uint8Array(buffer, 0, length);
  }

  /**
   * Takes back a view {@linkcode BufferPool.take} returned, once nothing reads it any more; the
   * next `take` of its size may hand its buffer out again. Anything else is ignored.
   */
  give(view: Uint8Array): void {
    const buffer = view.buffer as ArrayBuffer;
    if (!this.#out.has(buffer)) return;
    this.#out.delete(buffer);
    if (this.#idleBytes + buffer.byteLength > this.#maxIdleBytes) return;
    this.#idle[31 - Math.clz32(buffer.byteLength) - MIN_SHIFT]!.push(buffer);
    this.#idleBytes += buffer.byteLength;
  }
}
