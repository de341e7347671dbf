/**
 * ReliableClient with several servers, over real TCP: failover at once past a dead address, round
 * robin with a backoff sleep once per round, a move mid-stream to another address of the same
 * server (the session resumed: nothing lost or doubled), and a move to a node with its own file,
 * which does not know the session (what `onSessionLost` promises, and no more).
 *
 * The backoff in the failover tests is 10 s on purpose: a client that slept it before moving on
 * would take at least 5 s, so a bound of a few seconds tells "at once" from "after a backoff"
 * with a wide margin either way.
 */

import { deepStrictEqual, equal, ok, rejects } from "node:assert/strict";
import {
  type Delivery,
  GiveUpError,
  ReliableClient,
  SessionLostError,
} from "../src/client/reliable.ts";
import { closeQuietly } from "../src/io/close_quietly.ts";
import { delay } from "../src/io/within.ts";
import { writeAll } from "../src/io/write_all.ts";
import { encodeWelcome } from "../src/protocol/frames.ts";
import { freePort } from "./support/net.ts";
import { passThroughProxy, rewritingProxy } from "./support/proxy.ts";
import {
  assertExactlyOnce,
  readRecords,
  waitForRecords,
  withServer,
  withTempDir,
} from "./support/server.ts";
import { spawnServer } from "./support/spawn.ts";

/** A backoff no test should ever sit through (see the module comment). */
const SLOW_BACKOFF = { initialDelayMs: 10_000, maxDelayMs: 10_000 } as const;
/** A version 2 WELCOME, as ReliableClient asks for: 5 header bytes and a 10-byte body. */
const WELCOME_BYTES = 15;

/** Client `clientId`'s msg_ids in `file`, in file order. */
async function idsIn(file: string, clientId: number): Promise<number[]> {
  return (await readRecords(file)).filter((r) => r.clientId === clientId).map((r) => r.msgId);
}

/**
 * Loopback listeners that note each connection (which listener, when) and then do `serve` with
 * it; closed, with their accept loops awaited, by the returned `close`.
 */
function noteTakers(n: number, serve: (conn: Deno.Conn) => Promise<void>) {
  const seen: { index: number; at: number }[] = [];
  const listeners = Array.from(
    { length: n },
    () => Deno.listen({ hostname: "127.0.0.1", port: 0 }),
  );
  const loops = listeners.map(async (listener, index) => {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch {
        return;
      }
      seen.push({ index, at: performance.now() });
      await serve(conn).catch(() => {});
      closeQuietly(conn);
    }
  });
  return {
    seen,
    servers: listeners.map((l) => ({ port: (l.addr as Deno.NetAddr).port })),
    close: async () => {
      for (const l of listeners) closeQuietly(l);
      await Promise.all(loops);
    },
  };
}

/** Polls `done` every 5 ms for up to 10 s. */
async function until(done: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (done()) return;
    await delay(5);
  }
  throw new Error(`Timed out waiting for ${what}`);
}

Deno.test("with the first address refusing connections, the client is on the second at once", async () => {
  await withServer({}, async ({ port, file }) => {
    const started = performance.now();
    const client = await ReliableClient.connect({
      servers: [{ port: freePort() }, { hostname: "127.0.0.1", port }],
      clientId: 1,
      ...SLOW_BACKOFF,
    });
    const took = performance.now() - started;
    ok(took < 2500, `connected after ${took.toFixed(0)} ms`);
    deepStrictEqual(client.server, { hostname: "127.0.0.1", port });
    equal(client.stats.connects, 1);
    equal(client.stats.failovers, 0, "the first connection is no failover");
    deepStrictEqual(await client.send("rel", "m1"), { msgId: 1, how: "acked" });
    await client.close();
    equal(client.server, null);
    await assertExactlyOnce(file, 1, 1);
  });
});

Deno.test("attempts go round robin, with a backoff sleep only after each round that all failed", async () => {
  // Three listeners that accept and close at once: every attempt fails after its TCP connect.
  const takers = noteTakers(3, async () => {});
  const client = new ReliableClient({
    servers: takers.servers,
    clientId: 1,
    initialDelayMs: 400,
    maxDelayMs: 400,
    random: () => 0, // every sleep is 200 ms
  });
  try {
    await until(() => takers.seen.length >= 9, "nine attempts");
  } finally {
    await client.abort();
    await takers.close();
  }
  const first9 = takers.seen.slice(0, 9);
  deepStrictEqual(first9.map((s) => s.index), [0, 1, 2, 0, 1, 2, 0, 1, 2]);
  for (let k = 1; k < 9; k++) {
    const gap = first9[k]!.at - first9[k - 1]!.at;
    if (k % 3 === 0) ok(gap >= 195, `a round ended before attempt ${k + 1}: ${gap} ms`);
    else ok(gap < 150, `no sleep within a round, before attempt ${k + 1}: ${gap} ms`);
  }
  equal(client.stats.connects, 0);
});

