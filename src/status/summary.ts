/**
 * What `msgserver status` shows: the figures an operator looks at first, taken from one or two
 * scrapes of `/metrics` ({@linkcode summarize}), and their text ({@linkcode formatSummary}).
 * Rates are the difference between two scrapes over the time between them; latency percentiles
 * come from the histograms' buckets the way Prometheus's `histogram_quantile` computes them, over
 * the time between the scrapes when something was observed in it, else since start. Metrics a
 * server does not export (an older version, a store without NATS) are left out, not shown as 0.
 *
 * @module
 */

import type { Histogram, Scrape } from "./prometheus_text.ts";

/** A counter's total now and its rate between the two scrapes. */
export interface Count {
  total: number;
  /** Per second between the scrapes; null with one scrape, or when the counter went back. */
  perSecond: number | null;
}

/** Percentiles of one histogram. */
export interface Latency {
  /** Seconds; NaN when nothing was observed. */
  p50: number;
  p99: number;
  /** Observations the percentiles come from. */
  count: number;
  /** Whether they cover only the time between the scrapes, or everything since start. */
  window: "interval" | "since start";
}

/**
 * The figures of {@linkcode summarize}; any of them is undefined when the server does not export
 * it.
 *
 * @example
 * ```ts
 * import { Scrape } from "./prometheus_text.ts";
 * import { summarize } from "./summary.ts";
 * const s = summarize(Scrape.parse("msgserver_connections_open 3\n"));
 * s.connections.open; // 3
 * ```
 */
export interface StatusSummary {
  /** Seconds between the two scrapes (0 with one). */
  seconds: number;
  uptimeSeconds: number | undefined;
  connections: {
    open: number | undefined;
    accepted: number | undefined;
    refused: number | undefined;
  };
  messages: {
    received: Count | undefined;
    written: Count | undefined;
    acked: Count | undefined;
  };
  /** Refusals by NACK code ("1" to "4"). */
  nacks: { code: string; count: Count }[];
  errors: { protocol: Count | undefined; acceptErrors: Count | undefined };
  queue: {
    records: number | undefined;
    recordsCapacity: number | undefined;
    bytes: number | undefined;
    bytesCapacity: number | undefined;
  };
  write: Latency | undefined;
  sync: Latency | undefined;
  store:
    | { kind: "file" }
    | {
      kind: "jetstream";
      connected: boolean;
      publishesInFlight: number | undefined;
      publish: Latency | undefined;
    };
  fds: { open: number | undefined; max: number | undefined };
  residentBytes: number | undefined;
}

/**
 * Options of {@linkcode summarize}.
 *
 * @example
 * ```ts
 * import { Scrape } from "./prometheus_text.ts";
 * const options: SummarizeOptions = { before: Scrape.parse("up 1\n"), seconds: 1 };
 * ```
 */
export interface SummarizeOptions {
  /** An earlier scrape, for rates and the latency between the two; none by default. */
  before?: Scrape | null;
  /** Seconds from `before` to the scrape summed up. */
  seconds?: number;
  /** When the scrape was taken, in seconds since the epoch (for the uptime); now by default. */
  nowSeconds?: number;
}

/**
 * The value of quantile `q` (0 to 1) of a histogram, as PromQL's `histogram_quantile` computes it:
 * linear interpolation within the bucket the rank falls in; the highest finite bound when it falls
 * in `+Inf`; NaN with no observations.
 *
 * @example
 * ```ts
 * import { histogramQuantile } from "./summary.ts";
 * const h = { buckets: [{ le: 1, count: 2 }, { le: 10, count: 4 }, { le: Infinity, count: 4 }], sum: 9, count: 4 };
 * histogramQuantile(0.75, h); // 5.5: halfway into the bucket from 1 to 10
 * ```
 */
export function histogramQuantile(q: number, h: Histogram): number {
  const buckets = h.buckets;
  const last = buckets.at(-1);
  if (last === undefined || last.le !== Infinity || last.count <= 0) return NaN;
  const rank = q * last.count;
  const b = buckets.findIndex((bucket) => bucket.count >= rank);
  if (b === buckets.length - 1) return buckets.length > 1 ? buckets[b - 1]!.le : NaN;
  const end = buckets[b]!.le;
  if (b === 0) return end <= 0 ? end : end * (rank / buckets[0]!.count);
  const below = buckets[b - 1]!;
  return below.le + (end - below.le) * ((rank - below.count) / (buckets[b]!.count - below.count));
}

/** `now` less `before`, bucket by bucket: what was observed between the scrapes. */
function difference(now: Histogram, before: Histogram): Histogram {
  const earlier = new Map(before.buckets.map((b) => [b.le, b.count]));
  return {
    buckets: now.buckets.map((b) => ({ le: b.le, count: b.count - (earlier.get(b.le) ?? 0) })),
    sum: now.sum - before.sum,
    count: now.count - before.count,
  };
}

