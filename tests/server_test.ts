// The server's behaviour over real sockets, one case per test: frames, codes, limits and files
// (over 400 lines as a catalogue of cases).
import { deepStrictEqual, equal, match, ok, rejects } from "node:assert/strict";
import { ConnectionError, MsgClient, NackError } from "../src/client/client.ts";
import {
  encodeHello,
  encodeMsg,
  encodeWelcome,
  ErrorCode,
  FrameType,
  NackCode,
} from "../src/protocol/frames.ts";
import { concat } from "../src/io/concat.ts";
import { delay } from "../src/io/within.ts";
import { describeFrame, RawPeer } from "./support/raw_peer.ts";
import { readRecords, readText, withServer } from "./support/server.ts";

const enc = new TextEncoder();

Deno.test("a message round trip leaves its line in the file and acks it", async () => {
  await withServer({}, async ({ port, file }) => {
    const client = await MsgClient.connect({ port, clientId: 1 });
    equal(client.lastMsgId, 0);
    await client.send("client_1", "hi");
    await client.send("client_1", "hello");
    await client.close();
    equal(await readText(file), "1 1 client_1 hi\n1 2 client_1 hello\n");
  });
});

Deno.test("the file holds the exact bytes, escapes included, and reads back to the payloads", async () => {
  await withServer({}, async ({ port, file }) => {
    const payloads = [
      enc.encode("back\\slash"),
      enc.encode("line\nfeed"),
      enc.encode("carriage\rreturn"),
      enc.encode("\\n is not a line feed"),
      new Uint8Array([0, 1, 2, 0x7f, 0x80, 0xff, 0x09, 0x20]),
      new Uint8Array(0),
      enc.encode("ünïcödé ✓"),
    ];
    const client = await MsgClient.connect({ port, clientId: 42 });
    await Promise.all(payloads.map((p) => client.send("name-é", p)));
    await client.close();
    const bytes = await Deno.readFile(file);
    const expected = concat([
      enc.encode("42 1 name-é back\\\\slash\n"),
      enc.encode("42 2 name-é line\\nfeed\n"),
      enc.encode("42 3 name-é carriage\\rreturn\n"),
      enc.encode("42 4 name-é \\\\n is not a line feed\n"),
      enc.encode("42 5 name-é "),
      new Uint8Array([0, 1, 2, 0x7f, 0x80, 0xff, 0x09, 0x20, 0x0a]),
      enc.encode("42 6 name-é \n"),
      enc.encode("42 7 name-é ünïcödé ✓\n"),
    ]);
    deepStrictEqual(bytes, expected);
    const records = await readRecords(file);
    deepStrictEqual(records.map((r) => r.payload), payloads);
  });
});

Deno.test("a frame split into single bytes across writes is decoded whole", async () => {
  await withServer({}, async ({ port, file }) => {
    const peer = await RawPeer.connect(port);
    const bytes = concat([
      encodeHello({ clientId: 5, session: 0n }),
      encodeMsg(1, "split", "one byte at a time"),
    ]);
    for (const b of bytes) {
      await peer.write(new Uint8Array([b]));
      await delay(1);
    }
    equal(describeFrame(await peer.read()), "WELCOME v2 max=1048576 last=0 unknown");
    equal(describeFrame(await peer.read()), "ACK 1");
    peer.close();
    equal(await readText(file), "5 1 split one byte at a time\n");
  });
});

Deno.test("many frames in one write are all written and covered by acks", async () => {
  await withServer({}, async ({ port, file }) => {
    const frames = [encodeHello({ clientId: 9, session: 0n })];
    for (let i = 1; i <= 500; i++) frames.push(encodeMsg(i, "bulk", `message ${i}`));
    const peer = await RawPeer.connect(port);
    await peer.write(concat(frames));
    equal(describeFrame(await peer.read()), "WELCOME v2 max=1048576 last=0 unknown");
    let acked = 0;
    while (acked < 500) {
      const frame = await peer.read();
      equal(frame.type, FrameType.ACK);
      const id = new DataView(frame.body.buffer).getUint32(0);
      ok(id > acked, `acks rise: ${id} after ${acked}`);
      acked = id;
    }
    peer.close();
    const records = await readRecords(file);
    deepStrictEqual(records.map((r) => r.msgId), Array.from({ length: 500 }, (_, i) => i + 1));
    ok(records.every((r, i) => new TextDecoder().decode(r.payload) === `message ${i + 1}`));
  });
});

