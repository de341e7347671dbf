/**
 * The last replies survive the close: a server that closes a socket with unread input resets the
 * connection, and many client stacks then drop the replies they had already received. After its
 * last frame the server half-closes and reads on until the peer closes, so a peer that is still
 * sending when the goodbye comes reads every frame, then a clean end of stream.
 */

import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { concat } from "../src/io/concat.ts";
import { delay } from "../src/io/within.ts";
import { writeAll } from "../src/io/write_all.ts";
import { Decoded } from "../src/protocol/decoder.ts";
import { encodeHello, encodeMsg, ErrorCode, FrameType } from "../src/protocol/frames.ts";
import { decodeAck, decodeError, replyDecoder } from "../src/protocol/replies.ts";
import { freePort } from "./support/net.ts";
import { withServer } from "./support/server.ts";
import { legacyFrame } from "./support/legacy_peer.ts";

/**
 * Writes `chunk` over and over until `until` resolves. Resolves with the error a write met, or
 * null: a write that fails means the server reset the connection, and a client stack such as
 * Python's asyncio then drops the replies it had received but not yet read.
 */
async function keepSending(
  conn: Deno.Conn,
  chunk: Uint8Array,
  until: Promise<void>,
): Promise<string | null> {
  let done = false;
  until.then(() => done = true);
  while (!done) {
    try {
      await writeAll(conn, chunk);
    } catch (e) {
      return (e as Error).name;
    }
    await delay(1);
  }
  return null;
}

/** Reads everything until the end; says whether it ended cleanly ("eof") or was reset. */
async function readAll(conn: Deno.Conn): Promise<{ bytes: Uint8Array; end: "eof" | "reset" }> {
  const parts: Uint8Array[] = [];
  const buf = new Uint8Array(65536);
  for (;;) {
    let n: number | null;
    try {
      n = await conn.read(buf);
    } catch (e) {
      if (e instanceof Deno.errors.ConnectionReset) return { bytes: concat(parts), end: "reset" };
      throw e;
    }
    if (n === null) return { bytes: concat(parts), end: "eof" };
    parts.push(buf.slice(0, n));
  }
}

/** The frames in `bytes`, as "ACK n" / "ERROR c" / "WELCOME". */
function frames(bytes: Uint8Array): string[] {
  const d = replyDecoder();
  d.readTarget(); // the decoder grows to fit the whole stream below
  const out: string[] = [];
  let at = 0;
  while (at < bytes.length) {
    const target = d.readTarget();
    const n = Math.min(target.length, bytes.length - at);
    target.set(bytes.subarray(at, at + n));
    d.commit(n);
    at += n;
    for (let r = d.next(); r !== Decoded.NEED_MORE; r = d.next()) {
      equal(r, Decoded.FRAME, d.error);
      const { buffer: b, bodyStart: s, frameEnd: e } = d;
      if (d.type === FrameType.ACK) out.push(`ACK ${decodeAck(b, s, e)}`);
      else if (d.type === FrameType.ERROR) out.push(`ERROR ${decodeError(b, s, e).code}`);
      else out.push(d.type === FrameType.WELCOME ? "WELCOME" : `0x${d.type.toString(16)}`);
    }
  }
  return out;
}

Deno.test("shutdown: a peer still sending when ERROR 6 comes reads its acks, ERROR 6, then a clean end", async () => {
  await withServer({}, async ({ port, server }) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(conn, encodeHello({ clientId: 1, session: 0n }));
    await writeAll(conn, concat(Array.from({ length: 50 }, (_, i) => encodeMsg(i + 1, "n", "m"))));
    while (server.stats().acked < 50) await delay(5);
    // From now on the peer only sends (bytes after shutdown began are not read as messages).
    let stop!: () => void;
    const stopped = new Promise<void>((r) => stop = r);
    const sending = keepSending(conn, new Uint8Array(16 * 1024).fill(7), stopped);
    const shutdown = server.shutdown();
    await delay(500); // the server has sent ERROR 6 and half-closed; the peer is still writing
    stop();
    equal(await sending, null, "the server reset the connection while the peer was still sending");
    const { bytes, end } = await readAll(conn);
    conn.close();
    await shutdown;
    const seen = frames(bytes);
    deepStrictEqual(seen.slice(-2), ["ACK 50", `ERROR ${ErrorCode.SHUTTING_DOWN}`]);
    equal(end, "eof", "the connection was reset under the last replies");
  });
});

Deno.test("ERROR 1: a peer still sending after a protocol violation reads the ERROR, then a clean end", async () => {
  await withServer({}, async ({ port }) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(conn, encodeHello({ clientId: 1, session: 0n }));
    await writeAll(conn, encodeMsg(1, "n", "fine"));
    let stop!: () => void;
    const stopped = new Promise<void>((r) => stop = r);
    // An unknown frame type, then garbage as fast as the socket takes it.
    const garbage = new Uint8Array(8192).fill(0x41);
    garbage.set([0, 0, 0, 5, 0x09, 0, 0, 0, 0]);
    const sending = keepSending(conn, garbage, stopped);
    await delay(400);
    stop();
    equal(await sending, null, "the server reset the connection while the peer was still sending");
    const { bytes, end } = await readAll(conn);
    conn.close();
    const seen = frames(bytes);
    ok(seen.includes(`ERROR ${ErrorCode.PROTOCOL_VIOLATION}`), seen.join(", "));
    equal(seen.at(-1), `ERROR ${ErrorCode.PROTOCOL_VIOLATION}`);
    equal(end, "eof", "the connection was reset under the ERROR");
  });
});

Deno.test("legacy shutdown: a peer still sending reads every ack, then a clean end", async () => {
  await withServer({ LEGACY_PORT: freePort() }, async ({ server }) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.legacyAddr!.port });
    await writeAll(
      conn,
      concat(Array.from({ length: 20 }, (_, i) => legacyFrame(1, i + 1, "n", "m"))),
    );
    while (server.stats().acked < 20) await delay(5);
    let stop!: () => void;
    const stopped = new Promise<void>((r) => stop = r);
    const sending = keepSending(conn, legacyFrame(1, 99, "n", "late"), stopped);
    const shutdown = server.shutdown();
    await delay(500);
    stop();
    equal(await sending, null, "the server reset the connection while the peer was still sending");
    const { bytes, end } = await readAll(conn);
    conn.close();
    await shutdown;
    equal(new TextDecoder().decode(bytes), "ack".repeat(20));
    equal(end, "eof", "the connection was reset under the acks");
  });
});
