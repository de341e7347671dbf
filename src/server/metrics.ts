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
 * One value of a metric that has labels, e.g. `{ labels: { code: "4" }, value: 2 }`.
 *
 * @example
 * ```ts
 * const sample: LabelledValue = { labels: { code: "4" }, value: 2 };
 * ```
 */
export interface LabelledValue {
  /** Label names to values, e.g. `{ code: "4" }`. */
  labels: Readonly<Record<string, string>>;
  /** The sample's value. */
  value: number;
}

/** One metric for {@linkcode renderPrometheus}: one value, one value per label set, or a histogram. */
export type Metric =
  | { name: string; help: string; type: "counter" | "gauge"; value: number }
  | { name: string; help: string; type: "counter" | "gauge"; values: readonly LabelledValue[] }
  | { name: string; help: string; type: "histogram"; histogram: BucketHistogram };

/** A label value as the text format wants it: backslash, double quote and line feed escaped. */
function labelValue(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

/**
 * The samples of a counter or gauge as the text format names them: `[name, value]`, or one
 * `[name{code="1"}, value]` per label set.
 *
 * @example
 * ```ts
 * samplesOf({ name: "x_total", help: "X.", type: "counter", values: [
 *   { labels: { code: "4" }, value: 2 },
 * ] });
 * // [['x_total{code="4"}', 2]]
 * ```
 */
export function samplesOf(m: Metric & { type: "counter" | "gauge" }): [string, number][] {
  if ("value" in m) return [[m.name, m.value]];
  return m.values.map(({ labels, value }) => {
    const pairs = Object.entries(labels).map(([k, v]) => `${k}="${labelValue(v)}"`);
    return [`${m.name}{${pairs.join(",")}}`, value];
  });
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
  for (const m of metrics) {
    out += `# HELP ${m.name} ${m.help}\n# TYPE ${m.name} ${m.type}\n`;
    if (m.type !== "histogram") {
      for (const [sample, value] of samplesOf(m)) out += `${sample} ${value}\n`;
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
