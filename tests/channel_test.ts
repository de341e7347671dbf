import { deepStrictEqual, equal, ok, rejects, throws } from "node:assert/strict";
import { Channel, ChannelClosedError } from "../src/server/channel.ts";

interface Item {
  id: string;
  count: number;
  bytes: number;
}

function item(id: string, count = 1, bytes = 10): Item {
  return { id, count, bytes };
}

function ids(items: Item[]): string[] {
  return items.map((i) => i.id);
}

/** Lets every queued promise reaction run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
  await new Promise((r) => setTimeout(r, 0));
}

/** Starts `push` and records when its promise resolves. */
function track(ch: Channel<Item>, it: Item, done: string[]): Promise<void> {
  const p = ch.push(it);
  p.then(() => done.push(it.id));
  return p;
}

Deno.test("Channel tryPush admits items until the record bound is reached", () => {
  const ch = new Channel<Item>({ maxRecords: 3, maxBytes: 1000 });
  equal(ch.tryPush(item("a")), true);
  equal(ch.tryPush(item("b")), true);
  equal(ch.tryPush(item("c")), true);
  equal(ch.tryPush(item("d")), false);
  equal(ch.records, 3);
  equal(ch.bytes, 30);
  deepStrictEqual(ids(ch.takeAll()), ["a", "b", "c"]);
});

Deno.test("Channel tryPush counts the records of multi-record items", () => {
  const ch = new Channel<Item>({ maxRecords: 5, maxBytes: 1000 });
  equal(ch.tryPush(item("a", 3)), true);
  equal(ch.tryPush(item("b", 3)), false);
  equal(ch.tryPush(item("c", 2)), true);
  equal(ch.records, 5);
  equal(ch.tryPush(item("d", 1)), false);
});

Deno.test("Channel tryPush admits items until the byte bound is reached", () => {
  const ch = new Channel<Item>({ maxRecords: 100, maxBytes: 100 });
  equal(ch.tryPush(item("a", 1, 40)), true);
  equal(ch.tryPush(item("b", 1, 40)), true);
  equal(ch.tryPush(item("c", 1, 30)), false);
  equal(ch.bytes, 80);
  equal(ch.tryPush(item("d", 1, 20)), true);
  equal(ch.bytes, 100);
  equal(ch.tryPush(item("e", 1, 1)), false);
  equal(ch.records, 3);
  deepStrictEqual(ids(ch.takeAll()), ["a", "b", "d"]);
});

Deno.test("Channel takeAll returns the items in push order and empties the channel", () => {
  const ch = new Channel<Item>({ maxRecords: 100, maxBytes: 10_000 });
  const pushed = ["x1", "x2", "x3", "x4", "x5"].map((id, i) => item(id, i + 1, 7));
  for (const it of pushed) ok(ch.tryPush(it));
  equal(ch.records, 15);
  equal(ch.bytes, 35);
  const taken = ch.takeAll();
  deepStrictEqual(taken, pushed);
  ok(taken.every((it, i) => it === pushed[i]), "the same objects come back");
  equal(ch.records, 0);
  equal(ch.bytes, 0);
  deepStrictEqual(ch.takeAll(), []);
});

Deno.test("Channel takeAll recycles the array it returned two calls before", () => {
  const ch = new Channel<Item>({ maxRecords: 10, maxBytes: 1000 });
  ch.tryPush(item("a"));
  const first = ch.takeAll();
  deepStrictEqual(ids(first), ["a"]);
  ch.tryPush(item("b"));
  const second = ch.takeAll();
  deepStrictEqual(ids(second), ["b"]);
  // The next push goes into the first array, which was cleared by the second takeAll.
  equal(first.length, 0);
  ch.tryPush(item("c"));
  equal(ch.takeAll(), first);
  deepStrictEqual(ids(first), ["c"]);
});

