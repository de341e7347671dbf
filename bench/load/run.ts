/**
 * A whole load run: every phase against one server, then, for a server the tool started, its CPU
 * and memory, its exit after SIGTERM and the file check, gathered into a {@linkcode Report}.
 *
 * @module
 */

import type { ChildServer, ServerOutcome } from "./child_server.ts";
import { checkFile, type FileCheck } from "./file_check.ts";
import type { Options, PhaseSpec } from "./options.ts";
import { runLegacyPhase } from "./legacy.ts";
import { type PhaseContext, type PhaseResult, runPhase } from "./phase.ts";
import { readCpu } from "./proc.ts";
import type { Report } from "./report.ts";

/** How long a server the tool started has to exit after SIGTERM before it is killed. */
export const STOP_LIMIT_MS = 30_000;

/** What {@linkcode runLoad} calls besides the phases. */
export interface RunHooks {
  /**
   * Called once the phases are over, before the server is stopped (e.g. to close the status pages
   * while the server still answers them); resolves with problems to report.
   */
  afterPhases?: () => Promise<string[]>;
}

/**
 * Runs the phases of `options` against `server` (started by the caller; null to use the one at
 * `options.host`:`options.port`), stops it, checks its data file and returns the report. The
 * caller removes the server's temp dir.
 *
 * @example
 * ```ts
 * import { ChildServer } from "./child_server.ts";
 * import { parseOptions } from "./options.ts";
 * import { formatReport } from "./report.ts";
 *
 * const options = parseOptions(["--connections", "2", "--count", "200"])!;
 * const server = await ChildServer.start(options.host, options.ackMode);
 * const report = await runLoad(options, server);
 * console.log(formatReport(report));
 * await server.removeDir();
 * ```
 */
export async function runLoad(
  options: Options,
  server: ChildServer | null,
  hooks: RunHooks = {},
): Promise<Report> {
  const port = server?.port ?? options.port!;
  const ctx: PhaseContext = {
    host: options.host,
    port,
    legacyPort: server?.legacyPort ?? options.legacyPort,
    token: options.token,
    connectConcurrency: options.connectConcurrency,
    timeoutS: options.timeoutS,
    serverRss: () => server === null ? Promise.resolve(null) : server.rss(),
    nextClientId: 1,
  };
  const results: PhaseResult[] = [];
  const problems: string[] = [];
  for (const spec of options.phases) {
    if (server?.exited) break;
    console.error(`bench: ${describePhase(spec)}`);
    const result = spec.legacy === true
      ? await runLegacyPhase(spec, ctx)
      : await runPhase(spec, ctx);
    results.push(result);
    if (result.timedOut) break;
  }

  problems.push(...await hooks.afterPhases?.() ?? []);

  // Read before the file check, which is the bench's own work, not load generation.
  const selfCpu = await readCpu(Deno.pid);
  let outcome: ServerOutcome | null = null;
  let fileCheck: FileCheck | null = null;
  if (server !== null) {
    outcome = await server.stop(STOP_LIMIT_MS);
    problems.push(...serverProblems(outcome, "the server"));
    const ackedByClient = new Map<number, number>();
    for (const r of results) for (const [k, v] of r.ackedByClient) ackedByClient.set(k, v);
    fileCheck = await checkFile(server.file, ackedByClient);
    problems.push(...fileProblems(fileCheck, results, "the data file"));
  }
  problems.push(...phaseProblems(results));
  if (results.length < options.phases.length) problems.push("not every phase ran");
  const cpu = outcome?.cpu ?? null;
  return {
    preset: options.preset,
    ackMode: server === null ? null : options.ackMode,
    server: {
      host: options.host,
      port,
      startedByBench: server !== null,
      pid: server?.pid ?? null,
      cpuUserS: cpu?.user ?? null,
      cpuSysS: cpu?.sys ?? null,
      cpuS: cpu === null ? null : cpu.user + cpu.sys,
      peakRssBytes: outcome?.peakRssBytes ?? null,
      exit: outcome?.exit ?? null,
      exitedEarly: outcome?.exitedEarly ?? false,
      dataFile: server !== null && (options.keep || problems.length > 0) ? server.file : null,
    },
    loadCpuS: selfCpu === null ? null : selfCpu.user + selfCpu.sys,
    phases: results.map(phaseReport),
    fileCheck,
    ok: problems.length === 0,
    problems,
  };
}

/**
 * The line that announces a phase: its name, connections, window, payload and length.
 *
 * @example
 * ```ts
 * import { parseOptions } from "./options.ts";
 * describePhase(parseOptions([])!.phases[0]!);
 * // 'phase "run": 64 connections, window 256, 100 B payload, 5 s'
 * ```
 */
