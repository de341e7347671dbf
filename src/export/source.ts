/**
 * What the exporter reads from: the stored messages of a stream in order, and any one message by
 * its sequence. `nats_source.ts` is the real one (a durable pull consumer, and the stream
 * leader's message get); tests use a fake that makes gaps and failures on demand.
 *
 * @module
 */

import { Header, type StoredMessage } from "../store/jetstream_layout.ts";

/** A stored message as the exporter takes it. */
export interface SourceMessage extends StoredMessage {
  /** `Msgserver-Records`: how many lines `data` holds; null when the header is absent. */
  records: number | null;
  /**
   * `Nats-Expected-Last-Subject-Sequence`: the sequence at which its publisher saw the subject's
   * previous message (0: none); null when the header is absent (a message without a session, or
   * one msgserver did not publish).
   */
  expected: number | null;
}

/**
 * The stream, as the exporter reads it.
 *
 * Sequences are the stream's own: contiguous, so a sequence that did not come is a gap the
 * exporter can see. `next` may also give a message again (a redelivery) or, after a failure,
 * skip one: the exporter skips what it has and fills a gap with `get`.
 */
export interface StreamSource {
  /**
   * The next messages, in stream order, after those given before: as many as came at once. An
   * empty array when none came within the source's wait. Rejects with an
   * {@linkcode ExportError} when the source has failed for longer than it may.
   */
  next(): Promise<SourceMessage[]>;
  /**
   * The message at `seq`, read from the stream itself (its leader, never a replica that may lag);
   * null when the stream no longer holds it. Rejects with an {@linkcode ExportError} when the
   * source has failed for longer than it may.
   */
  get(seq: number): Promise<SourceMessage | null>;
  /**
   * Everything up to `seq` is in the output and its resume point: the source may forget it
   * (acknowledge it). Never rejects.
   */
  commit(seq: number): void;
  /** Stops reading and lets go of the connection's resources; pending commits are sent. */
  close(): Promise<void>;
}

/** Why an export stopped before its end. */
export type ExportFailure =
  /** A sequence is missing and the stream no longer holds it. */
  | "gap"
  /** The output is shorter than its resume point says, or has no resume point. */
  | "output"
  /** A message is not msgserver's lines. */
  | "format"
  /** The output holds a message the stream's leader does not (a replica that disagreed). */
  | "replica"
  /** NATS failed (or the stream is gone) for longer than NATS_TIMEOUT_MS. */
  | "nats"
  /** Another export holds the output. */
  | "busy";

/**
 * The export cannot go on; the message says why and what the output holds. `msgserver export`
 * exits 1 with it.
 *
 * @example
 * ```ts
 * throw new ExportError("gap", "Cannot export stream sequence 7: the stream no longer holds it");
 * ```
 */
export class ExportError extends Error {
  /** What kind of failure it is. */
  readonly reason: ExportFailure;

  constructor(reason: ExportFailure, message: string) {
    super(message);
    this.name = "ExportError";
    this.reason = reason;
  }
}

/**
 * Reads `Msgserver-Records` from a header lookup; null when absent or not a count.
 *
 * @example
 * ```ts
 * import { recordsOf } from "./source.ts";
 * recordsOf((name) => name === "Msgserver-Records" ? "64" : ""); // 64
 * ```
 */
export function recordsOf(header: (name: string) => string): number | null {
  const text = header(Header.RECORDS);
  return /^\d{1,10}$/.test(text) ? Number(text) : null;
}

/**
 * Reads `Nats-Expected-Last-Subject-Sequence` from a header lookup; null when absent or not a
 * sequence.
 *
 * @example
 * ```ts
 * import { expectedOf } from "./source.ts";
 * expectedOf((name) => name === "Nats-Expected-Last-Subject-Sequence" ? "12" : ""); // 12
 * ```
 */
export function expectedOf(header: (name: string) => string): number | null {
  const text = header(Header.EXPECTED_LAST_SUBJECT_SEQUENCE);
  return /^\d{1,15}$/.test(text) ? Number(text) : null;
}