Deno.test("1,000 concurrent connections with 6 messages each: every line once, every ack", async () => {
  await withServer({ LOG_LEVEL: "info" }, async ({ port, file }) => {
    const clients = await Promise.all(
      Array.from({ length: 1000 }, (_, i) => MsgClient.connect({ port, clientId: i + 1 })),
    );
    let acks = 0;
    await Promise.all(clients.map(async (c, i) => {
      const sends = [];
      for (let m = 1; m <= 6; m++) {
        sends.push(c.send(`client_${i + 1}`, `m${m}`).then(() => acks++));
      }
      await Promise.all(sends);
    }));
    equal(acks, 6000);
    await Promise.all(clients.map((c) => c.close()));
    const records = await readRecords(file);
    equal(records.length, 6000);
    const seen = new Set(records.map((r) => `${r.clientId}/${r.msgId}`));
    equal(seen.size, 6000);
    const lastPerClient = new Map<number, number>();
    for (const r of records) {
      ok((lastPerClient.get(r.clientId) ?? 0) < r.msgId, "each client's ids rise in the file");
      lastPerClient.set(r.clientId, r.msgId);
      equal(new TextDecoder().decode(r.payload), `m${r.msgId}`);
      equal(r.name, `client_${r.clientId}`);
    }
  });
});

for (const mode of ["received", "written", "durable"] as const) {
  Deno.test(`ACK_MODE=${mode} acks every message and writes it`, async () => {
    await withServer({ ACK_MODE: mode }, async ({ port, file, server }) => {
      const client = await MsgClient.connect({ port, clientId: 3 });
      await Promise.all(Array.from({ length: 300 }, (_, i) => client.send("mode", `p${i}`)));
      await client.close();
      if (mode === "received") {
        // Acked on receipt: the write may still be under way.
        for (let i = 0; i < 100 && server.stats().writer.records < 300; i++) await delay(10);
      }
      equal(server.stats().writer.records, 300);
      equal((await readRecords(file)).length, 300);
    });
  });
}

Deno.test("ACK_MODE=written acks only what is already in the file", async () => {
  await withServer({ ACK_MODE: "written" }, async ({ port, file }) => {
    const client = await MsgClient.connect({ port, clientId: 8 });
    for (let i = 1; i <= 50; i++) {
      await client.send("check", `n${i}`);
      const lines = (await readText(file)).split("\n").filter((l) => l !== "");
      equal(lines.length, i, `after ack ${i} the file has ${i} lines`);
    }
    await client.close();
  });
});

Deno.test("MSG_PER_WRITE caps a batch and FLUSH_INTERVAL_MS waits to fill one", async () => {
  await withServer({ MSG_PER_WRITE: 10, FLUSH_INTERVAL_MS: 50 }, async ({ port, server }) => {
    const client = await MsgClient.connect({ port, clientId: 2 });
    const started = performance.now();
    await client.send("batch", "lonely");
    const waited = performance.now() - started;
    ok(waited >= 40, `a lone message waits for the flush interval (${waited} ms)`);
    await Promise.all(Array.from({ length: 100 }, () => client.send("batch", "x")));
    await client.close();
    const { writer } = server.stats();
    equal(writer.records, 101);
    ok(writer.batches >= 11, `100 messages at 10 per write need 10 or more batches`);
  });
});

Deno.test("MSG_PER_WRITE is a hard cap: no batch holds one record more", async () => {
  // 16 is a bucket bound of the batch-size histogram, so a batch of 17 lands in the next bucket.
  await withServer({ MSG_PER_WRITE: 16, FLUSH_INTERVAL_MS: 50 }, async ({ port, server }) => {
    const client = await MsgClient.connect({ port, clientId: 2 });
    await Promise.all(Array.from({ length: 160 }, () => client.send("batch", "x")));
    await client.close();
    const { writer } = server.stats();
    equal(writer.records, 160);
    ok(writer.batches >= 10, `160 messages at 16 per write need 10 or more batches`);
    const over = writer.batchSize.counts.slice(3).reduce((a, b) => a + b, 0);
    equal(over, 0, `batches of more than 16 records: ${writer.batchSize.counts}`);
  });
});

