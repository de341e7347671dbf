import { deepStrictEqual, equal, ok } from "node:assert/strict";
import type { HttpReply, HttpStream } from "../src/http/http_server.ts";
import { delay } from "../src/io/within.ts";
import { type FeedSource, StatusFeed } from "../src/status/feed.ts";
import type { Snapshot } from "../src/status/snapshot.ts";

const dec = new TextDecoder();
const TICK_MS = 20;

/** A source that counts its snapshots; each one's point is at `now` seconds. */
function countingSource(): FeedSource & { taken: number; fresh: number; now: number } {
  const source = {
    taken: 0,
    fresh: 0,
    now: 1000,
    intro: () => ({ version: "test" }),
    snapshot(fresh: boolean): Snapshot {
      source.taken++;
      if (fresh) source.fresh++;
      source.now += 1;
      return {
        seq: source.taken,
        time: source.now * 1000,
        uptimeS: 0,
        stopping: false,
        values: {},
        rates: null,
        quantiles: {},
        batchMean: null,
        point: [source.now, null, null, null, null, null, null, null, null],
      };
    },
  };
  return source;
}

function isStream(reply: HttpReply): reply is HttpStream {
  return "run" in reply;
}

/** A viewer driven by hand: what it received, and how to make it leave. */
interface TestViewer {
  chunks: Uint8Array[];
  leave(): void;
  /** Resolves when the feed's run for it has returned. */
  done: Promise<void>;
}

function watch(
  feed: StatusFeed,
  send?: (chunk: Uint8Array) => Promise<boolean>,
): TestViewer {
  const reply = feed.open();
  ok(isStream(reply), `refused: ${JSON.stringify(reply)}`);
  const closed = Promise.withResolvers<void>();
  const chunks: Uint8Array[] = [];
  const done = reply.run(
    (chunk) => {
      const bytes = typeof chunk === "string" ? new TextEncoder().encode(chunk) : chunk;
      chunks.push(bytes);
      return send?.(bytes) ?? Promise.resolve(true);
    },
    closed.promise,
  );
  return { chunks, leave: () => closed.resolve(), done };
}

Deno.test("StatusFeed takes no snapshot while nobody watches, and stops when the last viewer leaves", async () => {
  const source = countingSource();
  const feed = new StatusFeed(source, { tickMs: TICK_MS });
  await delay(TICK_MS * 5);
  equal(source.taken, 0, "snapshots with nobody watching");
  const viewer = watch(feed);
  await delay(TICK_MS * 5);
  ok(source.taken >= 2, `${source.taken} snapshots in 5 ticks`);
  equal(source.fresh, 1, "only the first snapshot starts over");
  viewer.leave();
  await viewer.done;
  const taken = source.taken;
  await delay(TICK_MS * 5);
  equal(source.taken, taken, "snapshots after the last viewer left");
  equal(feed.stats.viewers, 0);
  // Back again: the first snapshot starts over (its rates would span the time nobody watched).
  const again = watch(feed);
  await delay(TICK_MS * 2);
  equal(source.fresh, 2);
  again.leave();
  await again.done;
});

Deno.test("StatusFeed takes one snapshot per tick and sends the same bytes to every viewer", async () => {
  const source = countingSource();
  const feed = new StatusFeed(source, { tickMs: TICK_MS });
  const viewers = Array.from({ length: 5 }, () => watch(feed));
  await delay(TICK_MS * 6);
  for (const v of viewers) v.leave();
  await Promise.all(viewers.map((v) => v.done));
  equal(feed.stats.snapshots, source.taken);
  // Every viewer got every tick after its first chunk, and each tick's bytes are one object.
  const ticks = viewers[0]!.chunks.slice(1);
  ok(ticks.length >= 3, `${ticks.length} ticks`);
  equal(source.taken, ticks.length + 1, "one snapshot per tick, whatever the viewers");
  for (const v of viewers.slice(1)) {
    const theirs = v.chunks.slice(1);
    equal(theirs.length, ticks.length);
    theirs.forEach((chunk, i) => ok(chunk === ticks[i], `tick ${i} was encoded again`));
  }
});

