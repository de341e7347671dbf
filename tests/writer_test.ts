import { deepStrictEqual, equal, ok } from "node:assert/strict";
import type { AckMode } from "../src/config.ts";
import { delay } from "../src/io/within.ts";
import { Logger } from "../src/log.ts";
import { encodeMsg, NackCode, writeU32 } from "../src/protocol/frames.ts";
import { BufferPool } from "../src/server/buffer_pool.ts";
import { Channel } from "../src/server/channel.ts";
import { type Entry, RECORD_WITH_CLIENT, type RecordSource } from "../src/server/entry.ts";
import { Writer, type WriterOptions } from "../src/server/writer.ts";
import { concat } from "../src/io/concat.ts";
import { FakeStore } from "./support/fake_store.ts";
import { mulberry32 } from "./support/prng.ts";

/** A connection as the writer sees it: it notes every outcome. */
class Source implements RecordSource {
  readonly clientId: number;
  readonly session: bigint;
  readonly sessionKey: string;
  batchSeq = -1;
  batchLastId = 0;
  batchRecords = 0;
  /** `[msgId, records]` per written() call. */
  readonly acks: [number, number][] = [];
  /** `[msgId, code]` per refuse() call. */
  readonly refusals: [number, number][] = [];

  constructor(clientId: number, session = 0n) {
    this.clientId = clientId;
    this.session = session;
    this.sessionKey = session === 0n ? "" : `${clientId}/${session}`;
  }

  written(msgId: number, records: number): void {
    this.acks.push([msgId, records]);
  }

  refuse(msgId: number, code: number): void {
    this.refusals.push([msgId, code]);
  }

  /** Records acked so far. */
  get ackedRecords(): number {
    return this.acks.reduce((n, [, r]) => n + r, 0);
  }
}

/** One queue entry of `source` holding messages `ids`, each `name` with payload `p<id>`. */
function entry(source: Source, ids: number[], name = "n"): Entry {
  const data = concat(ids.map((id) => encodeMsg(id, name, `p${id}`)));
  return { source, data, count: ids.length, bytes: data.length };
}

/** A legacy entry: records that carry their own client_id. */
function legacyEntry(source: Source, records: [number, number][]): Entry {
  const frames = records.map(([clientId, msgId]) => {
    const payload = new TextEncoder().encode(`x${msgId}`);
    const f = new Uint8Array(4 + 1 + 4 + 4 + 1 + 1 + payload.length);
    writeU32(f, 0, f.length - 4);
    f[4] = RECORD_WITH_CLIENT;
    writeU32(f, 5, clientId);
    writeU32(f, 9, msgId);
    f[13] = 1;
    f[14] = 0x2d; // "-"
    f.set(payload, 15);
    return f;
  });
  const data = concat(frames);
  return { source, data, count: records.length, bytes: data.length };
}

interface Rig {
  queue: Channel<Entry>;
  store: FakeStore;
  writer: Writer;
  logs: string[];
  done: Promise<void>;
  /** Closes the queue and waits for the writer to finish. */
  finish(): Promise<void>;
}

function rig(
  options: Partial<WriterOptions> & { ackMode?: AckMode } = {},
  setUp: (store: FakeStore) => void = () => {},
): Rig {
  const queue = new Channel<Entry>({ maxRecords: 1 << 20, maxBytes: 1 << 26 });
  const store = new FakeStore();
  setUp(store);
  const logs: string[] = [];
  const writer = new Writer(queue, store, {
    ackMode: "written",
    msgPerWrite: 4096,
    flushIntervalMs: 0,
    maxFileBytes: 0,
    writeRetryMs: 100,
    log: new Logger("debug", (line) => logs.push(line)),
    ...options,
  });
  const done = writer.run();
  return {
    queue,
    store,
    writer,
    logs,
    done,
    async finish() {
      queue.close();
      await done;
    },
  };
}