Deno.test("NACK 1: a payload over MAX_MESSAGE_BYTES is refused and the connection goes on", async () => {
  await withServer({ MAX_MESSAGE_BYTES: 100 }, async ({ port, file }) => {
    const client = await MsgClient.connect({ port, clientId: 1 });
    equal(client.maxMessageBytes, 100);
    const big = client.send("n", "x".repeat(101)); // buffered whole, then refused
    const huge = client.send("n", "y".repeat(1500)); // past the frame limit: skipped as it streams
    const fine = client.send("n", "z".repeat(100));
    await rejects(big, (e) => e instanceof NackError && e.code === NackCode.PAYLOAD_TOO_LARGE);
    await rejects(huge, (e) => e instanceof NackError && e.code === NackCode.PAYLOAD_TOO_LARGE);
    await fine;
    await client.close();
    equal(await readText(file), `1 3 n ${"z".repeat(100)}\n`);
  });
});

Deno.test("NACK 2: a bad name is refused and the connection goes on", async () => {
  await withServer({}, async ({ port, file }) => {
    const client = await MsgClient.connect({ port, clientId: 1 });
    const results = await Promise.allSettled([
      client.send("has space", "a"),
      client.send("", "b"),
      client.send("tab\there", "c"),
      client.send(new Uint8Array([0xff, 0xfe]), "d"),
      client.send("nbsp\u00a0", "e"),
      client.send("good", "f"),
    ]);
    deepStrictEqual(
      results.map((r) => r.status === "fulfilled" ? "ok" : (r.reason as NackError).code),
      [2, 2, 2, 2, 2, "ok"],
    );
    await client.close();
    equal(await readText(file), "1 6 good f\n");
  });
});

Deno.test("NACK 3: a msg_id not above the last accepted one is a duplicate, not written again", async () => {
  await withServer({}, async ({ port, file }) => {
    const { peer, welcome } = await RawPeer.hello(port, 4);
    equal(welcome, "WELCOME v2 max=1048576 last=0 unknown");
    await peer.write(
      concat([
        encodeMsg(5, "d", "five"),
        encodeMsg(5, "d", "again"),
        encodeMsg(3, "d", "old"),
        encodeMsg(6, "d", "six"),
      ]),
    );
    const got: string[] = [];
    while (got.length < 3 || !got.includes("ACK 6")) got.push(describeFrame(await peer.read()));
    ok(got.includes("NACK 5 3 duplicate: msg_id 5 is not above 5"), got.join("; "));
    ok(got.includes("NACK 3 3 duplicate: msg_id 3 is not above 5"), got.join("; "));
    peer.close();
    equal(await readText(file), "4 5 d five\n4 6 d six\n");
  });
});

Deno.test("a session remembers its last msg_id across connections", async () => {
  await withServer({}, async ({ port, file }) => {
    const first = await MsgClient.connect({ port, clientId: 7, session: 99n });
    equal(first.lastMsgId, 0);
    await Promise.all([1, 2, 3].map(() => first.send("s", "x")));
    await first.close();
    const second = await MsgClient.connect({ port, clientId: 7, session: 99n });
    equal(second.lastMsgId, 3);
    equal(second.nextMsgId, 4);
    await rejects(second.send("s", "resent", 3), (e) => e instanceof NackError && e.code === 3);
    await second.send("s", "four");
    await second.close();
    const other = await MsgClient.connect({ port, clientId: 8, session: 99n });
    equal(other.lastMsgId, 0, "sessions are per client_id");
    await other.close();
    const zero = await MsgClient.connect({ port, clientId: 7, session: 0n });
    equal(zero.lastMsgId, 0, "session 0 is private to its connection");
    await zero.close();
    equal((await readRecords(file)).map((r) => r.msgId).join(","), "1,2,3,4");
  });
});

