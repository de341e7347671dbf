/**
 * FrameDecoder over 1,000 pipelined MSG frames with 100-byte payloads (about 119 KB), the way a
 * busy connection's reads arrive: all in one read, and in 16 KiB reads like the server's default
 * buffer.
 *
 * @module
 */

import { Decoded, FrameDecoder } from "../src/protocol/decoder.ts";
import { encodeMsg, MAX_CONTROL_FRAME_LENGTH, msgFrameLimit } from "../src/protocol/frames.ts";

const FRAMES = 1000;
const payload = new Uint8Array(100).fill(0x61);
const one = encodeMsg(1, "client_1", payload);
const stream = new Uint8Array(one.length * FRAMES);
for (let i = 0; i < FRAMES; i++) {
  const frame = encodeMsg(i + 1, "client_1", payload);
  stream.set(frame, i * frame.length);
}

const limits = {
  maxMsgLength: msgFrameLimit(1024 * 1024),
  maxSkippedMsgLength: msgFrameLimit(16 * 1024 * 1024),
  maxControlLength: MAX_CONTROL_FRAME_LENGTH,
};

/** Feeds `stream` to `decoder` in reads of at most `readBytes`; returns the frames found. */
function decodeAll(decoder: FrameDecoder, readBytes: number): number {
  let frames = 0;
  let at = 0;
  while (at < stream.length) {
    const target = decoder.readTarget();
    const n = Math.min(target.length, readBytes, stream.length - at);
    target.set(stream.subarray(at, at + n));
    at += n;
    decoder.commit(n);
    for (let r = decoder.next(); r !== Decoded.NEED_MORE; r = decoder.next()) {
      if (r !== Decoded.FRAME) throw new Error(`decode failed: ${decoder.error}`);
      frames++;
    }
  }
  if (frames !== FRAMES) throw new Error(`decoded ${frames} frames, expected ${FRAMES}`);
  return frames;
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
