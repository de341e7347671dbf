/**
 * The monitoring endpoints served on METRICS_PORT: `/metrics` (Prometheus text format),
 * `/healthz`, and the live status page (`/`, its assets and `/events`; see `../status/`). With
 * AUTH_TOKEN set, all but `/healthz` need it (`../status/access.ts`). Everything they show comes
 * from {@linkcode ServerStats}, read when asked.
 *
 * @module
 */

import type { Config } from "../config.ts";
import type { HttpReply, HttpRequest } from "../http/http_server.ts";
import { ErrorCode, NackCode } from "../protocol/frames.ts";
import { Access } from "../status/access.ts";
import type { StatusFeedOptions } from "../status/feed.ts";
import { StatusPage } from "../status/page.ts";
import { type Metric, renderPrometheus } from "./metrics.ts";
import type { ServerStats } from "./server.ts";

/** What the endpoints read from the server. */
export interface MonitorSource {
  stats(): ServerStats;
  /** True once shutdown has begun. */
  stopping(): boolean;
  /** The settings: AUTH_TOKEN guards the endpoints, and the page shows the rest. */
  config: Config;
  /** What the store calls itself (`Store.name`). */
  storeName: string;
  /** When the server started (ms since the epoch). */
  startedAt: number;
}

function c(name: string, help: string, value: number): Metric {
  return { name, help, type: "counter", value };
}

function g(name: string, help: string, value: number): Metric {
  return { name, help, type: "gauge", value };
}

function namesOf(codes: Record<string, number>): Record<number, string> {
  const names: Record<number, string> = {};
  for (const [key, code] of Object.entries(codes)) {
    names[code] = key.toLowerCase().replace(/_/g, " ");
  }
  return names;
}

/**
 * What each NACK code means, from the protocol's own constants (`docs/protocol.md`).
 *
 * @example
 * ```ts
 * import { NACK_NAMES } from "./monitor.ts";
 * NACK_NAMES[3]; // "duplicate"
 * ```
 */
export const NACK_NAMES: Readonly<Record<number, string>> = namesOf(NackCode);

/**
 * What each ERROR code means, from the protocol's own constants (`docs/protocol.md`).
 *
 * @example
 * ```ts
 * import { ERROR_NAMES } from "./monitor.ts";
 * ERROR_NAMES[4]; // "too many connections"
 * ```
 */
export const ERROR_NAMES: Readonly<Record<number, string>> = namesOf(ErrorCode);

/** One counter per code (slot 0 of `counts` unused), labelled `code`. */
function byCode(
  name: string,
  help: string,
  counts: readonly number[],
  names: Readonly<Record<number, string>>,
): Metric {
  const legend = Object.entries(names).map(([code, what]) => `${code} ${what}`).join(", ");
  return {
    name,
    help: `${help} (${legend}).`,
    type: "counter",
    values: counts.slice(1).map((value, i) => ({ labels: { code: String(i + 1) }, value })),
  };
}

/**
 * Every metric of `/metrics`, from one reading of the counters.
 *
 * @example
 * ```ts
 * import { metricsOf } from "./monitor.ts";
 * import { renderPrometheus } from "./metrics.ts";
 * import type { ServerStats } from "./server.ts";
 * declare const stats: ServerStats;
 * console.log(renderPrometheus(metricsOf(stats)));
 * ```
 */
export function metricsOf(s: ServerStats): Metric[] {
  const metrics: Metric[] = [
    g("msgserver_connections_open", "Connections open now.", s.connectionsOpen),
    c("msgserver_connections_total", "Connections accepted.", s.connectionsTotal),
    c(
      "msgserver_connections_refused_total",
      "Connections refused past MAX_CONNECTIONS or while out of file descriptors.",
      s.accept.refused + s.accept.shed,
    ),
    c(
      "msgserver_accept_errors_total",
      "Accepts on the message ports that failed (out of file descriptors, aborted).",
      s.accept.acceptErrors,
    ),
    c("msgserver_messages_received_total", "MSG frames received.", s.received),
    c("msgserver_messages_written_total", "Records written to the file.", s.writer.records),
    c("msgserver_messages_acked_total", "Records acked.", s.acked),
    c(
      "msgserver_messages_nacked_total",
      "Messages refused with NACK 1 or 2 (NACK 3 counts as duplicate, NACK 4 as failed).",
      s.nacked,
    ),
    c("msgserver_messages_duplicate_total", "Duplicates refused (NACK 3).", s.duplicates),
    c(
      "msgserver_messages_failed_total",
      "Records lost to storage errors.",
      s.writer.failedRecords,
    ),
    c(
      "msgserver_protocol_errors_total",
      "Connections closed for a protocol violation.",
      s.protocolErrors,
    ),
    byCode("msgserver_nacks_total", "NACK frames sent, by code", s.nacks, NACK_NAMES),
    byCode(
      "msgserver_errors_total",
      "ERROR frames sent, by code, refusals at accept included",
      s.errors,
      ERROR_NAMES,
    ),
    c("msgserver_bytes_written_total", "Bytes written to the file.", s.writer.bytes),
    c("msgserver_batches_total", "Batches written.", s.writer.batches),
    g("msgserver_queue_records", "Records waiting for the writer.", s.queueRecords),
    g("msgserver_queue_bytes", "Bytes waiting for the writer.", s.queueBytes),
    g(
      "msgserver_reply_bytes_pending",
      "Reply bytes waiting for their peers to take them.",
      s.replyBytesPending,
    ),
    g("msgserver_resident_memory_bytes", "Resident set size.", Deno.memoryUsage().rss),
    {
      name: "msgserver_batch_records",
      help: "Records per batch.",
      type: "histogram",
      histogram: s.writer.batchSize,
    },
    {
      name: "msgserver_write_seconds",
      help: "Time to write one batch.",
      type: "histogram",
      histogram: s.store.writeSeconds,
    },
    {
      name: "msgserver_sync_seconds",
      help: "Time to sync one batch (ACK_MODE durable).",
      type: "histogram",
      histogram: s.store.syncSeconds,
    },
  ];
  if (s.http !== null) {
    metrics.push(
      c(
        "msgserver_http_accept_errors_total",
        "Accepts on METRICS_PORT that failed (out of file descriptors, aborted).",
        s.http.acceptErrors,
      ),
      c(
        "msgserver_http_refused_total",
        "Connections to METRICS_PORT refused past its cap or while out of file descriptors.",
        s.http.refused + s.http.shed,
      ),
      c(
        "msgserver_http_timeouts_total",
        "Connections to METRICS_PORT cut for a request head too slow or too large.",
        s.http.timedOut,
      ),
    );
  }
  metrics.push(...s.storeMetrics);
  metrics.push(...operatorMetrics(s), ...processMetrics());
  return metrics;
}