Deno.test("ERROR 7: a second HELLO for an open session takes it over", async () => {
  await withServer({}, async ({ port, file }) => {
    const old = await RawPeer.hello(port, 11, 5n);
    await old.peer.write(encodeMsg(1, "t", "from old"));
    equal(describeFrame(await old.peer.read()), "ACK 1");
    const fresh = await RawPeer.hello(port, 11, 5n);
    equal(fresh.welcome, "WELCOME v2 max=1048576 last=1 known");
    deepStrictEqual(await old.peer.readUntilClose(), ["ERROR 7 session taken over"]);
    await fresh.peer.write(encodeMsg(2, "t", "from new"));
    equal(describeFrame(await fresh.peer.read()), "ACK 2");
    fresh.peer.close();
    equal(await readText(file), "11 1 t from old\n11 2 t from new\n");
  });
});

Deno.test("ERROR 1: protocol violations close the connection, others keep being served", async () => {
  await withServer({}, async ({ port, file }) => {
    const honest = await MsgClient.connect({ port, clientId: 100 });
    const cases: [string, Uint8Array, string][] = [
      ["MSG before HELLO", encodeMsg(1, "a", "b"), "ERROR 1 protocol violation: MSG before HELLO"],
      [
        "unknown type",
        new Uint8Array([0, 0, 0, 1, 0x07]),
        "ERROR 1 protocol violation: unknown frame type 0x07",
      ],
      [
        "length 0",
        new Uint8Array([0, 0, 0, 0, 1]),
        "ERROR 1 protocol violation: frame length is 0",
      ],
      [
        "giant length",
        new Uint8Array([0xff, 0xff, 0xff, 0xff, 2]),
        "ERROR 1 protocol violation: frame length 4294967295 is over the limit",
      ],
      [
        "second HELLO",
        concat([
          encodeHello({ clientId: 1, session: 0n }),
          encodeHello({ clientId: 1, session: 0n }),
        ]),
        "ERROR 1 protocol violation: HELLO after HELLO",
      ],
      [
        "MSG too short",
        concat([encodeHello({ clientId: 1, session: 0n }), new Uint8Array([0, 0, 0, 3, 2, 0, 0])]),
        "ERROR 1 protocol violation: MSG frame too short for its name (length 3)",
      ],
      [
        "name_len past the frame",
        concat([
          encodeHello({ clientId: 1, session: 0n }),
          new Uint8Array([0, 0, 0, 7, 2, 0, 0, 0, 1, 9, 0x41]),
        ]),
        "ERROR 1 protocol violation: MSG frame too short for its name (length 7)",
      ],
      [
        "HELLO too short",
        new Uint8Array([0, 0, 0, 3, 1, 1, 0]),
        "ERROR 1 protocol violation: HELLO body is 2 bytes, at least 15",
      ],
      [
        "server frame type from a client",
        new Uint8Array([0, 0, 0, 5, 0x82, 0, 0, 0, 1]),
        "ERROR 1 protocol violation: unknown frame type 0x82",
      ],
    ];
    for (const [what, bytes, expected] of cases) {
      const peer = await RawPeer.connect(port);
      await peer.write(bytes);
      const frames = await peer.readUntilClose();
      equal(frames.at(-1), expected, what);
      peer.close();
      await honest.send("honest", what);
    }
    await honest.close();
    equal((await readRecords(file)).length, cases.length);
  });
});

Deno.test("ERROR 2: an unsupported version is refused", async () => {
  await withServer({}, async ({ port }) => {
    for (const version of [0, 3]) {
      const peer = await RawPeer.connect(port);
      await peer.write(encodeHello({ clientId: 1, session: 0n, version }));
      deepStrictEqual(await peer.readUntilClose(), [
        `ERROR 2 unsupported version ${version}; this server speaks 1 to 2`,
      ]);
      peer.close();
    }
  });
});

Deno.test("a version 1 client gets exactly the version 1 WELCOME, for a new and a known session", async () => {
  await withServer({}, async ({ port }) => {
    for (const last of [0, 1]) {
      const peer = await RawPeer.connect(port);
      await peer.write(encodeHello({ clientId: 1, session: 77n, version: 1 }));
      const welcome = await peer.read();
      deepStrictEqual(
        new Uint8Array([0, 0, 0, welcome.body.length + 1, welcome.type, ...welcome.body]),
        encodeWelcome(1048576, last), // 9 body bytes, version 1, no session_state
      );
      if (last === 0) {
        await peer.write(encodeMsg(1, "v1", "old client"));
        equal(describeFrame(await peer.read()), "ACK 1");
      }
      peer.close();
    }
  });
});

