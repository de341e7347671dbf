import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { MsgClient, NackError } from "../src/client/client.ts";
import { NackCode } from "../src/protocol/frames.ts";
import { type ParsedLine, parseFile } from "../src/server/line.ts";
import { delay } from "../src/io/within.ts";
import { readRecords, withServer } from "./support/server.ts";
import { FakeStore } from "./support/fake_store.ts";

/** Every record in `dir` from files named `messages.log*` (the live file and rotated ones). */
async function allRecords(dir: string): Promise<{ records: ParsedLine[]; files: number }> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    // The data files: the live one and those moved aside; not the session journal or .torn.
    if (!e.name.startsWith("messages.log") || /\.(torn|sessions|sessions\.tmp)$/.test(e.name)) {
      continue;
    }
    names.push(e.name);
  }
  // Oldest first: moved or rotated files by name (their suffixes sort in time), the live one last.
  names.sort((a, b) => (a === "messages.log" ? 1 : b === "messages.log" ? -1 : a < b ? -1 : 1));
  const records: ParsedLine[] = [];
  for (const name of names) records.push(...parseFile(await Deno.readFile(`${dir}/${name}`)));
  return { records, files: names.length };
}

/** Sends `perClient` messages from each of `clients` clients; returns the ids acked per client. */
async function load(port: number, clients: number, perClient: number): Promise<number> {
  let acked = 0;
  await Promise.all(Array.from({ length: clients }, async (_, c) => {
    const client = await MsgClient.connect({ port, clientId: c + 1 });
    const sends = [];
    for (let m = 0; m < perClient; m++) {
      sends.push(client.send("load", `client ${c + 1} message ${m + 1}`).then(() => acked++));
      if (m % 100 === 99) await delay(1);
    }
    await Promise.all(sends);
    await client.close();
  }));
  return acked;
}

function assertExactlyOnce(records: ParsedLine[], clients: number, perClient: number): void {
  equal(records.length, clients * perClient);
  for (let c = 1; c <= clients; c++) {
    const ids = records.filter((r) => r.clientId === c).map((r) => r.msgId);
    deepStrictEqual(ids, Array.from({ length: perClient }, (_, i) => i + 1), `client ${c}`);
  }
}

Deno.test("rotation under load: files stay under FILE_MAX_BYTES, no record lost, split or doubled", async () => {
  const max = 40_000;
  await withServer({ FILE_MAX_BYTES: max, LOG_LEVEL: "info" }, async ({ port, dir }) => {
    equal(await load(port, 8, 2000), 16000);
    const { records, files } = await allRecords(dir);
    ok(files >= 10, `about 700 KB at 40 KB per file makes many files (${files})`);
    for await (const e of Deno.readDir(dir)) {
      if (!e.name.startsWith("messages.log") || e.name.includes(".sessions")) continue;
      const size = (await Deno.stat(`${dir}/${e.name}`)).size;
      ok(size <= max, `${e.name} is ${size} bytes`);
    }
    assertExactlyOnce(records, 8, 2000);
  });
});

Deno.test("reopen (SIGHUP) under load: the moved file and the new one hold every record once", async () => {
  await withServer({ LOG_LEVEL: "info" }, async ({ port, dir, file, server, logs }) => {
    const running = load(port, 8, 3000);
    // A reopen happens between batches: wait for each before the next rename, as logrotate's
    // next run would.
    const reopened = () => logs.filter((l) => l.includes("reopened the data file")).length;
    for (let i = 0; i < 5; i++) {
      await delay(20);
      await Deno.rename(file, `${file}.moved${i}`);
      server.reopen();
      for (let t = 0; t < 500 && reopened() <= i; t++) await delay(5);
    }
    equal(await running, 24000);
    equal(reopened(), 5);
    const { records, files } = await allRecords(dir);
    equal(files, 6);
    assertExactlyOnce(records, 8, 3000);
  });
});

