import { deepStrictEqual, equal, ok, rejects } from "node:assert/strict";
import { ConnectionError, MsgClient, NackError } from "../src/client/client.ts";
import { closeQuietly } from "../src/io/close_quietly.ts";
import { concat } from "../src/io/concat.ts";
import { writeAll } from "../src/io/write_all.ts";
import {
  encodeAck,
  encodeError,
  encodeNack,
  encodeWelcome,
  ErrorCode,
  NackCode,
} from "../src/protocol/frames.ts";
import { readRecords, withServer } from "./support/server.ts";

/** A one-connection fake server that answers HELLO with `reply` (and reads whatever comes). */
async function withFakeServer(
  reply: Uint8Array,
  fn: (port: number) => Promise<void>,
): Promise<void> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = (async () => {
    const conn = await listener.accept();
    const buf = new Uint8Array(1024);
    await conn.read(buf); // the HELLO
    await writeAll(conn, reply);
    try {
      while (await conn.read(buf) !== null) { /* discard */ }
    } catch {
      // closed by the client
    }
    closeQuietly(conn);
  })();
  try {
    await fn(listener.addr.port);
  } finally {
    listener.close();
    await served;
  }
}

Deno.test("MsgClient: pipelined sends each resolve with the server's cumulative ACK", async () => {
  await withServer({}, async ({ port, file }) => {
    const client = await MsgClient.connect({ port, clientId: 9 });
    equal(client.lastMsgId, 0);
    equal(client.nextMsgId, 1);
    const sends = Array.from({ length: 50 }, (_, i) => client.send("c", `m${i + 1}`));
    ok(client.inFlight > 0);
    await Promise.all(sends);
    equal(client.inFlight, 0);
    await client.close();
    equal(await client.closed, null);
    deepStrictEqual((await readRecords(file)).map((r) => r.msgId), sends.map((_, i) => i + 1));
  });
});

Deno.test("MsgClient: a NACK rejects just its message with NackError, the rest go on", async () => {
  await withServer({ MAX_MESSAGE_BYTES: 10 }, async ({ port }) => {
    const client = await MsgClient.connect({ port, clientId: 1 });
    const ok1 = client.send("c", "short");
    const big = client.send("c", "far too long for ten bytes");
    const ok3 = client.send("c", "short");
    const refused = rejects(big, (e: unknown) => {
      ok(e instanceof NackError);
      equal(e.msgId, 2);
      equal(e.code, NackCode.PAYLOAD_TOO_LARGE);
      return true;
    });
    await Promise.all([ok1, refused, ok3]);
    await client.close();
  });
});

Deno.test("MsgClient: resuming a session continues above WELCOME.last_msg_id", async () => {
  await withServer({}, async ({ port }) => {
    const first = await MsgClient.connect({ port, clientId: 2, session: 99n });
    await Promise.all([first.send("c", "a"), first.send("c", "b")]);
    await first.close();
    const again = await MsgClient.connect({ port, clientId: 2, session: 99n });
    equal(again.lastMsgId, 2);
    equal(again.nextMsgId, 3);
    await again.close();
  });
});

Deno.test("MsgClient.connect rejects with the server's ERROR code when refused", async () => {
  await withServer({ AUTH_TOKEN: "secret" }, async ({ port }) => {
    await rejects(MsgClient.connect({ port, clientId: 1, token: "wrong" }), (e: unknown) => {
      ok(e instanceof ConnectionError);
      equal(e.code, ErrorCode.AUTH_FAILED);
      equal(e.message, "Server error 3: authentication failed");
      return true;
    });
  });
});

Deno.test("MsgClient: an ERROR later rejects what is in flight and resolves closed with it", async () => {
  await withFakeServer(
    concat([encodeWelcome(100, 0), encodeAck(1), encodeError(ErrorCode.TIMEOUT, "bye")]),
    async (port) => {
      const client = await MsgClient.connect({ port, clientId: 1 });
      // The ACK and ERROR came in the same segment as WELCOME: nothing after it is lost.
      const reason = await client.closed;
      equal(reason?.code, ErrorCode.TIMEOUT);
      await rejects(client.send("c", "x"), ConnectionError);
    },
  );
});

Deno.test("MsgClient.connect reports a malformed or unexpected reply as a ConnectionError", async () => {
  const shortWelcome = encodeWelcome(100, 0).slice(0, 9);
  shortWelcome[3] = 5; // a WELCOME whose body is 4 bytes
  for (
    const [reply, message] of [
      [
        shortWelcome,
        "Connection lost: bad reply: Cannot decode WELCOME: body is 4 bytes, at least 9",
      ],
      [encodeNack(1, 1, "x"), "Connection lost: expected WELCOME, got frame type 0x83"],
      [new Uint8Array([0, 0, 0, 0]), "Connection lost: bad reply: frame length is 0"],
    ] as const
  ) {
    await withFakeServer(reply, async (port) => {
      await rejects(MsgClient.connect({ port, clientId: 1 }), (e: unknown) => {
        ok(e instanceof ConnectionError);
        equal(e.code, 0);
        equal(e.message, message);
        return true;
      });
    });
  }
});

Deno.test("MsgClient.connect rejects when the server closes before WELCOME", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepting = listener.accept().then((c) => c.close());
  await rejects(
    MsgClient.connect({ port: listener.addr.port, clientId: 1 }),
    /Connection lost: closed before WELCOME|Connection reset/,
  );
  await accepting;
  listener.close();
});
