/**
 * STORE=jetstream when things fail under load: msgserver nodes killed with SIGKILL again and again
 * while clients fail over between them, a NATS follower and then the stream leader killed with
 * SIGKILL, and the whole NATS cluster gone for 10 s. Clients keep sending through
 * ReliableClient; afterwards the stream is exported with `msgserver export` and every acked
 * record must be in it exactly once, in its session's order. While NATS is gone the server
 * refuses with NACK 4 once its retry window has passed, its memory stays bounded, and it serves
 * again by itself when NATS is back.
 */

import { equal, ok } from "node:assert/strict";
import { startServer } from "../src/server/server.ts";
import { type NatsCluster, startNatsCluster } from "./support/nats_cluster.ts";
import {
  exportRecords,
  idsByClient,
  jetstreamConfig,
  keptLog,
  problemsOf,
  SteadyLoad,
  until,
} from "./support/jetstream_nodes.ts";
import { freePort } from "./support/net.ts";
import { withTempDir } from "./support/server.ts";
import { spawnServer } from "./support/spawn.ts";
import { requireTool } from "./support/tools.ts";
import { readStatusBytes } from "../bench/load/proc.ts";
import type { Config } from "../src/config.ts";

const present = requireTool("nats-server");
const MIB = 1024 * 1024;

/** Checks the export against what the load saw acked: each acked record once, in order. */
async function checkExport(config: Config, dir: string, load: SteadyLoad): Promise<number> {
  const byClient = idsByClient(await exportRecords(config, dir));
  let exported = 0;
  for (const [clientId, acked] of load.acked) {
    const ids = byClient.get(clientId) ?? [];
    exported += ids.length;
    const problems = problemsOf(ids, acked);
    equal(problems.length, 0, `client ${clientId}: ${problems.join("; ")}`);
  }
  return exported;
}

/** Waits until the load has `more` deliveries past what it had when called. */
async function progress(load: SteadyLoad, more: number, what: string): Promise<void> {
  const target = load.ackedCount + more;
  await until(`${what} (${load.ackedCount} acked, want ${target})`, () => {
    return load.ackedCount >= target;
  }, 30_000);
}

async function stopNode(cluster: NatsCluster, name: string): Promise<void> {
  await cluster.nodeByName(name).kill("SIGKILL");
}

Deno.test({
  name: "kill -9 of a NATS follower, then of the stream leader, under load: each acked record once",
  ignore: !present,
  async fn() {
    await using cluster = await startNatsCluster();
    await withTempDir("msgserver_faults_test_", async (dir) => {
      const config = jetstreamConfig(cluster);
      const { log, lines } = keptLog("warn");
      const server = await startServer(config, { log });
      const load = new SteadyLoad({
        client: { port: server.addr.port, giveUpAfterMs: 60_000 },
        clients: 8,
        firstClientId: 1,
        window: 64,
      });
      try {
        await progress(load, 20_000, "the load is going");
        const leader = await cluster.streamLeader(config.NATS_STREAM);
        const follower = cluster.nodes.find((n) => n.name !== leader)!.name;

        await stopNode(cluster, follower);
        await progress(load, 20_000, "acks go on without a follower");
        await cluster.nodeByName(follower).restart();

        const killedAt = performance.now();
        await stopNode(cluster, leader);
        await cluster.streamLeader(config.NATS_STREAM, { excluding: leader, timeoutMs: 30_000 });
        await progress(load, 20_000, "acks go on after the leader's failover");
        const stallMs = Math.round(load.lastAckAt - killedAt);
        await cluster.nodeByName(leader).restart();
        await load.stop();
        equal(load.failures.length, 0, load.failures.join("\n"));

        const exported = await checkExport(config, dir, load);
        ok(exported >= load.ackedCount);
        console.log(
          `acked ${load.ackedCount}, refused ${load.refusedCount}, exported ${exported}; ` +
            `the leader's failover took acks past ${stallMs} ms after the kill`,
        );
      } catch (e) {
        console.error(lines.slice(-30).join("\n"));
        throw e;
      } finally {
        await load.stop();
        await server.shutdown();
      }
    });
  },
});

/** A msgserver node as its own process, STORE=jetstream, on `port`. */
function spawnNode(dir: string, config: Config, port: number) {
  return spawnServer(dir, {
    env: { MS_HOME: "" },
    args: [
      "--port",
      String(port),
      "--store",
      "jetstream",
      "--nats-urls",
      config.NATS_URLS,
      "--nats-stream",
      config.NATS_STREAM,
    ],
    port,
  });
}