Deno.test("a full disk mid-batch leaves no partial line, acks nothing of the batch, and serving resumes", async () => {
  equal(Deno.uid(), 0, "this test mounts a small tmpfs and must run as root (CI does)");
  const mount = await Deno.makeTempDir({ prefix: "msgserver_fs_" });
  const run = (args: string[]) => new Deno.Command(args[0]!, { args: args.slice(1) }).output();
  const mounted = await run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", mount]);
  equal(mounted.code, 0, new TextDecoder().decode(mounted.stderr));
  try {
    // Leave about 24 KiB free: 2,000 records of ~125 bytes cannot fit.
    const filler = `${mount}/filler`;
    await Deno.writeFile(filler, new Uint8Array(256 * 1024 - 24 * 1024));
    const file = `${mount}/messages.log`;
    await withServer({ FILE_NAME: file, MSG_PER_WRITE: 50 }, async ({ port, logs }) => {
      const client = await MsgClient.connect({ port, clientId: 5 });
      const payload = "x".repeat(100);
      const outcomes = await Promise.allSettled(
        Array.from({ length: 2000 }, () => client.send("disk", payload)),
      );
      const acked = outcomes.filter((o) => o.status === "fulfilled").length;
      const storage = outcomes.filter((o) =>
        o.status === "rejected" && o.reason instanceof NackError &&
        o.reason.code === NackCode.STORAGE_ERROR
      ).length;
      equal(acked + storage, 2000, "every message is either acked or refused with NACK 4");
      ok(acked > 0 && storage > 0, `acked ${acked}, refused ${storage}`);
      const records = await readRecords(file); // throws on a torn or malformed line
      equal(records.length, acked, "exactly the acked messages are in the file");
      const ackedIds = outcomes.flatMap((o, i) =>
        o.status === "fulfilled" ? [i + 1] : []
      );
      deepStrictEqual(records.map((r) => r.msgId), ackedIds);
      ok(logs.some((l) => l.includes("write failed")));
      ok(logs.some((l) => l.includes("refusing the batch with NACK 4")));

      await Deno.remove(filler);
      await client.send("disk", "after the disk has room again");
      await client.close();
      const after = await readRecords(file);
      equal(after.length, acked + 1);
      equal(new TextDecoder().decode(after.at(-1)!.payload), "after the disk has room again");
    });
  } finally {
    await run(["umount", mount]);
    await Deno.remove(mount, { recursive: true });
  }
});

Deno.test("records refused for storage after their connection left are not reported as delivered", async () => {
  const store = new FakeStore();
  store.failAppends = Infinity;
  await withServer({}, async ({ port, logs }) => {
    const first = await MsgClient.connect({ port, clientId: 6, session: 77n });
    const lost = [1, 2, 3].map((i) => first.send("s", `m${i}`).catch((e) => e));
    await delay(20);
    ok(!logs.some((l) => l.includes("refusing the batch")), "the connection leaves first");
    await first.close(); // leaves before the server gives up and sends NACK 4
    await Promise.all(lost);
    for (let i = 0; i < 100 && !logs.some((l) => l.includes("refusing the batch")); i++) {
      await delay(20);
    }
    ok(logs.some((l) => l.includes("refusing the batch")), "the batch was refused");
    store.failAppends = 0;
    const again = await MsgClient.connect({ port, clientId: 6, session: 77n });
    equal(again.lastMsgId, 0, "WELCOME reports exactly what is stored: nothing");
    await Promise.all([1, 2, 3].map((i) => again.send("s", `m${i}`, i)));
    await again.close();
    equal(store.segments.join(""), "6 1 s m1\n6 2 s m2\n6 3 s m3\n");
  }, { store });
});

Deno.test("a store's own record cap (maxBatchRecords) takes the place of MSG_PER_WRITE", async () => {
  const store = new FakeStore();
  store.maxBatchRecords = 3;
  let release!: () => void;
  store.gate = new Promise((r) => release = r); // the first batch waits while the rest queue
  await withServer({ MSG_PER_WRITE: 100 }, async ({ port, server }) => {
    const client = await MsgClient.connect({ port, clientId: 1 });
    const sent = Array.from({ length: 20 }, (_, i) => client.send("m", `x${i}`));
    while (server.stats().received < 20) await delay(5);
    store.gate = null;
    release();
    await Promise.all(sent);
    await client.close();
    const sizes = store.batches.map((b) => b.records);
    equal(sizes.reduce((a, b) => a + b, 0), 20);
    ok(sizes.every((n) => n <= 3), `batches of ${sizes.join(", ")}`);
    ok(sizes.includes(3), `batches of ${sizes.join(", ")}: the queue should fill some`);
  }, { store });
});
