/**
 * The verifier: audits a data file. Every line must parse with valid escapes, the file must end
 * with a line feed (else its tail is torn), and each client's msg_ids must rise within a run.
 *
 * A run is what one producer sent: it starts at the client's first line and again wherever the
 * client's ids restart at 1 (msgclient and the client library number from 1). Inside a run an
 * id at or below the one before is a defect, unless it repeats an earlier line of the run byte for
 * byte: that is a resend after a crash (at-least-once), counted but allowed.
 *
 * It is built for files of many GB: one pass over each 1 MiB chunk with no allocation per line.
 * {@linkcode LineScan} checks a line, reads its ids and hashes it in that pass; only a line it
 * rejects goes to `parseLine`, whose error text is the defect. Each run keeps a 4-byte hash per
 * line, by msg_id, in a `RunIndex` (typed arrays, not a `Map`) to tell a resend from a repeat
 * with other content.
 *
 * (Over 400 lines: the line scanner and the run index are the verifier's speed; apart from it
 * they would serve nothing else.)
 *
 * @module
 */

import { parseLine } from "./server/line.ts";
import { readWholeLines } from "./io/whole_lines.ts";

const LF = 0x0a;
const CR = 0x0d;
const SPACE = 0x20;
const BACKSLASH = 0x5c;
const LETTER_N = 0x6e;
const LETTER_R = 0x72;
const DIGIT_0 = 0x30;
const DEL = 0x7f;
const MAX_U32 = 0xffffffff;
const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;
/** Spans a run may always keep; see `RunIndex`. */
const MIN_SPANS = 8;

/** Per-client counts. */
export interface ClientSummary {
  lines: number;
  runs: number;
  /** Lines that repeat an earlier line of the same run exactly (resends). */
  resent: number;
}

/** What {@linkcode verifyFile} found. */
export interface VerifyReport {
  lines: number;
  bytes: number;
  /** Bytes after the last line feed (a torn last line); 0 for a clean file. */
  tornBytes: number;
  clients: Map<number, ClientSummary>;
  /** Every defect, up to `maxDefects`, as `line N: what`. */
  defects: string[];
  /** Defects found in all, including those past `maxDefects`. */
  defectCount: number;
}

/**
 * The fast path over one line: from `start`, reads a line up to its line feed by the rules of
 * `parseLine`, without allocating. It accepts exactly the lines `parseLine` accepts (ids of 1 to
 * 10 digits with no leading zero and at most 2^32-1; a name of at least one byte, none below 0x21
 * nor 0x7f, and no UTF-8 check; a payload with no CR whose backslashes start `\\`, `\n` or
 * `\r`), and leaves the ids and the line's hash in its fields. It rejects every other line, and a
 * line not whole before `limit`; the caller then finds the line feed and asks `parseLine` why.
 *
 * The hash is 32-bit FNV-1a of the name, the space after it and the payload as written, which
 * with the ids are the whole line. It only tells a resend (the same bytes) from a repeat with
 * other content: two different lines of one client and msg_id collide with odds of 1 in 2^32,
 * and such a repeat would then be counted as a resend instead of a defect. That is the price of
 * keeping 4 bytes per line instead of the line.
 *
 * @example
 * ```ts
 * const line = new TextEncoder().encode("7 2 client_1 a\\nb\n");
 * const scan = new LineScan();
 * scan.scan(line, 0, line.length); // 17, where the line feed is
 * [scan.clientId, scan.msgId]; // [7, 2]
 * ```
 */
export class LineScan {
  /** The first field of the line scanned last, if it was accepted. */
  clientId = 0;
  /** The second field of the line scanned last, if it was accepted. */
  msgId = 0;
  /** The hash of the line scanned last, if it was accepted: see {@linkcode LineScan.hashLine}. */
  hash = 0;
  /** The value of the id read last by `#id`. */
  #value = 0;

