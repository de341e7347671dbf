import { equal, match, ok } from "node:assert/strict";
import { MsgClient } from "../src/client/client.ts";
import { BucketHistogram, renderPrometheus } from "../src/server/metrics.ts";
import { delay } from "../src/io/within.ts";
import { freePort } from "./support/net.ts";
import { withServer } from "./support/server.ts";

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
