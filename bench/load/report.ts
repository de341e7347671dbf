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
  phases: Omit<PhaseResult, "ackedByClient" | "ledgers">[];
  /** The line count check, or null for a running server (and for the cluster preset). */
  fileCheck: FileCheck | null;
  /** With `--status-pages`: how many were open and the snapshots each received during the run. */
  statusPages?: { count: number; snapshots: number[]; browserCpuS: number | null };
  /** The cluster preset's own figures, phase by phase; absent for the other presets. */
  cluster?: ClusterReport;
  /** True when nothing went wrong (the exit status is 0). */
  ok: boolean;
  /** What went wrong, one line each. */
  problems: string[];
}

/** The cluster preset's run: the NATS nodes it started, and its figures for each phase. */
export interface ClusterReport {
  /** The nats-server processes, as first started. */
  nodes: { name: string; pid: number }[];
  /** Cores the machine has: what every process of the run shared. */
  cores: number;
  /** One per phase run, in the order of `Report.phases`. */
  phases: ClusterPhaseReport[];
}

/**
 * One phase of the cluster preset beyond the load figures: its stream, the failover, what each
 * process cost while it ran (the cluster's own limits), the export of its stream and its check.
 */
export interface ClusterPhaseReport {
  /** The phase's name. */
  name: string;
  /** The stream the phase's msgserver created (fresh for each phase), and its subject prefix. */
  stream: string;
  subject: string;
  /** The stream's replicas. */
  replicas: number;
  /**
   * The node leading the stream as the phase began, and the node msgserver's NATS connection
   * went to (its log says): when they differ, every publish crosses a route between nodes.
   */
  leader: string | null;
  msgserverNode: string | null;
  /** The phase's msgserver: CPU seconds and peak RSS over its life, and its exit. */
  server: {
    pid: number;
    cpuS: number | null;
    peakRssBytes: number | null;
    exit: StopResult | null;
    exitedEarly: boolean;
  };
  /**
   * CPU seconds over the phase, connecting to the last ACK (`wallS`): each NATS node (a killed
   * one up to its kill), their sum, msgserver, the load generator, and the whole machine (all
   * cores, other work included). Null where /proc could not be read.
   */
  cpu: {
    wallS: number;
    natsNodesS: (number | null)[];
    natsS: number | null;
    msgserverS: number | null;
    loadS: number | null;
    machineBusyS: number | null;
  };
  /** The failover, for a phase that kills the stream's leader; null for the others. */
  failover: {
    /** The node killed with SIGKILL, and when, in seconds after the first send. */
    killed: string;
    killedAtS: number;
    /** The stream's next leader as a client saw it, and when; null if none was seen. */
    newLeader: string | null;
    electedAtS: number | null;
    /** Milliseconds to restart the killed node after the phase, until it was current. */
    restartMs: number | null;
  } | null;
  /** `msgserver export` of the stream into a file; null when it did not run. */
  export: {
    /** Its exit status. */
    code: number;
    /** From its `export done` line: records, milliseconds and records/s in the exporter. */
    records: number | null;
    ms: number | null;
    recordsPerS: number | null;
    /** Seconds of the whole process, Deno's start-up and connecting included. */
    wallS: number;
  } | null;
  /** The export checked against the phase's acks, msg_id by msg_id; null without an export. */
  fileCheck: FileCheck | null;
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
  const c = r.cluster;
  out.push(
    c !== undefined
      ? `msgserver load: preset ${r.preset ?? "(none)"}, STORE=jetstream, ack-mode ${r.ackMode}, ` +
        `a msgserver per phase over a ${c.nodes.length}-node NATS cluster (nats-server pids ` +
        `${c.nodes.map((n) => n.pid).join(", ")}), ${c.cores} cores shared by all`
      : `msgserver load: preset ${r.preset ?? "(none)"}, server ${s.host}:${s.port}` +
        (s.startedByBench ? ` (started by the bench, pid ${s.pid}, ack-mode ${r.ackMode})` : ""),
  );
  if (r.statusPages !== undefined) {
    out.push(
      `status pages open during the run: ${r.statusPages.count} (snapshots received: ` +
        `${r.statusPages.snapshots.join(", ")}; Chromium's CPU over the run: ` +
        `${r.statusPages.browserCpuS?.toFixed(2) ?? "n/a"} s)`,
    );
  }
  out.push("");
  const p = r.phases;
  const row = (label: string, f: (x: (typeof p)[number]) => string) => [label, ...p.map(f)];
  out.push(table([
    ["phase", ...p.map((x) => x.name)],
    row("connections x window", (x) => `${fmtInt(x.connections)} x ${fmtInt(x.window)}`),
    row("payload bytes", (x) => fmtInt(x.size)),
    row(
      "run",
      (x) =>
        (x.durationS !== null ? `${x.durationS} s` : `${fmtInt(x.count ?? 0)} msgs`) +
        (x.rounds !== undefined ? ` x ${x.rounds} rounds` : ""),
    ),
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
    row("longest ack gap ms", (x) => fmtInt(x.longestAckGap.ms)),
    row("longest stall ms", (x) => fmtInt(x.stall.ms)),
    row("acks/conn min", (x) => fmtInt(x.acksPerConnection.min)),
    row("acks/conn median", (x) => fmtInt(x.acksPerConnection.median)),
    row("acks/conn max", (x) => fmtInt(x.acksPerConnection.max)),
  ]));
  for (const x of p) {
    if (x.perClient === null) continue;
    out.push("");
    out.push(
      x.rounds !== undefined
        ? `each round's average latency (a fresh client each round), phase "${x.name}":`
        : `per-client average latency, phase "${x.name}":`,
    );
    const rows = [["client", "acked", "avg latency us"]];
    for (const c of x.perClient) rows.push([String(c.client), fmtInt(c.acked), us(c.avgLatencyUs)]);
    rows.push(["overall", fmtInt(x.acked), us(x.latencyUs.mean)]);
    if (x.rounds !== undefined && x.perClient.length > 0) {
      // The first rounds carry the JIT's warm-up (server and tool alike): the median round does not.
      const avgs = x.perClient.map((c) => c.avgLatencyUs).sort((a, b) => a - b);
      const mid = avgs.length >> 1;
      const median = avgs.length % 2 === 1 ? avgs[mid]! : (avgs[mid - 1]! + avgs[mid]!) / 2;
      rows.push(["median round", "", us(median)]);
    }
    out.push(table(rows));
  }
  if (c !== undefined) {
    out.push("");
    out.push(formatCluster(c, r.phases, r.loadCpuS));
  } else {
    out.push("");
    out.push(formatServer(r));
    out.push("");
    out.push(formatFileCheck(r.fileCheck));
  }
  for (const x of p) {
    for (const e of x.errorSamples) out.push(`note [${x.name}]: ${e}`);
  }
  for (const problem of r.problems) out.push(`PROBLEM: ${problem}`);
  return out.join("\n");
}

