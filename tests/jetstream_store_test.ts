/**
 * STORE=jetstream against a real 3-node NATS JetStream cluster: records through two msgserver
 * nodes into one R3 stream and out through `msgserver export`, each acked record once and in its
 * session's order; a session resumed on any node with the right WELCOME; a session taken over
 * while the old node still holds some of its records (expected-last-subject-sequence); and the
 * startup errors, each naming the setting to change, with exit status 2.
 */

import { equal, match, ok, rejects } from "node:assert/strict";
import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { MsgClient } from "../src/client/client.ts";
import { ReliableClient } from "../src/client/reliable.ts";
import type { Config } from "../src/config.ts";
import { startServer } from "../src/server/server.ts";
import { ensureStream, openJetStream } from "../src/store/jetstream_start.ts";
import type { JetStreamStore } from "../src/store/jetstream_store.ts";
import { Publisher } from "../src/store/publisher.ts";
import type { Batch, Store } from "../src/store/store.ts";
import { startNatsCluster } from "./support/nats_cluster.ts";
import {
  exportRecords,
  idsByClient,
  jetstreamConfig,
  keptLog,
  problemsOf,
  until,
} from "./support/jetstream_nodes.ts";
import { freePort } from "./support/net.ts";
import { withTempDir } from "./support/server.ts";
import { requireTool } from "./support/tools.ts";

const present = requireTool("nats-server");
const MSGSERVER = new URL("../src/cli/msgserver.ts", import.meta.url).pathname;
const range = (from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, i) => from + i);

Deno.test({
  name: "two nodes, one R3 stream: every acked record exported once, a session resumed anywhere",
  ignore: !present,
  async fn() {
    await using cluster = await startNatsCluster();
    await withTempDir("msgserver_js_test_", async (dir) => {
      const config = jetstreamConfig(cluster);
      const logA = keptLog();
      const logB = keptLog();
      const a = await startServer(config, { log: logA.log });
      const b = await startServer(config, { log: logB.log });
      try {
        // Four clients on each node, pipelined.
        const acked = new Map<number, number[]>();
        await Promise.all([a, b].flatMap((node, n) =>
          range(1, 4).map(async (i) => {
            const clientId = n * 10 + i;
            const client = new ReliableClient({ port: node.addr.port, clientId });
            const sends = range(1, 3000).map((k) => client.send(`c${clientId}`, `m ${k}`));
            const deliveries = await Promise.all(sends);
            acked.set(clientId, deliveries.map((d) => d.msgId));
            await client.close();
          })
        ));

        // One session over both nodes: A, then B, then A again.
        const session = 0x1234_5678_9abcn;
        const c1 = await MsgClient.connect({ port: a.addr.port, clientId: 100, session });
        equal(c1.lastMsgId, 0);
        equal(c1.sessionKnown, false);
        await Promise.all(range(1, 500).map((k) => c1.send("s", `x ${k}`)));
        await c1.close();
        const c2 = await MsgClient.connect({ port: b.addr.port, clientId: 100, session });
        equal(c2.lastMsgId, 500, "B learns from the stream where the session stands");
        equal(c2.sessionKnown, true);
        await Promise.all(range(501, 1000).map((k) => c2.send("s", `x ${k}`)));
        await c2.close();
        const c3 = await MsgClient.connect({ port: a.addr.port, clientId: 100, session });
        equal(c3.lastMsgId, 1000, "A asks the stream again: B stored 501 to 1000 meanwhile");
        await c3.send("s", "x 1001");
        await c3.close();
        acked.set(100, range(1, 1001));

        const byClient = idsByClient(await exportRecords(config, dir));
        equal(byClient.size, acked.size);
        for (const [clientId, ids] of acked) {
          const problems = problemsOf(byClient.get(clientId) ?? [], ids);
          equal(problems.length, 0, `client ${clientId}: ${problems.join("; ")}`);
          equal(byClient.get(clientId)!.length, ids.length, `client ${clientId}`);
        }
      } finally {
        await a.shutdown();
        await b.shutdown();
      }
    });
  },
});

