/**
 * What travels through the queue: the records one read of one connection produced, and the
 * connection they came from, which learns each record's outcome from the writer.
 *
 * @module
 */

/** Where queued records come from and where their outcome goes: a connection. */
export interface RecordSource {
  /** The client_id written at the start of each of its lines (legacy records carry their own). */
  readonly clientId: number;
  /** The session its records belong to; 0n for none (session 0, or the legacy protocol). */
  readonly session: bigint;
  /** `client_id/session` (the session table's key), or "" when it has no session. */
  readonly sessionKey: string;
  /** Writer bookkeeping: the batch this source was last seen in. */
  batchSeq: number;
  /** Writer bookkeeping: the highest msg_id of this source in the current batch. */
  batchLastId: number;
  /** Writer bookkeeping: records of this source in the current batch. */
  batchRecords: number;
  /**
   * `records` more records of this source are stored as ACK_MODE says, the last with `msgId`.
   * The source acks them unless it acked on receipt.
   */
  written(msgId: number, records: number): void;
  /** This record was not stored. */
  refuse(msgId: number, code: number, reason: string): void;
}

/**
 * One queue item: the MSG frames one read of one connection produced, copied out of the read
 * buffer as they came off the wire (into a buffer of the server's `BufferPool`, which the writer
 * gives back once it is done with the entry). A frame whose type byte is 0 was refused and is skipped.
 * Sources whose records each carry their own client_id (the legacy protocol) queue
 * {@linkcode RECORD_WITH_CLIENT} frames instead.
 *
 * @example
 * ```ts
 * import type { Entry, RecordSource } from "./entry.ts";
 * import { encodeMsg } from "../protocol/frames.ts";
 * declare const source: RecordSource;
 * const data = encodeMsg(1, "client_1", "hi");
 * const entry: Entry = { source, data, count: 1, bytes: data.length };
 * ```
 */
export interface Entry {
  readonly source: RecordSource;
  readonly data: Uint8Array;
  /** Records (accepted MSG frames) in `data`. */
  readonly count: number;
  /** Bytes of memory `data` holds (its length, or its pooled buffer's size), for the channel's byte bound. */
  readonly bytes: number;
}

/**
 * Type byte of an internal queue record that names its client: `u32 length | 0x7e |
 * u32 client_id | u32 msg_id | u8 name_len | name | payload`. Never on the wire.
 */
export const RECORD_WITH_CLIENT = 0x7e;
