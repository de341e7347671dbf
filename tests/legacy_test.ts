import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { MsgClient } from "../src/client/client.ts";
import { legacyFrame, LegacyPeer } from "./support/legacy_peer.ts";
import { concat } from "../src/io/concat.ts";
import { delay } from "../src/io/within.ts";
import { freePort } from "./support/net.ts";
import { readRecords, readText, type TestServer, withServer } from "./support/server.ts";

function withLegacy(fn: (t: TestServer & { legacyPort: number }) => Promise<void>) {
  return withServer(
    { LEGACY_PORT: freePort() },
    (t) => fn({ ...t, legacyPort: t.server.legacyAddr!.port }),
  );
}

Deno.test("a legacy frame is written like a native message and answered with 'ack'", async () => {
  await withLegacy(async ({ legacyPort, file }) => {
    const peer = await LegacyPeer.connect(legacyPort);
    await peer.write(legacyFrame(7, 1, "client_7", "hello from C++"));
    equal(await peer.acks(1), "ack");
    peer.close();
    equal(await readText(file), "7 1 client_7 hello from C++\n");
  });
});

Deno.test("pipelined legacy frames get one 'ack' each, in order, and every line", async () => {
  await withLegacy(async ({ legacyPort, file }) => {
    const peer = await LegacyPeer.connect(legacyPort);
    const frames = [];
    for (let i = 1; i <= 300; i++) frames.push(legacyFrame(3, i, "bulk", `m${i}\nwith\\escapes`));
    await peer.write(concat(frames));
    equal(await peer.acks(300), "ack".repeat(300));
    peer.close();
    const records = await readRecords(file);
    deepStrictEqual(records.map((r) => r.msgId), Array.from({ length: 300 }, (_, i) => i + 1));
    equal(new TextDecoder().decode(records[9]!.payload), "m10\nwith\\escapes");
  });
});

Deno.test("a legacy frame split into single bytes is decoded whole", async () => {
  await withLegacy(async ({ legacyPort, file }) => {
    const peer = await LegacyPeer.connect(legacyPort);
    const bytes = concat([legacyFrame(1, 1, "a", "one"), legacyFrame(1, 2, "a", "two")]);
    for (let i = 0; i < bytes.length; i++) {
      await peer.write(bytes.subarray(i, i + 1));
      if (i % 64 === 0) await delay(0);
    }
    equal(await peer.acks(2), "ackack");
    peer.close();
    equal(await readText(file), "1 1 a one\n1 2 a two\n");
  });
});

Deno.test("a legacy name that cannot be a field is written as '-'", async () => {
  await withLegacy(async ({ legacyPort, file, logs }) => {
    const peer = await LegacyPeer.connect(legacyPort);
    await peer.write(concat([
      legacyFrame(2, 1, "", "empty name"),
      legacyFrame(2, 2, "two words", "space"),
      legacyFrame(2, 3, "tab\there", "tab"),
      legacyFrame(2, 4, "fine", ""),
    ]));
    equal(await peer.acks(4), "ack".repeat(4));
    peer.close();
    equal(await readText(file), "2 1 - empty name\n2 2 - space\n2 3 - tab\n2 4 fine \n");
    ok(logs.some((l) => l.includes("legacy name replaced")));
  });
});

Deno.test("1,000 concurrent legacy connections with 6 messages each: every line once", async () => {
  await withServer({ LEGACY_PORT: freePort(), LOG_LEVEL: "info" }, async ({ server, file }) => {
    const port = server.legacyAddr!.port;
    const peers = await Promise.all(Array.from({ length: 1000 }, () => LegacyPeer.connect(port)));
    await Promise.all(peers.map(async (peer, i) => {
      const frames = [];
      for (let m = 1; m <= 6; m++) frames.push(legacyFrame(i + 1, m, `client_${i + 1}`, `m${m}`));
      await peer.write(concat(frames));
      equal(await peer.acks(6), "ack".repeat(6));
      peer.close();
    }));
    const records = await readRecords(file);
    equal(records.length, 6000);
    equal(new Set(records.map((r) => `${r.clientId}/${r.msgId}`)).size, 6000);
  });
});

Deno.test("legacy and native clients at once: every record present exactly once", async () => {
  await withLegacy(async ({ legacyPort, port, file }) => {
    const legacy = Array.from({ length: 20 }, async (_, i) => {
      const peer = await LegacyPeer.connect(legacyPort);
      const frames = [];
      for (let m = 1; m <= 200; m++) frames.push(legacyFrame(1000 + i, m, "legacy", `L${m}`));
      await peer.write(concat(frames));
      await peer.acks(200);
      peer.close();
    });
    const native = Array.from({ length: 20 }, async (_, i) => {
      const client = await MsgClient.connect({ port, clientId: 2000 + i });
      await Promise.all(Array.from({ length: 200 }, (_, m) => client.send("native", `N${m + 1}`)));
      await client.close();
    });
    await Promise.all([...legacy, ...native]);
    const records = await readRecords(file);
    equal(records.length, 8000);
    const keys = new Set(records.map((r) => `${r.clientId}/${r.msgId}`));
    equal(keys.size, 8000);
    for (let i = 0; i < 20; i++) {
      const mine = records.filter((r) => r.clientId === 1000 + i).map((r) => r.msgId);
      deepStrictEqual(mine, Array.from({ length: 200 }, (_, m) => m + 1), "legacy order kept");
    }
  });
});

Deno.test("a legacy connection past MAX_CONNECTIONS is closed without a reply", async () => {
  await withServer({ LEGACY_PORT: freePort(), MAX_CONNECTIONS: 1 }, async ({ server, port }) => {
    const native = await MsgClient.connect({ port, clientId: 1 });
    const peer = await LegacyPeer.connect(server.legacyAddr!.port);
    const buf = new Uint8Array(16);
    equal(await peer.conn.read(buf), null);
    peer.close();
    await native.close();
  });
});
