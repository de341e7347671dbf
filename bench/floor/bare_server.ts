/**
 * The floor under msgserver's throughput (issue 14): a server with no msgserver code in the way
 * that the real load tool (`deno task bench --port P ...`) can drive. Per read it does what any
 * server that stores before it acks must: one read, one file write of the read's frames
 * (`writeSync`, the raw bytes: no checks, no formatting into lines, no queue, no writer task) and
 * one socket write of one ACK for the last msg_id of the read. It answers HELLO with WELCOME (the
 * version asked, nothing stored) and takes every frame as valid.
 *
 * So `msgs/s` against it is what the runtime and the load generator reach on this machine when the
 * server's per-message work is nothing: msgserver cannot go faster than this on the same cores.
 *
 * With `--durable` it acks a read only once a sync (`fdatasync`) that began after its write has
 * ended, one sync at a time for everything written meanwhile, as msgserver's ACK_MODE=durable
 * does (group commit). With `--legacy` it speaks the original's protocol instead, as LEGACY_PORT
 * does: each 1,160-byte frame written to the file (`writeSync`), then answered `ack`; the
 * `legacy-latency` preset drives it with `--port PORT --legacy-port PORT`.
 *
 * ```
 * deno run --allow-net --allow-write bench/floor/bare_server.ts /tmp/floor.log   # prints its port
 * deno task bench --port PORT --connections 64 --window 256 --duration 5
 * deno run --allow-net --allow-write bench/floor/bare_server.ts --durable /tmp/floor.log
 * ```
 *
 * @module
 */

import { encodeAck, encodeWelcome, FrameType, readU32 } from "../../src/protocol/frames.ts";
import { LEGACY_FRAME_BYTES } from "../../src/server/legacy_connection.ts";

const LEGACY_ACK = new TextEncoder().encode("ack");

/** Serves one connection of the original's protocol: each whole frame written, then `ack`. */
async function serveLegacy(conn: Deno.TcpConn, file: Deno.FsFile): Promise<void> {
  conn.setNoDelay(true);
  const buf = new Uint8Array(64 * 1024);
  let have = 0;
  try {
    for (;;) {
      const n = await conn.read(buf.subarray(have));
      if (n === null) return;
      have += n;
      let at = 0;
      while (have - at >= LEGACY_FRAME_BYTES) {
        file.writeSync(buf.subarray(at, at + LEGACY_FRAME_BYTES));
        await conn.write(LEGACY_ACK);
        at += LEGACY_FRAME_BYTES;
      }
      buf.copyWithin(0, at, have);
      have -= at;
    }
  } catch {
    // the peer went away
  } finally {
    conn.close();
  }
}

const READ_BYTES = 64 * 1024;

/** Acks waiting for a sync (durable mode), and the wake-up of the sync loop. */
const waiting: { conn: Deno.TcpConn; ack: Uint8Array }[] = [];
let wake: (() => void) | null = null;

/** Syncs the file and sends the acks written before each sync began, one sync at a time. */
async function syncLoop(file: Deno.FsFile): Promise<void> {
  for (;;) {
    if (waiting.length === 0) await new Promise<void>((r) => wake = r);
    // An ACK covers every msg_id up to its own: the last one per connection is enough.
    const due = new Map(waiting.splice(0).map(({ conn, ack }) => [conn, ack]));
    await file.syncData();
    await Promise.all([...due].map(([conn, ack]) => conn.write(ack).catch(() => 0)));
  }
}

/** Serves one connection until the peer closes it. */
async function serve(conn: Deno.TcpConn, file: Deno.FsFile, durable: boolean): Promise<void> {
  conn.setNoDelay(true);
  let buf = new Uint8Array(READ_BYTES);
  let have = 0;
  try {
    for (;;) {
      if (have === buf.length) {
        const bigger = new Uint8Array(buf.length * 2);
        bigger.set(buf);
        buf = bigger;
      }
      const n = await conn.read(buf.subarray(have));
      if (n === null) return;
      have += n;
      let at = 0;
      let lastId = 0;
      let msgStart = -1;
      while (have - at >= 4) {
        const end = at + 4 + readU32(buf, at);
        if (end > have) break;
        const type = buf[at + 4];
        if (type === FrameType.HELLO) {
          const version = buf[at + 5]!;
          await conn.write(encodeWelcome(1 << 20, 0, { version }));
        } else if (type === FrameType.MSG) {
          if (msgStart < 0) msgStart = at;
          lastId = readU32(buf, at + 5);
        }
        at = end;
      }
      if (lastId > 0) {
        file.writeSync(buf.subarray(msgStart, at));
        if (durable) {
          waiting.push({ conn, ack: encodeAck(lastId) });
          const w = wake;
          wake = null;
          w?.();
        } else await conn.write(encodeAck(lastId));
      }
      buf.copyWithin(0, at, have);
      have -= at;
    }
  } catch {
    // the peer went away
  } finally {
    conn.close();
  }
}

if (import.meta.main) {
  const mode = Deno.args[0] === "--durable" || Deno.args[0] === "--legacy" ? Deno.args[0] : "";
  const durable = mode === "--durable";
  const path = Deno.args[mode === "" ? 0 : 1];
  if (path === undefined) {
    console.error(
      "usage: deno run --allow-net --allow-write bench/floor/bare_server.ts " +
        "[--durable | --legacy] FILE",
    );
    Deno.exit(2);
  }
  const file = await Deno.open(path, { append: true, create: true });
  if (durable) void syncLoop(file);
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log(listener.addr.port);
  for await (const conn of listener) {
    void (mode === "--legacy" ? serveLegacy(conn, file) : serve(conn, file, durable));
  }
}
