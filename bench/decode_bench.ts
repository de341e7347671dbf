/**
 * FrameDecoder over 1,000 pipelined MSG frames with 100-byte payloads (about 119 KB), the way a
 * busy connection's reads arrive: all in one read, and in 16 KiB reads like the server's default
 * buffer.
 *
 * @module
 */

import { Decoded, FrameDecoder } from "../src/protocol/decoder.ts";
import {
  encodeMsg,
  MAX_CONTROL_FRAME_LENGTH,
  msgFrameLimit,
  readU32,
} from "../src/protocol/frames.ts";
import { nameProblem } from "../src/protocol/name.ts";

const FRAMES = 1000;
const payload = new Uint8Array(100).fill(0x61);
const one = encodeMsg(1, "client_1", payload);
const stream = new Uint8Array(one.length * FRAMES);
for (let i = 0; i < FRAMES; i++) {
  const frame = encodeMsg(i + 1, "client_1", payload);
  stream.set(frame, i * frame.length);
}

const limits = {
  maxPayloadBytes: 1024 * 1024,
  maxMsgLength: msgFrameLimit(1024 * 1024),
  maxSkippedMsgLength: msgFrameLimit(16 * 1024 * 1024),
  maxControlLength: MAX_CONTROL_FRAME_LENGTH,
};

/**
 * Feeds `stream` to `decoder` in reads of at most `readBytes`; returns the frames found. With
 * `mode` "checked", each frame also gets the connection's per-frame checks (msg_id order, payload
 * size, the name rule) in JavaScript; with "runs", frames are taken by nextMsgRun (msg_scan.wat),
 * which does those checks.
 */
function decodeAll(
  decoder: FrameDecoder,
  readBytes: number,
  mode: "plain" | "checked" | "runs" = "plain",
): number {
  let frames = 0;
  let at = 0;
  let lastId = 0;
  while (at < stream.length) {
    const target = decoder.readTarget();
    const n = Math.min(target.length, readBytes, stream.length - at);
    target.set(stream.subarray(at, at + n));
    at += n;
    decoder.commit(n);
    for (;;) {
      if (mode === "runs") {
        const taken = decoder.nextMsgRun(lastId);
        if (taken > 0) {
          frames += taken;
          lastId = decoder.lastMsgId;
          continue;
        }
      }
      const r = decoder.next();
      if (r === Decoded.NEED_MORE) break;
      if (r !== Decoded.FRAME) throw new Error(`decode failed: ${decoder.error}`);
      if (mode !== "plain") lastId = check(decoder.buffer, decoder.frameStart, lastId);
      frames++;
    }
  }
  if (frames !== FRAMES) throw new Error(`decoded ${frames} frames, expected ${FRAMES}`);
  return frames;
}

/** The checks connection.ts makes of one MSG frame, for the "checked" mode; returns its id. */
function check(b: Uint8Array, start: number, lastId: number): number {
  const length = readU32(b, start);
  const nameLength = b[start + 9]!;
  const id = readU32(b, start + 5);
  if (length < 6 + nameLength || id <= lastId || length - 6 - nameLength > 1024 * 1024) {
    throw new Error("frame refused");
  }
  if (nameProblem(b, start + 10, start + 10 + nameLength) !== "") throw new Error("bad name");
  return id;
}

const whole = new FrameDecoder({ ...limits, initialBytes: stream.length });
const chunked = new FrameDecoder(limits);

Deno.bench({
  name: "1,000 MSG frames, one read",
  group: "decode 1,000 x 100 B MSG",
  baseline: true,
  fn() {
    decodeAll(whole, stream.length);
  },
});

Deno.bench({
  name: "1,000 MSG frames, 16 KiB reads",
  group: "decode 1,000 x 100 B MSG",
  fn() {
    decodeAll(chunked, 16 * 1024);
  },
});

Deno.bench({
  name: "1,000 MSG frames, 16 KiB reads, checked in JavaScript frame by frame",
  group: "decode and check 1,000 x 100 B MSG",
  baseline: true,
  fn() {
    decodeAll(chunked, 16 * 1024, "checked");
  },
});

Deno.bench({
  name: "1,000 MSG frames, 16 KiB reads, taken in runs by nextMsgRun (msg_scan.wat)",
  group: "decode and check 1,000 x 100 B MSG",
  fn() {
    decodeAll(chunked, 16 * 1024, "runs");
  },
});