function latency(family: string, now: Scrape, before: Scrape | null): Latency | undefined {
  const h = now.histogram(family);
  if (h === undefined) return undefined;
  const earlier = before?.histogram(family);
  const recent = earlier === undefined ? undefined : difference(h, earlier);
  const [used, window] = recent !== undefined && recent.count > 0
    ? [recent, "interval" as const]
    : [h, "since start" as const];
  return {
    p50: histogramQuantile(0.5, used),
    p99: histogramQuantile(0.99, used),
    count: used.count,
    window,
  };
}

/**
 * The summary of scrape `now`, with rates against `options.before` taken `options.seconds`
 * earlier.
 *
 * @example
 * ```ts
 * import { Scrape } from "./prometheus_text.ts";
 * import { summarize } from "./summary.ts";
 * const before = Scrape.parse("msgserver_messages_written_total 100\n");
 * const now = Scrape.parse("msgserver_messages_written_total 300\n");
 * summarize(now, { before, seconds: 2 }).messages.written; // { total: 300, perSecond: 100 }
 * ```
 */
export function summarize(now: Scrape, options: SummarizeOptions = {}): StatusSummary {
  const before = options.before ?? null;
  const seconds = before === null ? 0 : options.seconds ?? 0;
  const count = (name: string, labels: Record<string, string> = {}): Count | undefined => {
    const total = now.value(name, labels);
    if (total === undefined) return undefined;
    const earlier = before?.value(name, labels);
    const perSecond = earlier === undefined || seconds <= 0 || total < earlier
      ? null
      : (total - earlier) / seconds;
    return { total, perSecond };
  };
  const nacks: StatusSummary["nacks"] = [];
  for (const code of ["1", "2", "3", "4"]) {
    const c = count("msgserver_nacks_total", { code });
    if (c !== undefined) nacks.push({ code, count: c });
  }
  const started = now.value("process_start_time_seconds");
  const connected = now.value("msgserver_nats_connected");
  return {
    seconds,
    uptimeSeconds: started === undefined
      ? undefined
      : (options.nowSeconds ?? Date.now() / 1000) - started,
    connections: {
      open: now.value("msgserver_connections_open"),
      accepted: now.value("msgserver_connections_total"),
      refused: now.value("msgserver_connections_refused_total"),
    },
    messages: {
      received: count("msgserver_messages_received_total"),
      written: count("msgserver_messages_written_total"),
      acked: count("msgserver_messages_acked_total"),
    },
    nacks,
    errors: {
      protocol: count("msgserver_protocol_errors_total"),
      acceptErrors: count("msgserver_accept_errors_total"),
    },
    queue: {
      records: now.value("msgserver_queue_records"),
      recordsCapacity: now.value("msgserver_queue_capacity_records"),
      bytes: now.value("msgserver_queue_bytes"),
      bytesCapacity: now.value("msgserver_queue_capacity_bytes"),
    },
    write: latency("msgserver_write_seconds", now, before),
    sync: latency("msgserver_sync_seconds", now, before),
    store: connected === undefined ? { kind: "file" } : {
      kind: "jetstream",
      connected: connected === 1,
      publishesInFlight: now.value("msgserver_nats_publishes_in_flight"),
      publish: latency("msgserver_nats_publish_seconds", now, before),
    },
    fds: { open: now.value("process_open_fds"), max: now.value("process_max_fds") },
    residentBytes: now.value("msgserver_resident_memory_bytes"),
  };
}

/** Seconds as the unit that suits them: `52 us`, `1.2 ms`, `3.40 s`. */
export function formatSeconds(s: number): string {
  if (Number.isNaN(s)) return "n/a";
  if (s < 1e-3) return `${Math.round(s * 1e6)} us`;
  if (s < 0.01) return `${(s * 1e3).toFixed(1)} ms`;
  if (s < 1) return `${Math.round(s * 1e3)} ms`;
  return `${s.toFixed(2)} s`;
}