/** What alerting rules and `msgserver status` compare the counters above against. */
function operatorMetrics(s: ServerStats): Metric[] {
  return [
    g("msgserver_queue_capacity_records", "QUEUE_CAPACITY.", s.queueCapacity.records),
    g("msgserver_queue_capacity_bytes", "QUEUE_MAX_BYTES.", s.queueCapacity.bytes),
  ];
}

// The moment the runtime started, in seconds since the epoch, as Prometheus clients report it.
const START_TIME_SECONDS = performance.timeOrigin / 1000;

/**
 * Why `process_open_fds` and `process_max_fds` cannot be read here, or null when they can. Deno
 * 2.9 lets a program read `/proc/self` only with `--allow-all`; `deno task server` and the
 * compiled `msgserver` grant less, so the server says so at start rather than leave the gap
 * (and the alert on descriptors, which needs them) unexplained.
 *
 * @example
 * ```ts
 * import { processMetricsProblem } from "./monitor.ts";
 * const problem = processMetricsProblem(); // null under --allow-all on Linux
 * ```
 */
export function processMetricsProblem(): string | null {
  try {
    Deno.statSync("/proc/self/fd");
    return null;
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable) {
      return "Deno reads /proc/self only with --allow-all (deno run -A, or deno compile -A)";
    }
    return e instanceof Deno.errors.NotFound ? "no /proc here" : (e as Error).message;
  }
}

/**
 * The standard process metrics of Prometheus clients that the others lack: start time, and open
 * descriptors against the limit (running out refuses connections). Read from /proc at scrape
 * time; left out where there is no /proc or no permission to read it.
 */
function processMetrics(): Metric[] {
  const metrics = [
    g(
      "process_start_time_seconds",
      "Start time of the process since the epoch.",
      START_TIME_SECONDS,
    ),
  ];
  try {
    metrics.push(g("process_open_fds", "Open file descriptors.", openDescriptors()));
    const limit = /^Max open files\s+(\d+)/m.exec(Deno.readTextFileSync("/proc/self/limits"));
    if (limit !== null) {
      metrics.push(g("process_max_fds", "Limit of open file descriptors.", Number(limit[1])));
    }
  } catch {
    // Not Linux, or not allowed to read /proc: the other metrics still stand.
  }
  return metrics;
}

function openDescriptors(): number {
  // Linux 6.2 and later give the count as the folder's size, at once. Listing the folder, as
  // older kernels need, blocks the event loop for about 45 ms at 16,000 descriptors.
  const size = Deno.statSync("/proc/self/fd").size;
  if (size > 0) return size;
  let open = 0;
  for (const _ of Deno.readDirSync("/proc/self/fd")) open++;
  return open;
}

/**
 * The handler for METRICS_PORT. `feed` sets the status page's tick and viewer cap (for tests).
 *
 * @example
 * ```ts
 * import { monitorRoutes } from "./monitor.ts";
 * import { HttpServer } from "../http/http_server.ts";
 * import { Logger } from "../log.ts";
 * import type { MonitorSource } from "./monitor.ts";
 * declare const server: MonitorSource;
 * const http = HttpServer.listen(
 *   { hostname: "127.0.0.1", port: 0, name: "METRICS_PORT", log: new Logger("info") },
 *   monitorRoutes(server),
 * );
 * await http.close();
 * ```
 */
export function monitorRoutes(
  source: MonitorSource,
  feed: StatusFeedOptions = {},
): (req: HttpRequest) => HttpReply {
  const access = source.config.AUTH_TOKEN === "" ? null : new Access(source.config.AUTH_TOKEN);
  const page = new StatusPage({
    read: () => ({
      // A clock that never steps: rates come from the time between readings, and the page
      // drops chart points that go back in time (an NTP step would freeze its charts).
      time: performance.timeOrigin + performance.now(),
      stopping: source.stopping(),
      metrics: metricsOf(source.stats()),
    }),
    storeMetrics: () => source.stats().storeMetrics,
    config: source.config,
    storeName: source.storeName,
    startedAt: source.startedAt,
    codes: { nack: NACK_NAMES, error: ERROR_NAMES },
  }, feed);
  return (req) => {
    if (req.path === "/healthz") {
      return source.stopping()
        ? { status: 503, body: "stopping\n" }
        : { status: 200, body: "ok\n" };
    }
    const refused = access?.check(req) ?? null;
    if (refused !== null) return refused;
    if (req.path === "/metrics") {
      return {
        status: 200,
        headers: { "content-type": "text/plain; version=0.0.4" },
        body: renderPrometheus(metricsOf(source.stats())),
      };
    }
    return page.route(req) ?? { status: 404, body: "not found\n" };
  };
}
