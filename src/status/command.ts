/**
 * `msgserver status [--config PATH] [--url URL] [--interval SECONDS] [--KEY VALUE ...]`: a running
 * server's health and figures in a terminal, for a shell on the host without a browser. It reads
 * `/healthz` and `/metrics` (METRICS_PORT on IP from the config, or `--url`) twice, `--interval`
 * seconds apart (1 by default; 0 reads once and shows no rates), and prints
 * {@linkcode formatSummary}. With AUTH_TOKEN set (in the config or MS_AUTH_TOKEN) every request
 * carries `Authorization: Bearer <AUTH_TOKEN>`, which a server that does not ask for it ignores.
 *
 * Exit status: 0 healthy; 1 unhealthy (`/healthz` not `ok`, shutting down), unreachable or
 * unreadable, saying why and naming the URL; 2 bad usage or config.
 *
 * @module
 */

import { type Config, ConfigError, configHelp, loadConfig } from "../config.ts";
import { Scrape } from "./prometheus_text.ts";
import { formatSummary, summarize } from "./summary.ts";

/** The usage text of `msgserver status`. */
export const STATUS_USAGE =
  `Usage: msgserver status [--config PATH] [--url URL] [--interval SECONDS] [--KEY VALUE ...]

Shows a running server's health and figures: connections, messages received, written and acked
(totals, and per second between two readings), refusals by NACK code, the queue against its
capacity, write and sync time (p50, p99), the store (NATS connection and publishes in flight with
STORE=jetstream), open file descriptors against the limit, memory.

  --url URL           the server's /metrics (default: http://IP:METRICS_PORT/metrics from the
                      config); /healthz is read beside it
  --interval SECONDS  time between the two readings the rates come from (default 1; 0: read once,
                      no rates)
  --config PATH       the config file (IP, METRICS_PORT, AUTH_TOKEN)

With AUTH_TOKEN set (or MS_AUTH_TOKEN), requests carry "Authorization: Bearer <AUTH_TOKEN>".
Exit status: 0 healthy; 1 unhealthy or unreachable (the reason names the URL); 2 bad usage.

Settings:
${configHelp()}
`;

/** How long one request may take before the server counts as unreachable. */
const REQUEST_TIMEOUT_MS = 5000;

/** Bad usage: reported with exit status 2. */
class UsageError extends Error {}

/** The server did not answer as a healthy one does: reported with exit status 1. */
class Unhealthy extends Error {}

/**
 * The `/metrics` URL to read: `--url` as given (with `/metrics` added to a bare `http://host:port`),
 * else METRICS_PORT on IP (a wildcard IP is reached on loopback). Throws when there is none.
 *
 * @example
 * ```ts
 * import { DEFAULTS } from "../config.ts";
 * import { metricsUrl } from "./command.ts";
 * metricsUrl({ ...DEFAULTS, METRICS_PORT: 9100 }, undefined).href; // "http://127.0.0.1:9100/metrics"
 * ```
 */
export function metricsUrl(config: Config, url: string | undefined): URL {
  if (url !== undefined) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new UsageError(`--url is "${url}"; allowed: an http:// or https:// URL`);
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
      throw new UsageError(`--url is "${url}"; allowed: an http:// or https:// URL`);
    }
    if (parsed.pathname === "/") parsed.pathname = "/metrics";
    return parsed;
  }
  if (config.METRICS_PORT === 0) {
    throw new UsageError(
      "Cannot find the server's metrics: METRICS_PORT is 0 (off) in the config; " +
        "give the port the server uses (--metrics-port N) or --url URL",
    );
  }
  const ip = config.IP === "0.0.0.0" ? "127.0.0.1" : config.IP === "::" ? "::1" : config.IP;
  const host = ip.includes(":") ? `[${ip}]` : ip;
  return new URL(`http://${host}:${config.METRICS_PORT}/metrics`);
}

