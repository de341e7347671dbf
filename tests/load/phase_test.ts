import { deepStrictEqual, equal, match, ok } from "node:assert/strict";
import { checkFile } from "../../bench/load/file_check.ts";
import type { PhaseSpec } from "../../bench/load/options.ts";
import {
  type AckSample,
  longestStall,
  type PhaseContext,
  PhaseState,
  runPhase,
} from "../../bench/load/phase.ts";
import type { Batch } from "../../src/store/store.ts";
import { FakeStore } from "../support/fake_store.ts";
import { freePort } from "../support/net.ts";
import { withServer } from "../support/server.ts";

function context(port: number): PhaseContext {
  return {
    host: "127.0.0.1",
    port,
    token: "",
    connectConcurrency: 2,
    timeoutS: 30,
    serverRss: () => Promise.resolve(null),
    nextClientId: 1,
  };
}

function spec(overrides: Partial<PhaseSpec>): PhaseSpec {
  return {
    name: "test",
    connections: 3,
    window: 4,
    size: 10,
    durationS: null,
    count: 100,
    perClientTable: false,
    ...overrides,
  };
}

Deno.test("runPhase() sends a count spread over the connections and each ack is a line", async () => {
  await withServer({ LOG_LEVEL: "warn" }, async (t) => {
    const ctx = context(t.port);
    const result = await runPhase(spec({ perClientTable: true }), ctx);
    equal(ctx.nextClientId, 4, "the next phase takes new client_ids");
    deepStrictEqual(
      [result.connected, result.sent, result.acked, result.nacked, result.unsettled, result.errors],
      [3, 100, 100, 0, 0, 0],
    );
    equal(result.timedOut, false);
    deepStrictEqual([...result.ackedByClient], [[1, 34], [2, 33], [3, 33]]);
    deepStrictEqual(result.acksPerConnection, { min: 33, median: 33, max: 34 });
    deepStrictEqual(result.perClient?.map((c) => [c.client, c.acked]), [[1, 34], [2, 33], [3, 33]]);
    ok(result.perClient!.every((c) => c.avgLatencyUs > 0));
    ok(result.latencyUs.min > 0 && result.latencyUs.min <= result.latencyUs.p50);
    ok(result.latencyUs.p50 <= result.latencyUs.max);
    ok(result.msgsPerS > 0);
    const check = await checkFile(t.file, result.ackedByClient);
    equal(check.ok, true, JSON.stringify(check));
    equal(check.lines, 100);
  });
});

Deno.test("runPhase() stops a timed phase after its duration with nothing left in flight", async () => {
  await withServer({ LOG_LEVEL: "warn" }, async (t) => {
    const started = performance.now();
    const result = await runPhase(
      spec({ connections: 2, window: 8, durationS: 0.3, count: null }),
      context(t.port),
    );
    const ms = performance.now() - started;
    ok(ms >= 300 && ms < 10_000, `${ms} ms`);
    ok(result.acked > 0);
    equal(result.sent, result.acked);
    equal(result.unsettled, 0);
    equal(result.perClient, null);
    equal((await checkFile(t.file, result.ackedByClient)).ok, true);
  });
});

Deno.test("runPhase() counts connections it could not open as errors", async () => {
  const result = await runPhase(spec({ connections: 2 }), context(freePort()));
  deepStrictEqual([result.connected, result.connectFailures, result.errors], [0, 2, 2]);
  match(result.errorSamples[0]!, /^client [12]: connect: /);
  equal(result.sent, 0);
});

/** Samples every 100 ms from acks per 100 ms. */
function timeline(perTick: number[]): AckSample[] {
  const samples = [{ at: 0, acked: 0 }];
  let acked = 0;
  perTick.forEach((n, i) => samples.push({ at: (i + 1) * 100, acked: acked += n }));
  return samples;
}