Deno.test("nodes that welcome and drop at once do not make the client hop in a tight loop", async () => {
  const takers = noteTakers(2, async (conn) => {
    await conn.read(new Uint8Array(1024)); // the HELLO, so closing is a FIN, not a reset
    await writeAll(conn, encodeWelcome(1024, 0));
  });
  const client = new ReliableClient({
    servers: takers.servers,
    clientId: 1,
    initialDelayMs: 100,
    maxDelayMs: 100,
    random: () => 0, // a 50 ms sleep per round of two
  });
  try {
    await delay(600);
  } finally {
    await client.abort();
    await takers.close();
  }
  // At most 2 connections per 50 ms: about 24. Without a sleep per round it would be thousands.
  ok(takers.seen.length >= 4 && takers.seen.length <= 40, `${takers.seen.length} connections`);
  ok(client.stats.connects >= 2, `${client.stats.connects} welcomes`);
});

Deno.test("every address refusing: the client gives up after giveUpAfterMs", async () => {
  await rejects(
    ReliableClient.connect({
      servers: [{ port: freePort() }, { port: freePort() }],
      clientId: 1,
      giveUpAfterMs: 300,
      initialDelayMs: 5,
      maxDelayMs: 40,
    }),
    (e) => e instanceof GiveUpError && /refused/i.test(e.message),
  );
});

Deno.test("two addresses of one server: the one in use dies mid-stream, the client goes on through the other at once, 0 lost, 0 doubled", async () => {
  await withServer({}, async ({ port, file }) => {
    const a = passThroughProxy(port);
    const b = passThroughProxy(port);
    try {
      const client = await ReliableClient.connect({
        servers: [{ port: a.port }, { port: b.port }],
        clientId: 8,
        maxInFlight: 100, // most messages are sent after the cut at msg 500
        ...SLOW_BACKOFF,
      });
      equal(client.server?.port, a.port);
      let cutAt = 0;
      let cut: Promise<void> = Promise.resolve();
      const sends: Promise<Delivery>[] = [];
      for (let i = 1; i <= 3000; i++) {
        sends.push(
          client.send("rel", `m${i}`).then((d) => {
            if (d.msgId === 500) {
              cutAt = performance.now();
              cut = a.close(); // cuts the link and refuses new ones: address A is dead
            }
            return d;
          }),
        );
      }
      const deliveries = await Promise.all(sends);
      const after = performance.now() - cutAt;
      await cut;
      ok(after < 2500, `the last message was delivered ${after.toFixed(0)} ms after the cut`);
      deepStrictEqual(
        deliveries.map((d) => d.msgId),
        Array.from({ length: 3000 }, (_, i) => i + 1),
      );
      equal(client.server?.port, b.port);
      const { connects, failovers, sessionsLost, uncertain } = client.stats;
      deepStrictEqual({ connects, failovers, sessionsLost, uncertain }, {
        connects: 2,
        failovers: 1,
        sessionsLost: 0,
        uncertain: 0,
      });
      await client.close();
      equal(a.links.length, 1);
      equal(b.links.length, 1);
      await assertExactlyOnce(file, 8, 3000);
    } finally {
      await a.close();
      await b.close();
    }
  });
});

