import { equal, match, ok } from "node:assert/strict";
import { MsgClient } from "../src/client/client.ts";
import { BucketHistogram, renderPrometheus } from "../src/server/metrics.ts";
import { delay } from "../src/io/within.ts";
import { encodeHello, encodeMsg } from "../src/protocol/frames.ts";
import { freePort } from "./support/net.ts";
import { FakeStore } from "./support/fake_store.ts";
import { RawPeer } from "./support/raw_peer.ts";
import { withServer, withTempDir } from "./support/server.ts";
import { spawnServer } from "./support/spawn.ts";

Deno.test("renderPrometheus writes counters and cumulative histogram buckets", () => {
  const h = new BucketHistogram([1, 10]);
  for (const v of [0.5, 1, 5, 50]) h.observe(v);
  equal(
    renderPrometheus([
      { name: "a_total", help: "A.", type: "counter", value: 7 },
      { name: "b", help: "B.", type: "histogram", histogram: h },
    ]),
    "# HELP a_total A.\n# TYPE a_total counter\na_total 7\n" +
      "# HELP b B.\n# TYPE b histogram\n" +
      'b_bucket{le="1"} 2\nb_bucket{le="10"} 3\nb_bucket{le="+Inf"} 4\nb_sum 56.5\nb_count 4\n',
  );
});

Deno.test("renderPrometheus writes one line per label set, label values escaped", () => {
  equal(
    renderPrometheus([{
      name: "c_total",
      help: "C.",
      type: "counter",
      values: [
        { labels: { code: "1" }, value: 2 },
        { labels: { code: "4", why: 'a "b"\\c\nd' }, value: 0 },
      ],
    }]),
    "# HELP c_total C.\n# TYPE c_total counter\n" +
      'c_total{code="1"} 2\nc_total{code="4",why="a \\"b\\"\\\\c\\nd"} 0\n',
  );
});