Deno.test("Channel push waits for room and takeAll admits waiters in FIFO order", async () => {
  const ch = new Channel<Item>({ maxRecords: 2, maxBytes: 1000 });
  ok(ch.tryPush(item("x")));
  ok(ch.tryPush(item("y")));
  const done: string[] = [];
  const pa = track(ch, item("a"), done);
  const pb = track(ch, item("b"), done);
  const pc = track(ch, item("c"), done);
  await settle();
  deepStrictEqual(done, []);
  equal(ch.records, 2, "waiting producers are not counted");

  deepStrictEqual(ids([...ch.takeAll()]), ["x", "y"]);
  // a and b fill the two records; c still waits.
  equal(ch.records, 2);
  await Promise.all([pa, pb]);
  await settle();
  deepStrictEqual(done, ["a", "b"]);

  deepStrictEqual(ids([...ch.takeAll()]), ["a", "b"]);
  await pc;
  deepStrictEqual(done, ["a", "b", "c"]);
  deepStrictEqual(ids([...ch.takeAll()]), ["c"]);
  equal(ch.drained, true);
});

Deno.test("Channel does not let a small waiter overtake a larger one ahead of it", async () => {
  const ch = new Channel<Item>({ maxRecords: 3, maxBytes: 1000 });
  ok(ch.tryPush(item("x", 2)));
  const done: string[] = [];
  track(ch, item("big", 3), done);
  // "small" would fit (2 + 1 <= 3), but "big" waits ahead of it.
  track(ch, item("small", 1), done);
  await settle();
  deepStrictEqual(done, []);
  deepStrictEqual(ids([...ch.takeAll()]), ["x"]);
  await settle();
  deepStrictEqual(done, ["big"]);
  deepStrictEqual(ids([...ch.takeAll()]), ["big"]);
  await settle();
  deepStrictEqual(done, ["big", "small"]);
  deepStrictEqual(ids([...ch.takeAll()]), ["small"]);
});

Deno.test("Channel tryPush fails while other producers wait, even when the item would fit", async () => {
  const ch = new Channel<Item>({ maxRecords: 3, maxBytes: 1000 });
  ok(ch.tryPush(item("x", 2)));
  const done: string[] = [];
  track(ch, item("waiter", 2), done);
  equal(ch.tryPush(item("late", 1)), false);
  equal(ch.records, 2);
  ch.takeAll();
  await settle();
  deepStrictEqual(done, ["waiter"]);
  // Nobody waits any more, and one record is free.
  equal(ch.tryPush(item("late", 1)), true);
  deepStrictEqual(ids([...ch.takeAll()]), ["waiter", "late"]);
});

Deno.test("Channel admits an item larger than a bound alone when it is empty", async () => {
  const ch = new Channel<Item>({ maxRecords: 2, maxBytes: 100 });
  equal(ch.tryPush(item("huge", 5, 500)), true);
  equal(ch.records, 5);
  equal(ch.bytes, 500);
  equal(ch.tryPush(item("small", 1, 1)), false);
  deepStrictEqual(ids([...ch.takeAll()]), ["huge"]);

  // A waiting oversized item gets in once the channel is empty, and alone.
  ok(ch.tryPush(item("x", 1, 10)));
  const done: string[] = [];
  track(ch, item("huge2", 1, 1000), done);
  track(ch, item("after", 1, 1), done);
  await settle();
  deepStrictEqual(done, []);
  deepStrictEqual(ids([...ch.takeAll()]), ["x"]);
  await settle();
  deepStrictEqual(done, ["huge2"]);
  equal(ch.bytes, 1000);
  deepStrictEqual(ids([...ch.takeAll()]), ["huge2"]);
  await settle();
  deepStrictEqual(done, ["huge2", "after"]);
});

Deno.test("Channel wait resolves at once when items are queued", async () => {
  const ch = new Channel<Item>({ maxRecords: 10, maxBytes: 1000 });
  ch.tryPush(item("a"));
  let resolved = false;
  ch.wait().then(() => resolved = true);
  await Promise.resolve();
  equal(resolved, true);
});

Deno.test("Channel wait resolves when an item is pushed", async () => {
  const ch = new Channel<Item>({ maxRecords: 10, maxBytes: 1000 });
  let resolved = false;
  const waiting = ch.wait().then(() => resolved = true);
  await settle();
  equal(resolved, false);
  ok(ch.tryPush(item("a")));
  await waiting;
  equal(resolved, true);
  deepStrictEqual(ids(ch.takeAll()), ["a"]);
});

