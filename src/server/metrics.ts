/**
 * Metrics: fixed-bucket histograms the writer fills, and the Prometheus text rendering served on
 * METRICS_PORT at `/metrics` (with `/healthz` for liveness probes).
 *
 * @module
 */

/**
 * A cumulative histogram with fixed upper bounds, in the Prometheus sense.
 *
 * @example
 * ```ts
 * const h = new BucketHistogram([0.001, 0.01, 0.1]);
 * h.observe(0.004);
 * h.count; // 1
 * ```
 */
export class BucketHistogram {
  /** Upper bounds of the buckets, rising. */
  readonly bounds: readonly number[];
  /** Observations at or below each bound (not cumulative); the last slot is +Inf. */
  readonly counts: number[];
  /** Sum of the observed values. */
  sum = 0;
  /** Observations. */
  count = 0;

  /** `bounds` must rise; a last bucket above them (+Inf) is added. */
  constructor(bounds: readonly number[]) {
    this.bounds = bounds;
    this.counts = new Array(bounds.length + 1).fill(0);
  }

  /** Records one value. */
  observe(value: number): void {
    let i = 0;
    while (i < this.bounds.length && value > this.bounds[i]!) i++;
    this.counts[i]!++;
    this.sum += value;
    this.count++;
  }
}

/** Batch sizes in records. */
export const BATCH_SIZE_BOUNDS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536] as const;
/** Write and sync durations in seconds. */
export const LATENCY_BOUNDS = [
  0.00005,
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  1,
] as const;

/**
 * One metric for {@linkcode renderPrometheus}. Samples of one family (one name, told apart by
 * their `labels`) follow each other, and the first one's `help` is the family's.
 */
export type Metric =
  | {
    name: string;
    help: string;
    type: "counter" | "gauge";
    value: number;
    labels?: Readonly<Record<string, string>>;
  }
  | { name: string; help: string; type: "histogram"; histogram: BucketHistogram };

/**
 * The name of a counter's or gauge's sample as the text format writes it: `name`, or
 * `name{code="1"}` with labels.
 *
 * @example
 * ```ts
 * sampleName({ name: "x_total", help: "X.", type: "counter", value: 1, labels: { code: "4" } });
 * // 'x_total{code="4"}'
 * ```
 */
export function sampleName(m: Metric & { type: "counter" | "gauge" }): string {
  if (m.labels === undefined) return m.name;
  const pairs = Object.entries(m.labels).map(([k, v]) =>
    `${k}="${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`
  );
  return `${m.name}{${pairs.join(",")}}`;
}

/**
 * Renders metrics in the Prometheus text exposition format (version 0.0.4).
 *
 * @example
 * ```ts
 * renderPrometheus([{ name: "x_total", help: "X.", type: "counter", value: 3 }]);
 * // "# HELP x_total X.\n# TYPE x_total counter\nx_total 3\n"
 * ```
 */
export function renderPrometheus(metrics: Metric[]): string {
  let out = "";
  let family = "";
  for (const m of metrics) {
    if (m.name !== family) out += `# HELP ${m.name} ${m.help}\n# TYPE ${m.name} ${m.type}\n`;
    family = m.name;
    if (m.type !== "histogram") {
      out += `${sampleName(m)} ${m.value}\n`;
      continue;
    }
    const h = m.histogram;
    let cumulative = 0;
    for (let i = 0; i < h.bounds.length; i++) {
      cumulative += h.counts[i]!;
      out += `${m.name}_bucket{le="${h.bounds[i]}"} ${cumulative}\n`;
    }
    out += `${m.name}_bucket{le="+Inf"} ${h.count}\n`;
    out += `${m.name}_sum ${h.sum}\n${m.name}_count ${h.count}\n`;
  }
  return out;
}