/** A duration in whole units: `42s`, `5m 07s`, `3h 04m`, `2d 03h`. */
export function formatUptime(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const pad = (n: number) => String(n).padStart(2, "0");
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${pad(Math.floor(s / 60) % 60)}m`;
  return `${Math.floor(s / 86400)}d ${pad(Math.floor(s / 3600) % 24)}h`;
}

function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

const NACK_MEANINGS: Readonly<Record<string, string>> = {
  "1": "too large",
  "2": "bad name",
  "3": "duplicate",
  "4": "storage",
};

function rate(c: Count): string {
  if (c.perSecond === null) return "";
  return c.perSecond >= 10 ? `${Math.round(c.perSecond)}` : `${c.perSecond.toFixed(1)}`;
}

function share(part: number, whole: number | undefined): string {
  return whole === undefined || whole <= 0 ? "" : ` (${(100 * part / whole).toFixed(1)}%)`;
}

function formatLatency(l: Latency, what: string): string {
  if (l.count === 0) return `none yet`;
  const over = l.window === "interval" ? "in the last interval" : "since start";
  return `p50 ${formatSeconds(l.p50)}, p99 ${formatSeconds(l.p99)} (${l.count} ${what} ${over})`;
}

/**
 * The summary as text for a terminal: one figure per line, rates in a column when there were two
 * scrapes. Figures are plain integers, as `/metrics` has them.
 *
 * @example
 * ```ts
 * import { Scrape } from "./prometheus_text.ts";
 * import { formatSummary, summarize } from "./summary.ts";
 * const s = summarize(Scrape.parse("msgserver_connections_open 3\n"));
 * console.log(formatSummary(s, { url: "http://127.0.0.1:9100/metrics", health: "ok" }));
 * ```
 */
export function formatSummary(s: StatusSummary, head: { url: string; health: string }): string {
  const lines: string[] = [];
  const row = (label: string, text: string) => lines.push(`${label.padEnd(13)}${text}`);
  row("msgserver", head.url);
  row(
    "health",
    head.health + (s.uptimeSeconds === undefined ? "" : `, up ${formatUptime(s.uptimeSeconds)}`),
  );
  const c = s.connections;
  const conn = [
    c.open === undefined ? "" : `${c.open} open`,
    c.accepted === undefined ? "" : `${c.accepted} accepted`,
    c.refused === undefined ? "" : `${c.refused} refused`,
  ].filter((t) => t !== "");
  if (conn.length > 0) row("connections", conn.join(", "));
  const counted: [string, Count | undefined][] = [
    ["received", s.messages.received],
    ["written", s.messages.written],
    ["acked", s.messages.acked],
    ...s.nacks.map(({ code, count }): [string, Count] => [
      `NACK ${code} ${NACK_MEANINGS[code] ?? ""}`.trimEnd(),
      count,
    ]),
    ["protocol errors", s.errors.protocol],
    ["accept errors", s.errors.acceptErrors],
  ];
  const present = counted.filter((e): e is [string, Count] => e[1] !== undefined);
  if (present.length > 0) {
    const labels = Math.max(...present.map(([label]) => label.length)) + 4;
    const width = Math.max(5, ...present.map(([, n]) => String(n.total).length));
    const rates = s.seconds > 0 ? `  per second (over ${s.seconds.toFixed(1)} s)` : "";
    lines.push(`${"messages".padEnd(labels)}${"total".padStart(width)}${rates}`);
    for (const [label, n] of present) {
      const total = String(n.total).padStart(width);
      lines.push(`  ${label.padEnd(labels - 2)}${total}  ${rate(n)}`.trimEnd());
    }
  }
  const q = s.queue;
  if (q.records !== undefined || q.bytes !== undefined) {
    const parts = [];
    if (q.records !== undefined) {
      const of = q.recordsCapacity === undefined ? "" : ` of ${q.recordsCapacity}`;
      parts.push(`${q.records}${of} records${share(q.records, q.recordsCapacity)}`);
    }
    if (q.bytes !== undefined) {
      const of = q.bytesCapacity === undefined ? "" : ` of ${formatBytes(q.bytesCapacity)}`;
      parts.push(`${formatBytes(q.bytes)}${of}${share(q.bytes, q.bytesCapacity)}`);
    }
    row("queue", parts.join(", "));
  }
  if (s.write !== undefined) row("write time", formatLatency(s.write, "batches"));
  if (s.sync !== undefined) row("sync time", formatLatency(s.sync, "syncs"));
  if (s.store.kind === "file") {
    row("store", "file");
  } else {
    const st = s.store;
    const inFlight = st.publishesInFlight === undefined
      ? ""
      : `, ${st.publishesInFlight} publishes in flight`;
    row("store", `jetstream, NATS ${st.connected ? "connected" : "DISCONNECTED"}${inFlight}`);
    if (st.publish !== undefined) row("publish time", formatLatency(st.publish, "publishes"));
  }
  if (s.fds.open !== undefined) {
    const of = s.fds.max === undefined ? "" : ` of ${s.fds.max}`;
    row("descriptors", `${s.fds.open}${of} open${share(s.fds.open, s.fds.max)}`);
  }
  if (s.residentBytes !== undefined) row("memory", `${formatBytes(s.residentBytes)} resident`);
  return lines.join("\n");
}
