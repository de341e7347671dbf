import { deepStrictEqual, equal, ok, rejects } from "node:assert/strict";
import { MsgClient } from "../src/client/client.ts";
import { delay } from "../src/io/within.ts";
import { Session, SessionTable } from "../src/server/sessions.ts";
import { withServer, withTempDir } from "./support/server.ts";
import { DEFAULTS } from "../src/config.ts";
import { Logger } from "../src/log.ts";
import { startServer } from "../src/server/server.ts";
import { FakeStore } from "./support/fake_store.ts";

Deno.test("SessionTable.open() finds a session again and forgets the least recently greeted first", () => {
  const table = new SessionTable(2);
  const a = table.open(1, 1n);
  a.lastId = 5;
  table.open(1, 2n);
  equal(table.open(1, 1n), a, "found again (and now the most recently greeted)");
  table.open(1, 3n); // over the bound: session 2 goes
  equal(table.size, 2);
  equal(table.open(1, 1n).lastId, 5);
  equal(table.open(1, 2n).lastId, 0, "session 2 was forgotten");
});

Deno.test("SessionTable never forgets a session in use or with records on their way", () => {
  const table = new SessionTable(1);
  const owned = table.open(1, 1n);
  owned.owner = { takeOver() {} };
  const pending = table.open(1, 2n);
  pending.pending = 3;
  table.open(1, 3n);
  equal(table.size, 3, "both were kept past the bound");
  equal(table.open(1, 1n), owned);
  equal(table.open(1, 2n), pending);
});

Deno.test("Session.recall() asks the store once, shared by concurrent callers", async () => {
  const s = new Session();
  let asked = 0;
  const lookup = async () => {
    asked++;
    await delay(5);
    return 41;
  };
  await Promise.all([s.recall(lookup), s.recall(lookup)]);
  await s.recall(lookup);
  equal(asked, 1);
  equal(s.known, true);
  equal(s.lastId, 41);
  equal(s.safeId, 41);
});

Deno.test("Session.recall(): no record leaves it unknown at 0; a failed lookup is asked again", async () => {
  const s = new Session();
  await rejects(s.recall(() => Promise.reject(new Error("unreachable"))), /unreachable/);
  equal(s.known, false);
  await s.recall(() => Promise.resolve(null));
  equal(s.known, false);
  equal(s.lastId, 0);
});

Deno.test("Session.resume() waits for what is pending, then resumes from what is surely stored", async () => {
  const s = new Session();
  s.lastId = 10;
  s.pending = 2;
  s.written(9, 1);
  setTimeout(() => s.refused(1), 10); // msg 10 was refused after all
  equal(await s.resume(1000), 9, "resume above the last id surely stored");
  equal(s.lastId, 9);
});

Deno.test("WELCOME says whether the server knows a session: new, greeted before, forgotten past MAX_SESSIONS", async () => {
  await withServer({ MAX_SESSIONS: 10 }, async ({ port }) => {
    const first = await MsgClient.connect({ port, clientId: 1, session: 500n });
    equal(first.sessionKnown, false, "a new session");
    await Promise.all(Array.from({ length: 100 }, (_, i) => first.send("s", `m${i}`)));
    await first.close();
    const again = await MsgClient.connect({ port, clientId: 1, session: 500n });
    deepStrictEqual([again.sessionKnown, again.lastMsgId], [true, 100]);
    await again.close();
    for (let i = 0; i < 1000; i++) {
      const c = await MsgClient.connect({ port, clientId: 2 });
      await c.send("churn", "x");
      await c.close();
    }
    const forgotten = await MsgClient.connect({ port, clientId: 1, session: 500n });
    deepStrictEqual([forgotten.sessionKnown, forgotten.lastMsgId], [false, 0]);
    await forgotten.close();
    // A version 1 client cannot be told; it sees last_msg_id 0, as it always did.
    const old = await MsgClient.connect({ port, clientId: 1, session: 501n, version: 1 });
    deepStrictEqual([old.sessionKnown, old.lastMsgId], [null, 0]);
    await old.close();
  });
});

Deno.test("a session the table lost but the store knows is known, at the store's last msg_id", async () => {
  const store = new FakeStore();
  store.stored.set("3/7", 42);
  await withServer({}, async ({ port }) => {
    const c = await MsgClient.connect({ port, clientId: 3, session: 7n });
    deepStrictEqual([c.sessionKnown, c.lastMsgId, c.nextMsgId], [true, 42, 43]);
    await c.send("s", "43");
    await c.close();
    equal(store.segments.join(""), "3 43 s 43\n");
  }, { store });
});

Deno.test("a store that cannot be reached for a session lookup gets ERROR 8, and a retry succeeds", async () => {
  const store = new FakeStore();
  store.lookupFails = true;
  await withServer({}, async ({ port }) => {
    await rejects(MsgClient.connect({ port, clientId: 3, session: 8n }), (e: unknown) => {
      ok(e instanceof Error && /Server error 8: unavailable/.test(e.message), String(e));
      return true;
    });
    store.lookupFails = false;
    const c = await MsgClient.connect({ port, clientId: 3, session: 8n });
    equal(c.sessionKnown, false);
    await c.close();
  }, { store });
});

Deno.test("sessions survive a restart, a rotation and a reopen: WELCOME stays exact and known", async () => {
  await withTempDir("msgserver_sessions_test_", async (dir) => {
    const file = `${dir}/messages.log`;
    const config = { ...DEFAULTS, PORT: 0, FILE_NAME: file, FILE_MAX_BYTES: 2000 };
    const log = new Logger("warn", () => {});
    let server = await startServer(config, { log });
    let c = await MsgClient.connect({ port: server.addr.port, clientId: 1, session: 42n });
    for (let i = 0; i < 60; i++) await c.send("s", `message ${i} ${"x".repeat(40)}`); // rotates
    await c.close();
    await Deno.rename(file, `${file}.moved`);
    server.reopen();
    await delay(50);
    c = await MsgClient.connect({ port: server.addr.port, clientId: 1, session: 42n });
    await c.send("s", "after the reopen");
    await c.close();
    await server.shutdown();
    server = await startServer(config, { log });
    try {
      c = await MsgClient.connect({ port: server.addr.port, clientId: 1, session: 42n });
      deepStrictEqual([c.sessionKnown, c.lastMsgId], [true, 61]);
      await c.close();
      // A session this server never stored anything for is still unknown.
      c = await MsgClient.connect({ port: server.addr.port, clientId: 1, session: 43n });
      deepStrictEqual([c.sessionKnown, c.lastMsgId], [false, 0]);
      await c.close();
    } finally {
      await server.shutdown();
    }
  });
});
