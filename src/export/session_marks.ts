/**
 * Records the stream holds twice are written once. A session's records reach the stream in msg_id
 * order, each once, as long as its publishes' expectations hold (`jetstream_store.ts`); but
 * nats-server 2.9.10 checks an expectation above 0 against the messages its leader has applied,
 * not those still being proposed, so two publishes for one session that meet there (a session
 * moving between msgserver nodes, a leader just elected) can both be stored, the later one
 * repeating records of the earlier. The exporter keeps, per session subject, the highest msg_id it
 * has written, and leaves out the lines at or below it.
 *
 * An expectation of 0 ("the subject holds nothing") is checked when the message is applied, so no
 * such race stores one: a message expecting 0 starts the session afresh (its earlier messages
 * were removed by the stream's limits, and its client numbers from 1 again). Messages without
 * the headers (no session, not msgserver's) are written as they are.
 *
 * @module
 */

import { lineMsgId } from "../store/jetstream_layout.ts";
import type { SourceMessage } from "./source.ts";

/**
 * Sessions whose mark is kept, least recently written first: about 100 bytes each. Past it the
 * oldest is forgotten, and a double of that session's records would be written again.
 */
export const MAX_MARKED_SESSIONS = 262_144;
const LF = 0x0a;

/**
 * The highest msg_id written per session subject, in this export run.
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
 * marks.cut(m(2, "1 2 a y\n1 3 a z\n", 3, 1)); // 8: from msg_id 3 on
 * ```
 */
export class SessionMarks {
  readonly #marks = new Map<string, number>();
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
   * Where the lines of `m` to write begin: 0 for all of them, `m.data.length` for none (all are at
   * or below its session's mark), or the start of its first line above the mark. Marks the
   * session up to `m.last`; call it once per message, in stream order.
   */
  cut(m: SourceMessage): number {
    const { last, data } = m;
    if (last === null || m.expected === null || data.length === 0) return 0;
    const marks = this.#marks;
    const mark = marks.get(m.subject);
    if (mark !== undefined) marks.delete(m.subject); // set again below: most recent last
    const first = lineMsgId(data, 0);
    if (mark === undefined || m.expected === 0 || first < 0 || first > mark) {
      this.#set(m.subject, last);
      return 0;
    }
    this.#set(m.subject, Math.max(mark, last));
    let at = 0;
    while (at < data.length) {
      const id = lineMsgId(data, at);
      if (id < 0 || id > mark) break; // a line that is not msgserver's is written as it is
      const lf = data.indexOf(LF, at);
      at = lf < 0 ? data.length : lf + 1;
    }
    return at;
  }

  #set(subject: string, mark: number): void {
    const marks = this.#marks;
    marks.set(subject, mark);
    if (marks.size > this.#max) marks.delete(marks.keys().next().value!);
  }
}