Deno.test("ERROR 3: a wrong or missing token is refused, the right one is let in", async () => {
  await withServer({ AUTH_TOKEN: "s3cret-token" }, async ({ port, logs }) => {
    await rejects(
      MsgClient.connect({ port, clientId: 1, token: "wrong" }),
      (e) => e instanceof ConnectionError && e.code === ErrorCode.AUTH_FAILED,
    );
    await rejects(
      MsgClient.connect({ port, clientId: 1 }),
      (e) => e instanceof ConnectionError && e.code === ErrorCode.AUTH_FAILED,
    );
    const client = await MsgClient.connect({ port, clientId: 1, token: "s3cret-token" });
    await client.send("auth", "in");
    await client.close();
    ok(!logs.some((l) => l.includes("s3cret")), "the token never appears in a log line");
  });
});

Deno.test("ERROR 4: the connection past MAX_CONNECTIONS is refused", async () => {
  await withServer({ MAX_CONNECTIONS: 2 }, async ({ port, server }) => {
    const a = await MsgClient.connect({ port, clientId: 1 });
    const b = await MsgClient.connect({ port, clientId: 2 });
    await rejects(
      MsgClient.connect({ port, clientId: 3 }),
      (e) => e instanceof ConnectionError && e.code === ErrorCode.TOO_MANY_CONNECTIONS,
    );
    await a.send("still", "served");
    await a.close();
    // close() does not wait for the server to free the slot: wait for that, not a fixed time.
    for (let i = 0; i < 250 && server.stats().connectionsOpen >= 2; i++) await delay(20);
    const c = await MsgClient.connect({ port, clientId: 3 });
    await c.send("room", "again");
    await Promise.all([b.close(), c.close()]);
  });
});

Deno.test("ERROR 5: a connection that never says HELLO is cut by HANDSHAKE_TIMEOUT_MS", async () => {
  await withServer({ HANDSHAKE_TIMEOUT_MS: 100 }, async ({ port }) => {
    const peer = await RawPeer.connect(port);
    const started = performance.now();
    deepStrictEqual(await peer.readUntilClose(), ["ERROR 5 timeout: no HELLO within 100 ms"]);
    ok(performance.now() - started < 2000);
  });
});

Deno.test("ERROR 5: a silent connection is cut by IDLE_TIMEOUT_MS", async () => {
  await withServer({ IDLE_TIMEOUT_MS: 150 }, async ({ port }) => {
    const { peer } = await RawPeer.hello(port, 1);
    deepStrictEqual(await peer.readUntilClose(), ["ERROR 5 timeout: idle for 150 ms"]);
  });
});

Deno.test("a hostile peer's garbage does not touch the file or other clients", async () => {
  await withServer({}, async ({ port, file }) => {
    const honest = await MsgClient.connect({ port, clientId: 77 });
    let seed = 12345;
    const random = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
    for (let i = 0; i < 50; i++) {
      const peer = await RawPeer.connect(port);
      const noise = new Uint8Array(1 + Math.floor(random() * 200));
      for (let j = 0; j < noise.length; j++) noise[j] = Math.floor(random() * 256);
      // Half the peers get past HELLO first, so the noise hits the MSG path too.
      const junk = i % 2 === 0
        ? concat([encodeHello({ clientId: 666, session: 0n }), noise])
        : noise;
      await peer.write(junk).catch(() => {});
      peer.close();
      await honest.send("honest", `after ${i}`);
    }
    await honest.close();
    const records = await readRecords(file);
    ok(records.every((r) => r.clientId === 77 || r.clientId === 666));
    equal(records.filter((r) => r.clientId === 77).length, 50);
  });
});

// Shutdown (everything queued is stored and acked, then ERROR 6) is in connection_kinds_test.ts,
// for both kinds of connection, with the store held so that work is surely queued.