/** A store that holds every append until `release()`: a node whose publishes are late. */
class HeldStore implements Store {
  readonly #inner: JetStreamStore;
  #open: () => void = () => {};
  #gate: Promise<void> = new Promise((r) => this.#open = r);
  /** Appends waiting at the gate. */
  waiting = 0;
  constructor(inner: JetStreamStore) {
    this.#inner = inner;
  }
  get name() {
    return this.#inner.name;
  }
  get size() {
    return this.#inner.size;
  }
  get stats() {
    return this.#inner.stats;
  }
  get maxBatchBytes() {
    return this.#inner.maxBatchBytes;
  }
  get shared() {
    return this.#inner.shared;
  }
  release(): void {
    this.#open();
  }
  async append(batch: Batch): Promise<void> {
    this.waiting++;
    await this.#gate;
    this.waiting--;
    return this.#inner.append(batch);
  }
  rotate() {
    return this.#inner.rotate();
  }
  reopen() {
    return this.#inner.reopen();
  }
  lastStored(clientId: number, session: bigint) {
    return this.#inner.lastStored(clientId, session);
  }
  close() {
    return this.#inner.close();
  }
}

Deno.test({
  name: "a session taken over on another node is not doubled by the old node's late publishes",
  ignore: !present,
  async fn() {
    await using cluster = await startNatsCluster();
    await withTempDir("msgserver_js_test_", async (dir) => {
      const config = jetstreamConfig(cluster);
      const logA = keptLog("warn");
      // Node A takes records 1 to 1000 of the session and 1 to 300 of another, and holds them.
      const held = new HeldStore(await openJetStream(config, logA.log));
      const a = await startServer(config, { log: logA.log, store: held });
      const b = await startServer(config, { log: keptLog().log });
      try {
        const session = 77n;
        const onA = await MsgClient.connect({ port: a.addr.port, clientId: 1, session });
        const lateA = range(1, 1000).map((k) => onA.send("s", `r ${k}`));
        const otherOnA = await MsgClient.connect({ port: a.addr.port, clientId: 2, session: 78n });
        const lateOther = range(1, 300).map((k) => otherOnA.send("s", `o ${k}`));
        await until("node A holds a batch", () => held.waiting > 0);

        // Meanwhile the client moves to B, which knows nothing stored yet, and sends 1 to 600
        // again; and the other session is taken over on B too, with 1 to 300 and more.
        const onB = await MsgClient.connect({ port: b.addr.port, clientId: 1, session });
        equal(onB.lastMsgId, 0);
        await Promise.all(range(1, 600).map((k) => onB.send("s", `r ${k}`, k)));
        const otherOnB = await MsgClient.connect({ port: b.addr.port, clientId: 2, session: 78n });
        await Promise.all(range(1, 400).map((k) => otherOnB.send("s", `o ${k}`, k)));

        // A's publishes now go out, their expectation stale: A must store only 601 to 1000 of
        // the first session, nothing of the second, and ack all of them (they are stored).
        held.release();
        await Promise.all([...lateA, ...lateOther]);
        await Promise.all([onA.close(), otherOnA.close(), onB.close(), otherOnB.close()]);
        ok(
          logA.lines.some((l) => l.includes("session appended to elsewhere")),
          "node A corrected its expectation",
        );

        const byClient = idsByClient(await exportRecords(config, dir));
        const first = byClient.get(1) ?? [];
        equal(problemsOf(first, range(1, 1000)).join("; "), "");
        equal(first.length, 1000);
        const second = byClient.get(2) ?? [];
        equal(problemsOf(second, range(1, 400)).join("; "), "");
        equal(second.length, 400);
      } finally {
        held.release();
        await a.shutdown();
        await b.shutdown();
      }
    });
  },
});

/** Runs msgserver with `args` until it exits (it should not start); returns code and stderr. */
async function failedStart(args: string[]): Promise<{ code: number; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MSGSERVER, "--port", "0", "--store", "jetstream", ...args],
    env: { MS_HOME: "" },
    cwd: Deno.env.get("TMPDIR") ?? "/tmp", // no app.conf there
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  const out = await child.output();
  clearTimeout(timer);
  // The log line quotes the error as logfmt does: undo its escaped quotes for the checks.
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr).replaceAll('\\"', '"') };
}

