/**
 * A bounded many-producer, one-consumer channel. Producers are the connections' service tasks,
 * the consumer is the writer task. It is bounded twice, in records and in bytes, so a slow disk
 * makes readers wait (and TCP push back on their peers) instead of growing memory.
 *
 * @module
 */

/** Thrown by {@linkcode Channel.push} after {@linkcode Channel.close}. */
export class ChannelClosedError extends Error {
  constructor() {
    super("Cannot push: the channel is closed");
    this.name = "ChannelClosedError";
  }
}

/** What the channel needs to know about an item to bound itself. */
export interface Weighed {
  /** Records the item holds; counted against `maxRecords`. */
  readonly count: number;
  /** Bytes the item holds; counted against `maxBytes`. */
  readonly bytes: number;
}

interface Waiter<T> {
  item: T;
  resolve: () => void;
}

/**
 * The queue between the service tasks and the writer.
 *
 * An item that alone is larger than a bound is still let in once the channel is empty, so no
 * producer can be stuck forever. Waiting producers are admitted in arrival order, and `tryPush`
 * fails while any wait, so a steady stream of new pushes cannot starve them.
 *
 * @example
 * ```ts
 * declare const item: { count: number; bytes: number };
 * const ch = new Channel<{ count: number; bytes: number }>({ maxRecords: 1000, maxBytes: 1 << 20 });
 * if (!ch.tryPush(item)) await ch.push(item);
 * // in the consumer:
 * for (let items = ch.takeAll(); items.length === 0; items = ch.takeAll()) await ch.wait();
 * ```
 */
export class Channel<T extends Weighed> {
  #items: T[] = [];
  #spare: T[] = [];
  #records = 0;
  #bytes = 0;
  #waiters: Waiter<T>[] = [];
  #consumer: (() => void) | null = null;
  #closed = false;
  readonly #maxRecords: number;
  readonly #maxBytes: number;

  constructor(options: { maxRecords: number; maxBytes: number }) {
    this.#maxRecords = options.maxRecords;
    this.#maxBytes = options.maxBytes;
  }

  /** Records waiting to be taken (not counting producers still waiting for room). */
  get records(): number {
    return this.#records;
  }

  /** Bytes waiting to be taken. */
  get bytes(): number {
    return this.#bytes;
  }

  /** True once `close()` was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** True when nothing is queued and no producer waits for room. */
  get drained(): boolean {
    return this.#items.length === 0 && this.#waiters.length === 0;
  }

  #fits(item: T): boolean {
    return this.#items.length === 0 ||
      (this.#records + item.count <= this.#maxRecords &&
        this.#bytes + item.bytes <= this.#maxBytes);
  }

  #append(item: T): void {
    this.#items.push(item);
    this.#records += item.count;
    this.#bytes += item.bytes;
    const consumer = this.#consumer;
    if (consumer !== null) {
      this.#consumer = null;
      consumer();
    }
  }

  /** Queues `item` if there is room now and nobody waits for room; returns whether it did. */
  tryPush(item: T): boolean {
    if (this.#closed) throw new ChannelClosedError();
    if (this.#waiters.length > 0 || !this.#fits(item)) return false;
    this.#append(item);
    return true;
  }

  /** Queues `item`, waiting for room. Call `tryPush` first to skip the promise when there is room. */
  push(item: T): Promise<void> {
    if (this.tryPush(item)) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ item, resolve }));
  }

  /**
   * Takes everything queued, in order, and lets waiting producers in. The returned array is
   * recycled by the next `takeAll` call, so finish with it first.
   */
  takeAll(): T[] {
    const taken = this.#items;
    this.#items = this.#spare;
    this.#items.length = 0;
    this.#spare = taken;
    this.#records = 0;
    this.#bytes = 0;
    // Admit in arrival order; one splice at the end instead of a shift() per waiter, which
    // would be quadratic with thousands of connections waiting for room.
    const waiters = this.#waiters;
    let admitted = 0;
    while (admitted < waiters.length && this.#fits(waiters[admitted]!.item)) {
      const waiter = waiters[admitted++]!;
      this.#append(waiter.item);
      waiter.resolve();
    }
    if (admitted > 0) waiters.splice(0, admitted);
    return taken;
  }

  /**
   * Resolves when an item is queued, when the channel is closed, or after `timeoutMs` if given.
   * Only the one consumer may wait.
   */
  wait(timeoutMs?: number): Promise<void> {
    if (this.#items.length > 0 || this.#closed) return Promise.resolve();
    return new Promise((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      this.#consumer = () => {
        if (timer !== undefined) clearTimeout(timer);
        resolve();
      };
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          this.#consumer = null;
          resolve();
        }, timeoutMs);
      }
    });
  }

  /** Wakes the consumer's `wait()` without an item, so it can look at other work. */
  wake(): void {
    const consumer = this.#consumer;
    if (consumer !== null) {
      this.#consumer = null;
      consumer();
    }
  }

  /**
   * Refuses new pushes. Producers already waiting for room still get in; the consumer should
   * drain until `drained` is true.
   */
  close(): void {
    this.#closed = true;
    const consumer = this.#consumer;
    if (consumer !== null) {
      this.#consumer = null;
      consumer();
    }
  }
}
