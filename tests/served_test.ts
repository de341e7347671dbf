import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { delay } from "../src/io/within.ts";
import { Channel } from "../src/server/channel.ts";
import type { Entry, RecordSource } from "../src/server/entry.ts";
import { enqueue, RefusalBudget, Unsettled } from "../src/server/served.ts";

const source = {} as RecordSource;
const entry = (count: number): Entry => ({
  source,
  data: new Uint8Array(count),
  count,
  bytes: count,
});

Deno.test("enqueue() pushes at once when there is room, without marking a wait", async () => {
  const queue = new Channel<Entry>({ maxRecords: 10, maxBytes: 1000 });
  const task = { waitingOnServer: false, lastActivity: 1 };
  let released = false;
  equal(await enqueue(queue, entry(3), task, () => released = true), true);
  equal(queue.records, 3);
  equal(released, false);
  equal(task.lastActivity, 1);
});

Deno.test("enqueue() waits for room, marking the wait as the server's and ending it with activity", async () => {
  const queue = new Channel<Entry>({ maxRecords: 4, maxBytes: 1000 });
  queue.tryPush(entry(4));
  const task = { waitingOnServer: false, lastActivity: 0 };
  let released = 0;
  const pushed = enqueue(queue, entry(2), task, () => released++);
  await delay(5);
  equal(task.waitingOnServer, true, "timeouts must not run while the server makes it wait");
  equal(released, 1);
  queue.takeAll();
  equal(await pushed, true);
  equal(task.waitingOnServer, false);
  ok(task.lastActivity > 0);
  equal(queue.records, 2);
});

Deno.test("enqueue() resolves false once the queue is closed for shutdown", async () => {
  const queue = new Channel<Entry>({ maxRecords: 4, maxBytes: 1000 });
  queue.close();
  const task = { waitingOnServer: false, lastActivity: 0 };
  equal(await enqueue(queue, entry(1), task), false);
  equal(task.waitingOnServer, false);
});

Deno.test("Unsettled.wait() resolves true once every record settles, false after its time", async () => {
  const u = new Unsettled();
  equal(await u.wait(10), true, "nothing unsettled: at once");
  u.add(3);
  u.settle(1);
  equal(u.count, 2);
  equal(await u.wait(20), false);
  setTimeout(() => u.settle(2), 10);
  equal(await u.wait(2000), true);
  equal(u.count, 0);
});

Deno.test("RefusalBudget gives a fiftieth of its rate at once, then admits waiters in order every 10 ms", async () => {
  const budget = new RefusalBudget(1000); // 10 per 10 ms, 20 at once
  let taken = 0;
  while (budget.take()) taken++;
  equal(taken, 20);
  const order: number[] = [];
  const started = performance.now();
  const waits = Array.from({ length: 25 }, (_, i) => budget.wait().then(() => order.push(i)));
  ok(!budget.take(), "nobody jumps the queue while others wait");
  await Promise.all(waits);
  const took = performance.now() - started;
  deepStrictEqual(order, Array.from({ length: 25 }, (_, i) => i));
  ok(took >= 20, `25 admitted at 10 per 10 ms took ${took.toFixed(0)} ms`);
});

Deno.test("RefusalBudget.release() lets every waiter go at once (shutdown)", async () => {
  const budget = new RefusalBudget(100);
  while (budget.take()) { /* drain */ }
  const waits = Array.from({ length: 5 }, () => budget.wait());
  budget.release();
  equal((await Promise.all(waits)).length, 5);
});