Deno.test({
  name:
    "msgserver nodes killed with SIGKILL again and again, clients failing over: each record once",
  ignore: !present,
  async fn() {
    await using cluster = await startNatsCluster();
    await withTempDir("msgserver_faults_test_", async (dir) => {
      const config = jetstreamConfig(cluster);
      const ports = [freePort(), freePort()];
      const nodes = await Promise.all(ports.map((port) => spawnNode(dir, config, port)));
      const load = new SteadyLoad({
        client: {
          servers: ports.map((port) => ({ port })),
          giveUpAfterMs: 60_000,
          maxDelayMs: 200,
        },
        clients: 6,
        firstClientId: 1,
        window: 32,
      });
      try {
        for (let round = 0; round < 6; round++) {
          await progress(load, 5_000, `round ${round}: the load is going`);
          const victim = round % 2;
          await nodes[victim]!.shutdown({ signal: "SIGKILL" });
          await progress(load, 2_000, `round ${round}: the clients carry on on the other node`);
          nodes[victim] = await spawnNode(dir, config, ports[victim]!);
        }
        await progress(load, 5_000, "the load is going after the last restart");
        await load.stop();
        equal(load.failures.length, 0, load.failures.join("\n"));
        equal(load.refusedCount, 0, "nothing refused: a killed node's clients resume elsewhere");

        const exported = await checkExport(config, dir, load);
        equal(exported, load.ackedCount, "nothing stored that was not acked in the end");
        console.log(`6 kills: acked ${load.ackedCount}, exported ${exported}, each once`);
      } finally {
        await load.stop();
        await Promise.all(nodes.map((node) => node.stop()));
      }
    });
  },
});

async function metric(port: number, name: string): Promise<number | null> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const m = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
  return m === null ? null : Number(m[1]);
}

Deno.test({
  name: "NATS gone for 10 s: NACK 4 past the retry window, bounded memory, serving again after",
  ignore: !present,
  async fn() {
    await using cluster = await startNatsCluster();
    await withTempDir("msgserver_faults_test_", async (dir) => {
      const config = jetstreamConfig(cluster, { METRICS_PORT: freePort() });
      const server = await spawnServer(dir, {
        env: { MS_HOME: "" },
        args: [
          "--port",
          "0",
          "--store",
          "jetstream",
          "--nats-urls",
          config.NATS_URLS,
          "--nats-stream",
          config.NATS_STREAM,
          "--metrics-port",
          String(config.METRICS_PORT),
          "--queue-max-bytes",
          String(4 * MIB),
        ],
      });
      const load = new SteadyLoad({
        client: { port: server.port, giveUpAfterMs: 60_000, maxDelayMs: 500 },
        clients: 8,
        firstClientId: 1,
        window: 64,
      });
      try {
        await progress(load, 20_000, "the load is going");
        equal(await metric(config.METRICS_PORT, "msgserver_nats_connected"), 1);

        await Promise.all(cluster.nodes.map((node) => node.kill("SIGKILL")));
        const downAt = performance.now();
        const ackedAtKill = load.ackedCount;
        await new Promise((r) => setTimeout(r, 3_000));
        const rssEarly = await readStatusBytes(server.pid, "VmRSS");
        equal(await metric(config.METRICS_PORT, "msgserver_nats_connected"), 0);
        // Past the 5 s retry window what was queued is refused, and nothing more is acked.
        await until("records are refused with NACK 4", () => load.refusedCount > 0, 10_000);
        ok(performance.now() - downAt >= 4_000, "refused only past the retry window");
        const ackedWhileDown = load.ackedCount;
        await new Promise((r) => setTimeout(r, 10_000 - (performance.now() - downAt)));
        const rssLate = await readStatusBytes(server.pid, "VmRSS");
        equal(load.ackedCount, ackedWhileDown, "nothing is acked while NATS is gone");
        ok(rssEarly !== null && rssLate !== null);
        ok(
          rssLate - rssEarly < 48 * MIB,
          `memory grew ${((rssLate - rssEarly) / MIB).toFixed(1)} MiB while NATS was gone`,
        );

        await Promise.all(cluster.nodes.map((node) => node.restart()));
        await progress(load, 20_000, "acks come again once NATS is back");
        equal(await metric(config.METRICS_PORT, "msgserver_nats_connected"), 1);
        await load.stop();
        equal(load.failures.length, 0, load.failures.join("\n"));

        const exported = await checkExport(config, dir, load);
        console.log(
          `acked ${ackedAtKill} before the outage, ${load.ackedCount} in all; refused ` +
            `${load.refusedCount}; exported ${exported}; RSS ${(rssEarly / MIB).toFixed(0)} -> ` +
            `${(rssLate / MIB).toFixed(0)} MiB while NATS was gone`,
        );
      } catch (e) {
        console.error(server.stderr().split("\n").slice(-30).join("\n"));
        throw e;
      } finally {
        await load.stop();
        await server.stop();
      }
    });
  },
});