Deno.test({
  name: "STORE=jetstream start-up errors name the setting and the servers, with exit status 2",
  ignore: !present,
  async fn() {
    // Nothing listening.
    const nowhere = `nats://127.0.0.1:${freePort()}`;
    let r = await failedStart(["--nats-urls", nowhere, "--nats-timeout-ms", "1000"]);
    equal(r.code, 2, r.stderr);
    match(r.stderr, /Cannot connect to NATS at NATS_URLS "nats:\/\/127\.0\.0\.1:\d+"/);

    // ACK_MODE=durable cannot be promised.
    r = await failedStart(["--nats-urls", nowhere, "--ack-mode", "durable"]);
    equal(r.code, 2, r.stderr);
    match(r.stderr, /ACK_MODE=durable does not go with STORE=jetstream/);

    // A NATS server without JetStream.
    const port = freePort();
    const plain = new Deno.Command("nats-server", {
      args: ["-a", "127.0.0.1", "-p", `${port}`],
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      await until("nats-server listens", () => {
        try {
          Deno.connect({ hostname: "127.0.0.1", port }).then((c) => c.close(), () => {});
          return true;
        } catch {
          return false;
        }
      });
      await new Promise((r) => setTimeout(r, 300));
      const url = `nats://127.0.0.1:${port}`;
      // Its default max_payload (1 MiB) is too small for a record of MAX_MESSAGE_BYTES (1 MiB).
      r = await failedStart(["--nats-urls", url]);
      equal(r.code, 2, r.stderr);
      match(
        r.stderr,
        /NATS_URLS "nats:\/\/127\.0\.0\.1:\d+" take messages of at most 1048576 bytes \(max_payload\), too few for MAX_MESSAGE_BYTES=1048576 .* at most 490868/,
      );
      r = await failedStart(["--nats-urls", url, "--max-message-bytes", "1000"]);
      equal(r.code, 2, r.stderr);
      match(r.stderr, /JetStream does not answer at 127\.0\.0\.1:\d+/);
    } finally {
      plain.kill("SIGKILL");
      await plain.status;
    }

    await using cluster = await startNatsCluster({ nodes: 1 });
    const urls = cluster.urls.join(",");
    // A stream of that name that takes other subjects.
    const nc = await connect({ servers: cluster.urls });
    try {
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({ name: "OTHER", subjects: ["other.>"] });
    } finally {
      await nc.close();
    }
    r = await failedStart(["--nats-urls", urls, "--nats-stream", "OTHER"]);
    equal(r.code, 2, r.stderr);
    match(r.stderr, /NATS_STREAM "OTHER" at .* takes subjects \["other\.>"\], not "msgs\.>"/);

    // Three replicas asked of a single server.
    r = await failedStart(["--nats-urls", urls]);
    equal(r.code, 2, r.stderr);
    match(r.stderr, /cannot create NATS_STREAM "MSGS" with NATS_REPLICAS 3 at .*replicas > 1/);
  },
});

Deno.test({
  name: "STORE=jetstream: /metrics shows the NATS connection, publishes in flight and their time",
  ignore: !present,
  async fn() {
    await using cluster = await startNatsCluster({ nodes: 1 });
    const config: Config = jetstreamConfig(cluster, { METRICS_PORT: freePort() });
    const server = await startServer(config, { log: keptLog().log });
    try {
      const client = await MsgClient.connect({ port: server.addr.port, clientId: 1 });
      await Promise.all(range(1, 100).map((k) => client.send("m", `p ${k}`)));
      await client.close();
      const text = await (await fetch(`http://127.0.0.1:${config.METRICS_PORT}/metrics`)).text();
      match(text, /^msgserver_nats_connected 1$/m);
      match(text, /^msgserver_nats_publishes_in_flight 0$/m);
      const count = /^msgserver_nats_publish_seconds_count (\d+)$/m.exec(text);
      ok(count !== null && Number(count[1]) >= 1, text);
    } finally {
      await server.shutdown();
    }
  },
});

Deno.test({
  name: "batches with the stream at once keep each session's messages in batch order",
  ignore: !present,
  async fn() {
    await using cluster = await startNatsCluster({ nodes: 1 });
    const logged = keptLog("warn");
    const store = await openJetStream(jetstreamConfig(cluster), logged.log);
    try {
      // Three batches of one session handed over at once, as the writer does with a store whose
      // pipeline is above 1 (JetStream's is 1 for now, see PIPELINE):
      // each message must carry the sequence the one before it got, so none is refused as stale.
      await Promise.all([
        store.append(oneRunBatch(5, 31n, 1, 3)),
        store.append(oneRunBatch(5, 31n, 4, 6)),
        store.append(oneRunBatch(5, 31n, 7, 9)),
      ]);
      equal(logged.lines.join(""), "", "no expectation was corrected");
      equal(await store.lastStored(5, 31n), 9);
    } finally {
      await store.close();
    }
  },
});

Deno.test({
  name: "STORE=jetstream start-up asks again for a stream that does not answer yet, up to 3 times",
  ignore: !present,
  async fn() {
    await using cluster = await startNatsCluster({ nodes: 1 });
    const nc = await connect({ servers: cluster.urls[0]! });
    const jsm = await jetstreamManager(nc);
    // nats-server 2.9.10 leaves STREAM.INFO unanswered while a stream has no leader yet (one
    // another node has just created): the request times out. Here the client's request does.
    const api = Object.getPrototypeOf(jsm.streams) as { info: (...a: unknown[]) => unknown };
    const original = api.info;
    let asked = 0;
    let timeouts = 0;
    api.info = function (this: unknown, ...args: unknown[]) {
      asked++;
      if (timeouts-- > 0) {
        return Promise.reject(Object.assign(new Error("timeout"), { name: "TimeoutError" }));
      }
      return original.apply(this, args);
    };
    const options = { stream: "SLOW", subject: "slow", replicas: 1, timeoutMs: 1000 };
    try {
      timeouts = 2;
      const made = await ensureStream(nc, options);
      equal(made.created, true);
      equal(asked, 3, "two timeouts, then the answer (no such stream: made)");
      asked = 0;
      timeouts = 2;
      equal((await ensureStream(nc, options)).created, false);
      equal(asked, 3);
      // A make that times out (it may have made the stream): read again, then make it.
      const originalAdd = (api as unknown as { add: (...a: unknown[]) => unknown }).add;
      let addTimeouts = 1;
      let adds = 0;
      (api as unknown as { add: (...a: unknown[]) => unknown }).add = function (
        this: unknown,
        ...args: unknown[]
      ) {
        adds++;
        if (addTimeouts-- > 0) {
          return Promise.reject(Object.assign(new Error("timeout"), { name: "TimeoutError" }));
        }
        return originalAdd.apply(this, args);
      };
      try {
        asked = 0;
        const other = { ...options, stream: "SLOW2", subject: "slow2" };
        equal((await ensureStream(nc, other)).created, true);
        equal(adds, 2);
        equal(asked, 2, "read, make (timed out), read, make");
      } finally {
        (api as unknown as { add: (...a: unknown[]) => unknown }).add = originalAdd;
      }
      asked = 0;
      timeouts = 3;
      await rejects(ensureStream(nc, options), (e: Error) => {
        match(
          e.message,
          /cannot read NATS_STREAM "SLOW" at .*: no answer in 3 tries of NATS_TIMEOUT_MS \(1000 ms\) each/,
        );
        return true;
      });
      equal(asked, 3);
    } finally {
      api.info = original;
      await nc.close();
    }
  },
});

/** One session's (or, with session 0n, one legacy connection's) batch of msg_ids `from`..`to`. */
function oneRunBatch(clientId: number, session: bigint, from: number, to: number): Batch {
  const source = {
    clientId,
    session,
    sessionKey: session === 0n ? "" : `${clientId}/${session}`,
    batchSeq: -1,
    batchLastId: 0,
    batchRecords: 0,
    written() {},
    refuse() {},
  };
  const lines = range(from, to).map((k) => `${clientId} ${k} s r${k}\n`).join("");
  const bytes = new TextEncoder().encode(lines);
  return {
    bytes,
    records: to - from + 1,
    runs: [{
      source,
      lineStart: 0,
      lineEnd: bytes.length,
      firstId: from,
      lastId: to,
      records: to - from + 1,
    }],
  };
}

/**
 * Makes the next last-message-by-subject lookup of every JetStreamManager fail (nats.js's stream
 * API is one class); returns what undoes it.
 */
function failNextLookup(jsm: Awaited<ReturnType<typeof jetstreamManager>>): () => void {
  const api = Object.getPrototypeOf(jsm.streams) as { getMessage: (...a: unknown[]) => unknown };
  const original = api.getMessage;
  let failLookups = 1;
  api.getMessage = function (this: unknown, ...args: unknown[]) {
    const query = args[1] as { last_by_subj?: string };
    if (query.last_by_subj !== undefined && failLookups-- > 0) {
      return Promise.reject(new Error("injected: the lookup timed out"));
    }
    return original.apply(this, args);
  };
  return () => {
    api.getMessage = original;
  };
}

/** The stream's messages' data, in stream order. */
async function streamTexts(jsm: Awaited<ReturnType<typeof jetstreamManager>>, stream: string) {
  const info = await jsm.streams.info(stream);
  const texts: string[] = [];
  if (info.state.messages === 0) return texts;
  for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
    const m = await jsm.streams.getMessage(stream, { seq });
    texts.push(new TextDecoder().decode(m!.data));
  }
  return texts;
}

