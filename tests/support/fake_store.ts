/**
 * A {@linkcode Store} in memory that fails on demand, for testing the writer without a disk:
 * it keeps each segment's text, counts every call, and can be told to fail appends, rotations
 * and reopens.
 *
 * @module
 */

import { BucketHistogram, LATENCY_BOUNDS } from "../../src/server/metrics.ts";
import {
  type Batch,
  type BatchRun,
  PartialAppendError,
  type Store,
  type StoreStats,
} from "../../src/store/store.ts";

const text = new TextDecoder();

/** One batch as the store saw it. */
export interface SeenBatch {
  lines: string;
  records: number;
  /** Each run as `client/session:first-last(records)=lines`. */
  runs: string[];
}

/**
 * @example
 * ```ts
 * import { FakeStore } from "./fake_store.ts";
 * const store = new FakeStore();
 * store.failAppends = 2; // the next two appends throw
 * ```
 */
export class FakeStore implements Store {
  readonly name = "fake";
  readonly stats: StoreStats = {
    writeSeconds: new BucketHistogram(LATENCY_BOUNDS),
    syncSeconds: new BucketHistogram(LATENCY_BOUNDS),
  };
  /** Text of each segment; the last is the one appended to. */
  readonly segments: string[] = [""];
  /** Every batch stored, in order. */
  readonly batches: SeenBatch[] = [];
  /** Calls made, in order: "append", "append!" (failed), "rotate", "rotate!", "reopen", "close". */
  readonly calls: string[] = [];
  /** How many of the next appends throw (Infinity: all of them). */
  failAppends = 0;
  /** How many of the next rotations do nothing (a store that cannot rotate yet). */
  failRotations = 0;
  /** Resolves the append under way when set; lets a test hold the writer inside a batch. */
  gate: Promise<void> | null = null;
  /**
   * When set, a failing append keeps the runs this picks (and says so with
   * PartialAppendError), as a store of independent messages may.
   */
  keepOnFailure: ((run: BatchRun) => boolean) | null = null;
  /** The largest batch the store takes, when set. */
  maxBatchBytes?: number;
  /** The most records in a batch, when set (in place of MSG_PER_WRITE). */
  maxBatchRecords?: number;

  get size(): number {
    return new TextEncoder().encode(this.segments.at(-1)!).length;
  }

  /**
   * Keeps a batch synchronously (append returns undefined), as the file store does with small
   * batches, unless a gate or a failure is set; otherwise every append returns a promise.
   */
  synchronous = false;

  append(batch: Batch): Promise<void> | undefined {
    if (!this.synchronous || this.gate !== null || this.failAppends > 0) {
      return this.#appendLater(batch);
    }
    this.#keep(batch);
    return undefined;
  }

  async #appendLater(batch: Batch): Promise<void> {
    if (this.gate !== null) await this.gate;
    if (this.failAppends > 0) {
      this.failAppends--;
      this.calls.push("append!");
      if (this.keepOnFailure !== null) {
        const kept = new Set(batch.runs.filter(this.keepOnFailure));
        throw new PartialAppendError("Some messages were not acknowledged", kept);
      }
      throw new Error("No space left on device (os error 28)");
    }
    this.#keep(batch);
  }

  #keep(batch: Batch): void {
    this.calls.push("append");
    const lines = text.decode(batch.bytes);
    this.segments[this.segments.length - 1] += lines;
    this.batches.push({
      lines,
      records: batch.records,
      runs: batch.runs.map((r) =>
        `${r.source.clientId}/${r.source.session}:${r.firstId}-${r.lastId}(${r.records})=` +
        text.decode(batch.bytes.subarray(r.lineStart, r.lineEnd))
      ),
    });
  }

  rotate(): Promise<void> {
    if (this.failRotations > 0) {
      this.failRotations--;
      this.calls.push("rotate!");
    } else {
      this.calls.push("rotate");
      this.segments.push("");
    }
    return Promise.resolve();
  }

  reopen(): Promise<void> {
    this.calls.push("reopen");
    this.segments.push("");
    return Promise.resolve();
  }

  /** What `lastStored` answers, by `client/session`; a key that is absent answers null. */
  readonly stored = new Map<string, number>();
  /** Makes `lastStored` reject, as a store that cannot be reached does. */
  lookupFails = false;

  lastStored(clientId: number, session: bigint): Promise<number | null> {
    if (this.lookupFails) return Promise.reject(new Error("store unreachable"));
    return Promise.resolve(this.stored.get(`${clientId}/${session}`) ?? null);
  }

  close(): Promise<void> {
    this.calls.push("close");
    return Promise.resolve();
  }
}