/** The table of the server the tool started (or could not read). */
function formatServer(r: Report): string {
  const s = r.server;
  return table([
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
  ]);
}

/** CPU seconds as a percentage of one core over `wallS`. */
function pct(cpuS: number | null, wallS: number): string {
  return cpuS === null || wallS <= 0 ? "n/a" : `${Math.round(cpuS / wallS * 100)}%`;
}

/** Seconds after the first send, as `3.01 s`. */
function at(s: number | null): string {
  return s === null ? "none seen" : `${s.toFixed(2)} s`;
}

/**
 * The cluster preset's table, one column per phase (the stream, the failover and its stall, CPU
 * as % of one core, the phase's msgserver, the export), then each export's check.
 */
function formatCluster(
  c: ClusterReport,
  phases: Report["phases"],
  loadCpuS: number | null,
): string {
  const cols = c.phases.map((x, i) => ({ x, phase: phases[i] }));
  type Col = (typeof cols)[number];
  const row = (label: string, f: (col: Col) => string) => [label, ...cols.map(f)];
  const failover =
    (f: (x: NonNullable<ClusterPhaseReport["failover"]>, col: Col) => string) => (col: Col) =>
      col.x.failover === null ? "-" : f(col.x.failover, col);
  const exported = (f: (x: NonNullable<ClusterPhaseReport["export"]>) => string) => (col: Col) =>
    col.x.export === null ? "n/a" : f(col.x.export);
  const cpu = (f: (x: ClusterPhaseReport["cpu"]) => number | null) => (col: Col) =>
    pct(f(col.x.cpu), col.x.cpu.wallS);
  const ours = (x: ClusterPhaseReport["cpu"]) =>
    x.natsS === null || x.msgserverS === null || x.loadS === null
      ? null
      : x.natsS + x.msgserverS + x.loadS;
  const out: string[] = [];
  out.push(table([
    ["cluster", ...cols.map((col) => col.x.name)],
    row("stream (replicas)", ({ x }) => `${x.stream} (R${x.replicas})`),
    row("stream leader at the start", ({ x }) => x.leader ?? "n/a"),
    row("msgserver's NATS node", ({ x }) => x.msgserverNode ?? "n/a"),
    row("leader killed (SIGKILL)", failover((f) => `${f.killed} at ${at(f.killedAtS)}`)),
    row(
      "next leader seen",
      failover((f) => f.newLeader === null ? "none seen" : `${f.newLeader} at ${at(f.electedAtS)}`),
    ),
    row(
      "failover stall (acks < 1%)",
      failover((_, { phase }) =>
        phase === undefined ? "n/a" : `${fmtInt(phase.stall.ms)} ms from ${at(phase.stall.fromS)}`
      ),
    ),
    row(
      "killed node restarted",
      failover((f) => f.restartMs === null ? "no" : `in ${fmtInt(f.restartMs)} ms`),
    ),
    row("CPU over the phase: wall s", ({ x }) => x.cpu.wallS.toFixed(2)),
    row(
      `  ${c.nodes.length} nats-servers, % of a core`,
      ({ x }) =>
        `${pct(x.cpu.natsS, x.cpu.wallS)} (` +
        x.cpu.natsNodesS.map((n) => pct(n, x.cpu.wallS).replace("%", "")).join("+") + ")",
    ),
    row("  msgserver", cpu((x) => x.msgserverS)),
    row("  load generator", cpu((x) => x.loadS)),
    row("  these together", cpu(ours)),
    row(`  machine busy (of ${c.cores * 100}%)`, cpu((x) => x.machineBusyS)),
    row(
      "  the rest (kernel, other work)",
      cpu((x) => {
        const o = ours(x);
        return o === null || x.machineBusyS === null ? null : Math.max(0, x.machineBusyS - o);
      }),
    ),
    row(
      "msgserver CPU s (its life)",
      ({ x }) => x.server.cpuS === null ? "n/a" : x.server.cpuS.toFixed(2),
    ),
    row("msgserver peak RSS", ({ x }) => fmtMiB(x.server.peakRssBytes)),
    row(
      "msgserver exit",
      ({ x }) =>
        x.server.exit === null
          ? "n/a"
          : x.server.exit.timedOut
          ? "killed"
          : `code ${x.server.exit.code} in ${x.server.exit.ms.toFixed(0)} ms`,
    ),
    row("export records", exported((e) => e.records === null ? "n/a" : fmtInt(e.records))),
    row(
      "export records/s",
      exported((e) => e.recordsPerS === null ? "n/a" : fmtInt(e.recordsPerS)),
    ),
    row("export wall s (start-up incl.)", exported((e) => e.wallS.toFixed(2))),
  ]));
  out.push(`load generator CPU s, whole run: ${loadCpuS === null ? "n/a" : loadCpuS.toFixed(2)}`);
  for (const { x } of cols) out.push(formatFileCheck(x.fileCheck, `export check [${x.name}]`));
  return out.join("\n");
}