Deno.test("Writer stores queued records as lines and acks each source once per batch", async () => {
  const r = rig();
  const a = new Source(1, 7n);
  const b = new Source(2);
  r.queue.tryPush(entry(a, [1, 2]));
  r.queue.tryPush(entry(b, [5]));
  r.queue.tryPush(entry(a, [3]));
  await r.finish();
  equal(r.store.segments[0], "1 1 n p1\n1 2 n p2\n2 5 n p5\n1 3 n p3\n");
  deepStrictEqual(r.store.batches.map((x) => x.runs), [[
    "1/7:1-2(2)=1 1 n p1\n1 2 n p2\n",
    "2/0:5-5(1)=2 5 n p5\n",
    "1/7:3-3(1)=1 3 n p3\n",
  ]]);
  deepStrictEqual(a.acks, [[3, 3]]);
  deepStrictEqual(b.acks, [[5, 1]]);
  equal(r.writer.stats.records, 4);
  equal(r.writer.stats.acked, 4);
});

Deno.test("Writer skips frames marked refused (type 0) inside an entry", async () => {
  const r = rig();
  const a = new Source(1);
  const e = entry(a, [1, 2, 3]);
  const second = encodeMsg(1, "n", "p1").length;
  e.data[second + 4] = 0; // msg 2 was NACKed by the connection after being copied
  r.queue.tryPush({ ...e, count: 2 });
  await r.finish();
  equal(r.store.segments[0], "1 1 n p1\n1 3 n p3\n");
  deepStrictEqual(a.acks, [[3, 2]]);
});

Deno.test("Writer formats legacy records with the client_id each one carries", async () => {
  const r = rig();
  const legacy = new Source(0);
  r.queue.tryPush(legacyEntry(legacy, [[10, 1], [11, 1], [10, 2]]));
  await r.finish();
  equal(r.store.segments[0], "10 1 - x1\n11 1 - x1\n10 2 - x2\n");
  deepStrictEqual(legacy.acks, [[2, 3]]);
});

Deno.test("Writer never puts more than MSG_PER_WRITE records in a batch, splitting an entry", async () => {
  const r = rig({ msgPerWrite: 3 });
  const a = new Source(1);
  r.queue.tryPush(entry(a, [1, 2, 3, 4, 5, 6, 7]));
  await r.finish();
  deepStrictEqual(r.store.batches.map((x) => x.records), [3, 3, 1]);
  deepStrictEqual(r.store.batches[1]!.runs, ["1/0:4-6(3)=1 4 n p4\n1 5 n p5\n1 6 n p6\n"]);
  deepStrictEqual(a.acks, [[3, 3], [6, 3], [7, 1]]);
});

Deno.test("Writer retries a failing store and acks once it takes the batch", async () => {
  const r = rig({ writeRetryMs: 2000 });
  r.store.failAppends = 2;
  const a = new Source(1);
  r.queue.tryPush(entry(a, [1, 2]));
  await r.finish();
  deepStrictEqual(r.store.calls, ["append!", "append!", "append"]);
  equal(r.store.segments[0], "1 1 n p1\n1 2 n p2\n");
  deepStrictEqual(a.acks, [[2, 2]]);
  deepStrictEqual(a.refusals, []);
  ok(r.logs.some((l) => l.includes("WARN storage recovered attempt=3")), r.logs.join(""));
  equal(r.logs.filter((l) => l.includes("ERROR write failed")).length, 2);
});

Deno.test("Writer refuses every record of a batch with NACK 4 once the retry time is out", async () => {
  const r = rig({ writeRetryMs: 50 });
  r.store.failAppends = Infinity;
  const a = new Source(1);
  const b = new Source(2);
  r.queue.tryPush(entry(a, [1, 2]));
  r.queue.tryPush(entry(b, [9]));
  await delay(5); // let the first batch start failing
  r.queue.tryPush(entry(a, [3]));
  const started = performance.now();
  await r.finish();
  deepStrictEqual(a.refusals, [[1, NackCode.STORAGE_ERROR], [2, 4], [3, 4]]);
  deepStrictEqual(b.refusals, [[9, 4]]);
  deepStrictEqual(a.acks, []);
  equal(r.writer.stats.failedRecords, 4);
  equal(r.writer.stats.records, 0);
  equal(r.store.segments[0], "");
  // The first batch was retried for its window; the second, with storage known down, got one try.
  const fails = r.store.calls.filter((c) => c === "append!").length;
  ok(fails >= 3, `only ${fails} attempts`);
  ok(performance.now() - started < 1000, "the second batch waited out a retry window too");
  ok(r.logs.some((l) => l.includes("refusing the batch with NACK 4 records=3")), r.logs.join(""));
});