Deno.test("StatusFeed's first chunk is the hello (intro and history), then the latest snapshot", async () => {
  const source = countingSource();
  const feed = new StatusFeed(source, { tickMs: TICK_MS, historyS: 3 });
  const first = watch(feed);
  await delay(TICK_MS * 8); // more points than 3 seconds of history
  const second = watch(feed);
  await delay(TICK_MS / 2);
  first.leave();
  second.leave();
  await Promise.all([first.done, second.done]);
  const text = dec.decode(second.chunks[0]);
  const m = /^retry: 1000\nevent: hello\ndata: (.*)\n\ndata: (.*)\n\n$/.exec(text);
  ok(m !== null, text);
  const hello = JSON.parse(m[1]!);
  equal(hello.version, "test");
  const times = hello.history.map((p: number[]) => p[0]);
  const newest = times.at(-1);
  ok(times.every((t: number) => t >= newest - 3), `history beyond 3 s: ${times}`);
  deepStrictEqual(times, [newest - 3, newest - 2, newest - 1, newest]);
  equal(JSON.parse(m[2]!).point[0], newest, "the latest snapshot follows the hello");
});

Deno.test("StatusFeed refuses viewers past its cap with 503", async () => {
  const feed = new StatusFeed(countingSource(), { tickMs: TICK_MS, maxViewers: 3 });
  const viewers = [watch(feed), watch(feed), watch(feed)];
  const refused = feed.open();
  ok(!isStream(refused));
  equal(refused.status, 503);
  equal(feed.stats.refused, 1);
  viewers[0]!.leave();
  await viewers[0]!.done;
  const next = watch(feed); // room again
  for (const v of [...viewers, next]) v.leave();
  await Promise.all([...viewers, next].map((v) => v.done));
});

Deno.test("StatusFeed counts a stream from open(), so viewers arriving together cannot pass the cap", async () => {
  const feed = new StatusFeed(countingSource(), { tickMs: TICK_MS, maxViewers: 2 });
  const first = feed.open();
  const second = feed.open(); // neither has started to run: their heads are still being written
  ok(isStream(first) && isStream(second));
  equal(feed.full, true);
  equal(feed.open().status, 503);
  // A stream whose head could not be written runs with a send that fails: its place is freed.
  await first.run(() => Promise.resolve(false), Promise.resolve());
  equal(feed.full, false);
  const closed = Promise.withResolvers<void>();
  const running = second.run(() => Promise.resolve(true), closed.promise);
  equal(feed.stats.viewers, 1);
  closed.resolve();
  await running;
  equal(feed.stats.viewers, 0);
  equal(feed.full, false);
});

Deno.test("StatusFeed skips a viewer that has not taken its last event instead of queueing, and drops one whose send fails", async () => {
  const source = countingSource();
  const feed = new StatusFeed(source, { tickMs: TICK_MS });
  // Takes nothing: its first send never resolves.
  const stalled = watch(feed, () => new Promise<boolean>(() => {}));
  const healthy = watch(feed);
  let failures = 0;
  const failing = watch(feed, () => {
    failures++;
    return Promise.resolve(false);
  });
  await failing.done; // its run returns as soon as a send fails
  equal(failures, 1);
  await delay(TICK_MS * 6);
  equal(stalled.chunks.length, 1, "events were queued for the stalled viewer");
  ok(healthy.chunks.length >= 3, `${healthy.chunks.length} events to the healthy viewer`);
  ok(feed.stats.skipped >= 2, `skipped ${feed.stats.skipped}`);
  equal(feed.stats.viewers, 2);
  stalled.leave();
  healthy.leave();
  await Promise.all([stalled.done, healthy.done]);
});
