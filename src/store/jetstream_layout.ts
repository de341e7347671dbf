/**
 * How records lie in the JetStream stream (STORE=jetstream): what the store publishes, what the
 * exporter and a session lookup read back. Pure functions, shared by both sides.
 *
 * One message per session per batch. Its data is the session's lines of the batch, exactly as the
 * data file would hold them (`<client_id> <msg_id> <name> <payload>\n` each), so an export is the
 * messages' data in stream order. Its subject names the session:
 * `<NATS_SUBJECT>.<client_id>.<session>` (session in decimal; `0` for a connection without one),
 * and `<NATS_SUBJECT>.legacy` for LEGACY_PORT records, which carry their own client_ids. Headers:
 *
 * - `Nats-Msg-Id`: JetStream drops a second message with the same id within the stream's
 *   duplicate window, so a publish that timed out can be sent again safely. For a session,
 *   `<client_id>.<session>.<first>.<last>` (a session stores each msg_id once, so the ids name
 *   the content); otherwise an id unique to the server's life and batch.
 * - `Msgserver-First`, `Msgserver-Last`: the first and last msg_id in it (a session's last
 *   stored msg_id is the `Msgserver-Last` of the last message on its subject).
 * - `Msgserver-Records`: how many lines it holds.
 * - `Nats-Expected-Last-Subject-Sequence` (a session's messages): the stream sequence of the
 *   subject's previous message as the publisher saw it (0: none), so that JetStream refuses a
 *   message whose publisher is behind; the stream keeps it with the message.
 *
 * @module
 */

/** Header names. */
export const Header = {
  MSG_ID: "Nats-Msg-Id",
  FIRST: "Msgserver-First",
  LAST: "Msgserver-Last",
  RECORDS: "Msgserver-Records",
  EXPECTED_LAST_SUBJECT_SEQUENCE: "Nats-Expected-Last-Subject-Sequence",
} as const;

/**
 * The subject of a session's messages.
 *
 * @example
 * ```ts
 * import { sessionSubject } from "./jetstream_layout.ts";
 * sessionSubject("msgs", 7, 42n); // "msgs.7.42"
 * ```
 */
export function sessionSubject(prefix: string, clientId: number, session: bigint): string {
  return `${prefix}.${clientId}.${session}`;
}

/**
 * The subject of LEGACY_PORT records.
 *
 * @example
 * ```ts
 * import { legacySubject } from "./jetstream_layout.ts";
 * legacySubject("msgs"); // "msgs.legacy"
 * ```
 */
export function legacySubject(prefix: string): string {
  return `${prefix}.legacy`;
}

/**
 * The subjects a stream must take for the store to publish under `prefix`.
 *
 * @example
 * ```ts
 * import { streamSubjects } from "./jetstream_layout.ts";
 * streamSubjects("msgs"); // ["msgs.>"]
 * ```
 */
export function streamSubjects(prefix: string): string[] {
  return [`${prefix}.>`];
}

/**
 * The message id of a session's message holding msg_ids `first` to `last`.
 *
 * @example
 * ```ts
 * import { sessionMsgId } from "./jetstream_layout.ts";
 * sessionMsgId(7, 42n, 1, 64); // "7.42.1.64"
 * ```
 */
export function sessionMsgId(
  clientId: number,
  session: bigint,
  first: number,
  last: number,
): string {
  return `${clientId}.${session}.${first}.${last}`;
}

/** A stored message, as read back. */
export interface StoredMessage {
  /** The stream sequence. */
  seq: number;
  subject: string;
  /** Its lines, as the data file would hold them. */
  data: Uint8Array;
  /** `Msgserver-Last`, or null when it has none (a message msgserver did not publish). */
  last: number | null;
}

/**
 * Reads `Msgserver-Last` from a header lookup; null when absent or not a msg_id.
 *
 * @example
 * ```ts
 * import { lastIdOf } from "./jetstream_layout.ts";
 * lastIdOf((name) => name === "Msgserver-Last" ? "64" : ""); // 64
 * ```
 */
export function lastIdOf(header: (name: string) => string): number | null {
  const text = header(Header.LAST);
  if (!/^\d{1,10}$/.test(text)) return null;
  const n = Number(text);
  return n <= 0xffffffff ? n : null;
}

/**
 * The msg_id of the line starting at `at` in `lines` (its second field), or -1 when the line has
 * none (it is not msgserver's `<client_id> <msg_id> <name> <payload>\n`).
 *
 * @example
 * ```ts
 * import { lineMsgId } from "./jetstream_layout.ts";
 * const lines = new TextEncoder().encode("7 41 a x\n7 42 a y\n");
 * lineMsgId(lines, 9); // 42
 * ```
 */
export function lineMsgId(lines: Uint8Array, at: number): number {
  const end = lines.length;
  let i = at;
  while (i < end && lines[i] !== SPACE) {
    if (lines[i] === LF) return -1;
    i++;
  }
  let id = 0;
  const start = ++i;
  for (; i < end && lines[i] !== SPACE; i++) {
    const digit = lines[i]! - ZERO;
    if (digit < 0 || digit > 9) return -1;
    id = id * 10 + digit;
  }
  return i > start && i < end ? id : -1;
}

/**
 * Where the first line of `lines` whose msg_id is above `after` starts, or `lines.length` when
 * none is: the lines before it repeat msg_ids already stored (or written). A line that is not
 * msgserver's stops it there.
 *
 * @example
 * ```ts
 * import { linesAbove } from "./jetstream_layout.ts";
 * const lines = new TextEncoder().encode("7 41 a x\n7 42 a y\n");
 * linesAbove(lines, 41); // 9: "7 42 a y\n" and on
 * ```
 */
export function linesAbove(lines: Uint8Array, after: number): number {
  let at = 0;
  while (at < lines.length) {
    const id = lineMsgId(lines, at);
    if (id < 0 || id > after) break;
    const lf = lines.indexOf(LF, at);
    at = lf < 0 ? lines.length : lf + 1;
  }
  return at;
}

const LF = 0x0a;
const SPACE = 0x20;
const ZERO = 0x30;
