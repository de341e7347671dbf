/**
 * The load tool's report: what a run produced ({@linkcode Report}, printed as JSON with `--json`)
 * and the table people read.
 *
 * @module
 */

import type { AckMode } from "../../src/config.ts";
import type { StopResult } from "../../tests/support/spawn.ts";
import type { FileCheck } from "./file_check.ts";
import { fmtInt, fmtMiB } from "./format.ts";
import type { PhaseResult } from "./phase.ts";

/** Everything a run produced; `--json` prints it. */
export interface Report {
  /** The preset run, if any. */
  preset: string | null;
  /** ACK_MODE of the server the bench started (null for a running server). */
  ackMode: AckMode | null;
  /** The server and, when the bench started it, what it cost. */
  server: {
    host: string;
    port: number;
    startedByBench: boolean;
    pid: number | null;
    /** CPU seconds in user mode over the whole run (/proc/<pid>/stat). */
    cpuUserS: number | null;
    /** CPU seconds in the kernel over the whole run. */
    cpuSysS: number | null;
    /** User plus system CPU seconds. */
    cpuS: number | null;
    /** Peak resident memory (VmHWM). */
    peakRssBytes: number | null;
    /** How it ended after SIGTERM. */
    exit: StopResult | null;
    /** True when it was gone before the bench stopped it. */
    exitedEarly: boolean;
    /** The data file, when it was kept. */
    dataFile: string | null;
  };
  /** CPU seconds the load generator used. */
  loadCpuS: number | null;
  /** One result per phase run. */
  phases: Omit<PhaseResult, "ackedByClient">[];
  /** The line count check, or null for a running server. */
  fileCheck: FileCheck | null;
  /** True when nothing went wrong (the exit status is 0). */
  ok: boolean;
  /** What went wrong, one line each. */
  problems: string[];
}

function us(v: number): string {
  if (Number.isNaN(v)) return "n/a";
  return v >= 100 ? fmtInt(v) : v.toFixed(1);
}

function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((c, i) => widths[i] = Math.max(widths[i] ?? 0, c.length));
  return rows.map((row) =>
    row.map((c, i) => i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)).join("  ")
      .trimEnd()
  ).join("\n");
}

/**
 * The report as the table people read (`--json` prints the {@linkcode Report} itself).
 *
 * @example
 * ```ts
 * declare const report: Report;
 * console.log(formatReport(report));
 * ```
 */
export function formatReport(r: Report): string {
  const out: string[] = [];
  const s = r.server;
  out.push(
    `msgserver load: preset ${r.preset ?? "(none)"}, server ${s.host}:${s.port}` +
      (s.startedByBench ? ` (started by the bench, pid ${s.pid}, ack-mode ${r.ackMode})` : ""),
  );
  out.push("");
  const p = r.phases;
  const row = (label: string, f: (x: (typeof p)[number]) => string) => [label, ...p.map(f)];
  out.push(table([
    ["phase", ...p.map((x) => x.name)],
    row("connections x window", (x) => `${fmtInt(x.connections)} x ${fmtInt(x.window)}`),
    row("payload bytes", (x) => fmtInt(x.size)),
    row("run", (x) => x.durationS !== null ? `${x.durationS} s` : `${fmtInt(x.count ?? 0)} msgs`),
    row("connect time ms", (x) => x.connectMs.toFixed(1)),
    row("connect failures", (x) => fmtInt(x.connectFailures)),
    row("messages sent", (x) => fmtInt(x.sent)),
    row("messages acked", (x) => fmtInt(x.acked)),
    row("messages NACKed", (x) => fmtInt(x.nacked)),
    row("unsettled", (x) => fmtInt(x.unsettled)),
    row("errors", (x) => fmtInt(x.errors)),
    row("elapsed s", (x) => x.elapsedS.toFixed(3)),
    row("msgs/s", (x) => fmtInt(x.msgsPerS)),
    row("MB/s (payload)", (x) => x.mbPerS.toFixed(2)),
    row("latency p50 us", (x) => us(x.latencyUs.p50)),
    row("latency p90 us", (x) => us(x.latencyUs.p90)),
    row("latency p99 us", (x) => us(x.latencyUs.p99)),
    row("latency p99.9 us", (x) => us(x.latencyUs.p999)),
    row("latency max us", (x) => us(x.latencyUs.max)),
    row("latency mean us", (x) => us(x.latencyUs.mean)),
    row("acks/conn min", (x) => fmtInt(x.acksPerConnection.min)),
    row("acks/conn median", (x) => fmtInt(x.acksPerConnection.median)),
    row("acks/conn max", (x) => fmtInt(x.acksPerConnection.max)),
  ]));
  for (const x of p) {
    if (x.perClient === null) continue;
    out.push("");
    out.push(`per-client average latency, phase "${x.name}":`);
    const rows = [["client", "acked", "avg latency us"]];
    for (const c of x.perClient) rows.push([String(c.client), fmtInt(c.acked), us(c.avgLatencyUs)]);
    rows.push(["overall", fmtInt(x.acked), us(x.latencyUs.mean)]);
    out.push(table(rows));
  }
  out.push("");
  out.push(table([
    ["server", ""],
    [
      "CPU seconds",
      s.cpuS === null
        ? "n/a"
        : `${s.cpuS.toFixed(2)} (user ${s.cpuUserS!.toFixed(2)}, sys ${s.cpuSysS!.toFixed(2)})`,
    ],
    ["peak RSS (VmHWM)", fmtMiB(s.peakRssBytes)],
    [
      "exit after SIGTERM",
      s.exit === null
        ? "n/a"
        : s.exit.timedOut
        ? `did not exit in time: killed`
        : `code ${s.exit.code}${s.exit.signal ? ` signal ${s.exit.signal}` : ""} in ` +
          `${s.exit.ms.toFixed(0)} ms`,
    ],
    ["load generator CPU s", r.loadCpuS === null ? "n/a" : r.loadCpuS.toFixed(2)],
  ]));
  out.push("");
  out.push(formatFileCheck(r.fileCheck));
  for (const x of p) {
    for (const e of x.errorSamples) out.push(`note [${x.name}]: ${e}`);
  }
  for (const problem of r.problems) out.push(`PROBLEM: ${problem}`);
  return out.join("\n");
}

/**
 * The report's `file check:` line: lines and acks, `OK` or `MISMATCH`, and on a mismatch what
 * differs (clients, defects the verifier found, a torn last line).
 *
 * @example
 * ```ts
 * formatFileCheck(null); // "file check: skipped (server not started by the bench)"
 * ```
 */
export function formatFileCheck(f: FileCheck | null): string {
  if (f === null) return "file check: skipped (server not started by the bench)";
  return `file check: ${fmtInt(f.lines)} lines, ${fmtInt(f.expected)} acked: ` +
    (f.ok ? "OK" : "MISMATCH") +
    (f.clientMismatchCount > 0
      ? ` (${f.clientMismatchCount} clients differ, e.g. ` +
        f.clientMismatches.map((m) => `client ${m.client}: ${m.lines} lines/${m.acked} acked`)
          .join("; ") +
        ")"
      : "") +
    (f.defects !== undefined
      ? ` (${f.defects.count} ${f.defects.count === 1 ? "defect" : "defects"}, e.g. ` +
        f.defects.samples.join("; ") + ")"
      : "") +
    (f.tornTail ? " (last line torn)" : "");
}
