/**
 * The verifier: audits a data file. Every line must parse with valid escapes, the file must end
 * with a line feed (else its tail is torn), and each client's msg_ids must rise within a run.
 *
 * A run is what one producer sent: it starts at the client's first line and again wherever the
 * client's ids restart at 1 (msgclient and the client library number from 1). Inside a run an
 * id at or below the one before is a defect, unless it repeats an earlier line of the run byte for
 * byte: that is a resend after a crash (at-least-once), counted but allowed.
 *
 * @module
 */

import { parseLine } from "./server/line.ts";

const LF = 0x0a;
const CHUNK = 1024 * 1024;

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

interface RunState {
  last: number;
  /** msg_id -> hash of the line, for this run. */
  seen: Map<number, number>;
  summary: ClientSummary;
}

function fnv1a(bytes: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i]!, 0x01000193);
  return h >>> 0;
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

  const check = (line: Uint8Array) => {
    report.lines++;
    let rec;
    try {
      rec = parseLine(line);
    } catch (e) {
      defect((e as Error).message.replace(/^Cannot parse line: /, ""));
      return;
    }
    const hash = fnv1a(line);
    let state = runs.get(rec.clientId);
    if (state === undefined) {
      const summary = { lines: 0, runs: 1, resent: 0 };
      report.clients.set(rec.clientId, summary);
      state = { last: 0, seen: new Map(), summary };
      runs.set(rec.clientId, state);
    } else if (rec.msgId === 1 && state.last >= 1 && state.seen.get(1) !== hash) {
      state.summary.runs++;
      state.last = 0;
      state.seen.clear();
    }
    state.summary.lines++;
    if (rec.msgId <= state.last) {
      const earlier = state.seen.get(rec.msgId);
      if (earlier === hash) {
        state.summary.resent++;
        return;
      }
      defect(
        earlier === undefined
          ? `client ${rec.clientId} msg_id ${rec.msgId} goes backwards after ${state.last}`
          : `client ${rec.clientId} msg_id ${rec.msgId} repeated with other content`,
      );
      return;
    }
    state.last = rec.msgId;
    state.seen.set(rec.msgId, hash);
  };

  const file = await Deno.open(path, { read: true });
  try {
    let buf = new Uint8Array(CHUNK);
    let filled = 0;
    for (;;) {
      if (filled === buf.length) {
        const grown = new Uint8Array(buf.length * 2); // a line longer than the buffer
        grown.set(buf);
        buf = grown;
      }
      const n = await file.read(buf.subarray(filled));
      if (n === null) break;
      report.bytes += n;
      filled += n;
      let start = 0;
      for (let nl = buf.indexOf(LF, start); nl >= 0 && nl < filled; nl = buf.indexOf(LF, start)) {
        check(buf.subarray(start, nl));
        start = nl + 1;
      }
      buf.copyWithin(0, start, filled);
      filled -= start;
    }
    if (filled > 0) {
      report.tornBytes = filled;
      report.defectCount++;
      if (report.defects.length < maxDefects) {
        report.defects.push(`end of file: torn last line (${filled} bytes without a line feed)`);
      }
    }
  } finally {
    file.close();
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
