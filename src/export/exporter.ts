/**
 * The exporter: appends a stream's messages to the output, each once, in stream order.
 *
 * It takes what the source gives, batch by batch, and keeps one rule: the next message in the
 * output is the one at the output's last sequence plus one. A message at or below it is a
 * redelivery and is skipped. A message above it means sequences are missing: each missing one is
 * read from the stream itself (`StreamSource.get`) and written in its place; one the stream no
 * longer holds stops the export (what came before the gap is written, nothing after it). The
 * lines of one batch go out in one write, then the resume point (see `output.ts`), then the
 * source's acknowledgement.
 *
 * A session's records that the stream holds twice (a race of nats-server 2.9.10, see
 * `session_marks.ts`) are written once: the lines at or below the highest msg_id already written
 * for the session in this run are left out, and counted.
 *
 * Each session's message names the sequence of the one before it, so a batch is checked before
 * it is written: a message that does not follow on from where its session was last seen means
 * the batch came from a replica that disagrees with the leader (or has a message missing), and
 * the batch is read again from the stream's leader. If the leader's messages do not follow on
 * either, the leader is asked for the one in question: a race's double is written once, a
 * message removed since is passed over, and one showing that the output already holds another
 * message at that sequence stops the export (exit 1) rather than go on from a wrong output.
 *
 * Without `follow` it stops once the output holds sequence `until` (the stream's last when the
 * export began); with it, it goes on until `signal` aborts.
 *
 * @module
 */

import type { Logger } from "../log.ts";
import type { ExportOutput } from "./output.ts";
import { lineMsgId } from "../store/jetstream_layout.ts";
import { type ChainBreak, SessionMarks } from "./session_marks.ts";
import { ExportError, type SourceMessage, type StreamSource } from "./source.ts";

const LF = 0x0a;

/** Options of {@linkcode exportStream}. */
export interface ExportOptions {
  /** Keep going after the end (until `signal` aborts). */
  follow: boolean;
  /** Without `follow`: the last sequence to export (the stream's last when the export began). */
  until: number;
  log: Logger;
  /** Aborting it stops the export after the batch in hand is written. */
  signal?: AbortSignal;
  /** Milliseconds between progress lines; 5000 by default, 0 for none. */
  progressMs?: number;
}

/** What an export did. */
export interface ExportSummary {
  /** The output's last sequence when the export began. */
  startSeq: number;
  /** The output's last sequence at the end. */
  endSeq: number;
  /** Messages written (each a batch of one session's lines). */
  messages: number;
  /** Lines written. */
  records: number;
  /** Bytes written. */
  bytes: number;
  /** Messages given again and skipped. */
  redelivered: number;
  /** Lines left out: records of a session the stream holds twice, written once. */
  doubled: number;
  /** Missing sequences read from the stream and written in their place. */
  filled: number;
  /** Batches read again from the stream's leader: a session's messages did not follow on. */
  reread: number;
  /** Milliseconds from start to end. */
  ms: number;
  /** True when it stopped because `signal` aborted (before the end, without `follow`). */
  interrupted: boolean;
}

/** Counts the lines of `data`: its line feeds. */
function countLines(data: Uint8Array): number {
  let n = 0;
  for (let i = data.indexOf(LF); i >= 0; i = data.indexOf(LF, i + 1)) n++;
  return n;
}

/** The batch being assembled: the lines of consecutive messages, in one reused buffer. */
class Batch {
  #buf = new Uint8Array(1024 * 1024);
  length = 0;

  add(data: Uint8Array): void {
    const need = this.length + data.length;
    if (need > this.#buf.length) {
      let size = this.#buf.length * 2;
      while (size < need) size *= 2;
      const grown = new Uint8Array(size);
      grown.set(this.#buf.subarray(0, this.length));
      this.#buf = grown;
    }
    this.#buf.set(data, this.length);
    this.length = need;
  }

  get bytes(): Uint8Array {
    return this.#buf.subarray(0, this.length);
  }
}

/** Resolves when `signal` aborts; never when there is none. */
function aborted(signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal === undefined) return;
    if (signal.aborted) resolve();
    else signal.addEventListener("abort", () => resolve(), { once: true });
  });
}

/**
 * Exports from `source` into `output` until the end (see the module comment). Resolves with what
 * it did; rejects with an {@linkcode ExportError} when it cannot go on (a gap the stream cannot
 * fill, a message that is not msgserver's lines, NATS failing), after writing everything before
 * the point of failure.
 *
 * @example
 * ```ts
 * import { Logger } from "../log.ts";
 * import { ExportOutput } from "./output.ts";
 * import type { StreamSource } from "./source.ts";
 *
 * declare const source: StreamSource;
 * const output = await ExportOutput.open("out.log", { stream: "MSGS", created: "t", startAfter: 0 });
 * const summary = await exportStream(output, source, {
 *   follow: false,
 *   until: 100,
 *   log: new Logger("info"),
 * });
 * console.log(`${summary.records} records`);
 * ```
 */
