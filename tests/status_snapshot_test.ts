import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { BucketHistogram, type Metric } from "../src/server/metrics.ts";
import { bucketQuantile, Sampler } from "../src/status/snapshot.ts";

Deno.test("bucketQuantile interpolates within the bucket as Prometheus' histogram_quantile does", () => {
  // 10 observations in (1, 2], 30 in (2, 4]: the median (rank 20) is 5/15 of the way into (2, 4].
  equal(bucketQuantile(0.5, [1, 2, 4], [0, 10, 30, 0]), 2 + 2 * (10 / 30));
  equal(bucketQuantile(0.25, [1, 2, 4], [0, 10, 30, 0]), 2);
  // Four one-record batches: "at most 1", not "0.5".
  equal(bucketQuantile(0.5, [1, 2, 4], [4, 0, 0, 0]), 1, "the first bucket: its upper bound");
  equal(bucketQuantile(0.99, [1, 2, 4], [1, 0, 0, 99]), 4, "above every bound: the highest");
  equal(bucketQuantile(0.5, [1, 2, 4], [0, 0, 0, 0]), null);
});

function reading(time: number, counts: { received: number; written: number; batches: number }, h: {
  write: BucketHistogram;
}): { time: number; stopping: boolean; metrics: Metric[] } {
  return {
    time,
    stopping: false,
    metrics: [
      {
        name: "msgserver_messages_received_total",
        help: "",
        type: "counter",
        value: counts.received,
      },
      {
        name: "msgserver_messages_written_total",
        help: "",
        type: "counter",
        value: counts.written,
      },
      { name: "msgserver_messages_acked_total", help: "", type: "counter", value: counts.written },
      { name: "msgserver_batches_total", help: "", type: "counter", value: counts.batches },
      { name: "msgserver_connections_open", help: "", type: "gauge", value: 3 },
      {
        name: "msgserver_nacks_total",
        help: "",
        type: "counter",
        values: [{ labels: { code: "2" }, value: 7 }],
      },
      { name: "msgserver_write_seconds", help: "", type: "histogram", histogram: h.write },
    ],
  };
}

Deno.test("Sampler: rates and quantiles cover the last tick only, and start over when fresh", () => {
  const write = new BucketHistogram([0.001, 0.01, 0.1]);
  for (let i = 0; i < 100; i++) write.observe(0.05); // before the first snapshot: never counted
  const sampler = new Sampler(1_000_000);

  const first = sampler.take(
    reading(1_005_000, { received: 100, written: 90, batches: 3 }, { write }),
    true,
  );
  equal(first.seq, 1);
  equal(first.uptimeS, 5);
  equal(first.rates, null);
  equal(first.batchMean, null);
  equal(first.quantiles["msgserver_write_seconds"], null);
  equal(first.values['msgserver_nacks_total{code="2"}'], 7);
  equal(first.values["msgserver_connections_open"], 3);
  deepStrictEqual(first.point, [1005, null, null, null, 3, null, null, null, null]);

  for (let i = 0; i < 10; i++) write.observe(0.0005);
  const second = sampler.take(
    reading(1_007_000, { received: 2100, written: 1090, batches: 5 }, { write }),
    false,
  );
  equal(second.seq, 2);
  deepStrictEqual(second.rates, { received: 1000, written: 500, acked: 500 });
  equal(second.batchMean, 500);
  const q = second.quantiles["msgserver_write_seconds"]!;
  equal(q.count, 10);
  ok(q.p50 <= 0.001 && q.p99 <= 0.001, `only the tick's observations: ${JSON.stringify(q)}`);
  deepStrictEqual(second.point.slice(1, 6), [1000, 500, 500, 3, q.p50]);

  // The first tick after nobody watched: the reading before is stale, so no rates.
  const third = sampler.take(
    reading(1_600_000, { received: 9000, written: 9000, batches: 9 }, { write }),
    true,
  );
  equal(third.seq, 3);
  equal(third.rates, null);
  equal(third.quantiles["msgserver_write_seconds"], null);
});
