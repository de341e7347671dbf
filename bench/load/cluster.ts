/**
 * The cluster preset (`deno task bench --preset cluster`): STORE=jetstream measured on a NATS
 * JetStream cluster the tool starts itself (`startNatsCluster`, the tests' harness: 3 nodes, free
 * loopback ports, stores in a temp dir). Each phase gets a msgserver of its own (a
 * {@linkcode ChildServer} with `--store jetstream` and a fresh stream and subject prefix: a stream
 * is never deleted and made again under one name, which nats-server 2.9.10 punishes by losing
 * data), runs as any phase does (`runPhase`), and may kill the stream's leader with SIGKILL some
 * seconds in. An R1 stream lives on one node: msgserver is then connected to that node, as an R1
 * deployment would place it. Then the node killed is restarted, msgserver is stopped, the stream is exported with
 * the real `msgserver export`, and the export is checked msg_id by msg_id against the acks
 * (`checkFile` with the phase's ledgers): nothing acked missing, nothing twice.
 *
 * Beside each phase's figures the report puts what the cluster itself could give in that time:
 * the CPU each nats-server, msgserver, the load generator and the whole machine used over the
 * phase, since they all share the machine's cores.
 *
 * Everything it starts is stopped by the end of {@linkcode ClusterRun.run}, or by
 * {@linkcode ClusterRun.abort} (Ctrl-C); every wait is bounded.
 *
 * (Over 400 lines: the cluster preset's whole run, from the cluster through each phase's server,
 * leader kill, export and check to the CPU accounting, read top to bottom in one place.)
 *
 * @module
 */

import { type NatsCluster, startNatsCluster } from "../../tests/support/nats_cluster.ts";
import { ChildServer } from "./child_server.ts";
import { checkFile, type FileCheck } from "./file_check.ts";
import type { Options, PhaseSpec } from "./options.ts";
import { type PhaseContext, type PhaseResult, runPhase } from "./phase.ts";
import { readCpu, readMachineCpu } from "./proc.ts";
import type { ClusterPhaseReport, Report } from "./report.ts";
import {
  describePhase,
  fileProblems,
  phaseProblems,
  phaseReport,
  serverProblems,
  STOP_LIMIT_MS,
} from "./run.ts";
import { exportCommand } from "../../tests/support/spawn.ts";

/** Longest an export may take before it is killed. */
const EXPORT_LIMIT_MS = 300_000;
/** Longest wait for the stream's leader before the kill, and for the next one after it. */
const LEADER_LIMIT_MS = 10_000;
const ELECTION_LIMIT_MS = 60_000;

/** CPU seconds at one moment: each node (null once dead), msgserver, this process, the machine. */
interface CpuSnapshot {
  at: number;
  nodes: (number | null)[];
  server: number | null;
  self: number | null;
  machine: number | null;
}

async function cpuOf(pid: number): Promise<number | null> {
  const cpu = await readCpu(pid);
  return cpu === null ? null : cpu.user + cpu.sys;
}

async function snapshot(cluster: NatsCluster, serverPid: number): Promise<CpuSnapshot> {
  const [nodes, server, self, machine] = await Promise.all([
    Promise.all(cluster.nodes.map((n) => n.alive ? cpuOf(n.pid) : Promise.resolve(null))),
    cpuOf(serverPid),
    cpuOf(Deno.pid),
    readMachineCpu(),
  ]);
  return { at: performance.now(), nodes, server, self, machine: machine?.busy ?? null };
}

function used(a: number | null, b: number | null): number | null {
  return a === null || b === null ? null : Math.max(0, b - a);
}

/** The node of the NATS server msgserver's log says it used for the stream (by its port). */
function nodeOf(log: string, cluster: NatsCluster): string | null {
  const port = / (?:created|using) the stream .*server=\S*:(\d+)\b/.exec(log)?.[1];
  return cluster.nodes.find((n) => String(n.port) === port)?.name ?? null;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}

/** What `msgserver export` did. */
type ExportResult = NonNullable<ClusterPhaseReport["export"]> & { stderr: string };

/**
 * One run of the cluster preset: the cluster, a msgserver per phase, the exports and checks.
 *
 * @example
 * ```ts ignore
 * import { parseOptions } from "./options.ts";
 * import { formatReport } from "./report.ts";
 *
 * const run = new ClusterRun(parseOptions(["--preset", "cluster", "--duration", "1"])!);
 * Deno.addSignalListener("SIGINT", () => run.abort().finally(() => Deno.exit(130)));
 * console.log(formatReport(await run.run()));
 * ```
 */