  /**
   * The hash {@linkcode LineScan.scan} computes, of a `line` (without its line feed) that
   * `parseLine` accepts.
   */
  static hashLine(line: Uint8Array): number {
    let h = FNV_OFFSET;
    for (let i = line.indexOf(SPACE, line.indexOf(SPACE) + 1) + 1; i < line.length; i++) {
      h = Math.imul(h ^ line[i]!, FNV_PRIME);
    }
    return h >>> 0;
  }

  /**
   * Scans the line at `bytes[start]`, reading no further than `limit`. Returns where its line
   * feed is if the line is well formed, else -1.
   */
  scan(bytes: Uint8Array, start: number, limit: number): number {
    let i = this.#id(bytes, start, limit);
    if (i < 0) return -1;
    this.clientId = this.#value;
    i = this.#id(bytes, i + 1, limit);
    if (i < 0) return -1;
    this.msgId = this.#value;
    // The name, up to the next space: at least one byte, none a control character or DEL.
    const nameStart = ++i;
    let h = FNV_OFFSET;
    for (; i < limit; i++) {
      const c = bytes[i]!;
      if (c === SPACE) break;
      if (c < 0x21 || c === DEL) return -1;
      h = Math.imul(h ^ c, FNV_PRIME);
    }
    if (i === nameStart || i === limit) return -1;
    h = Math.imul(h ^ SPACE, FNV_PRIME);
    // The payload, up to the line feed: no CR, and every backslash starts \\, \n or \r.
    for (i++; i < limit; i++) {
      const c = bytes[i]!;
      if (c === LF) {
        this.hash = h >>> 0;
        return i;
      }
      h = Math.imul(h ^ c, FNV_PRIME);
      if (c === BACKSLASH) {
        if (++i === limit) return -1;
        const e = bytes[i]!;
        if (e !== BACKSLASH && e !== LETTER_N && e !== LETTER_R) return -1;
        h = Math.imul(h ^ e, FNV_PRIME);
      } else if (c === CR) {
        return -1;
      }
    }
    return -1;
  }

  /**
   * Reads a u32 in decimal from `start` up to a space: 1 to 10 digits, no leading zero. Returns
   * where the space is, or -1.
   */
  #id(bytes: Uint8Array, start: number, limit: number): number {
    let n = 0;
    let i = start;
    for (; i < limit; i++) {
      const d = bytes[i]! - DIGIT_0;
      if (d < 0 || d > 9) break;
      n = n * 10 + d;
    }
    const digits = i - start;
    if (
      i === limit || bytes[i] !== SPACE || digits === 0 || digits > 10 ||
      (digits > 1 && bytes[start] === DIGIT_0) || n > MAX_U32
    ) {
      return -1;
    }
    this.#value = n;
    return i;
  }
}

/**
 * The hash of every line a run kept, by msg_id: 4 to 8 bytes a line, where a `Map` took ~60.
 * Kept ids rise, and in a sound file by one, so at first they are stored as spans of consecutive
 * ids: a span is its first id and the index of its first hash in `#hashes`, 8 bytes for any
 * number of ids. Should the spans come to cost more than the ids themselves (ids that mostly
 * skip some), the run's ids are stored one by one instead, 4 bytes each. A lookup is a binary
 * search over either.
 */
class RunIndex {
  #hashes = new Uint32Array(64);
  #count = 0;
  #lastId = 0;
  #spanIds = new Uint32Array(4);
  #spanAt = new Uint32Array(4);
  #spans = 0;
  /** Every id, beside `#hashes`, once spans would cost more; then `#spans` is unused. */
  #ids: Uint32Array<ArrayBuffer> | null = null;

  /** Forgets every id, keeping the memory of the hashes. */
  clear(): void {
    this.#count = 0;
    this.#spans = 0;
    this.#ids = null;
  }

