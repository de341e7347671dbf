import { deepEqual, equal, ok } from "node:assert/strict";
import { Scrape } from "../src/status/prometheus_text.ts";
import {
  formatSeconds,
  formatSummary,
  formatUptime,
  histogramQuantile,
  summarize,
} from "../src/status/summary.ts";

function near(actual: number, expected: number): void {
  ok(Math.abs(actual - expected) < 1e-12, `${actual} is not ${expected}`);
}

const h = (...counts: [number, number][]) => ({
  buckets: counts.map(([le, count]) => ({ le, count })),
  sum: NaN,
  count: counts.at(-1)?.[1] ?? 0,
});

Deno.test("histogramQuantile interpolates within a bucket as PromQL's histogram_quantile does", () => {
  const x = h([0.001, 1], [0.01, 3], [0.1, 4], [Infinity, 5]);
  // rank 2.5 of 5 falls in (0.001, 0.01], 1.5 of its 2 observations in: three quarters of the way.
  near(histogramQuantile(0.5, x), 0.001 + 0.009 * 0.75);
  // The first bucket starts at 0.
  near(histogramQuantile(0.1, x), 0.0005);
  // A rank in +Inf is given the highest finite bound.
  equal(histogramQuantile(0.99, x), 0.1);
  ok(Number.isNaN(histogramQuantile(0.5, h([1, 0], [Infinity, 0]))), "no observations");
  ok(Number.isNaN(histogramQuantile(0.5, h([1, 2], [10, 3]))), "no +Inf bucket");
  ok(Number.isNaN(histogramQuantile(0.5, h([Infinity, 3]))), "only +Inf");
});

const BEFORE = `
process_start_time_seconds 1000
msgserver_connections_open 2
msgserver_messages_received_total 100
msgserver_messages_written_total 100
msgserver_messages_acked_total 90
msgserver_nacks_total{code="1"} 0
msgserver_nacks_total{code="2"} 4
msgserver_nacks_total{code="3"} 0
msgserver_nacks_total{code="4"} 0
msgserver_write_seconds_bucket{le="0.001"} 10
msgserver_write_seconds_bucket{le="0.01"} 10
msgserver_write_seconds_bucket{le="+Inf"} 10
msgserver_write_seconds_sum 0.005
msgserver_write_seconds_count 10
msgserver_sync_seconds_bucket{le="0.001"} 0
msgserver_sync_seconds_bucket{le="+Inf"} 0
msgserver_sync_seconds_count 0
`;

const NOW = `
process_start_time_seconds 1000
msgserver_connections_open 3
msgserver_connections_total 40
msgserver_connections_refused_total 1
msgserver_messages_received_total 2100
msgserver_messages_written_total 2100
msgserver_messages_acked_total 50
msgserver_nacks_total{code="1"} 0
msgserver_nacks_total{code="2"} 4
msgserver_nacks_total{code="3"} 1
msgserver_nacks_total{code="4"} 10
msgserver_protocol_errors_total 0
msgserver_queue_records 16384
msgserver_queue_capacity_records 65536
msgserver_queue_bytes 1048576
msgserver_queue_capacity_bytes 67108864
msgserver_write_seconds_bucket{le="0.001"} 10
msgserver_write_seconds_bucket{le="0.01"} 14
msgserver_write_seconds_bucket{le="+Inf"} 14
msgserver_write_seconds_sum 0.025
msgserver_write_seconds_count 14
msgserver_sync_seconds_bucket{le="0.001"} 0
msgserver_sync_seconds_bucket{le="+Inf"} 0
msgserver_sync_seconds_count 0
process_open_fds 50
process_max_fds 1000
msgserver_resident_memory_bytes 73400320
`;