/** What {@linkcode withStore} hands a test. */
interface StoreRig {
  store: JetStreamStore;
  config: Config;
  /** A manager on a connection of the test's own, to read the stream or patch lookups. */
  jsm: JetStreamManager;
}

/** Runs `fn` with a store on a 1-node cluster of its own; closes them afterwards. */
async function withStore(fn: (rig: StoreRig) => Promise<void>): Promise<void> {
  await using cluster = await startNatsCluster({ nodes: 1 });
  const config = jetstreamConfig(cluster);
  const store = await openJetStream(config, keptLog("error").log);
  const nc = await connect({ servers: cluster.urls });
  try {
    await fn({ store, config, jsm: await jetstreamManager(nc) });
  } finally {
    await store.close();
    await nc.close();
  }
}

Deno.test({
  name: "a failed message holds its session's later batches back: its retry is stored, and first",
  ignore: !present,
  async fn() {
    // Found by review with two batches in flight: batch 1's lookup failed, batch 2 went, and
    // batch 1's retry took batch 2's msg_ids for its own as stored: acked, never stored.
    await withStore(async ({ store, config, jsm }) => {
      const restoreLookups = failNextLookup(jsm);
      try {
        const b1 = oneRunBatch(5, 31n, 1, 3);
        const b2 = oneRunBatch(5, 31n, 4, 6);
        const first = await Promise.allSettled([store.append(b1), store.append(b2)]);
        equal(first.map((r) => r.status).join(), "rejected,rejected", "batch 2 waits for batch 1");
        await store.append(b1); // the writer's retry of batch 1
        await store.append(b2); // then of batch 2
        equal(await store.lastStored(5, 31n), 6);
        equal(
          (await streamTexts(jsm, config.NATS_STREAM)).join(""),
          range(1, 6).map((k) => `5 ${k} s r${k}\n`).join(""),
        );
      } finally {
        restoreLookups();
      }
    });
  },
});

