/**
 * The storage seam: what the writer needs of wherever records end up. The writer gathers
 * records into batches, formats them as lines, and hands each batch to a {@linkcode Store},
 * which keeps it whole or not at all; the writer alone decides when to retry, when to give up
 * and refuse, and when to rotate. The file (`file_store.ts`) is the default store.
 *
 * @module
 */

import type { RecordSource } from "../server/entry.ts";
import type { BucketHistogram, Metric } from "../server/metrics.ts";

/**
 * Consecutive records of one source in a batch: its lines are `bytes[lineStart, lineEnd)` of
 * the batch.
 */
export interface BatchRun {
  /** The connection the records came from. */
  readonly source: RecordSource;
  /** Where its first line starts in the batch. */
  readonly lineStart: number;
  /** Just past its last line. */
  readonly lineEnd: number;
  /** The msg_id of its first record. */
  readonly firstId: number;
  /** The msg_id of its last record. */
  readonly lastId: number;
  /** Records in the run. */
  readonly records: number;
}

/**
 * One batch: lines in the file format (`<client_id> <msg_id> <name> <payload>\n` each), and
 * which source each stretch of them came from, in order.
 *
 * @example
 * ```ts
 * import type { Batch } from "./store.ts";
 * const batch: Batch = { bytes: new TextEncoder().encode("1 1 a hi\n"), records: 1, runs: [] };
 * ```
 */
export interface Batch {
  /** The lines, each ending in a line feed. */
  readonly bytes: Uint8Array;
  /** Records in the batch. */
  readonly records: number;
  /** The runs, in the order of their lines. */
  readonly runs: readonly BatchRun[];
}

/** Timings a store keeps, for /metrics. */
export interface StoreStats {
  /** Seconds per append (the write, or the publish and its acknowledgement). */
  readonly writeSeconds: BucketHistogram;
  /** Seconds per sync (durable mode), when the store syncs separately. */
  readonly syncSeconds: BucketHistogram;
}

/**
 * An append that kept some of the batch, but not all: a store whose batch goes out as several
 * independent writes (one message per session) may lose some of them. `stored` holds the runs
 * that are kept; the writer acks those and refuses the rest.
 *
 * @example
 * ```ts
 * import { PartialAppendError } from "./store.ts";
 * declare const e: unknown;
 * if (e instanceof PartialAppendError) console.log(`${e.stored.size} runs kept`);
 * ```
 */
export class PartialAppendError extends Error {
  /** The runs of the batch that are kept. */
  readonly stored: ReadonlySet<BatchRun>;

  /** `message` says what failed; `stored` what was kept all the same. */
  constructor(message: string, stored: ReadonlySet<BatchRun>, options?: ErrorOptions) {
    super(message, options);
    this.name = "PartialAppendError";
    this.stored = stored;
  }
}

/**
 * A store that cannot start with the settings given (a server it cannot reach, a stream that does
 * not fit); the message names the setting to change. msgserver reports it and exits with 2.
 *
 * @example
 * ```ts
 * import { StoreStartError } from "./store.ts";
 * throw new StoreStartError('STORE=jetstream: NATS_STREAM "MSGS" takes other subjects');
 * ```
 */
export class StoreStartError extends Error {
  /** `message` says what is wrong and which setting to change. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "StoreStartError";
  }
}

/**
 * Where batches are kept.
 *
 * @example
 * ```ts
 * import type { Batch, Store } from "./store.ts";
 * async function keep(store: Store, batch: Batch): Promise<boolean> {
 *   try {
 *     await store.append(batch); // undefined when kept synchronously
 *     return true;
 *   } catch {
 *     return false; // nothing of the batch was kept
 *   }
 * }
 * ```
 */
export interface Store {
  /** What to call it in log lines: the file's path, or the stream's name. */
  readonly name: string;
  /** Bytes in the current segment (the data file): where the next batch starts. */
  readonly size: number;
  /** Timings, for /metrics. */
  readonly stats: StoreStats;
  /**
   * The largest batch, in bytes of lines, the store can keep in one append (a message size
   * limit, say); the writer cuts batches below it. Absent: no limit of the store's own.
   */
  readonly maxBatchBytes?: number;
  /**
   * The most records in one batch, for a store whose every append costs a round trip (so larger
   * batches go faster); it takes the place of MSG_PER_WRITE, which is about file writes. Absent:
   * MSG_PER_WRITE.
   */
  readonly maxBatchRecords?: number;
  /**
   * How many batches the writer may have with the store at once, for a store whose append is a
   * round trip that leaves the machine idle (a JetStream stream): the next batch gathers and goes
   * while earlier ones wait for their answer, and acks still go out in batch order. The store
   * must then keep each source's records in batch order itself. Absent: 1, one batch at a time.
   */
  readonly pipeline?: number;
  /**
   * True when other servers append to the same store (a JetStream stream shared by several
   * msgserver nodes). The server then asks {@linkcode Store.lastStored} on every HELLO, once what
   * it queued for the session has landed, and ends a session's connection (ERROR 8) after a
   * storage refusal: such a store takes nothing more of that session until it is resumed, lest
   * it hold a later record above a refused one (a lookup would read that as all stored).
   */
  readonly shared?: boolean;
  /**
   * Keeps the whole batch, as ACK_MODE says (synced in durable mode), or throws; after a
   * throw nothing of the batch is kept (a store that could not undo a partial write must
   * finish undoing it before it keeps anything else, and throw until it can), unless it throws
   * {@linkcode PartialAppendError}, which names what it kept. The writer may call it again with
   * the same batch after a failure: a store must then not keep twice what it kept before.
   *
   * A store that has kept the whole batch by the time it returns (synchronous writes to the page
   * cache, say) may return undefined instead of a promise: the writer then releases the acks at
   * once, without a trip through the microtask queue. A failure always comes as a rejected
   * promise, never as a throw.
   */
  append(batch: Batch): Promise<void> | undefined;
  /**
   * The writer has given `batch` up (the records the store did not keep are refused): a store
   * that holds later batches back until an earlier one is stored lets them go. Absent: nothing
   * to do.
   */
  abandon?(batch: Batch): void;
  /**
   * Starts a new segment, the current one moved aside; called between batches when the next
   * would take the segment past its size limit. Never throws: a store that cannot rotate logs
   * why, goes on appending where it can, and tries again when called again.
   */
  rotate(): Promise<void>;
  /**
   * Reopens at its configured place (after logrotate moved the file, SIGHUP); never throws: a
   * store that cannot reopen logs why and goes on where it was.
   */
  reopen(): Promise<void>;
  /**
   * The last msg_id of session (`clientId`, `session`) the store holds, or null when it has no
   * record of the session (it never stored one of its records, or has forgotten it). Rejects
   * when the store cannot tell just now (the server then asks the client to retry).
   */
  lastStored(clientId: number, session: bigint): Promise<number | null>;
  /** Metrics of the store's own, for `/metrics` (a connection's state, say). */
  metrics?(): Metric[];
  /** Releases what the store holds open; nothing is appended afterwards. */
  close(): Promise<void>;
}