Deno.test("summarize takes totals from the last scrape and rates between the two", () => {
  const s = summarize(Scrape.parse(NOW), {
    before: Scrape.parse(BEFORE),
    seconds: 2,
    nowSeconds: 1000 + 3 * 3600 + 4 * 60,
  });
  equal(s.seconds, 2);
  equal(s.uptimeSeconds, 3 * 3600 + 4 * 60);
  deepEqual(s.connections, { open: 3, accepted: 40, refused: 1 });
  deepEqual(s.messages.received, { total: 2100, perSecond: 1000 });
  // A counter that went back (the server restarted between the scrapes) has no rate.
  deepEqual(s.messages.acked, { total: 50, perSecond: null });
  deepEqual(s.nacks.map((n) => [n.code, n.count.total, n.count.perSecond]), [
    ["1", 0, 0],
    ["2", 4, 0],
    ["3", 1, 0.5],
    ["4", 10, 5],
  ]);
  // Absent from /metrics: left out, not 0.
  equal(s.errors.acceptErrors, undefined);
  deepEqual(s.errors.protocol, { total: 0, perSecond: null });
  deepEqual(s.queue, {
    records: 16384,
    recordsCapacity: 65536,
    bytes: 1048576,
    bytesCapacity: 67108864,
  });
  // The 4 writes between the scrapes all took 1 to 10 ms: the percentiles cover only them.
  equal(s.write?.window, "interval");
  equal(s.write?.count, 4);
  near(s.write!.p50, 0.001 + 0.009 * 0.5);
  equal(s.sync?.count, 0);
  deepEqual(s.store, { kind: "file" });
  deepEqual(s.fds, { open: 50, max: 1000 });
  equal(s.residentBytes, 73400320);
});

Deno.test("summarize without a second scrape: no rates, percentiles since start", () => {
  const s = summarize(Scrape.parse(NOW));
  equal(s.seconds, 0);
  deepEqual(s.messages.written, { total: 2100, perSecond: null });
  equal(s.write?.window, "since start");
  equal(s.write?.count, 14);
  // Nothing written between two scrapes: since start too, rather than nothing.
  const idle = summarize(Scrape.parse(NOW), { before: Scrape.parse(NOW), seconds: 1 });
  equal(idle.write?.window, "since start");
  equal(idle.write?.count, 14);
});

Deno.test("summarize shows the JetStream store when the NATS metrics are there", () => {
  const nats = `
msgserver_nats_connected 0
msgserver_nats_publishes_in_flight 7
msgserver_nats_publish_seconds_bucket{le="0.01"} 3
msgserver_nats_publish_seconds_bucket{le="+Inf"} 4
msgserver_nats_publish_seconds_count 4
`;
  const s = summarize(Scrape.parse(nats));
  deepEqual(s.store, {
    kind: "jetstream",
    connected: false,
    publishesInFlight: 7,
    publish: { p50: 0.01 * (2 / 3), p99: 0.01, count: 4, window: "since start" },
  });
  const text = formatSummary(s, { url: "http://h:1/metrics", health: "ok" });
  ok(text.includes("\nstore        jetstream, NATS DISCONNECTED, 7 publishes in flight\n"), text);
  ok(text.includes("\npublish time p50 6.7 ms, p99 10 ms (4 publishes since start)"), text);
});

Deno.test("formatSummary: one figure a line, totals as /metrics has them, rates beside", () => {
  const s = summarize(Scrape.parse(NOW), {
    before: Scrape.parse(BEFORE),
    seconds: 2,
    nowSeconds: 1000 + 3 * 3600 + 4 * 60,
  });
  equal(
    formatSummary(s, { url: "http://127.0.0.1:9100/metrics", health: "ok" }),
    [
      "msgserver    http://127.0.0.1:9100/metrics",
      "health       ok, up 3h 04m",
      "connections  3 open, 40 accepted, 1 refused",
      "messages            total  per second (over 2.0 s)",
      "  received           2100  1000",
      "  written            2100  1000",
      "  acked                50",
      "  NACK 1 too large      0  0.0",
      "  NACK 2 bad name       4  0.0",
      "  NACK 3 duplicate      1  0.5",
      "  NACK 4 storage       10  5.0",
      "  protocol errors       0",
      "queue        16384 of 65536 records (25.0%), 1.0 MiB of 64.0 MiB (1.6%)",
      "write time   p50 5.5 ms, p99 9.9 ms (4 batches in the last interval)",
      "sync time    none yet",
      "store        file",
      "descriptors  50 of 1000 open (5.0%)",
      "memory       70.0 MiB resident",
    ].join("\n"),
  );
});

Deno.test("formatSeconds and formatUptime pick the unit that suits", () => {
  deepEqual(
    [0.000052, 0.0012, 0.0098, 0.25, 3.4, NaN].map(formatSeconds),
    ["52 us", "1.2 ms", "9.8 ms", "250 ms", "3.40 s", "n/a"],
  );
  deepEqual(
    [42, 307, 3 * 3600 + 4 * 60 + 5, 2 * 86400 + 3 * 3600, -1].map(formatUptime),
    ["42s", "5m 07s", "3h 04m", "2d 03h", "0s"],
  );
});