/**
 * The report's `file check:` line (or `label:`): lines and acks, `OK` or `MISMATCH`, the msg_id
 * check when there was one (lost, doubled, NACKed), and on a mismatch what differs (clients,
 * defects the verifier found, a torn last line).
 *
 * @example
 * ```ts
 * formatFileCheck(null); // "file check: skipped (server not started by the bench)"
 * ```
 */
export function formatFileCheck(f: FileCheck | null, label = "file check"): string {
  if (f === null) {
    return label === "file check"
      ? "file check: skipped (server not started by the bench)"
      : `${label}: skipped (no export)`;
  }
  const ids = f.ids;
  return `${label}: ${fmtInt(f.lines)} lines, ${fmtInt(f.expected)} acked: ` +
    (f.ok ? "OK" : "MISMATCH") +
    (ids !== undefined
      ? ` (${fmtInt(ids.lost)} lost, ${fmtInt(ids.doubled)} doubled` +
        (ids.unexpected > 0 ? `, ${fmtInt(ids.unexpected)} never sent` : "") +
        (ids.refused + ids.abandoned > 0
          ? `; not acked: ${fmtInt(ids.refused)} NACKed, ${fmtInt(ids.abandoned)} abandoned at ` +
            `a resume, ${fmtInt(ids.unackedKept)} of them stored all the same`
          : "") +
        (ids.samples.length > 0 ? `; e.g. ${ids.samples.join("; ")}` : "") + ")"
      : "") +
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