Deno.test("a torn last line left by a crash is moved aside at start", async () => {
  const dir = await Deno.makeTempDir();
  const file = `${dir}/messages.log`;
  await Deno.writeTextFile(file, "1 1 a whole\n1 2 a torn li");
  try {
    const { startServer } = await import("../src/server/server.ts");
    const { DEFAULTS } = await import("../src/config.ts");
    const { Logger } = await import("../src/log.ts");
    const logs: string[] = [];
    const server = await startServer({ ...DEFAULTS, PORT: 0, FILE_NAME: file }, {
      log: new Logger("info", (l) => logs.push(l)),
    });
    const client = await MsgClient.connect({ port: server.addr.port, clientId: 1 });
    await client.send("a", "next");
    await client.close();
    await server.shutdown();
    equal(await Deno.readTextFile(file), "1 1 a whole\n1 1 a next\n");
    equal(await Deno.readTextFile(`${file}.torn`), "1 2 a torn li");
    ok(logs.some((l) => l.includes("torn") && l.includes("bytes=13")), logs.join(""));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a new data file is created with mode 0640", async () => {
  await withServer({}, async ({ file }) => {
    const mode = (await Deno.stat(file)).mode! & 0o777;
    match(mode.toString(8), /^6[04]0$/, "umask may only take bits away");
    equal(mode & 0o137, 0);
  });
});

Deno.test("binding beyond loopback without AUTH_TOKEN logs a warning; with a token it does not", async () => {
  await withServer({ IP: "0.0.0.0" }, ({ logs }) => {
    ok(logs.some((l) => l.includes("WARN listening beyond loopback without AUTH_TOKEN")));
  });
  await withServer({ IP: "0.0.0.0", AUTH_TOKEN: "t" }, ({ logs }) => {
    ok(!logs.some((l) => l.includes("without AUTH_TOKEN")), logs.join(""));
  });
  await withServer({}, ({ logs }) => {
    ok(!logs.some((l) => l.includes("without AUTH_TOKEN")), "loopback is fine without a token");
  });
});

Deno.test("ERROR 5: a peer trickling a frame byte by byte is cut by IDLE_TIMEOUT_MS", async () => {
  await withServer({ IDLE_TIMEOUT_MS: 300 }, async ({ port }) => {
    const { peer } = await RawPeer.hello(port, 1);
    const frame = encodeMsg(1, "slow", "x".repeat(100));
    const trickle = (async () => {
      for (const b of frame) {
        await delay(50);
        if (await peer.write(new Uint8Array([b])).then(() => false, () => true)) return;
      }
    })();
    deepStrictEqual(await peer.readUntilClose(), ["ERROR 5 timeout: idle for 300 ms"]);
    await trickle;
  });
});

Deno.test("ERROR 1 is decided from the header: a big MSG before HELLO is refused before its body", async () => {
  await withServer({ AUTH_TOKEN: "secret" }, async ({ port }) => {
    const peer = await RawPeer.connect(port);
    await peer.write(new Uint8Array([0, 0x10, 0, 0, 0x02])); // a 1 MiB MSG, header only
    deepStrictEqual(await peer.readUntilClose(), ["ERROR 1 protocol violation: MSG before HELLO"]);
  });
});

Deno.test("ERROR 1: msg_id 0 is refused (ids start at 1), not taken for a duplicate", async () => {
  await withServer({}, async ({ port }) => {
    const { peer } = await RawPeer.hello(port, 1);
    await peer.write(encodeMsg(0, "zero", "x"));
    deepStrictEqual(await peer.readUntilClose(), [
      "ERROR 1 protocol violation: msg_id 0 (ids start at 1)",
    ]);
  });
});

Deno.test("a session in use is never forgotten, even past MAX_SESSIONS", async () => {
  await withServer({ MAX_SESSIONS: 1 }, async ({ port, file }) => {
    const a = await RawPeer.hello(port, 1, 77n);
    await a.peer.write(concat([encodeMsg(1, "a", "one"), encodeMsg(2, "a", "two")]));
    equal(describeFrame(await a.peer.read()), "ACK 2");
    const other = await MsgClient.connect({ port, clientId: 2, session: 5n });
    await other.close();
    const b = await RawPeer.hello(port, 1, 77n);
    equal(b.welcome, "WELCOME v2 max=1048576 last=2 known", "the session was remembered");
    deepStrictEqual(await a.peer.readUntilClose(), ["ERROR 7 session taken over"]);
    await b.peer.write(encodeMsg(1, "a", "resent"));
    equal(describeFrame(await b.peer.read()), "NACK 1 3 duplicate: msg_id 1 is not above 2");
    b.peer.close();
    equal(await readText(file), "1 1 a one\n1 2 a two\n");
  });
});