  /** Keeps the hash of `id`, which must be above every id kept. */
  add(id: number, hash: number): void {
    const count = this.#count;
    if (count === this.#hashes.length) {
      this.#hashes = doubled(this.#hashes);
      if (this.#ids !== null) this.#ids = doubled(this.#ids);
    }
    if (this.#ids !== null) {
      this.#ids[count] = id;
    } else if (this.#spans === 0 || id !== this.#lastId + 1) {
      // A span costs as much as two ids: past MIN_SPANS, switch once they are half as many.
      if (this.#spans >= MIN_SPANS && 2 * this.#spans >= count) {
        this.#toIds();
        this.#ids![count] = id;
      } else {
        if (this.#spans === this.#spanIds.length) {
          this.#spanIds = doubled(this.#spanIds);
          this.#spanAt = doubled(this.#spanAt);
        }
        this.#spanIds[this.#spans] = id;
        this.#spanAt[this.#spans] = count;
        this.#spans++;
      }
    }
    this.#hashes[count] = hash;
    this.#count = count + 1;
    this.#lastId = id;
  }

  /** The hash kept for `id`, or -1. */
  get(id: number): number {
    return this.#ids === null ? this.#getFromSpans(id) : this.#getFromIds(this.#ids, id);
  }

  #getFromSpans(id: number): number {
    const spans = this.#spans;
    if (spans === 0 || id < this.#spanIds[0]!) return -1;
    // The last span whose first id is at or below `id`.
    let lo = 0;
    let hi = spans - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.#spanIds[mid]! <= id) lo = mid;
      else hi = mid - 1;
    }
    const at = this.#spanAt[lo]! + (id - this.#spanIds[lo]!);
    const end = lo + 1 < spans ? this.#spanAt[lo + 1]! : this.#count;
    return at < end ? this.#hashes[at]! : -1;
  }

