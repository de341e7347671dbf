/**
 * Records the stream holds twice are written once. A session's records reach the stream in msg_id
 * order, each once, as long as its publishes' expectations hold (`jetstream_store.ts`); but
 * nats-server 2.9.10 checks an expectation above 0 against the messages its leader has applied,
 * not those still being proposed, so two publishes for one session that meet there (a session
 * moving between msgserver nodes, a leader just elected) can both be stored, the later one
 * repeating records of the earlier. The exporter keeps, per session subject, the highest msg_id it
 * has written and where its last messages were, and leaves out a line at or below that msg_id
 * when it is byte for byte the line of that msg_id in one of them: the same msg_id with another
 * record (a client that numbered afresh from a WELCOME the race made stale) is written.
 *
 * An expectation of 0 ("the subject holds nothing") is checked when the message is applied, so no
 * such race stores one: a message expecting 0 starts the session afresh (its earlier messages
 * were removed by the stream's limits, and its client numbers from 1 again). Messages without
 * the headers (no session, not msgserver's) are written as they are.
 *
 * @module
 */

import { lineMsgId, linesAbove } from "../store/jetstream_layout.ts";
import type { SourceMessage } from "./source.ts";

/**
 * Sessions whose mark is kept, least recently written first: 104 bytes of heap each besides the
 * subject string (measured with 262,144 of them, about 27 MB). Past it the oldest is forgotten: a
 * double of that session's records would then be written again, and its next message is not
 * checked against the one before.
 */
export const MAX_MARKED_SESSIONS = 262_144;

/** Where the exporter last saw a session. */
class Mark {
  /** The highest msg_id written. */
  id: number;
  /** The stream sequence of its last message taken. */
  seq = 0;
  // The sequences of its last four messages taken, in a ring: a race's double repeats the one or
  // two before it. Fields, not an array: there is a mark per session, up to MAX_MARKED_SESSIONS.
  #r0 = 0;
  #r1 = 0;
  #r2 = 0;
  #r3 = 0;
  #taken = 0;

  constructor(id: number, seq: number) {
    this.id = id;
    this.took(seq);
  }

  took(seq: number): void {
    this.seq = seq;
    switch (this.#taken++ & 3) {
      case 0:
        this.#r0 = seq;
        break;
      case 1:
        this.#r1 = seq;
        break;
      case 2:
        this.#r2 = seq;
        break;
      default:
        this.#r3 = seq;
    }
  }

  /** Its last messages' sequences, newest first, but `seq`. */
  recent(seq: number): number[] {
    const ring = [this.#r0, this.#r1, this.#r2, this.#r3];
    const out: number[] = [];
    for (let k = 1; k <= Math.min(this.#taken, 4); k++) {
      const s = ring[(this.#taken - k) & 3]!;
      if (s !== seq) out.push(s);
    }
    return out;
  }
}

/**
 * A message whose expectation disagrees with where the exporter last saw its session: a message
 * of the session missing in between, or read from a replica that disagrees with the leader, or
 * two messages that expected the same one (the race above).
 */
export interface ChainBreak {
  message: SourceMessage;
  /** The sequence at which the session's previous message was seen. */
  seen: number;
  /** True when that one is in the same batch. */
  inBatch: boolean;
}

const NO_BREAKS: readonly ChainBreak[] = [];

/**
 * Per session subject, the highest msg_id written and the sequence of its last message, in this
 * export run.
 *
 * @example
 * ```ts
 * import { SessionMarks } from "./session_marks.ts";
 * import type { SourceMessage } from "./source.ts";
 * const m = (seq: number, text: string, last: number, expected: number): SourceMessage => ({
 *   seq,
 *   subject: "msgs.1.7",
 *   data: new TextEncoder().encode(text),
 *   last,
 *   records: null,
 *   expected,
 * });
 * const marks = new SessionMarks();
 * marks.cut(m(1, "1 1 a x\n1 2 a y\n", 2, 0)); // 0: all of it
 * marks.breaks([m(2, "1 2 a y\n1 3 a z\n", 3, 1)], 1).length; // 0: it follows on from 1
 * marks.cut(m(2, "1 2 a y\n1 3 a z\n", 3, 1)); // 8: from msg_id 3 on
 * ```
 */
export class SessionMarks {
  readonly #marks = new Map<string, Mark>();
  readonly #max: number;

  /** Keeps at most `maxSessions` marks. */
  constructor(maxSessions = MAX_MARKED_SESSIONS) {
    this.#max = Math.max(1, maxSessions);
  }

  /** Sessions marked. */
  get size(): number {
    return this.#marks.size;
  }

  /**
   * The messages of `batch` past sequence `after` (in order; others are redeliveries) whose
   * expectation is not the sequence at which their session's previous message was seen, here or
   * earlier in the batch. Sessions not marked, and expectations of 0, are not checked.
   */
  breaks(batch: readonly SourceMessage[], after: number): readonly ChainBreak[] {
    let inBatch: Map<string, number> | null = null;
    // From the first gap on, which sequences came (before it, all of them did).
    let firstGap = Infinity;
    let delivered: Set<number> | null = null;
    let found: ChainBreak[] | null = null;
    let at = after;
    for (const m of batch) {
      if (m.seq <= at) continue;
      if (m.seq > at + 1 && delivered === null) {
        firstGap = at + 1;
        delivered = new Set();
      }
      at = m.seq;
      delivered?.add(m.seq);
      const expected = m.expected;
      if (m.last === null || expected === null) continue;
      inBatch ??= new Map();
      const here = inBatch.get(m.subject);
      const seen = here ?? this.#marks.get(m.subject)?.seq;
      inBatch.set(m.subject, m.seq);
      if (seen === undefined || expected === 0 || expected === seen) continue;
      // One expected in a gap of the batch is not known yet: filling the gap brings it.
      if (expected >= firstGap && !delivered!.has(expected)) continue;
      (found ??= []).push({ message: m, seen, inBatch: here !== undefined });
    }
    return found ?? NO_BREAKS;
  }

  /**
   * The sequences of the last few messages of `subject` taken before the one at `seq`, newest
   * first: where the records at or below its mark came from.
   */
  recent(subject: string, seq: number): number[] {
    return this.#marks.get(subject)?.recent(seq) ?? [];
  }

  /**
   * Where the lines of `m` at or below its session's mark end: 0 when there are none, else the
   * start of its first line above the mark (`m.data.length` when all are at or below it). Those
   * lines repeat msg_ids written before; whether they repeat the records is for the caller to
   * see (see {@linkcode SessionMarks.recent}). Marks the session up to `m.last` at `m.seq`;
   * call it once per message, in stream order.
   */
  cut(m: SourceMessage): number {
    const { last, data } = m;
    if (last === null || m.expected === null) return 0;
    const marks = this.#marks;
    const mark = marks.get(m.subject);
    if (mark === undefined) {
      marks.set(m.subject, new Mark(last, m.seq));
      if (marks.size > this.#max) marks.delete(marks.keys().next().value!);
      return 0;
    }
    marks.delete(m.subject);
    marks.set(m.subject, mark); // most recent last
    const before = mark.id;
    mark.took(m.seq);
    const first = data.length === 0 ? -1 : lineMsgId(data, 0);
    if (m.expected === 0 || first < 0 || first > before) {
      mark.id = m.expected === 0 ? last : Math.max(before, last);
      return 0;
    }
    mark.id = Math.max(before, last);
    return linesAbove(data, before); // a line that is not msgserver's is written as it is
  }
}
