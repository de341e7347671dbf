/**
 * The cluster preset end to end, as `deno task bench --preset cluster` runs it, shortened to 1 s
 * a phase with 8 connections: its own 3-node NATS cluster, a msgserver per phase, the leader of
 * the third phase's stream killed, every export checked; and nothing left behind, after a clean
 * run or after Ctrl-C. About 20 s, most of it the NATS election after the kill.
 */

import { exists } from "../../src/io/exists.ts";
import { equal, match, ok } from "node:assert/strict";
import type { Report } from "../../bench/load/report.ts";
import { requireTool } from "../support/tools.ts";

const present = requireTool("nats-server");
const MAIN = decodeURIComponent(new URL("../../bench/load/main.ts", import.meta.url).pathname);
const ARGS = ["--preset", "cluster", "--duration", "1", "--connections", "8"];

function bench(args: string[]): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/**
 * The PIDs the tool says it started (nats-server nodes, msgserver per phase), its temp dir and
 * the cluster's.
 */
function started(stderr: string): { pids: number[]; dirs: string[] } {
  const pids = [...stderr.matchAll(/(?:node-\d-\S+|msgserver) pid (\d+)/g)].map((m) =>
    Number(m[1])
  );
  const dirs = [/temp dir (\S+)/.exec(stderr)?.[1], /\(stores in (\S+)\)/.exec(stderr)?.[1]];
  return { pids, dirs: dirs.filter((d) => d !== undefined) };
}

/** PIDs still running (a PID reused since is counted too: false alarms only, never misses). */
async function alive(pids: number[]): Promise<number[]> {
  const left: number[] = [];
  for (const pid of pids) {
    try {
      const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
      if (!/\) Z /.test(stat)) left.push(pid);
    } catch {
      // gone
    }
  }
  return left;
}

Deno.test({
  name: "the cluster preset measures R1, R3 and a failover, checks each export and cleans up",
  ignore: !present,
  async fn() {
    const out = await bench([...ARGS, "--json"]).output();
    const stderr = new TextDecoder().decode(out.stderr);
    const stdout = new TextDecoder().decode(out.stdout);
    equal(out.code, 0, stdout + stderr);
    const report: Report = JSON.parse(stdout);
    equal(report.ok, true, report.problems.join("\n"));
    equal(report.preset, "cluster");
    const cluster = report.cluster!;
    equal(cluster.nodes.length, 3);
    equal(report.phases.map((p) => p.name).join(), "R1,R3,R3 failover");
    equal(cluster.phases.map((p) => p.replicas).join(), "1,3,3");
    equal(new Set(cluster.phases.map((p) => p.stream)).size, 3, "a fresh stream per phase");
    equal(new Set(cluster.phases.map((p) => p.subject)).size, 3, "and a fresh subject prefix");
    for (const [i, p] of cluster.phases.entries()) {
      const phase = report.phases[i]!;
      ok(phase.acked > 0, p.name);
      equal(p.export?.code, 0, p.name);
      ok((p.export?.recordsPerS ?? 0) > 0, p.name);
      equal(p.fileCheck?.ok, true, `${p.name}: ${JSON.stringify(p.fileCheck)}`);
      equal(p.fileCheck?.ids?.lost, 0, p.name);
      equal(p.fileCheck?.ids?.doubled, 0, p.name);
      ok((p.fileCheck?.lines ?? 0) >= phase.acked, p.name);
      ok(p.cpu.natsS !== null && p.cpu.natsS > 0, `${p.name}: NATS CPU ${p.cpu.natsS}`);
      ok(p.cpu.msgserverS !== null && p.cpu.msgserverS > 0, p.name);
      equal(p.server.exit?.code, 0, p.name);
      match(p.leader ?? "", /^node-\d-/, p.name);
      match(p.msgserverNode ?? "", /^node-\d-/, p.name);
    }
    const [r1, r3, failover] = cluster.phases;
    equal(r1!.failover, null);
    equal(r3!.failover, null);
    const killed = failover!.failover;
    ok(killed !== null, "the third phase killed its stream's leader");
    match(killed.killed, /^node-\d-/);
    ok(killed.newLeader !== null && killed.newLeader !== killed.killed, JSON.stringify(killed));
    ok(killed.restartMs !== null, "and restarted it");
    // From the kill to the next ack: the election alone takes seconds.
    ok(report.phases[2]!.stall.ms >= 1000, JSON.stringify(report.phases[2]!.stall));

    const { pids, dirs } = started(stderr);
    equal(pids.length, 7, `3 nodes, 3 msgservers and the node restarted:\n${stderr}`);
    equal((await alive(pids)).join(), "", "every process it started is gone");
    equal(dirs.length, 2, stderr);
    for (const dir of dirs) equal(await exists(dir), false, `${dir} is removed`);
  },
});

Deno.test({
  name: "the cluster preset stops every process it started on Ctrl-C and removes its temp dir",
  ignore: !present,
  async fn() {
    const child = bench(ARGS);
    let stderr = "";
    const reading = (async () => {
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
        stderr += chunk;
      }
    })();
    const stdout = child.stdout.pipeThrough(new TextDecoderStream()).getReader().read();
    const deadline = Date.now() + 30_000;
    while (!/\[R1\] connected/.test(stderr)) {
      if (Date.now() > deadline) {
        child.kill("SIGKILL");
        throw new Error(`The first phase did not start:\n${stderr}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill("SIGINT");
    const status = await child.status;
    await reading;
    await stdout;
    equal(status.code, 130, stderr);
    match(stderr, /bench: interrupted: stopping msgserver and the NATS cluster/);
    const { pids, dirs } = started(stderr);
    equal(pids.length, 4, stderr);
    equal((await alive(pids)).join(), "", "every process it started is gone");
    equal(dirs.length, 2, stderr);
    for (const dir of dirs) equal(await exists(dir), false, `${dir} is removed`);
  },
});
