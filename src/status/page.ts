/**
 * The live status page on METRICS_PORT: `GET /` (`page.html`), its script and style
 * (`page.js`, `page.css`), the charting library (uPlot, from npm, pinned in deno.json), and its
 * event stream `GET /events` (`feed.ts`). Everything is served from here, so the page works with
 * no network beyond the server; the assets are part of the program (text imports), so `deno
 * compile` carries them too.
 *
 * @module
 */

import { type Config, redactConfig } from "../config.ts";
import type { HttpReply, HttpRequest } from "../http/http_server.ts";
import { type Metric, samplesOf } from "../server/metrics.ts";

/** One figure of the store's on the page: a counter's or gauge's sample, or a histogram. */
interface StoreFigure {
  name: string;
  help: string;
  type: Metric["type"];
  /** The sample's name in the snapshot's values; null for a histogram. */
  sample: string | null;
}
import { VERSION } from "../version.ts";
import { type FeedSource, HISTORY_S, StatusFeed, type StatusFeedOptions, TICK_MS } from "./feed.ts";
import { type Reading, Sampler } from "./snapshot.ts";
import html from "./page.html" with { type: "text" };
import script from "./page.js" with { type: "text" };
import style from "./page.css" with { type: "text" };
import uplotScript from "uplot/dist/uPlot.iife.min.js" with { type: "text" };
import uplotStyle from "uplot/dist/uPlot.min.css" with { type: "text" };

/** What the page reads from the server. */
export interface StatusPageSource {
  /** What `/metrics` would show now (`metricsOf`). */
  read(): Reading;
  /** The store's own metrics (`Store.metrics`), listed under the store. */
  storeMetrics(): Metric[];
  /** The settings; secrets are hidden before they leave. */
  config: Config;
  /** What the store calls itself: the data file's path, or the stream. */
  storeName: string;
  /** When the server started (ms since the epoch). */
  startedAt: number;
  /** What each NACK and ERROR code means. */
  codes: { nack: Readonly<Record<number, string>>; error: Readonly<Record<number, string>> };
}

const SECURITY_HEADERS = {
  // Everything comes from the server itself; uPlot styles through the CSSOM, which this allows.
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "referrer-policy": "no-referrer",
  "x-content-type-options": "nosniff",
};

const ASSETS: Record<string, { type: string; body: string }> = {
  "/assets/status.js": { type: "text/javascript; charset=utf-8", body: script },
  "/assets/status.css": { type: "text/css; charset=utf-8", body: style },
  "/assets/uPlot.iife.min.js": { type: "text/javascript; charset=utf-8", body: uplotScript },
  "/assets/uPlot.min.css": { type: "text/css; charset=utf-8", body: uplotStyle },
};

/**
 * The page's routes and its feed.
 *
 * @example
 * ```ts
 * import { StatusPage } from "./page.ts";
 * import type { StatusPageSource } from "./page.ts";
 * import type { HttpRequest } from "../http/http_server.ts";
 * declare const source: StatusPageSource;
 * declare const req: HttpRequest;
 * const page = new StatusPage(source);
 * const reply = page.route(req) ?? { status: 404 };
 * ```
 */
export class StatusPage {
  /** The event stream behind `/events`. */
  readonly feed: StatusFeed;

  readonly #html: Uint8Array;
  readonly #assets: Map<string, { type: string; body: Uint8Array }>;

  /** The page of `source`; `options` set the feed's tick and viewer cap (for tests). */
  constructor(source: StatusPageSource, options: StatusFeedOptions = {}) {
    const enc = new TextEncoder();
    this.#html = enc.encode(html);
    this.#assets = new Map(
      Object.entries(ASSETS).map(([path, a]) => [path, { type: a.type, body: enc.encode(a.body) }]),
    );
    const sampler = new Sampler(source.startedAt);
    let intro: Record<string, unknown> | null = null;
    const feed: FeedSource = {
      // Built once: nothing in it changes while the server runs.
      intro: () =>
        intro ??= {
          version: VERSION,
          ackMode: source.config.ACK_MODE,
          startedAt: source.startedAt,
          tickMs: options.tickMs ?? TICK_MS,
          historyS: options.historyS ?? HISTORY_S,
          config: redactConfig(source.config),
          store: {
            kind: source.config.STORE,
            name: source.storeName,
            metrics: source.storeMetrics().flatMap((m): StoreFigure[] =>
              m.type === "histogram"
                ? [{ name: m.name, help: m.help, type: m.type, sample: null }]
                : samplesOf(m).map(([sample]) => ({
                  name: m.name,
                  help: m.help,
                  type: m.type,
                  sample,
                }))
            ),
          },
          nackNames: source.codes.nack,
          errorNames: source.codes.error,
        },
      snapshot: (fresh) => sampler.take(source.read(), fresh),
    };
    this.feed = new StatusFeed(feed, options);
  }

  /** The reply for `req`, or null when the path is not the page's. */
  route(req: HttpRequest): HttpReply | null {
    if (req.path === "/") {
      return {
        status: 200,
        headers: { "content-type": "text/html; charset=utf-8", ...SECURITY_HEADERS },
        body: this.#html,
      };
    }
    if (req.path === "/events") {
      // HEAD asks whether a stream would be let in (the page does, after a refusal).
      if (req.method === "HEAD") {
        return this.feed.full
          ? { status: 503 }
          : { status: 200, headers: { "content-type": "text/event-stream; charset=utf-8" } };
      }
      return this.feed.open();
    }
    const asset = this.#assets.get(req.path);
    if (asset === undefined) return null;
    return {
      status: 200,
      headers: { "content-type": asset.type, "x-content-type-options": "nosniff" },
      body: asset.body,
    };
  }
}