/** The body of a GET of `url`, with its status; throws {@linkcode Unhealthy} when unreachable. */
async function get(url: URL, token: string): Promise<{ status: number; body: string }> {
  const headers: Record<string, string> = token === "" ? {} : { authorization: `Bearer ${token}` };
  try {
    const response = await fetch(url, {
      headers,
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    return { status: response.status, body: await response.text() };
  } catch (e) {
    const error = e as Error;
    // fetch says only "fetch failed"; the cause says what failed (refused, no route, TLS...).
    const why = error.name === "TimeoutError"
      ? `no answer within ${REQUEST_TIMEOUT_MS / 1000} s`
      : error.cause instanceof Error
      ? error.cause.message
      : error.message;
    throw new Unhealthy(`Cannot reach ${url.href}: ${why}`);
  }
}

/** Reads `/healthz` and `/metrics`; throws {@linkcode Unhealthy} unless `/metrics` is readable. */
async function read(url: URL, token: string): Promise<{ health: string; scrape: Scrape }> {
  const healthUrl = new URL("healthz", url);
  const metrics = await get(url, token);
  const health = await get(healthUrl, token);
  if (metrics.status === 401 || metrics.status === 403) {
    throw new Unhealthy(
      `Cannot read ${url.href}: HTTP ${metrics.status}; ` +
        (token === ""
          ? "the server wants a token: set AUTH_TOKEN in the config or MS_AUTH_TOKEN"
          : "the server refused AUTH_TOKEN"),
    );
  }
  if (metrics.status !== 200) {
    throw new Unhealthy(`Cannot read ${url.href}: HTTP ${metrics.status}`);
  }
  let scrape: Scrape;
  try {
    scrape = Scrape.parse(metrics.body);
  } catch (e) {
    throw new Unhealthy(`Cannot read ${url.href}: ${(e as Error).message}`);
  }
  const said = health.body.trim();
  const text = health.status === 200 && said === "ok"
    ? "ok"
    : `NOT OK: ${healthUrl.href} answered HTTP ${health.status}${said === "" ? "" : ` "${said}"`}`;
  return { health: text, scrape };
}

function parseInterval(raw: string | undefined): number {
  if (raw === undefined) return 1;
  const n = Number(raw);
  if (raw.trim() === "" || !Number.isFinite(n) || n < 0 || n > 3600) {
    throw new UsageError(`--interval is "${raw}"; allowed: seconds from 0 to 3600`);
  }
  return n;
}

/**
 * Runs `msgserver status` with the arguments after `status`; returns the exit status.
 *
 * @example
 * ```ts ignore
 * import { statusCommand } from "./command.ts";
 * Deno.exit(await statusCommand(["--url", "http://127.0.0.1:9100/metrics"]));
 * ```
 */
export async function statusCommand(args: string[]): Promise<number> {
  try {
    const loaded = await loadConfig(args, { stringFlags: ["url", "interval"] });
    if (loaded.help) {
      console.log(STATUS_USAGE);
      return 0;
    }
    const url = metricsUrl(loaded.config, loaded.values.url);
    const interval = parseInterval(loaded.values.interval);
    const token = loaded.config.AUTH_TOKEN;
    const t0 = performance.now();
    const first = await read(url, token);
    let before: Scrape | null = null;
    let now = first;
    let seconds = 0;
    if (interval > 0) {
      await new Promise((r) => setTimeout(r, interval * 1000));
      const t1 = performance.now();
      now = await read(url, token);
      seconds = (t1 - t0) / 1000;
      before = first.scrape;
    }
    console.log(formatSummary(summarize(now.scrape, { before, seconds }), {
      url: url.href,
      health: now.health,
    }));
    if (now.health !== "ok") {
      console.error(`msgserver status: unhealthy: ${now.health}`);
      return 1;
    }
    return 0;
  } catch (e) {
    if (e instanceof ConfigError || e instanceof UsageError) {
      console.error(`msgserver status: ${e.message}`);
      return 2;
    }
    if (e instanceof Unhealthy) {
      console.error(`msgserver status: ${e.message}`);
      return 1;
    }
    throw e;
  }
}
