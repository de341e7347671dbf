/**
 * What the status page shows at one tick: every counter and gauge of `/metrics` under its sample
 * name (so that the page and a scrape can be compared figure by figure), rates and histogram
 * quantiles over the last tick, and one point of the charts. Built from the same
 * {@linkcode Metric} list as `/metrics` (`metricsOf`), so the page never shows a figure that a
 * scrape would not.
 *
 * @module
 */

import { type BucketHistogram, type Metric, samplesOf } from "../server/metrics.ts";

/**
 * One point of the page's charts: `[time (s since the epoch), received/s, written/s, acked/s,
 * connections open, write p50, write p99, sync p50, sync p99 (seconds)]`; null where there is no
 * figure (the first tick after nobody watched, or no batch written during the tick).
 */
export type ChartPoint = [
  time: number,
  received: number | null,
  written: number | null,
  acked: number | null,
  connections: number | null,
  writeP50: number | null,
  writeP99: number | null,
  syncP50: number | null,
  syncP99: number | null,
];

/** Quantiles of a histogram's observations during one tick. */
export interface Quantiles {
  p50: number;
  p99: number;
  /** Observations during the tick. */
  count: number;
}

/** The figures of one tick, as the page receives them. */
export interface Snapshot {
  /** Counts the snapshots since the server started, from 1. */
  seq: number;
  /** When it was taken (ms since the epoch). */
  time: number;
  /** Seconds since the server started. */
  uptimeS: number;
  /** True once shutdown has begun (`/healthz` says `stopping`). */
  stopping: boolean;
  /** Every counter and gauge of `/metrics`, by sample name (`msgserver_nacks_total{code="2"}`). */
  values: Record<string, number>;
  /** Messages per second since the last tick; null on the first tick after nobody watched. */
  rates: { received: number; written: number; acked: number } | null;
  /** p50 and p99 of each histogram's observations since the last tick; null when none. */
  quantiles: Record<string, Quantiles | null>;
  /** Records per batch written since the last tick; null when none. */
  batchMean: number | null;
  /** This tick's point of the charts. */
  point: ChartPoint;
}

/** What `/metrics` would show at one moment. */
export interface Reading {
  /** When it was read (ms since the epoch). */
  time: number;
  stopping: boolean;
  metrics: Metric[];
}

/**
 * The `q` quantile of a histogram's observations, given its buckets' counts (not cumulative,
 * the last one above every bound), interpolated within the bucket as Prometheus'
 * `histogram_quantile` does; the first bucket's bound when it falls in the first bucket (which has
 * no lower edge), the highest bound when it falls above them; null with no observation.
 *
 * @example
 * ```ts
 * import { bucketQuantile } from "./snapshot.ts";
 * bucketQuantile(0.5, [1, 2, 4], [0, 10, 0, 0]); // 1.5: half-way through the bucket (1, 2]
 * ```
 */
export function bucketQuantile(
  q: number,
  bounds: readonly number[],
  counts: readonly number[],
): number | null {
  let total = 0;
  for (const n of counts) total += n;
  if (total === 0) return null;
  const rank = q * total;
  let below = 0;
  for (let i = 0; i < bounds.length; i++) {
    const n = counts[i]!;
    if (n > 0 && below + n >= rank) {
      // The first bucket has no lower edge to go from (interpolating from 0 would put a tick of
      // one-record batches at "0.5"): its upper bound is the honest answer, "at most".
      if (i === 0) return bounds[0]!;
      const lower = bounds[i - 1]!;
      return lower + (bounds[i]! - lower) * (rank - below) / n;
    }
    below += n;
  }
  return bounds[bounds.length - 1] ?? null;
}

const RECEIVED = "msgserver_messages_received_total";
const WRITTEN = "msgserver_messages_written_total";
const ACKED = "msgserver_messages_acked_total";
const BATCHES = "msgserver_batches_total";
const CONNECTIONS = "msgserver_connections_open";
const WRITE = "msgserver_write_seconds";
const SYNC = "msgserver_sync_seconds";

/** What a snapshot keeps of its reading for the next one's differences. */
interface Previous {
  time: number;
  values: Record<string, number>;
  /** Each histogram's bucket counts, copied: the live histogram moves on. */
  counts: Map<string, number[]>;
}

/**
 * Turns readings into snapshots, one per tick, keeping what the next one's rates and quantiles
 * are taken against.
 *
 * @example
 * ```ts
 * import { Sampler } from "./snapshot.ts";
 * const sampler = new Sampler(Date.now());
 * const first = sampler.take({ time: Date.now(), stopping: false, metrics: [] }, true);
 * first.rates; // null: nothing to compare with yet
 * ```
 */
export class Sampler {
  readonly #startedAt: number;
  #seq = 0;
  #previous: Previous | null = null;

  /** `startedAt`: when the server started (ms since the epoch), for the uptime. */
  constructor(startedAt: number) {
    this.#startedAt = startedAt;
  }

  /**
   * The snapshot of `reading`. Rates and quantiles cover the time since the reading before,
   * unless `fresh` (the first tick after nobody watched, when the one before is stale): then
   * they are null.
   */
  take(reading: Reading, fresh: boolean): Snapshot {
    const values: Record<string, number> = {};
    const counts = new Map<string, number[]>();
    const histograms = new Map<string, BucketHistogram>();
    for (const m of reading.metrics) {
      if (m.type === "histogram") {
        counts.set(m.name, [...m.histogram.counts]);
        histograms.set(m.name, m.histogram);
      } else {
        for (const [sample, value] of samplesOf(m)) values[sample] = value;
      }
    }
    const previous = fresh ? null : this.#previous;
    this.#previous = { time: reading.time, values, counts };

    const quantiles: Record<string, Quantiles | null> = {};
    for (const [name, h] of histograms) {
      const before = previous?.counts.get(name);
      if (before === undefined) {
        quantiles[name] = null;
        continue;
      }
      const during = counts.get(name)!.map((n, i) => n - (before[i] ?? 0));
      const count = during.reduce((a, b) => a + b, 0);
      quantiles[name] = count === 0 ? null : {
        p50: bucketQuantile(0.5, h.bounds, during)!,
        p99: bucketQuantile(0.99, h.bounds, during)!,
        count,
      };
    }

    let rates: Snapshot["rates"] = null;
    let batchMean: number | null = null;
    if (previous !== null && reading.time > previous.time) {
      const seconds = (reading.time - previous.time) / 1000;
      const delta = (name: string) => (values[name] ?? 0) - (previous.values[name] ?? 0);
      rates = {
        received: delta(RECEIVED) / seconds,
        written: delta(WRITTEN) / seconds,
        acked: delta(ACKED) / seconds,
      };
      const batches = delta(BATCHES);
      batchMean = batches > 0 ? delta(WRITTEN) / batches : null;
    }

    const write = quantiles[WRITE] ?? null;
    const sync = quantiles[SYNC] ?? null;
    return {
      seq: ++this.#seq,
      time: reading.time,
      uptimeS: Math.max(0, Math.floor((reading.time - this.#startedAt) / 1000)),
      stopping: reading.stopping,
      values,
      rates,
      quantiles,
      batchMean,
      point: [
        reading.time / 1000,
        rates?.received ?? null,
        rates?.written ?? null,
        rates?.acked ?? null,
        values[CONNECTIONS] ?? null,
        write?.p50 ?? null,
        write?.p99 ?? null,
        sync?.p50 ?? null,
        sync?.p99 ?? null,
      ],
    };
  }
}