  #getFromIds(ids: Uint32Array, id: number): number {
    let lo = 0;
    let hi = this.#count - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const m = ids[mid]!;
      if (m === id) return this.#hashes[mid]!;
      if (m < id) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  /** Writes out the ids of the spans one by one, and from now on keeps them so. */
  #toIds(): void {
    const ids = new Uint32Array(this.#hashes.length);
    for (let k = 0; k < this.#spans; k++) {
      const end = k + 1 < this.#spans ? this.#spanAt[k + 1]! : this.#count;
      const first = this.#spanIds[k]!;
      for (let at = this.#spanAt[k]!, id = first; at < end; at++, id++) ids[at] = id;
    }
    this.#ids = ids;
    this.#spans = 0;
    this.#spanIds = new Uint32Array(4);
    this.#spanAt = new Uint32Array(4);
  }
}

function doubled(a: Uint32Array<ArrayBuffer>): Uint32Array<ArrayBuffer> {
  const b = new Uint32Array(a.length * 2);
  b.set(a);
  return b;
}

interface RunState {
  last: number;
  /** msg_id -> hash of the line, for this run. */
  seen: RunIndex;
  summary: ClientSummary;
}

/**
 * Reads `path` in chunks and checks every line.
 *
 * @example
 * ```ts
 * const report = await verifyFile("messages.log");
 * if (report.defectCount > 0) console.error(report.defects.join("\n"));
 * ```
 */
export async function verifyFile(
  path: string,
  options: { maxDefects?: number } = {},
): Promise<VerifyReport> {
  const maxDefects = options.maxDefects ?? 100;
  const report: VerifyReport = {
    lines: 0,
    bytes: 0,
    tornBytes: 0,
    clients: new Map(),
    defects: [],
    defectCount: 0,
  };
  const defect = (text: string) => {
    report.defectCount++;
    if (report.defects.length < maxDefects) report.defects.push(`line ${report.lines}: ${text}`);
  };
  const runs = new Map<number, RunState>();

  const check = (clientId: number, msgId: number, hash: number) => {
    let state = runs.get(clientId);
    if (state === undefined) {
      const summary = { lines: 0, runs: 1, resent: 0 };
      report.clients.set(clientId, summary);
      state = { last: 0, seen: new RunIndex(), summary };
      runs.set(clientId, state);
    } else if (msgId === 1 && state.last >= 1 && state.seen.get(1) !== hash) {
      state.summary.runs++;
      state.last = 0;
      state.seen.clear();
    }
    state.summary.lines++;
    if (msgId <= state.last) {
      const earlier = state.seen.get(msgId);
      if (earlier === hash) {
        state.summary.resent++;
        return;
      }
      defect(
        earlier === -1
          ? `client ${clientId} msg_id ${msgId} goes backwards after ${state.last}`
          : `client ${clientId} msg_id ${msgId} repeated with other content`,
      );
      return;
    }
    state.last = msgId;
    state.seen.add(msgId, hash);
  };

  const checkSlowly = (line: Uint8Array) => {
    let rec;
    try {
      rec = parseLine(line);
    } catch (e) {
      defect((e as Error).message.replace(/^Cannot parse line: /, ""));
      return;
    }
    // Not reached while LineScan accepts all parseLine does (tests/verify_differential_test.ts);
    // were it reached, the line would still count, only slower.
    check(rec.clientId, rec.msgId, LineScan.hashLine(line));
  };

  const scan = new LineScan();
  const { bytes, tornBytes } = await readWholeLines(path, (chunk) => {
    const end = chunk.length;
    let start = 0;
    while (start < end) {
      let nl = scan.scan(chunk, start, end);
      report.lines++;
      if (nl < 0) {
        // Malformed: the slow path says why. The chunk ends with a line feed, so there is one.
        nl = chunk.indexOf(LF, start);
        checkSlowly(chunk.subarray(start, nl));
      } else {
        check(scan.clientId, scan.msgId, scan.hash);
      }
      start = nl + 1;
    }
  });
  report.bytes = bytes;
  if (tornBytes > 0) {
    report.tornBytes = tornBytes;
    report.defectCount++;
    if (report.defects.length < maxDefects) {
      report.defects.push(`end of file: torn last line (${tornBytes} bytes without a line feed)`);
    }
  }
  return report;
}

/**
 * Formats a report for people.
 *
 * @example
 * ```ts
 * console.log(formatReport("messages.log", await verifyFile("messages.log")));
 * ```
 */
export function formatReport(path: string, report: VerifyReport): string {
  const out = [
    `file: ${path}`,
    `lines: ${report.lines} (${report.bytes} bytes)`,
    `clients: ${report.clients.size}`,
  ];
  if (report.clients.size > 0) {
    out.push("  client_id       lines   runs  resent");
    const ids = [...report.clients.keys()].sort((a, b) => a - b);
    for (const id of ids.slice(0, 50)) {
      const c = report.clients.get(id)!;
      out.push(
        `  ${String(id).padEnd(10)} ${String(c.lines).padStart(10)} ${
          String(c.runs).padStart(6)
        } ` +
          `${String(c.resent).padStart(7)}`,
      );
    }
    if (ids.length > 50) out.push(`  ... and ${ids.length - 50} more clients`);
  }
  out.push(`defects: ${report.defectCount}`);
  for (const d of report.defects) out.push(`  ${d}`);
  if (report.defectCount > report.defects.length) {
    out.push(`  ... and ${report.defectCount - report.defects.length} more`);
  }
  out.push(report.defectCount === 0 ? "OK" : "DEFECTS FOUND");
  return out.join("\n");
}

/**
 * The `verify` command: `verify [FILE]` (default FILE_NAME from config is the caller's job).
 * Returns the exit status: 0 clean, 1 defects, 2 cannot read.
 *
 * @example
 * ```ts
 * Deno.exit(await verifyCommand("messages.log"));
 * ```
 */
export async function verifyCommand(path: string): Promise<number> {
  let report;
  try {
    report = await verifyFile(path);
  } catch (e) {
    console.error(`verify: Cannot read "${path}": ${(e as Error).message}`);
    return 2;
  }
  console.log(formatReport(path, report));
  return report.defectCount === 0 ? 0 : 1;
}