Deno.test("Writer serves again once a failed store recovers, giving later batches one try each", async () => {
  const r = rig({ writeRetryMs: 30 });
  r.store.failAppends = Infinity;
  const a = new Source(1);
  r.queue.tryPush(entry(a, [1]));
  await delay(100);
  deepStrictEqual(a.refusals, [[1, 4]]);
  r.store.failAppends = 1; // one more failure, then it works
  r.queue.tryPush(entry(a, [2]));
  await delay(50);
  deepStrictEqual(a.refusals, [[1, 4], [2, 4]]); // one try while down: refused at once
  r.queue.tryPush(entry(a, [3]));
  await r.finish();
  deepStrictEqual(a.acks, [[3, 1]]);
  equal(r.store.segments[0], "1 3 n p3\n");
  ok(r.logs.some((l) => l.includes("storage recovered")));
});

Deno.test("ACK_MODE=received: the writer still reports stored records but counts no acks", async () => {
  const r = rig({ ackMode: "received" });
  const a = new Source(1);
  r.queue.tryPush(entry(a, [1, 2]));
  await r.finish();
  deepStrictEqual(a.acks, [[2, 2]]);
  equal(r.writer.stats.acked, 0);
  equal(r.writer.stats.records, 2);
});

Deno.test("Writer rotates before a batch would pass FILE_MAX_BYTES, never splitting a record", async () => {
  const r = rig({ maxFileBytes: 120, msgPerWrite: 2 });
  const a = new Source(1);
  const ids = Array.from({ length: 20 }, (_, i) => i + 1);
  for (const id of ids) r.queue.tryPush(entry(a, [id], "name"));
  await r.finish();
  ok(r.store.calls.includes("rotate"));
  ok(r.store.segments.length > 2, `${r.store.segments.length} segments`);
  for (const segment of r.store.segments) {
    ok(new TextEncoder().encode(segment).length <= 120, `segment of ${segment.length}: ${segment}`);
    ok(segment === "" || segment.endsWith("\n"));
  }
  equal(r.store.segments.join(""), ids.map((id) => `1 ${id} name p${id}\n`).join(""));
  equal(a.ackedRecords, 20);
});

Deno.test("Writer keeps storing while rotation fails and rotates as soon as it can", async () => {
  const r = rig({ maxFileBytes: 60, msgPerWrite: 1 });
  r.store.failRotations = 3;
  const a = new Source(1);
  const ids = Array.from({ length: 12 }, (_, i) => i + 1);
  for (const id of ids) r.queue.tryPush(entry(a, [id], "name"));
  await r.finish();
  // Three batches went on into the full segment while rotation failed; every batch after that
  // found room again, so the limit holds from then on.
  const tries = r.store.calls.filter((c) => c.startsWith("rotate"));
  deepStrictEqual(tries.slice(0, 4), ["rotate!", "rotate!", "rotate!", "rotate"]);
  ok(new TextEncoder().encode(r.store.segments[0]!).length > 60);
  for (const segment of r.store.segments.slice(1)) {
    ok(new TextEncoder().encode(segment).length <= 60, segment);
  }
  equal(r.store.segments.join(""), ids.map((id) => `1 ${id} name p${id}\n`).join(""));
  equal(a.ackedRecords, 12);
  deepStrictEqual(a.refusals, []);
});

Deno.test("Writer reopens the store between batches, never inside one", async () => {
  const r = rig();
  const a = new Source(1);
  let open!: () => void;
  r.store.gate = new Promise((resolve) => open = resolve);
  r.queue.tryPush(entry(a, [1]));
  await delay(5); // the writer is inside append, held by the gate
  r.writer.reopen();
  r.queue.tryPush(entry(a, [2]));
  open();
  r.store.gate = null;
  await r.finish();
  deepStrictEqual(r.store.calls, ["append", "reopen", "append"]);
  deepStrictEqual(r.store.segments, ["1 1 n p1\n", "1 2 n p2\n"]);
});

Deno.test("FLUSH_INTERVAL_MS gathers records that arrive within it into one batch", async () => {
  const r = rig({ flushIntervalMs: 80 });
  const a = new Source(1);
  r.queue.tryPush(entry(a, [1]));
  await delay(20);
  r.queue.tryPush(entry(a, [2]));
  await delay(150);
  deepStrictEqual(r.store.batches.map((x) => x.records), [2]);
  await r.finish();
});