for (const policy of ["reject", "resend"] as const) {
  Deno.test(`a failover to a node with its own file, which does not know the session: onSessionLost "${policy}"`, async () => {
    await withServer({}, async (nodeA) => {
      await withServer({}, async (nodeB) => {
        // Node A stores what it gets, but none of its ACKs reach the client: only its WELCOME.
        const a = rewritingProxy(nodeA.port, (_link, chunk, offset) => {
          return chunk.subarray(0, Math.max(0, WELCOME_BYTES - offset));
        });
        try {
          const client = await ReliableClient.connect({
            servers: [{ port: a.port }, { port: nodeB.port }],
            clientId: 5,
            onSessionLost: policy,
            ...SLOW_BACKOFF,
          });
          const outcomes = Promise.allSettled(
            Array.from({ length: 100 }, (_, i) => client.send("rel", `m${i + 1}`)),
          );
          await waitForRecords(nodeA.file, 100); // stored on A; the client saw no ACK
          const cutAt = performance.now();
          await a.close(); // A is gone: the client moves to B, which never saw the session
          const settled = await outcomes;
          const after = performance.now() - cutAt;
          ok(after < 2500, `every message settled ${after.toFixed(0)} ms after the cut`);
          for (const [i, o] of settled.entries()) {
            if (policy === "reject") {
              ok(o.status === "rejected" && o.reason instanceof SessionLostError, `msg ${i + 1}`);
              equal(o.reason.msgId, i + 1);
            } else {
              deepStrictEqual(o, { status: "fulfilled", value: { msgId: i + 1, how: "acked" } });
            }
          }
          deepStrictEqual(await client.send("rel", "m101"), { msgId: 101, how: "acked" });
          equal(client.server?.port, nodeB.port);
          equal(client.stats.failovers, 1);
          equal(client.stats.sessionsLost, 1);
          equal(client.stats.uncertain, policy === "reject" ? 100 : 0);
          equal(client.stats.resent, policy === "reject" ? 0 : 100);
          await client.close();
          await assertExactlyOnce(nodeA.file, 5, 100);
          // "reject": nothing is stored twice. "resend": at-least-once, 1 to 100 on both nodes.
          const onB = policy === "reject" ? [101] : Array.from({ length: 101 }, (_, i) => i + 1);
          deepStrictEqual(await idsIn(nodeB.file, 5), onB);
        } finally {
          await a.close();
        }
      });
    });
  });
}

/** Client `clientId`'s msg_ids in the whole lines of a file a SIGKILL may have torn. */
async function idsInWholeLines(file: string, clientId: number): Promise<number[]> {
  const text = await Deno.readTextFile(file);
  return text.slice(0, text.lastIndexOf("\n") + 1).split("\n").filter((l) => l !== "")
    .map((l) => l.split(" ")).filter((f) => f[0] === `${clientId}`).map((f) => Number(f[1]));
}

Deno.test("a node killed (SIGKILL) mid-stream, the other with its own file: each message acked once or reported uncertain, none stored twice", async () => {
  await withTempDir("msgserver_failover_test_", async (dir) => {
    const start = async (name: string) => {
      await Deno.mkdir(`${dir}/${name}`);
      return spawnServer(`${dir}/${name}`, {
        args: ["--port", "0", "--file-name", `${dir}/${name}/messages.log`],
        env: { MS_HOME: "" },
      });
    };
    const nodeA = await start("a");
    const nodeB = await start("b");
    try {
      const client = await ReliableClient.connect({
        servers: [{ port: nodeA.port }, { port: nodeB.port }],
        clientId: 6,
        maxInFlight: 200,
        ...SLOW_BACKOFF,
      });
      let killedAt = 0;
      let killed: Promise<number> = Promise.resolve(0);
      const sends = Array.from(
        { length: 3000 },
        (_, i) =>
          client.send("rel", `m${i + 1}`).then((d) => {
            if (d.msgId === 500) {
              killedAt = performance.now();
              killed = nodeA.stop("SIGKILL");
            }
            return d;
          }),
      );
      const settled = await Promise.allSettled(sends);
      const after = performance.now() - killedAt;
      await killed;
      ok(after < 2500, `every message settled ${after.toFixed(0)} ms after the kill`);
      const acked: number[] = [];
      const uncertain: number[] = [];
      for (const [i, o] of settled.entries()) {
        if (o.status === "fulfilled") acked.push(o.value.msgId);
        else if (o.reason instanceof SessionLostError) uncertain.push(o.reason.msgId);
        else throw new Error(`msg ${i + 1}: ${o.reason}`);
      }
      equal(client.stats.failovers, 1);
      equal(client.stats.sessionsLost, 1);
      equal(client.stats.uncertain, uncertain.length);
      await client.close();
      equal(await nodeB.stop(), 0);
      const onA = await idsInWholeLines(`${dir}/a/messages.log`, 6);
      const onB = await idsInWholeLines(`${dir}/b/messages.log`, 6);
      const stored = [...onA, ...onB];
      equal(new Set(stored).size, stored.length, "no message is stored twice, on one node or both");
      const inFile = new Set(stored);
      for (const id of acked) ok(inFile.has(id), `acked msg ${id} is stored`);
      for (const id of onB) ok(!uncertain.includes(id), `uncertain msg ${id} was not resent`);
      ok(acked.length >= 500, `${acked.length} acked, ${uncertain.length} uncertain`);
    } finally {
      await nodeA.stop("SIGKILL");
      await nodeB.stop();
    }
  });
});