export async function exportStream(
  output: ExportOutput,
  source: StreamSource,
  options: ExportOptions,
): Promise<ExportSummary> {
  const { follow, until, log, signal } = options;
  const progressMs = options.progressMs ?? 5000;
  const started = performance.now();
  const summary: ExportSummary = {
    startSeq: output.seq,
    endSeq: output.seq,
    messages: 0,
    records: 0,
    bytes: 0,
    redelivered: 0,
    doubled: 0,
    filled: 0,
    reread: 0,
    ms: 0,
    interrupted: false,
  };
  const stop = aborted(signal).then(() => [] as SourceMessage[]);
  const stopping = () => signal?.aborted === true;
  const batch = new Batch();
  const marks = new SessionMarks();
  let nextProgress = started + progressMs;
  let progressRecords = 0;
  let progressAt = started;

  /** The seq of the last message taken into the batch. */
  let last = output.seq;

  /**
   * The lines of `data` before `cut` (msg_ids written before) that are not byte for byte the
   * line of their msg_id in one of the session's `earlier` messages, read from the stream.
   */
  const notRepeated = async (subject: string, data: Uint8Array, cut: number, earlier: number[]) => {
    const copies: Uint8Array[] = [];
    for (const seq of earlier) {
      const held = await source.get(seq);
      if (held !== null && held.subject === subject) copies.push(held.data);
    }
    const kept: Uint8Array[] = [];
    for (let at = 0; at < cut;) {
      const end = data.indexOf(LF, at) + 1;
      const line = data.subarray(at, end);
      if (!copies.some((copy) => holdsLine(copy, lineMsgId(line, 0), line))) kept.push(line);
      at = end;
    }
    return kept;
  };

  /**
   * Adds `m`'s lines to the batch; undefined when done at once (all but a repeated msg_id, which
   * must be compared with the stream's earlier messages first), else a promise.
   */
  const take = (m: SourceMessage): Promise<void> | undefined => {
    const data = m.data;
    if (data.length > 0 && data[data.length - 1] !== LF) {
      throw new ExportError(
        "format",
        `Cannot export stream sequence ${m.seq} (subject "${m.subject}"): its data does not end ` +
          `with a line feed, so it is not msgserver's lines; the output ends at sequence ${last}`,
      );
    }
    last = m.seq;
    const cut = marks.cut(m);
    if (cut === 0) {
      batch.add(data);
      summary.messages++;
      summary.records += m.records ?? countLines(data);
      return;
    }
    return takeRepeated(m, cut);
  };

  /** `take` for a message whose lines before `cut` repeat msg_ids written before. */
  const takeRepeated = async (m: SourceMessage, cut: number) => {
    const data = m.data;
    const differing = await notRepeated(m.subject, data, cut, marks.recent(m.subject, m.seq));
    const repeated = countLines(data.subarray(0, cut)) - differing.length;
    summary.doubled += repeated;
    if (repeated > 0) {
      log.throttled(
        "export:doubled",
        1000,
        "warn",
        "records the stream holds twice: written once",
        {
          seq: m.seq,
          subject: m.subject,
          lines_left_out: repeated,
        },
      );
    }
    if (differing.length > 0) {
      log.warn("msg_ids written before, with other records: written too", {
        seq: m.seq,
        subject: m.subject,
        lines: differing.length,
      });
    }
    for (const line of differing) batch.add(line);
    if (cut < data.length) batch.add(data.subarray(cut));
    const lines = countLines(data) - repeated;
    if (lines > 0) summary.messages++;
    summary.records += lines;
  };

  /**
   * `messages` past `last`, with those from sequence `from` on as the stream's leader holds them.
   * A sequence the leader no longer holds (its limits removed it meanwhile) ends the reading: the
   * messages from there on stay as delivered.
   */
  const fromLeader = async (messages: SourceMessage[], from: number): Promise<SourceMessage[]> => {
    const out = messages.filter((m) => m.seq > last && m.seq < from);
    const end = messages.reduce((e, m) => Math.max(e, m.seq), last);
    for (let seq = from; seq <= end; seq++) {
      const held = await source.get(seq);
      if (held === null) {
        for (const m of messages) if (m.seq >= seq) out.push(m);
        break;
      }
      out.push(held);
    }
    return out;
  };

  /** A break in the leader's own messages: taken, or an error when the output is wrong. */
  const judge = async ({ message: m, seen }: ChainBreak) => {
    const expected = m.expected!;
    // Where the leader's chain and the output's disagree: the leader's previous message of the
    // session, or the one the output took for it.
    const at = expected > seen ? expected : seen;
    const held = await source.get(at);
    const mine = held !== null && held.subject === m.subject;
    if (expected > seen ? mine : held !== null && !mine) {
      throw new ExportError(
        "replica",
        `Cannot export stream sequence ${m.seq} (subject "${m.subject}"): the output holds at ` +
          `sequence ${at} a message other than the stream leader's (it was read from a replica ` +
          `that disagreed with the leader), so it is wrong from sequence ${at} on; the output ` +
          `ends at sequence ${output.seq}: export again into a new file`,
      );
    }
    log.warn("a session's messages do not follow on at the stream's leader either: taken", {
      seq: m.seq,
      subject: m.subject,
      expected,
      seen,
      why: expected > seen ? "the one expected is gone" : "two expected the same one",
    });
  };

  /** `messages`, or the leader's in their place when a session's do not follow on. */
  const followingOn = async (messages: SourceMessage[]): Promise<SourceMessage[]> => {
    const breaks = marks.breaks(messages, last);
    if (breaks.length === 0) return messages;
    const { message: m, seen } = breaks[0]!;
    log.warn("a session's messages do not follow on: reading them from the stream's leader", {
      seq: m.seq,
      subject: m.subject,
      expected: m.expected,
      seen,
    });
    summary.reread++;
    // Every message a break implicates lies at or after its session's previous one, as seen or
    // as expected: the batch is read again from the first of those.
    let from = Infinity;
    for (const b of breaks) from = Math.min(from, b.seen, b.message.expected!);
    const read = await fromLeader(messages, Math.max(from, last + 1));
    for (const b of marks.breaks(read, last)) if (!b.inBatch) await judge(b);
    return read;
  };

  const write = async () => {
    if (last === output.seq) return;
    summary.bytes += batch.length;
    await output.append(batch.bytes, last);
    batch.length = 0;
    source.commit(last);
    summary.endSeq = last;
  };

  for (;;) {
    if (stopping()) {
      summary.interrupted = !follow && output.seq < until;
      break;
    }
    if (!follow && output.seq >= until) break;
    const next = source.next();
    // Abandoned when the signal wins; its failure then matters to no one.
    next.catch(() => {});
    let messages = await Promise.race([next, stop]);
    if (messages.length === 0) {
      if (stopping() || follow) continue;
      // Nothing came though the stream held more when the export began: either the source
      // passed over the next sequence, or the stream no longer holds it. Ask the stream.
      const missing = await source.get(last + 1);
      if (missing === null) throw gapError(last + 1, null, output.seq);
      log.warn("sequence not delivered: read from the stream", { seq: missing.seq });
      summary.filled++;
      messages = [missing];
    }
    try {
      messages = await followingOn(messages);
      for (const m of messages) {
        if (m.seq <= last) {
          summary.redelivered++;
          continue;
        }
        while (m.seq > last + 1) {
          const seq = last + 1;
          const got = await source.get(seq);
          if (got === null || got.seq !== seq) throw gapError(seq, m.seq, last);
          log.warn("gap filled from the stream", { seq, next: m.seq });
          summary.filled++;
          await take(got);
        }
        const taking = take(m);
        if (taking !== undefined) await taking;
      }
    } finally {
      // Whatever came before a failure is good: write it, so the output ends just before it.
      await write();
    }
    const now = performance.now();
    if (progressMs > 0 && now >= nextProgress) {
      const rate = (summary.records - progressRecords) / ((now - progressAt) / 1000);
      log.info("export progress", {
        seq: output.seq,
        ...(follow ? {} : { until }),
        records: summary.records,
        records_per_s: Math.round(rate),
      });
      nextProgress = now + progressMs;
      progressRecords = summary.records;
      progressAt = now;
    }
  }
  summary.ms = performance.now() - started;
  return summary;
}

/** Whether `lines` holds a line with msg_id `msgId` that is `line`, byte for byte. */
function holdsLine(lines: Uint8Array, msgId: number, line: Uint8Array): boolean {
  for (let at = 0; at < lines.length;) {
    const lf = lines.indexOf(LF, at);
    const end = lf < 0 ? lines.length : lf + 1;
    if (end - at === line.length && lineMsgId(lines, at) === msgId) {
      let same = true;
      for (let i = 0; i < line.length && same; i++) same = lines[at + i] === line[i];
      if (same) return true;
    }
    at = end;
  }
  return false;
}

function gapError(seq: number, next: number | null, written: number): ExportError {
  return new ExportError(
    "gap",
    `Cannot export stream sequence ${seq}: the stream no longer holds it` +
      (next === null ? "" : ` (the next message delivered was ${next})`) +
      `; the output ends at sequence ${written}, and nothing after the gap is written`,
  );
}