Deno.test({
  name: "a failed message of a subject without a session keeps its place before later batches",
  ignore: !present,
  async fn() {
    await withStore(async ({ store, config, jsm }) => {
      const original = Publisher.prototype.publish;
      let failPublishes = 1;
      Publisher.prototype.publish = function (this: Publisher, ...args) {
        if (failPublishes-- > 0) return Promise.reject(new Error("injected: no PubAck in time"));
        return original.apply(this, args);
      };
      try {
        const b1 = oneRunBatch(9, 0n, 1, 3);
        const b2 = oneRunBatch(9, 0n, 4, 6);
        const b3 = oneRunBatch(9, 0n, 7, 8);
        await Promise.allSettled([store.append(b1), store.append(b2)]);
        // Batch 1 is given up by the writer, and batch 3 comes before batch 2's retry: batch 2,
        // held back once, still goes first.
        store.abandon(b1);
        await rejects(store.append(b3), /the message of an earlier batch is not stored yet/);
        await store.append(b2);
        await store.append(b3);
        equal(
          (await streamTexts(jsm, config.NATS_STREAM)).join(""),
          [4, 5, 6, 7, 8].map((k) => `9 ${k} s r${k}\n`).join(""),
        );
        // Without the abandon, batch 2 and 3 would wait for batch 1 (its retry then goes first).
        const b4 = oneRunBatch(9, 0n, 9, 9);
        const b5 = oneRunBatch(9, 0n, 10, 10);
        failPublishes = 1;
        await Promise.allSettled([store.append(b4), store.append(b5)]);
        await rejects(store.append(b5), /the message of an earlier batch is not stored yet/);
        await store.append(b4);
        await store.append(b5);
        const texts = await streamTexts(jsm, config.NATS_STREAM);
        equal(texts.slice(-2).join(""), "9 9 s r9\n9 10 s r10\n");
      } finally {
        Publisher.prototype.publish = original;
      }
    });
  },
});

Deno.test({
  name: "a session whose lookup failed takes nothing after the refused records until it resumes",
  ignore: !present,
  async fn() {
    // With one batch at a time too: batch 1 refused after its lookup failed, batch 2 must not be
    // stored above the hole (a lookup would then read 1 to 3 as stored).
    await withStore(async ({ store, config, jsm }) => {
      const restoreLookups = failNextLookup(jsm);
      try {
        const b1 = oneRunBatch(6, 41n, 1, 3);
        const b2 = oneRunBatch(6, 41n, 4, 6);
        await rejects(store.append(b1), /injected: the lookup timed out/);
        store.abandon(b1); // the writer gave it up: NACK 4 for 1 to 3, ERROR 8 for the session
        await rejects(store.append(b2), /msg_id 1 and on were not stored/);
        equal((await streamTexts(jsm, config.NATS_STREAM)).length, 0);
        // The client resumes: HELLO asks where the session stands, and it sends 1 on again.
        equal(await store.lastStored(6, 41n), null);
        await store.append(b1);
        await store.append(b2);
        equal(await store.lastStored(6, 41n), 6);
      } finally {
        restoreLookups();
      }
    });
  },
});
