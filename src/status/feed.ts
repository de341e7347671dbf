/**
 * The status page's event stream (Server-Sent Events): one snapshot per tick, taken once and
 * sent as the same bytes to every viewer, and only while someone watches: the first viewer
 * starts the ticks, the last one to leave stops them, so a server nobody looks at does no work
 * for the page at all.
 *
 * Viewers are capped ({@linkcode MAX_VIEWERS}). A viewer that has not taken the last event yet
 * skips ticks instead of queueing them, so a slow one holds at most one event, and the HTTP
 * server cuts it once a write waits past its write timeout.
 *
 * @module
 */

import type { HttpReply } from "../http/http_server.ts";
import type { ChartPoint, Snapshot } from "./snapshot.ts";

/** Event streams at once; past it a viewer gets 503 (and the page tries again later). */
export const MAX_VIEWERS = 16;
/** Time between snapshots. */
export const TICK_MS = 1000;
/** How far back the charts go, in seconds. */
export const HISTORY_S = 300;

/** Where the feed's figures come from. */
export interface FeedSource {
  /** What a viewer is sent first and once: the parts that do not change while the server runs. */
  intro(): Record<string, unknown>;
  /**
   * One snapshot; `fresh` on the first tick after nobody watched, when rates start over.
   * Called once per tick, whatever the number of viewers.
   */
  snapshot(fresh: boolean): Snapshot;
}

/** Options of {@linkcode StatusFeed}. */
export interface StatusFeedOptions {
  /** Viewers at once (default {@linkcode MAX_VIEWERS}). */
  maxViewers?: number;
  /** Time between snapshots (default {@linkcode TICK_MS}). */
  tickMs?: number;
  /** How far back the history a new viewer gets goes (default {@linkcode HISTORY_S}). */
  historyS?: number;
}

/** One viewer's stream. */
interface Viewer {
  send(chunk: Uint8Array): Promise<boolean>;
  /** True while a send has not resolved: then ticks skip this viewer. */
  busy: boolean;
  /** Ends the viewer's `run` (its peer is gone, or a send failed). */
  leave(): void;
}

/** Counters of a {@linkcode StatusFeed}. */
export interface FeedStats {
  /** Viewers connected now. */
  viewers: number;
  /** Snapshots taken. */
  snapshots: number;
  /** Events a viewer missed because it had not taken the one before. */
  skipped: number;
  /** Viewers refused for the cap. */
  refused: number;
}

const enc = new TextEncoder();

/**
 * The event stream behind `GET /events`.
 *
 * @example
 * ```ts
 * import { StatusFeed } from "./feed.ts";
 * import type { FeedSource } from "./feed.ts";
 * declare const source: FeedSource;
 * const feed = new StatusFeed(source);
 * const reply = feed.open(); // an HttpStream, or a 503 past the cap
 * ```
 */
export class StatusFeed {
  readonly stats: FeedStats = { viewers: 0, snapshots: 0, skipped: 0, refused: 0 };

  readonly #source: FeedSource;
  readonly #max: number;
  readonly #tickMs: number;
  readonly #historyS: number;
  readonly #viewers = new Set<Viewer>();
  /** Streams let in by open() whose run has not started yet: they count toward the cap. */
  #reserved = 0;
  /** The charts' points, oldest first, none older than the history allows. */
  readonly #history: ChartPoint[] = [];
  /** The last tick's event, for a viewer who arrives between ticks. */
  #latest: Uint8Array = new Uint8Array(0);
  #timer: ReturnType<typeof setInterval> | undefined;

  /** A feed of `source`'s snapshots. */
  constructor(source: FeedSource, options: StatusFeedOptions = {}) {
    this.#source = source;
    this.#max = options.maxViewers ?? MAX_VIEWERS;
    this.#tickMs = options.tickMs ?? TICK_MS;
    this.#historyS = options.historyS ?? HISTORY_S;
  }

  /** True when a new viewer would be refused. */
  get full(): boolean {
    return this.#viewers.size + this.#reserved >= this.#max;
  }

  /** The reply to `GET /events`: a stream, or 503 past the viewer cap. */
  open(): HttpReply {
    if (this.full) {
      this.stats.refused++;
      return { status: 503, body: `too many viewers: at most ${this.#max}\n` };
    }
    // Held from now, not from when the stream's head is written, so that viewers arriving
    // together cannot all pass the cap (HttpServer calls run once for every stream).
    this.#reserved++;
    return {
      status: 200,
      headers: {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-store",
        "x-content-type-options": "nosniff",
      },
      run: (send, closed) => this.#watch(send, closed),
    };
  }

  async #watch(
    send: (chunk: Uint8Array) => Promise<boolean>,
    closed: Promise<void>,
  ): Promise<void> {
    this.#reserved--;
    const gone = Promise.withResolvers<void>();
    const viewer: Viewer = { send, busy: false, leave: () => gone.resolve() };
    this.#viewers.add(viewer);
    this.stats.viewers = this.#viewers.size;
    if (this.#timer === undefined) {
      this.#publish(this.#source.snapshot(true));
      this.#timer = setInterval(() => this.#tick(), this.#tickMs);
    }
    const intro = { ...this.#source.intro(), history: this.#history };
    // `retry` tells the browser how soon to reconnect after the server went away.
    const hello = enc.encode(`retry: 1000\nevent: hello\ndata: ${JSON.stringify(intro)}\n\n`);
    const first = new Uint8Array(hello.length + this.#latest.length);
    first.set(hello);
    first.set(this.#latest, hello.length);
    this.#deliver(viewer, first);
    try {
      await Promise.race([closed, gone.promise]);
    } finally {
      this.#viewers.delete(viewer);
      this.stats.viewers = this.#viewers.size;
      if (this.#viewers.size === 0) {
        clearInterval(this.#timer);
        this.#timer = undefined;
      }
    }
  }

  #tick(): void {
    this.#publish(this.#source.snapshot(false));
    for (const viewer of this.#viewers) this.#deliver(viewer, this.#latest);
  }

  /** Takes `snapshot` as the latest event, once, and adds its point to the history. */
  #publish(snapshot: Snapshot): void {
    this.stats.snapshots++;
    this.#latest = enc.encode(`data: ${JSON.stringify(snapshot)}\n\n`);
    const history = this.#history;
    history.push(snapshot.point);
    const oldest = snapshot.point[0] - this.#historyS;
    // By count too, so that a clock set back cannot keep points for ever.
    let stale = Math.max(0, history.length - Math.ceil(this.#historyS * 1000 / this.#tickMs) - 1);
    while (stale < history.length && history[stale]![0] < oldest) stale++;
    if (stale > 0) history.splice(0, stale);
  }

  #deliver(viewer: Viewer, chunk: Uint8Array): void {
    if (viewer.busy) {
      this.stats.skipped++;
      return;
    }
    viewer.busy = true;
    viewer.send(chunk).then((ok) => {
      viewer.busy = false;
      if (!ok) viewer.leave();
    }, () => viewer.leave());
  }
}