Deno.test("Channel wait with a timeout resolves on push and its timer cannot disturb a later wait", async () => {
  const ch = new Channel<Item>({ maxRecords: 10, maxBytes: 1000 });
  const first = ch.wait(30);
  await settle();
  ok(ch.tryPush(item("a")));
  await first;
  deepStrictEqual(ids(ch.takeAll()), ["a"]);
  // The consumer waits again, with no timeout. The first wait's timer must be gone: if it fired
  // now it would unhook this second wait, and the push below would never wake it.
  let woken = false;
  const second = ch.wait().then(() => woken = true);
  await new Promise((r) => setTimeout(r, 60));
  equal(woken, false);
  ok(ch.tryPush(item("b")));
  await settle();
  equal(woken, true, "the second wait was not woken by a push");
  await second;
});

Deno.test("Channel wait returns at once after takeAll lets a waiting producer in", async () => {
  const ch = new Channel<Item>({ maxRecords: 1, maxBytes: 1000 });
  ok(ch.tryPush(item("x")));
  const pushed = ch.push(item("y"));
  deepStrictEqual(ids([...ch.takeAll()]), ["x"]);
  // y is queued now; the consumer's wait returns at once.
  let resolved = false;
  ch.wait().then(() => resolved = true);
  await pushed;
  await Promise.resolve();
  equal(resolved, true);
});

Deno.test("Channel wait resolves on close", async () => {
  const ch = new Channel<Item>({ maxRecords: 10, maxBytes: 1000 });
  let resolved = false;
  const waiting = ch.wait().then(() => resolved = true);
  await settle();
  equal(resolved, false);
  ch.close();
  await waiting;
  equal(resolved, true);
  // Once closed, wait never blocks.
  let again = false;
  ch.wait(60_000).then(() => again = true);
  await Promise.resolve();
  equal(again, true);
});

Deno.test("Channel wait resolves after its timeout when nothing happens", async () => {
  const ch = new Channel<Item>({ maxRecords: 10, maxBytes: 1000 });
  let resolved = false;
  const started = performance.now();
  const waiting = ch.wait(50).then(() => resolved = true);
  await settle();
  equal(resolved, false);
  await waiting;
  const elapsed = performance.now() - started;
  ok(elapsed >= 45, `resolved after ${elapsed} ms`);
  deepStrictEqual(ch.takeAll(), []);
  // A push after the timeout finds no consumer to wake and does not fail.
  equal(ch.tryPush(item("a")), true);
  deepStrictEqual(ids(ch.takeAll()), ["a"]);
});

Deno.test("Channel close makes tryPush and push throw ChannelClosedError", async () => {
  const ch = new Channel<Item>({ maxRecords: 10, maxBytes: 1000 });
  ok(ch.tryPush(item("a")));
  equal(ch.closed, false);
  ch.close();
  equal(ch.closed, true);
  throws(() => ch.tryPush(item("b")), (e: unknown) => {
    ok(e instanceof ChannelClosedError);
    equal(e.name, "ChannelClosedError");
    equal(e.message, "Cannot push: the channel is closed");
    return true;
  });
  await rejects(async () => await ch.push(item("c")), ChannelClosedError);
  // What was queued before close is still there.
  deepStrictEqual(ids(ch.takeAll()), ["a"]);
});

Deno.test("Channel close still lets producers that were already waiting in", async () => {
  const ch = new Channel<Item>({ maxRecords: 1, maxBytes: 1000 });
  ok(ch.tryPush(item("x")));
  const done: string[] = [];
  const pa = track(ch, item("a"), done);
  const pb = track(ch, item("b"), done);
  ch.close();
  throws(() => ch.tryPush(item("late")), ChannelClosedError);
  equal(ch.drained, false);
  deepStrictEqual(ids([...ch.takeAll()]), ["x"]);
  await pa;
  deepStrictEqual(ids([...ch.takeAll()]), ["a"]);
  await pb;
  deepStrictEqual(done, ["a", "b"]);
  deepStrictEqual(ids([...ch.takeAll()]), ["b"]);
  equal(ch.drained, true);
});

Deno.test("Channel drained is true only with nothing queued and nobody waiting", async () => {
  const ch = new Channel<Item>({ maxRecords: 1, maxBytes: 1000 });
  equal(ch.drained, true);
  ok(ch.tryPush(item("x")));
  equal(ch.drained, false);
  const pushed = ch.push(item("y"));
  ch.takeAll();
  // y moved from the waiters into the queue.
  equal(ch.drained, false);
  equal(ch.records, 1);
  await pushed;
  deepStrictEqual(ids(ch.takeAll()), ["y"]);
  equal(ch.drained, true);
});
