/**
 * The load tool's connection against a scripted server, for what a real one does only in a
 * failover: ERROR 8 with messages in flight, and the session resumed with a last_msg_id among
 * them.
 */

import { deepStrictEqual, equal } from "node:assert/strict";
import { LoadConnection } from "../../bench/load/connection.ts";
import { PhaseState } from "../../bench/load/phase.ts";
import { handshake } from "../../src/client/handshake.ts";
import { concat } from "../../src/io/concat.ts";
import { writeAll } from "../../src/io/write_all.ts";
import {
  encodeAck,
  encodeError,
  encodeMsg,
  encodeNack,
  encodeWelcome,
  ErrorCode,
  NackCode,
  readU32,
} from "../../src/protocol/frames.ts";
import { replyDecoder } from "../../src/protocol/replies.ts";

const PAYLOAD = new Uint8Array(10).fill(0x61);
/** The bytes of one of the tool's MSG frames (name "bench"). */
const MSG_BYTES = encodeMsg(1, new TextEncoder().encode("bench"), PAYLOAD).length;

async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const buf = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = await conn.read(buf.subarray(got));
    if (r === null) throw new Error(`closed after ${got} of ${n} bytes`);
    got += r;
  }
  return buf;
}

/** Reads HELLO and answers WELCOME with `lastMsgId`. */
async function welcome(conn: Deno.Conn, lastMsgId: number): Promise<void> {
  const length = readU32(await readExactly(conn, 4), 0);
  await readExactly(conn, length);
  await writeAll(conn, encodeWelcome(1024, lastMsgId, { version: 2, sessionState: 1 }));
}

/** Reads `count` MSG frames; returns their msg_ids. */
async function msgIds(conn: Deno.Conn, count: number): Promise<number[]> {
  const bytes = await readExactly(conn, count * MSG_BYTES);
  return Array.from({ length: count }, (_, i) => readU32(bytes, i * MSG_BYTES + 5));
}

Deno.test("LoadConnection resumes after ERROR 8: in flight up to last_msg_id acked, above it abandoned", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  const seen: number[][] = [];
  const server = (async () => {
    const first = await listener.accept();
    await welcome(first, 0);
    seen.push(await msgIds(first, 16)); // the whole window
    await writeAll(
      first,
      concat([
        encodeAck(4),
        encodeNack(5, NackCode.STORAGE_ERROR, "storage error"),
        encodeError(ErrorCode.UNAVAILABLE, "unavailable: storage failed, resume the session"),
      ]),
    );
    first.close();
    // The first attempt to resume finds the store not back yet; the second is welcomed at 8.
    const early = await listener.accept();
    await readExactly(early, 4).then((b) => readExactly(early, readU32(b, 0)));
    await writeAll(early, encodeError(ErrorCode.UNAVAILABLE, "unavailable: retry later"));
    early.close();
    const second = await listener.accept();
    await welcome(second, 8);
    seen.push(await msgIds(second, 4));
    await writeAll(second, encodeAck(20));
    return second;
  })();

  const open = async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const decoder = replyDecoder();
    const { lastMsgId } = await handshake(conn, decoder, { clientId: 1, session: 7n });
    return { conn, decoder, lastMsgId };
  };
  const phase = new PhaseState();
  phase.expect(1);
  const conn = new LoadConnection({
    ...await open(),
    phase,
    clientId: 1,
    quota: 20,
    window: 16,
    payload: PAYLOAD,
    resume: open,
  });
  conn.start();
  await phase.finished;
  const last = await server;
  conn.close();
  last.close();
  listener.close();

  deepStrictEqual(seen, [
    Array.from({ length: 16 }, (_, i) => i + 1),
    [17, 18, 19, 20],
  ], "sending goes on after the highest msg_id sent, not after last_msg_id");
  // 1..4 acked, 5 NACKed, 6..8 held by the server (WELCOME), 9..16 not, 17..20 acked.
  deepStrictEqual(
    [conn.acked, conn.nacked, conn.resumed, conn.refusedIds, conn.abandonedRanges],
    [11, 1, 1, [5], [{ first: 9, last: 16 }]],
  );
  deepStrictEqual(
    [phase.sent, phase.acked, phase.nacked, phase.abandoned, phase.resumed, phase.errorCount],
    [20, 11, 1, 8, 1, 0],
  );
  deepStrictEqual([conn.firstId, conn.settledThrough, conn.lastSent], [0, 20, 20]);
  equal(conn.done, true);
});

Deno.test("LoadConnection without a resume ends at ERROR 8 as at any ERROR", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const server = (async () => {
    const peer = await listener.accept();
    await welcome(peer, 0);
    await msgIds(peer, 4);
    await writeAll(peer, encodeError(ErrorCode.UNAVAILABLE, "unavailable"));
    peer.close();
  })();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const decoder = replyDecoder();
  const { lastMsgId } = await handshake(conn, decoder, { clientId: 2, session: 9n });
  const phase = new PhaseState();
  phase.expect(1);
  const load = new LoadConnection({
    conn,
    decoder,
    lastMsgId,
    phase,
    clientId: 2,
    quota: 4,
    window: 4,
    payload: PAYLOAD,
  });
  load.start();
  await phase.finished;
  await server;
  listener.close();
  deepStrictEqual([phase.errorCount, phase.resumed, phase.errors], [1, 0, [
    "client 2: ERROR 8: unavailable",
  ]]);
});