Deno.test("Writer acks what a store kept of a failed batch and refuses only the rest", async () => {
  const r = rig({ writeRetryMs: 30 });
  r.store.failAppends = Infinity;
  r.store.keepOnFailure = (run) => run.source.clientId === 1;
  const a = new Source(1, 1n);
  const b = new Source(2, 2n);
  r.queue.tryPush(entry(a, [1, 2]));
  r.queue.tryPush(entry(b, [7]));
  r.queue.tryPush(entry(a, [3]));
  await r.finish();
  deepStrictEqual(a.acks, [[3, 3]]);
  deepStrictEqual(a.refusals, []);
  deepStrictEqual(b.acks, []);
  deepStrictEqual(b.refusals, [[7, NackCode.STORAGE_ERROR]]);
  equal(r.writer.stats.failedRecords, 1);
  equal(r.writer.stats.records, 3);
  ok(r.logs.some((l) => l.includes("records=1 kept_all_the_same=3")), r.logs.join(""));
});

Deno.test("Writer cuts batches below the store's own limit", async () => {
  const r = rig({}, (store) => store.maxBatchBytes = 40);
  const a = new Source(1);
  r.queue.tryPush(entry(a, [1, 2, 3, 4, 5, 6, 7, 8, 9], "name"));
  await r.finish();
  // Each line is 12 bytes: a batch is cut once it reaches 40 bytes, so after its fourth line.
  deepStrictEqual(r.store.batches.map((x) => x.records), [4, 4, 1]);
});

/** The order in which `source`'s ack and a microtask queued right after the push come. */
async function ackOrder(synchronous: boolean): Promise<string[]> {
  const r = rig({}, (store) => store.synchronous = synchronous);
  const seen: string[] = [];
  const a = new Source(1, 7n);
  const written = a.written.bind(a);
  a.written = (msgId, records) => {
    seen.push(`ack ${msgId}`);
    written(msgId, records);
  };
  r.queue.tryPush(entry(a, [1, 2]));
  queueMicrotask(() => seen.push("next microtask"));
  await r.finish();
  equal(r.store.segments[0], "1 1 n p1\n1 2 n p2\n");
  return seen;
}

Deno.test("Writer acks a batch its store kept synchronously before anything queued after the push runs", async () => {
  // The push wakes the writer with a microtask; from there to the ack there is no other.
  deepStrictEqual(await ackOrder(true), ["ack 2", "next microtask"]);
  // A store that answers with a promise is awaited: the ack comes a turn later.
  deepStrictEqual(await ackOrder(false), ["next microtask", "ack 2"]);
});

Deno.test("Writer retries through a store that keeps batches synchronously once it recovers", async () => {
  const r = rig({}, (store) => {
    store.synchronous = true;
    store.failAppends = 2;
  });
  const a = new Source(1);
  r.queue.tryPush(entry(a, [1]));
  await delay(100);
  r.queue.tryPush(entry(a, [2]));
  await r.finish();
  deepStrictEqual(r.store.calls, ["append!", "append!", "append", "append"]);
  deepStrictEqual(a.acks, [[1, 1], [2, 1]]);
  deepStrictEqual(a.refusals, []);
  ok(r.logs.some((l) => l.includes("storage recovered")), r.logs.join(""));
});

/**
 * A store that takes `pipeline` batches at once and answers each only when the test says:
 * `answer(i)` keeps batch i (in append order), `refuse(i)` fails it (and every retry of it).
 */
class HeldStore extends FakeStore {
  readonly pipeline: number;
  /** Per append call, in order: the batch's lines and how to settle it. */
  readonly held: { lines: string; resolve: () => void; reject: (e: Error) => void }[] = [];
  /** Lines whose every append fails at once. */
  readonly refused = new Set<string>();
  /** The most appends unanswered at one moment. */
  most = 0;
  #open = 0;

  constructor(pipeline: number) {
    super();
    this.pipeline = pipeline;
  }