export class ClusterRun {
  readonly #options: Options;
  #cluster: NatsCluster | null = null;
  #server: ChildServer | null = null;
  #exporter: Deno.ChildProcess | null = null;
  #dir: string | null = null;
  #aborted = false;
  #aborting: Promise<void> | null = null;

  /** A run of `options.phases`, each of which names its `replicas`. */
  constructor(options: Options) {
    this.#options = options;
  }

  /** The temp dir holding each phase's msgserver dir (its log, the export); null before `run`. */
  get dir(): string | null {
    return this.#dir;
  }

  /** True once {@linkcode ClusterRun.abort} was called. */
  get aborted(): boolean {
    return this.#aborted;
  }

  /**
   * Starts the cluster, runs every phase (until one times out or cannot start), stops everything
   * and returns the report; the temp dir is removed unless `--keep` was given or something went
   * wrong. Throws when the cluster does not start, or once aborted.
   */
  async run(): Promise<Report> {
    const options = this.#options;
    const dir = this.#dir = await Deno.makeTempDir({ prefix: "msgserver-bench-cluster-" });
    const results: PhaseResult[] = [];
    const phases: ClusterPhaseReport[] = [];
    const problems: string[] = [];
    let nodes: { name: string; pid: number }[] = [];
    let loadCpuS: number | null = null;
    try {
      console.error("bench: starting a 3-node NATS cluster (nats-server)");
      const cluster = this.#cluster = await startNatsCluster();
      nodes = cluster.nodes.map((n) => ({ name: n.name, pid: n.pid }));
      console.error(
        `bench: NATS cluster ${cluster.nodes.map((n) => `${n.name} pid ${n.pid}`).join(", ")} ` +
          `(stores in ${cluster.dir}); temp dir ${dir}`,
      );
      const ctx: PhaseContext = {
        host: options.host,
        port: 0,
        token: "",
        connectConcurrency: options.connectConcurrency,
        timeoutS: options.timeoutS,
        serverRss: () => Promise.resolve(null),
        nextClientId: 1,
      };
      for (const [i, spec] of options.phases.entries()) {
        if (this.#aborted) break;
        try {
          const done = await this.#phase(cluster, spec, i, ctx, problems);
          results.push(done.result);
          phases.push(done.report);
          if (done.result.timedOut) break;
        } catch (e) {
          problems.push(`phase "${spec.name}" stopped: ${(e as Error).message}`);
          break;
        }
      }
      loadCpuS = await cpuOf(Deno.pid);
    } finally {
      if (this.#aborting !== null) await this.#aborting;
      else await this.#stopAll(problems);
    }
    if (this.#aborted) throw new Error("interrupted");
    problems.unshift(...phaseProblems(results));
    if (results.length < options.phases.length) problems.push("not every phase ran");
    return {
      preset: options.preset,
      ackMode: options.ackMode,
      server: {
        host: options.host,
        port: 0,
        startedByBench: true,
        pid: null,
        cpuUserS: null,
        cpuSysS: null,
        cpuS: null,
        peakRssBytes: null,
        exit: null,
        exitedEarly: false,
        dataFile: null,
      },
      loadCpuS,
      phases: results.map(phaseReport),
      fileCheck: null,
      cluster: { nodes, cores: navigator.hardwareConcurrency, phases },
      ok: problems.length === 0,
      problems,
    };
  }

  /**
   * Kills whatever is running (msgserver, an export, the cluster) and removes the temp dir
   * (unless `--keep`); `run` then throws. Later calls share the first one's promise.
   */
  abort(): Promise<void> {
    this.#aborted = true;
    this.#aborting ??= (async () => {
      this.#server?.abort(this.#options.keep);
      this.#server = null;
      try {
        this.#exporter?.kill("SIGKILL");
      } catch {
        // exited already
      }
      await this.#cluster?.stop();
      if (!this.#options.keep && this.#dir !== null) {
        await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
      }
    })();
    return this.#aborting;
  }

  /** Stops what is left, keeps the NATS logs when the dir stays, removes the dir otherwise. */
  async #stopAll(problems: string[]): Promise<void> {
    this.#server?.abort(true);
    this.#server = null;
    const cluster = this.#cluster;
    const keep = this.#options.keep || problems.length > 0;
    if (cluster !== null) {
      if (keep) await Deno.writeTextFile(`${this.#dir}/nats.log`, await cluster.logs());
      await cluster.stop();
    }
    if (!keep) await Deno.remove(this.#dir!, { recursive: true });
  }

  async #phase(
    cluster: NatsCluster,
    spec: PhaseSpec,
    index: number,
    ctx: PhaseContext,
    problems: string[],
  ): Promise<{ result: PhaseResult; report: ClusterPhaseReport }> {
    const options = this.#options;
    const tag = `${index + 1}_${crypto.randomUUID().slice(0, 8)}`;
    const stream = `BENCH_${tag}`;
    const subject = `bench_${tag}`;
    const replicas = spec.replicas ?? 3;
    const start = (urls: string[]) =>
      ChildServer.start(options.host, options.ackMode, {
        parentDir: this.#dir!,
        label: spec.name,
        args: [
          ...["--store", "jetstream", "--nats-urls", urls.join(",")],
          ...["--nats-stream", stream, "--nats-subject", subject, "--nats-replicas", `${replicas}`],
        ],
      });
    let server = this.#server = await start(cluster.urls);
    const leader = await cluster.streamLeader(stream, { timeoutMs: LEADER_LIMIT_MS })
      .catch(() => null);
    let msgserverNode = nodeOf(server.log(), cluster);
    if (replicas === 1 && leader !== null && msgserverNode !== leader) {
      // An R1 stream lives on one node, and whoever deploys it puts msgserver's NATS connection
      // there: through another node every publish and PubAck takes a route hop more, which
      // costs about 40% (1.0M against 0.6M acked msg/s in the same hour).
      this.#server = null;
      await server.stop(STOP_LIMIT_MS);
      await server.removeDir();
      server = this.#server = await start([cluster.nodeByName(leader).url]);
      msgserverNode = nodeOf(server.log(), cluster);
      console.error(
        `bench: [${spec.name}] msgserver restarted on ${leader}, which holds the stream`,
      );
    }
    console.error(
      `bench: ${describePhase(spec)}; msgserver pid ${server.pid} on ${server.host}:` +
        `${server.port}, stream ${stream} (R${replicas}) led by ${leader}, msgserver on ` +
        `${msgserverNode}`,
    );
    // Filled in by the kill while the phase runs: what happened, and the node's CPU before it.
    const kill: { report: ClusterPhaseReport["failover"]; cpu: number | null } = {
      report: null,
      cpu: null,
    };
    const phaseCtx: PhaseContext = { ...ctx, port: server.port, serverRss: () => server.rss() };
    const killAtS = spec.killLeaderAtS;
    if (killAtS !== undefined) {
      phaseCtx.whileSending = async (sendStart) => {
        await sleep(sendStart + killAtS * 1000 - performance.now());
        if (this.#aborted) return;
        const leader = await cluster.streamLeader(stream, { timeoutMs: LEADER_LIMIT_MS });
        if (this.#aborted) return;
        const node = cluster.nodeByName(leader);
        kill.cpu = await cpuOf(node.pid);
        const killedAt = performance.now();
        await node.kill("SIGKILL");
        const report = kill.report = {
          killed: leader,
          killedAtS: (killedAt - sendStart) / 1000,
          newLeader: null as string | null,
          electedAtS: null as number | null,
          restartMs: null,
        };
        console.error(
          `[${spec.name}] killed the stream leader ${leader} (pid ${node.pid}) with SIGKILL at ` +
            `${report.killedAtS.toFixed(2)} s`,
        );
        report.newLeader = await cluster.streamLeader(stream, {
          excluding: leader,
          timeoutMs: ELECTION_LIMIT_MS,
        });
        report.electedAtS = (performance.now() - sendStart) / 1000;
        console.error(
          `[${spec.name}] ${report.newLeader} leads the stream at ${
            report.electedAtS.toFixed(2)
          } s`,
        );
      };
    }
    const before = await snapshot(cluster, server.pid);
    const result = await runPhase(spec, phaseCtx);
    // Nothing is restarted or started once aborted: the cluster is being stopped.
    if (this.#aborted) throw new Error("interrupted");
    const after = await snapshot(cluster, server.pid);
    ctx.nextClientId = phaseCtx.nextClientId;

    // The cluster is made whole again before anything else, whatever happened.
    const restartStart = performance.now();
    const dead = cluster.nodes.filter((n) => !n.alive);
    for (const node of dead) {
      try {
        await node.restart();
        console.error(`bench: restarted ${node.name} pid ${node.pid}`);
      } catch (e) {
        problems.push(`cannot restart ${node.name}: ${(e as Error).message.split("\n")[0]}`);
      }
    }
    const failover = kill.report;
    if (failover !== null && dead.every((n) => n.alive)) {
      failover.restartMs = performance.now() - restartStart;
    }
    if (killAtS !== undefined && failover === null) {
      problems.push(`phase "${spec.name}": the stream leader was not killed`);
    }

    const outcome = await server.stop(STOP_LIMIT_MS);
    this.#server = null;
    problems.push(...serverProblems(outcome, `msgserver of phase "${spec.name}"`));

    if (this.#aborted) throw new Error("interrupted");
    const output = `${server.dir}/export.log`;
    const exported = await this.#export(cluster, stream, output, server.dir);
    if (this.#aborted) throw new Error("interrupted");
    let fileCheck: FileCheck | null = null;
    if (exported.code !== 0) {
      problems.push(
        `phase "${spec.name}": msgserver export exited with code ${exported.code}: ` +
          exported.stderr.trimEnd().split("\n").at(-1),
      );
    } else {
      fileCheck = await checkFile(output, result.ackedByClient, { ledgers: result.ledgers });
      problems.push(...fileProblems(fileCheck, [result], `the export of phase "${spec.name}"`));
    }
    console.error(
      `bench: phase "${spec.name}": export ${
        exported.recordsPerS === null ? "failed" : `${exported.recordsPerS} records/s`
      }, check ${fileCheck?.ok === true ? "OK" : "FAILED"}`,
    );
    // An export of a fast phase is hundreds of MB: gone as soon as it is checked, unless kept.
    if (!options.keep && fileCheck?.ok === true) {
      await Deno.remove(server.dir, { recursive: true });
    }

    const nodeCpu = cluster.nodes.map((n, i) =>
      used(
        before.nodes[i] ?? null,
        after.nodes[i] ?? (n.name === failover?.killed ? kill.cpu : null),
      )
    );
    const { stderr: _, ...exportReport } = exported;
    return {
      result,
      report: {
        name: spec.name,
        stream,
        subject,
        replicas,
        leader,
        msgserverNode,
        server: {
          pid: server.pid,
          cpuS: outcome.cpu === null ? null : outcome.cpu.user + outcome.cpu.sys,
          peakRssBytes: outcome.peakRssBytes,
          exit: outcome.exit,
          exitedEarly: outcome.exitedEarly,
        },
        cpu: {
          wallS: (after.at - before.at) / 1000,
          natsNodesS: nodeCpu,
          natsS: nodeCpu.some((c) => c === null)
            ? null
            : nodeCpu.reduce((a: number, c) => a + c!, 0),
          msgserverS: used(before.server, after.server),
          loadS: used(before.self, after.self),
          machineBusyS: used(before.machine, after.machine),
        },
        failover,
        export: exportReport,
        fileCheck,
      },
    };
  }

  /** Runs `msgserver export` of `stream` into `output`, killed if it outlasts its limit. */
  async #export(
    cluster: NatsCluster,
    stream: string,
    output: string,
    cwd: string,
  ): Promise<ExportResult> {
    const started = performance.now();
    const child = this.#exporter = exportCommand(
      ["--nats-urls", cluster.urls.join(","), "--nats-stream", stream, output],
      cwd,
    ).spawn();
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch {
        // exited already
      }
    }, EXPORT_LIMIT_MS);
    const out = await child.output();
    clearTimeout(timer);
    this.#exporter = null;
    const wallS = (performance.now() - started) / 1000;
    const stderr = new TextDecoder().decode(out.stderr);
    const done = /export done records=(\d+) .* ms=(\d+) records_per_s=(\d+)/.exec(stderr);
    return {
      code: out.code,
      records: done === null ? null : Number(done[1]),
      ms: done === null ? null : Number(done[2]),
      recordsPerS: done === null ? null : Number(done[3]),
      wallS,
      stderr,
    };
  }
}