Deno.test("longestStall() spans a failover that a few stray acks interrupt", () => {
  // 3 s at 200 per 100 ms, 5 s of nothing, one batch of 30 acks, 5 s of nothing, then 2 s.
  const perTick = [
    ...Array(30).fill(200),
    ...Array(50).fill(0),
    30,
    ...Array(50).fill(0),
    ...Array(20).fill(250),
  ];
  deepStrictEqual(longestStall(timeline(perTick), Infinity), { ms: 10_100, from: 3000 });
  deepStrictEqual(longestStall(timeline(Array(50).fill(200)), Infinity), { ms: 0, from: 0 });
  deepStrictEqual(
    longestStall(timeline(Array(5).fill(0)), Infinity),
    { ms: 500, from: 0 },
    "a phase that never acked stalled throughout",
  );
});

Deno.test("longestStall() ignores the drain after sending stopped, not a stall begun before", () => {
  const drained = timeline([...Array(20).fill(200), 50, 0, 0]);
  deepStrictEqual(longestStall(drained, 2000), { ms: 0, from: 0 });
  const stuck = timeline([...Array(20).fill(200), ...Array(10).fill(0)]);
  deepStrictEqual(longestStall(stuck, 2500), { ms: 1000, from: 2000 });
});

Deno.test("PhaseState.ackGap() keeps the longest wait, from the first send to the first ack", () => {
  const phase = new PhaseState();
  phase.firstSendAt = 1000;
  phase.ackGap(1030);
  deepStrictEqual([phase.longestAckGapMs, phase.longestAckGapFrom], [30, 1000]);
  phase.lastAckAt = 1030;
  phase.ackGap(1040);
  deepStrictEqual([phase.longestAckGapMs, phase.longestAckGapFrom], [30, 1000]);
  phase.lastAckAt = 1040;
  phase.ackGap(1540);
  deepStrictEqual([phase.longestAckGapMs, phase.longestAckGapFrom], [500, 1040]);
});

/**
 * A store shared with other servers (as a JetStream stream is), in memory: the server ends a
 * session's connection with ERROR 8 when it refuses its records, and asks `lastStored` on HELLO.
 */
class SharedStore extends FakeStore {
  readonly shared = true;
  override async append(batch: Batch): Promise<void> {
    await super.append(batch);
    for (const run of batch.runs) {
      this.stored.set(`${run.source.clientId}/${run.source.session}`, run.lastId);
    }
  }
}

Deno.test("runPhase() resumes sessions the server ends with ERROR 8, and measures the stall", async () => {
  const store = new SharedStore();
  await withServer({ LOG_LEVEL: "error" }, async (t) => {
    const ctx = context(t.port);
    let failedAt = 0;
    ctx.whileSending = async (sendStart) => {
      await new Promise((r) => setTimeout(r, 200));
      // Appends fail for longer than the server retries (writeRetryMs 200): refused, NACK 4.
      store.failAppends = Infinity;
      failedAt = performance.now() - sendStart;
      await new Promise((r) => setTimeout(r, 600));
      store.failAppends = 0;
    };
    const result = await runPhase(
      spec({ connections: 3, window: 16, durationS: 1.5, count: null }),
      ctx,
    );
    deepStrictEqual([result.errors, result.unsettled, result.timedOut], [0, 0, false]);
    ok(result.nacked > 0, "records were refused");
    ok(result.resumed >= 3, `every session was resumed: ${result.resumed}`);
    ok(result.acked > 0 && result.sent === result.acked + result.nacked + result.abandoned);
    ok(
      result.stall.ms >= 400 && result.stall.fromS * 1000 <= failedAt + 50,
      `stall ${JSON.stringify(result.stall)}, appends failing from ${failedAt} ms`,
    );
    ok(result.longestAckGap.ms >= 300, `longest ack gap ${result.longestAckGap.ms} ms`);
    const file = `${t.dir}/stored.log`;
    await Deno.writeTextFile(file, store.segments.join(""));
    const check = await checkFile(file, result.ackedByClient, { ledgers: result.ledgers });
    equal(check.ok, true, JSON.stringify(check));
    equal(check.ids?.lost, 0);
    equal(check.ids?.refused, result.nacked);
    ok(check.lines >= result.acked);
  }, { store });
});