  override append(batch: Parameters<FakeStore["append"]>[0]): Promise<void> {
    const lines = new TextDecoder().decode(batch.bytes);
    if (this.refused.has(lines)) return Promise.reject(new Error("refused by the test"));
    this.most = Math.max(this.most, ++this.#open);
    return new Promise<void>((resolve, reject) => {
      this.held.push({ lines, resolve, reject });
    }).then(
      () => {
        this.#open--;
        super.append(batch);
      },
      (e) => {
        this.#open--;
        throw e;
      },
    );
  }

  /** Waits until `n` appends have been made. */
  async appends(n: number): Promise<void> {
    for (let i = 0; this.held.length < n; i++) {
      if (i > 500) throw new Error(`${this.held.length} appends, not ${n}`);
      await delay(2);
    }
  }
}

/** A writer of 2 records a batch over `store`, running. */
function pipelinedRig(store: HeldStore, writeRetryMs: number) {
  const queue = new Channel<Entry>({ maxRecords: 1 << 20, maxBytes: 1 << 26 });
  const writer = new Writer(queue, store, {
    ackMode: "written",
    msgPerWrite: 2,
    flushIntervalMs: 0,
    maxFileBytes: 0,
    writeRetryMs,
    log: new Logger("error", () => {}),
  });
  return { queue, writer, done: writer.run() };
}

Deno.test("Writer gives a pipelined store several batches at once and acks them in batch order", async () => {
  const store = new HeldStore(3);
  const { queue, writer, done } = pipelinedRig(store, 100);
  const a = new Source(1, 7n);
  const b = new Source(2, 9n);
  queue.tryPush(entry(a, [1, 2]));
  queue.tryPush(entry(b, [1, 2]));
  queue.tryPush(entry(a, [3, 4]));
  queue.tryPush(entry(b, [3, 4]));
  queue.tryPush(entry(a, [5, 6]));
  await store.appends(3);
  await delay(20);
  equal(store.held.length, 3, "a fourth batch waits for room");
  deepStrictEqual(store.held.map((h) => h.lines), [
    "1 1 n p1\n1 2 n p2\n",
    "2 1 n p1\n2 2 n p2\n",
    "1 3 n p3\n1 4 n p4\n",
  ]);
  // The second answered first: nothing is acked before the first is.
  store.held[1]!.resolve();
  await delay(20);
  deepStrictEqual([a.acks, b.acks], [[], []]);
  store.held[0]!.resolve();
  await store.appends(4);
  deepStrictEqual([a.acks, b.acks], [[[2, 2]], [[2, 2]]]);
  store.held[2]!.resolve();
  await store.appends(5);
  store.held[4]!.resolve();
  await delay(20);
  deepStrictEqual(a.acks, [[2, 2], [4, 2]], "batch 5 waits for batch 4");
  store.held[3]!.resolve();
  queue.close();
  await done;
  deepStrictEqual(a.acks, [[2, 2], [4, 2], [6, 2]]);
  deepStrictEqual(b.acks, [[2, 2], [4, 2]]);
  equal(store.most, 3);
  equal(writer.stats.records, 10);
  equal(writer.stats.batches, 5);
  // Handed over in queue order; the fake keeps them in the order the test answered them.
  deepStrictEqual(store.held.map((h) => h.lines).slice(3), [
    "2 3 n p3\n2 4 n p4\n",
    "1 5 n p5\n1 6 n p6\n",
  ]);
  equal(store.segments[0]!.split("\n").length, 11);
});

Deno.test("Writer refuses a failed pipelined batch and acks the ones around it, in order", async () => {
  const store = new HeldStore(2);
  store.refused.add("1 3 n p3\n1 4 n p4\n");
  const { queue, writer, done } = pipelinedRig(store, 50);
  const a = new Source(1, 7n);
  const b = new Source(2, 9n);
  queue.tryPush(entry(a, [1, 2]));
  queue.tryPush(entry(a, [3, 4]));
  queue.tryPush(entry(b, [1, 2]));
  await store.appends(1);
  await delay(20);
  // Batch 2 fails at every try while batch 1 is held: it is refused only once batch 1 settles.
  deepStrictEqual([a.acks, a.refusals], [[], []]);
  store.held[0]!.resolve();
  await store.appends(2);
  store.held[1]!.resolve();
  queue.close();
  await done;
  deepStrictEqual(a.acks, [[2, 2]]);
  deepStrictEqual(a.refusals, [[3, NackCode.STORAGE_ERROR], [4, NackCode.STORAGE_ERROR]]);
  deepStrictEqual(b.acks, [[2, 2]]);
  equal(writer.stats.failedRecords, 2);
  equal(store.segments[0], "1 1 n p1\n1 2 n p2\n2 1 n p1\n2 2 n p2\n");
});

/** A pool that fills every buffer given back with garbage, as its next user would overwrite it. */
class PoisonPool extends BufferPool {
  readonly taken = new Set<ArrayBuffer>();
  gives = 0;
  override take(length: number): Uint8Array {
    const view = super.take(length);
    this.taken.add(view.buffer as ArrayBuffer);
    return view;
  }
  override give(view: Uint8Array): void {
    const buffer = view.buffer as ArrayBuffer;
    ok(this.taken.delete(buffer), "a buffer given back twice, or not one of the pool's");
    this.gives++;
    new Uint8Array(buffer).fill(0xee);
    super.give(view);
  }
}

/** A store whose appends answer after a random while, and fail now and then. */
class ErraticStore extends FakeStore {
  readonly pipeline: number;
  readonly #random: () => number;
  constructor(pipeline: number, random: () => number) {
    super();
    this.pipeline = pipeline;
    this.synchronous = true;
    this.#random = random;
  }
  override append(batch: Parameters<FakeStore["append"]>[0]): Promise<void> | undefined {
    const r = this.#random();
    if (r < 0.3) return super.append(batch); // kept at once
    return (async () => {
      await delay(r < 0.6 ? 0 : 1);
      if (r > 0.85) throw new Error("No space left on device (os error 28)");
      super.append(batch);
    })();
  }
}

Deno.test("Writer gives an entry's buffer back only once every batch holding its records has settled", async () => {
  const random = mulberry32(1414);
  const int = (n: number) => Math.floor(random() * n);
  for (let round = 0; round < 40; round++) {
    const pool = new PoisonPool(1 << 20);
    const store = new ErraticStore(1 + int(2), random);
    const queue = new Channel<Entry>({ maxRecords: 1 << 20, maxBytes: 1 << 26 });
    const writer = new Writer(queue, store, {
      ackMode: "written",
      msgPerWrite: 1 + int(4),
      flushIntervalMs: 0,
      maxFileBytes: 0,
      writeRetryMs: 1, // a failed batch is refused at once, reading its entries' msg_ids
      pool,
      log: new Logger("error", () => {}),
    });
    const done = writer.run();
    const sources = [new Source(1, 5n), new Source(2), new Source(3, 9n)];
    const sent = sources.map(() => [] as number[]);
    const next = sources.map(() => 1);
    for (let e = 0; e < 60; e++) {
      const s = int(sources.length);
      // 1 to 5 frames, some refused by the connection (type 0), as a read's region holds them.
      const frames: Uint8Array[] = [];
      let count = 0;
      for (let f = 1 + int(5); f > 0; f--) {
        const id = next[s]!++;
        const frame = encodeMsg(id, "n", `p${id}`);
        if (random() < 0.15) frame[4] = 0;
        else {
          sent[s]!.push(id);
          count++;
        }
        frames.push(frame);
      }
      if (count === 0) continue;
      const bytes = concat(frames);
      const data = pool.take(bytes.length);
      data.set(bytes);
      queue.tryPush({ source: sources[s]!, data, count, bytes: data.buffer.byteLength });
      if (random() < 0.3) await delay(int(2));
    }
    queue.close();
    await done;
    const stored = sources.map(() => [] as number[]);
    for (const line of store.segments.join("").split("\n").filter((l) => l !== "")) {
      const [client, id, name, payload] = line.split(" ");
      equal(`${name} ${payload}`, `n p${id}`, `round ${round}: a garbled line: ${line}`);
      stored[Number(client) - 1]!.push(Number(id));
    }
    sources.forEach((source, i) => {
      const refused = source.refusals.map(([id]) => id);
      deepStrictEqual(
        [...stored[i]!, ...refused].sort((x, y) => x - y),
        sent[i],
        `round ${round}, client ${i + 1}: every record stored or refused, once`,
      );
    });
    equal(pool.taken.size, 0, `round ${round}: every buffer given back`);
  }
});
