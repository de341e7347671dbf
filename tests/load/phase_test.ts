import { deepStrictEqual, equal, match, ok } from "node:assert/strict";
import { checkFile } from "../../bench/load/file_check.ts";
import type { PhaseSpec } from "../../bench/load/options.ts";
import { type PhaseContext, runPhase } from "../../bench/load/phase.ts";
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