Deno.test("/metrics counts NACKs and ERRORs by code, and the data file's size and rotations", async () => {
  await withServer(
    { METRICS_PORT: freePort(), AUTH_TOKEN: "t0ken", FILE_MAX_BYTES: 200 },
    async ({ port, server }) => {
      const client = await MsgClient.connect({ port, clientId: 1, token: "t0ken" });
      for (let i = 0; i < 6; i++) await client.send("m", "x".repeat(60));
      await client.send("bad name", "y").catch(() => {});
      await client.close();
      const early = await RawPeer.connect(port); // MSG before HELLO: ERROR 1
      await early.write(encodeMsg(1, "m", "x"));
      await early.readUntilClose();
      const wrong = await RawPeer.connect(port); // a wrong token: ERROR 3
      await wrong.write(encodeHello({ clientId: 2, session: 0n, token: "nope" }));
      await wrong.readUntilClose();
      const text = await (await fetch(`http://127.0.0.1:${server.metricsAddr!.port}/metrics`, {
        headers: { authorization: "Bearer t0ken" },
      })).text();
      match(
        text,
        /^# HELP msgserver_nacks_total NACK frames sent, by code \(1 payload too large, 2 bad name, 3 duplicate, 4 storage error\)\.$/m,
      );
      match(text, /^msgserver_nacks_total\{code="1"\} 0\nmsgserver_nacks_total\{code="2"\} 1\n/m);
      match(
        text,
        /^msgserver_errors_total\{code="1"\} 1\nmsgserver_errors_total\{code="2"\} 0\nmsgserver_errors_total\{code="3"\} 1\n/m,
      );
      match(text, /^msgserver_errors_total\{code="8"\} 0$/m);
      equal(text.match(/^# TYPE msgserver_errors_total counter$/gm)?.length, 1);
      // Six lines of 67 bytes ("1 N m " and 60 x), one at a time, at most 200 bytes a file: two
      // lines a file, so two rotations, and the last file holds 134 bytes.
      match(text, /^msgserver_file_rotations_total 2$/m);
      match(text, /^msgserver_file_bytes 134$/m);
    },
  );
});

Deno.test("/metrics counts messages and batches, /healthz answers ok", async () => {
  await withServer({ METRICS_PORT: freePort() }, async ({ port, server }) => {
    const client = await MsgClient.connect({ port, clientId: 1 });
    await Promise.all(Array.from({ length: 25 }, () => client.send("m", "x")));
    await client.send("bad name", "y").catch(() => {});
    await client.close();
    const base = `http://127.0.0.1:${server.metricsAddr!.port}`;
    const text = await (await fetch(`${base}/metrics`)).text();
    match(text, /^msgserver_messages_received_total 26$/m);
    match(text, /^msgserver_messages_written_total 25$/m);
    match(text, /^msgserver_messages_acked_total 25$/m);
    match(text, /^msgserver_messages_nacked_total 1$/m);
    match(text, /^msgserver_connections_total 1$/m);
    match(text, /^msgserver_write_seconds_count [1-9]\d*$/m);
    match(text, /^msgserver_batch_records_bucket\{le="\+Inf"\} [1-9]\d*$/m);
    // The client is closed and took all its replies.
    match(text, /^msgserver_reply_bytes_pending 0$/m);
    const health = await fetch(`${base}/healthz`);
    equal(health.status, 200);
    equal(await health.text(), "ok\n");
    const missing = await fetch(`${base}/nope`);
    equal(missing.status, 404);
    await missing.body?.cancel();
  });
});

Deno.test("a one-line stats summary is logged every STATS_INTERVAL_S at info", async () => {
  await withServer({ STATS_INTERVAL_S: 1, LOG_LEVEL: "info" }, async ({ port, logs }) => {
    const client = await MsgClient.connect({ port, clientId: 1 });
    await client.send("m", "x");
    await delay(2300);
    await client.close();
    const lines = logs.filter((l) => l.includes(" INFO stats "));
    const line = lines[0];
    ok(line !== undefined, logs.join(""));
    match(line, /connections=1 msgs_per_s=1 written=1 acked=1 nacked=0 duplicates=0 queue=0/);
    // Every interval, not once: the second second had no new message.
    ok(lines.length >= 2, `${lines.length} stats lines in 2.3 s\n${logs.join("")}`);
    match(lines[1]!, /msgs_per_s=0 written=1/);
  });
});

/** The value of the one sample of `/metrics` text that starts with `series` (name and labels). */
function sample(text: string, series: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  ok(line !== undefined, `no ${series} in\n${text}`);
  return Number(line.slice(series.length + 1));
}

Deno.test("/metrics counts NACKs by code and shows the queue's capacity", async () => {
  const store = new FakeStore();
  const overrides = {
    METRICS_PORT: freePort(),
    MAX_MESSAGE_BYTES: 4,
    QUEUE_CAPACITY: 1234,
    QUEUE_MAX_BYTES: 56789,
  };
  await withServer(overrides, async ({ port, server }) => {
    const client = await MsgClient.connect({ port, clientId: 1 });
    await client.send("m", "too long").catch(() => {}); // NACK 1
    await client.send("bad name", "x").catch(() => {}); // NACK 2
    await client.send("bad name", "y").catch(() => {}); // NACK 2
    await client.send("m", "ok", 10);
    await client.send("m", "again", 10).catch(() => {}); // NACK 3
    store.failAppends = Infinity;
    await client.send("m", "lost").catch(() => {}); // NACK 4 once the retries run out
    await client.close();
    const text = await (await fetch(`http://127.0.0.1:${server.metricsAddr!.port}/metrics`)).text();
    equal(sample(text, 'msgserver_nacks_total{code="1"}'), 1);
    equal(sample(text, 'msgserver_nacks_total{code="2"}'), 2);
    equal(sample(text, 'msgserver_nacks_total{code="3"}'), 1);
    equal(sample(text, 'msgserver_nacks_total{code="4"}'), 1);
    match(text, /^# TYPE msgserver_nacks_total counter$/m);
    equal(sample(text, "msgserver_messages_nacked_total"), 3);
    equal(sample(text, "msgserver_queue_capacity_records"), 1234);
    equal(sample(text, "msgserver_queue_capacity_bytes"), 56789);
  }, { store });
});

Deno.test("/metrics shows the process's start time and its open descriptors against the limit", async () => {
  await withTempDir("msgserver_metrics_test_", async (dir) => {
    const metricsPort = freePort();
    const before = Date.now() / 1000;
    const server = await spawnServer(dir, {
      args: ["--port", "0", "--metrics-port", `${metricsPort}`, "--file-name", `${dir}/m.log`],
      env: { MS_HOME: "" },
      maxOpenFiles: 700,
    });
    const clients: MsgClient[] = [];
    try {
      const scrape = async () =>
        await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      const first = await scrape();
      equal(sample(first, "process_max_fds"), 700);
      const start = sample(first, "process_start_time_seconds");
      ok(start >= before - 1 && start <= Date.now() / 1000, `start ${start}, spawned at ${before}`);
      const idle = sample(first, "process_open_fds");
      ok(idle > 3 && idle < 100, `${idle} descriptors open at rest`);
      for (let i = 0; i < 40; i++) {
        clients.push(await MsgClient.connect({ port: server.port, clientId: i }));
      }
      const busy = sample(await scrape(), "process_open_fds");
      ok(busy >= idle + 40, `${busy} descriptors with 40 more connections, ${idle} before`);
    } finally {
      await Promise.all(clients.map((c) => c.close()));
      equal(await server.stop(), 0, server.stderr());
    }
  });
});

Deno.test("with deno task server's permissions, /metrics leaves out the descriptor metrics and the server says why", async () => {
  // The task's own flags, read from deno.json, so that this follows them.
  const config = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  const permissions = (config.tasks.server as string).split(" ").filter((w) => w.startsWith("--"));
  ok(!permissions.includes("--allow-all") && !permissions.includes("-A"), permissions.join(" "));
  await withTempDir("msgserver_metrics_perm_", async (dir) => {
    const metricsPort = freePort();
    const server = await spawnServer(dir, {
      permissions,
      args: ["--port", "0", "--metrics-port", String(metricsPort), "--file-name", `${dir}/m.log`],
      env: { MS_HOME: "" },
    });
    try {
      const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      match(text, /^process_start_time_seconds /m);
      ok(!/^process_open_fds /m.test(text), "process_open_fds without --allow-all");
      match(
        server.stderr(),
        /WARN \/metrics leaves out process_open_fds and process_max_fds why="Deno reads \/proc\/self only with --allow-all/,
      );
    } finally {
      equal(await server.stop(), 0);
    }
  });
});
