/**
 * The NATS cluster harness, and with it the example configs in `docs/nats/` it starts from: a real
 * 3-node JetStream cluster keeps an R3 stream's message across the loss of its leader.
 *
 * @module
 */

import { deepEqual, equal, notEqual, ok, rejects } from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { startNatsCluster } from "./nats_cluster.ts";
import { requireTool } from "./tools.ts";

const present = requireTool("nats-server");

/** Whether a process with this PID exists and runs nats-server with a config under `dir`. */
async function runsConfigIn(pid: number, dir: string): Promise<boolean> {
  try {
    return (await Deno.readTextFile(`/proc/${pid}/cmdline`)).includes(dir);
  } catch {
    return false;
  }
}

/** PIDs of every running process whose command line mentions `text`. */
async function processesMentioning(text: string): Promise<number[]> {
  const pids: number[] = [];
  for await (const entry of Deno.readDir("/proc")) {
    if (/^\d+$/.test(entry.name) && await runsConfigIn(Number(entry.name), text)) {
      pids.push(Number(entry.name));
    }
  }
  return pids;
}

Deno.test({
  name:
    "startNatsCluster() runs 3 nodes that keep an R3 stream's message when its leader is killed",
  ignore: !present,
  async fn() {
    const cluster = await startNatsCluster();
    const pids = new Set(cluster.nodes.map((node) => node.pid));
    const configDir = (await Deno.readTextFile(`/proc/${cluster.nodes[0]!.pid}/cmdline`))
      .split("\0")[2]!.replace(/\/[^/]*$/, "");
    try {
      equal(cluster.dir, configDir, "dir is where the nodes' configs are");
      equal(cluster.nodes.length, 3);
      equal(new Set(cluster.nodes.map((node) => node.name)).size, 3);
      deepEqual(cluster.urls, cluster.nodes.map((node) => `nats://127.0.0.1:${node.port}`));
      ok(cluster.nodes.every((node) => node.alive));

      const stream = `harness_${crypto.randomUUID().replaceAll("-", "")}`;
      const subject = `${stream}.a`;
      const nc = await connect({ servers: cluster.urls });
      let leader: string;
      try {
        equal(nc.info?.max_payload, 8 * 1024 * 1024, "docs/nats sets max_payload: 8MB");
        const jsm = await jetstreamManager(nc);
        await jsm.streams.add({ name: stream, subjects: [`${stream}.>`], num_replicas: 3 });
        const ack = await jetstream(nc).publish(subject, "hello", { msgID: "m-1" });
        equal(ack.seq, 1);
        const again = await jetstream(nc).publish(subject, "hello", { msgID: "m-1" });
        ok(again.duplicate, "a second publish with the same Nats-Msg-Id is dropped");
        const stored = await jsm.streams.getMessage(stream, { last_by_subj: subject });
        equal(stored?.string(), "hello");
        equal(stored?.header.get("Nats-Msg-Id"), "m-1");
        leader = await cluster.streamLeader(stream);
      } finally {
        await nc.close();
      }

      const killed = cluster.nodeByName(leader);
      await killed.kill("SIGKILL");
      equal(killed.alive, false);
      const next = await cluster.streamLeader(stream, { excluding: leader });
      notEqual(next, leader);

      const survivors = cluster.nodes.filter((node) => node.alive).map((node) => node.url);
      const nc2 = await connect({ servers: survivors });
      try {
        const jsm = await jetstreamManager(nc2);
        const stored = await jsm.streams.getMessage(stream, { last_by_subj: subject });
        equal(stored?.string(), "hello");
        equal(stored?.seq, 1);
      } finally {
        await nc2.close();
      }

      await killed.restart();
      ok(killed.alive);
      pids.add(killed.pid);
      equal(pids.size, 4, "the restart is a new process");
      // The restarted node serves the stream again: ask it alone.
      const nc3 = await connect({ servers: [killed.url], noRandomize: true });
      try {
        const jsm = await jetstreamManager(nc3);
        const info = await jsm.streams.info(stream);
        equal(info.state.messages, 1);
        equal(info.cluster?.replicas?.length, 2);
      } finally {
        await nc3.close();
      }
    } finally {
      await cluster.stop();
    }

    ok(cluster.nodes.every((node) => !node.alive));
    for (const pid of pids) equal(await runsConfigIn(pid, configDir), false, `pid ${pid} is left`);
    deepEqual(await processesMentioning(configDir), []);
    await rejects(Deno.stat(configDir), Deno.errors.NotFound, "stop() removes the temp dir");
  },
});

Deno.test({
  name:
    "startNatsCluster() starts a single node from node-1.conf, and nodeByName() names the nodes",
  ignore: !present,
  async fn() {
    await using cluster = await startNatsCluster({ nodes: 1 });
    const node = cluster.nodes[0]!;
    equal(cluster.nodeByName(node.name), node);
    let error: unknown;
    try {
      cluster.nodeByName("nobody");
    } catch (e) {
      error = e;
    }
    ok(error instanceof RangeError, String(error));
    await rejects(startNatsCluster({ nodes: 4 }), RangeError);
    const nc = await connect({ servers: cluster.urls });
    try {
      const jsm = await jetstreamManager(nc);
      const stream = `single_${crypto.randomUUID().replaceAll("-", "")}`;
      await jsm.streams.add({ name: stream, subjects: [`${stream}.>`] });
      equal(await cluster.streamLeader(stream), node.name);
    } finally {
      await nc.close();
    }
  },
});
