/**
 * The load generator behind `deno task bench`: opens many connections to msgserver, keeps a
 * window of messages in flight on each, and measures throughput, per-message latency (ACK arrival
 * minus send time) and fairness. Unless `--port` names a running server, it starts its own
 * server as a child process on a free port with a fresh data file, and after the run stops it with
 * SIGTERM and checks that the file holds exactly one line per acknowledged message.
 *
 * The cluster preset starts a 3-node NATS cluster instead and a msgserver per phase with
 * STORE=jetstream (`cluster.ts`), and checks each stream's export.
 *
 * Run `deno task bench --help` for the flags and presets. The parts: `options.ts` (flags,
 * presets), `child_server.ts` (the server it starts), `phase.ts` (one phase), `connection.ts`
 * (the per-connection send/ack loop, the hot path), `file_check.ts`, `report.ts`, `run.ts` (the
 * whole run), `cluster.ts` (the whole run of the cluster preset).
 *
 * @module
 */

import { ChildServer } from "./child_server.ts";
import { ClusterRun } from "./cluster.ts";
import { type Options, parseOptions, USAGE, UsageError } from "./options.ts";
import { formatReport, type Report } from "./report.ts";
import { runLoad, STOP_LIMIT_MS } from "./run.ts";
import { openStatusPages, type StatusPages } from "./status_pages.ts";
import { freePort } from "../../tests/support/net.ts";

/**
 * Parses `args`, runs the load and prints the report; resolves with the exit status: 0 when
 * nothing went wrong, 1 when something did (a problem in the report, or the server would not
 * start), 2 for a bad command line.
 *
 * @example
 * ```ts
 * Deno.exit(await main(["--preset", "seed-load"]));
 * ```
 */
export async function main(args: string[]): Promise<number> {
  let options;
  try {
    options = parseOptions(args);
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`bench: ${e.message}\n\n${USAGE}`);
      return 2;
    }
    throw e;
  }
  if (options === null) {
    console.log(USAGE);
    return 0;
  }
  if (options.cluster) return await mainCluster(options);
  let server: ChildServer | null = null;
  const metricsPort = options.statusPages > 0 ? freePort() : null;
  if (options.port === null) {
    try {
      const legacy = options.phases.some((p) => p.legacy === true);
      server = await ChildServer.start(options.host, options.ackMode, {
        ...legacy ? { legacyPort: freePort() } : {},
        ...metricsPort === null ? {} : { args: ["--metrics-port", String(metricsPort)] },
      });
    } catch (e) {
      console.error(`bench: ${(e as Error).message}`);
      return 1;
    }
    console.error(
      `bench: started msgserver pid ${server.pid} on ${server.host}:${server.port}, ` +
        `ack-mode ${options.ackMode}, data file ${server.file}`,
    );
  }
  const keep = options.keep;
  const onSignal = () => {
    server?.abort(keep);
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onSignal);
  let pages: StatusPages | null = null;
  const seen: { snapshots: number[]; browserCpuS: number | null }[] = [];
  if (metricsPort !== null) {
    try {
      pages = await openStatusPages(`http://${options.host}:${metricsPort}/`, options.statusPages);
    } catch (e) {
      console.error(`bench: ${(e as Error).message}`);
      await server?.stop(STOP_LIMIT_MS);
      await server?.removeDir();
      return 1;
    }
    console.error(`bench: ${pages.count} status pages open on port ${metricsPort}`);
  }
  const report = await runLoad(options, server, {
    afterPhases: async () => {
      if (pages === null) return [];
      const { snapshots, browserCpuS, problems } = await pages.close();
      seen.push({ snapshots, browserCpuS });
      return problems;
    },
  });
  if (pages !== null && seen[0] !== undefined) {
    report.statusPages = { count: pages.count, ...seen[0] };
  }
  print(report, options);
  Deno.removeSignalListener("SIGINT", onSignal);
  if (server !== null) {
    if (keep || !report.ok) console.error(`bench: kept ${server.dir} (messages.log, server.log)`);
    else await server.removeDir();
  }
  return report.ok ? 0 : 1;
}

/** Longest Ctrl-C waits for the cluster preset's processes to stop before it exits anyway. */
const ABORT_LIMIT_MS = 10_000;

/** The cluster preset: its own NATS cluster, a msgserver per phase, the exports checked. */
async function mainCluster(options: Options): Promise<number> {
  const run = new ClusterRun(options);
  let aborting = false;
  const onSignal = () => {
    if (aborting) return;
    aborting = true;
    console.error("bench: interrupted: stopping msgserver and the NATS cluster");
    setTimeout(() => Deno.exit(130), ABORT_LIMIT_MS);
    run.abort().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    const report = await run.run();
    print(report, options);
    if (options.keep || !report.ok) {
      console.error(`bench: kept ${run.dir} (per phase: server.log, export.log; nats.log)`);
    }
    return report.ok ? 0 : 1;
  } catch (e) {
    if (run.aborted) {
      await run.abort();
      return 130;
    }
    console.error(`bench: ${(e as Error).message}`);
    return 1;
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
}

function print(report: Report, options: Options): void {
  if (options.json) console.log(JSON.stringify(report, null, 2));
  else console.log(formatReport(report));
}

if (import.meta.main) Deno.exit(await main(Deno.args));