export function describePhase(spec: PhaseSpec): string {
  const what = spec.durationS !== null ? `${spec.durationS} s` : `${spec.count} messages`;
  return `phase "${spec.name}": ${spec.connections} connections, window ${spec.window}, ` +
    `${spec.size} B payload, ${what}` +
    (spec.rounds !== undefined ? `, ${spec.rounds} rounds` : "") +
    (spec.legacy === true ? ", LEGACY_PORT (1,160-byte frames)" : "");
}

/**
 * A phase's result as the report holds it: without the maps the file check needed.
 *
 * @example
 * ```ts
 * import { type PhaseResult } from "./phase.ts";
 * declare const result: PhaseResult;
 * console.log(JSON.stringify(phaseReport(result)));
 * ```
 */
export function phaseReport(result: PhaseResult): Report["phases"][number] {
  const { ackedByClient: _, ledgers: __, ...rest } = result;
  return rest;
}

/**
 * The problems of the phases themselves: cut short by the timeout, messages left unsettled,
 * errors.
 *
 * @example
 * ```ts
 * import { type PhaseResult } from "./phase.ts";
 * declare const results: PhaseResult[];
 * for (const p of phaseProblems(results)) console.error(`PROBLEM: ${p}`);
 * ```
 */
export function phaseProblems(results: PhaseResult[]): string[] {
  const problems: string[] = [];
  for (const r of results) {
    if (r.timedOut) problems.push(`phase "${r.name}" timed out`);
    if (r.unsettled > 0) problems.push(`phase "${r.name}": ${r.unsettled} messages never settled`);
    if (r.errors > 0) problems.push(`phase "${r.name}": ${r.errors} errors`);
  }
  return problems;
}

/**
 * The problems of a server the tool started, once stopped: gone early, slow to stop, a bad exit.
 * `what` names it (`the server`, `msgserver of phase "R1"`).
 *
 * @example
 * ```ts
 * import type { ChildServer } from "./child_server.ts";
 * declare const server: ChildServer;
 * console.log(serverProblems(await server.stop(30_000), "the server"));
 * ```
 */
export function serverProblems(outcome: ServerOutcome, what: string): string[] {
  const problems: string[] = [];
  const { exit, exitedEarly } = outcome;
  if (exitedEarly) problems.push(`${what} exited during the run (code ${exit.code})`);
  if (exit.timedOut) problems.push(`${what} did not exit within 30 s of SIGTERM`);
  else if (exit.code !== 0 && !exitedEarly) {
    problems.push(`${what} exited with code ${exit.code} after SIGTERM`);
  }
  return problems;
}

/**
 * The problems a failed file check adds to the report; `what` names the file (`the data file`,
 * `the export of phase "R1"`).
 *
 * @example
 * ```ts
 * import { checkFile } from "./file_check.ts";
 * import { type PhaseResult } from "./phase.ts";
 * declare const results: PhaseResult[];
 * const check = await checkFile("messages.log", results[0]!.ackedByClient);
 * console.log(fileProblems(check, results, "the data file"));
 * ```
 */
export function fileProblems(check: FileCheck, results: PhaseResult[], what: string): string[] {
  if (check.ok) return [];
  const problems: string[] = [];
  const { lines, expected, defects, ids } = check;
  if (ids !== undefined) {
    const e = ids.samples.length > 0 ? `, e.g. ${ids.samples.join("; ")}` : "";
    if (ids.lost > 0) problems.push(`LOST: ${ids.lost} acked messages not in ${what}${e}`);
    if (ids.doubled > 0) {
      problems.push(`DOUBLED: ${ids.doubled} lines repeat a msg_id in ${what}${e}`);
    }
    if (ids.unexpected > 0) {
      problems.push(`${what} has ${ids.unexpected} lines with a msg_id never sent${e}`);
    }
  }
  if (
    (ids === undefined && lines !== expected) || check.clientMismatchCount > 0 || check.tornTail
  ) {
    const unsettled = results.reduce((s, r) => s + r.unsettled, 0);
    const extra = lines - expected;
    problems.push(
      `MISMATCH: ${what} has ${lines} lines, ${expected} acked` +
        (extra > 0 && extra <= unsettled
          ? ` (the ${extra} extra lines may be among the ${unsettled} messages left unsettled)`
          : ""),
    );
  }
  if (defects !== undefined) {
    problems.push(`${what} has ${defects.count} defective lines, e.g. ${defects.samples[0]}`);
  }
  return problems;
}
