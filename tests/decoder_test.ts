// The frame decoder's cases, byte by byte (over 400 lines as a catalogue of cases).
import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { Decoded, type DecoderLimits, FrameDecoder } from "../src/protocol/decoder.ts";
import {
  encodeAck,
  encodeError,
  encodeHello,
  encodeMsg,
  encodeNack,
  encodeWelcome,
  ErrorCode,
  FrameType,
  MAX_CONTROL_FRAME_LENGTH,
  msgFrameLimit,
  NackCode,
} from "../src/protocol/frames.ts";
import { connectionDecoderLimits } from "../src/server/server.ts";
import { concat } from "../src/io/concat.ts";

const INITIAL = 16 * 1024;

/** The server's limits for MAX_MESSAGE_BYTES = 1 MiB. */
const SERVER_LIMITS: DecoderLimits = {
  maxMsgLength: msgFrameLimit(1024 * 1024),
  maxSkippedMsgLength: msgFrameLimit(16 * 1024 * 1024),
  maxControlLength: MAX_CONTROL_FRAME_LENGTH,
};

/** Small MSG limits: MSGs over 4 KiB are skipped, over 64 KiB refused. */
const SMALL_LIMITS: DecoderLimits = {
  maxMsgLength: msgFrameLimit(4096),
  maxSkippedMsgLength: msgFrameLimit(65536),
  maxControlLength: MAX_CONTROL_FRAME_LENGTH,
};

type Event =
  | { kind: "frame"; type: number; frame: Uint8Array; body: Uint8Array }
  | { kind: "oversized"; msgId: number; length: number }
  | { kind: "error"; error: string };

/** Calls next() until NEED_MORE (or ERROR), copying out what it finds. */
function drain(d: FrameDecoder, events: Event[]): void {
  for (let r = d.next(); r !== Decoded.NEED_MORE; r = d.next()) {
    if (r === Decoded.FRAME) {
      events.push({
        kind: "frame",
        type: d.type,
        frame: d.buffer.slice(d.frameStart, d.frameEnd),
        body: d.buffer.slice(d.bodyStart, d.frameEnd),
      });
    } else if (r === Decoded.OVERSIZED_MSG) {
      events.push({ kind: "oversized", msgId: d.oversizedMsgId, length: d.oversizedLength });
    } else {
      equal(r, Decoded.ERROR);
      events.push({ kind: "error", error: d.error });
      return;
    }
  }
}

interface FeedResult {
  events: Event[];
  /** buffer.length seen after every readTarget(). */
  bufferLengths: number[];
  /** How many times readTarget() handed out a different buffer than before. */
  bufferSwaps: number;
  reads: number;
}

/**
 * Feeds `bytes` like a socket would: each read fills the target with at most `chunk` bytes, then
 * next() runs until NEED_MORE.
 */
function feed(d: FrameDecoder, bytes: Uint8Array, chunk = Infinity): FeedResult {
  const events: Event[] = [];
  const bufferLengths: number[] = [];
  let bufferSwaps = 0;
  let reads = 0;
  let previous = d.buffer;
  let at = 0;
  while (at < bytes.length) {
    const target = d.readTarget();
    if (d.buffer !== previous) bufferSwaps++;
    previous = d.buffer;
    bufferLengths.push(d.buffer.length);
    ok(target.length > 0, "readTarget() must never be empty");
    const n = Math.min(target.length, chunk, bytes.length - at);
    target.set(bytes.subarray(at, at + n));
    d.commit(n);
    at += n;
    reads++;
    drain(d, events);
    if (events.at(-1)?.kind === "error") break;
  }
  return { events, bufferLengths, bufferSwaps, reads };
}

function frameEvent(bytes: Uint8Array): Event {
  return { kind: "frame", type: bytes[4]!, frame: bytes, body: bytes.subarray(5) };
}

/** A MSG frame whose length prefix is exactly `length` (name "n"). */
function msgOfLength(msgId: number, length: number): Uint8Array {
  const bytes = encodeMsg(msgId, "n", new Uint8Array(length - 7).fill(0x61));
  equal(new DataView(bytes.buffer).getUint32(0), length);
  return bytes;
}

/** Just a header: a length prefix and a type byte. */
function header(length: number, type: number): Uint8Array {
  const bytes = new Uint8Array(5);
  new DataView(bytes.buffer).setUint32(0, length);
  bytes[4] = type;
  return bytes;
}

/** A payload of `n` bytes with every byte value in it. */
function pattern(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + 7) & 0xff;
  return out;
}

Deno.test("FrameDecoder hands out one whole frame with its offsets", () => {
  const d = new FrameDecoder(SERVER_LIMITS);
  const msg = encodeMsg(7, "client_1", "hello");
  const target = d.readTarget();
  equal(target.length, INITIAL);
  target.set(msg);
  d.commit(msg.length);
  equal(d.next(), Decoded.FRAME);
  equal(d.type, FrameType.MSG);
  equal(d.frameStart, 0);
  equal(d.bodyStart, 5);
  equal(d.frameEnd, msg.length);
  deepStrictEqual(d.buffer.slice(d.frameStart, d.frameEnd), msg);
  // body: msg_id 7, name_len 8, "client_1", "hello"
  deepStrictEqual(
    d.buffer.slice(d.bodyStart, d.frameEnd),
    new Uint8Array([0, 0, 0, 7, 8, ...new TextEncoder().encode("client_1hello")]),
  );
  equal(d.next(), Decoded.NEED_MORE);
  equal(d.pendingBytes, 0);
  equal(d.skipping, false);
});

Deno.test("FrameDecoder finds every frame of one commit, in order", () => {
  const frames = [
    encodeHello({ clientId: 9, session: 123456789012n, token: "secret" }),
    encodeMsg(1, "a", ""),
    encodeMsg(2, "b", "two"),
    encodeAck(3),
    encodeNack(4, NackCode.BAD_NAME, "name has whitespace"),
    encodeWelcome(1048576, 41),
    encodeError(ErrorCode.TIMEOUT, "too slow"),
    encodeMsg(0xffffffff, "名前", pattern(300)),
  ];
  const all = concat(frames);
  const d = new FrameDecoder(SERVER_LIMITS);
  d.readTarget().set(all);
  d.commit(all.length);
  let offset = 0;
  for (const f of frames) {
    equal(d.next(), Decoded.FRAME);
    equal(d.type, f[4]);
    equal(d.frameStart, offset);
    equal(d.bodyStart, offset + 5);
    equal(d.frameEnd, offset + f.length);
    deepStrictEqual(d.buffer.slice(d.frameStart, d.frameEnd), f);
    offset += f.length;
  }
  equal(d.next(), Decoded.NEED_MORE);
  equal(d.pendingBytes, 0);
});

Deno.test("FrameDecoder keeps a frame split across single-byte reads", () => {
  const frames = [
    encodeMsg(1, "client_1", "x"),
    encodeHello({ clientId: 2, session: 3n }),
    encodeMsg(2, "client_1", pattern(40)),
  ];
  const all = concat(frames);
  const ends = frames.map((_, i) => frames.slice(0, i + 1).reduce((n, f) => n + f.length, 0));
  const d = new FrameDecoder(SERVER_LIMITS);
  const events: Event[] = [];
  for (let i = 0; i < all.length; i++) {
    const target = d.readTarget();
    target[0] = all[i]!;
    d.commit(1);
    const before = events.length;
    drain(d, events);
    const completes = ends.includes(i + 1);
    // A frame comes out exactly when its last byte arrives, never earlier.
    equal(events.length - before, completes ? 1 : 0, `after byte ${i + 1}`);
    if (!completes) equal(d.pendingBytes > 0, true);
    equal(d.buffer.length, INITIAL);
  }
  deepStrictEqual(events, frames.map(frameEvent));
  equal(d.pendingBytes, 0);
});

/** The distinct runs of buffer sizes, e.g. [16384, 100011] for one growth. */
function runs(lengths: number[]): number[] {
  return lengths.filter((n, i) => i === 0 || lengths[i - 1] !== n);
}

Deno.test("FrameDecoder grows the buffer for a frame over 16 KiB and shrinks it after", () => {
  const small = encodeMsg(1, "c", "before");
  const big = encodeMsg(2, "c", pattern(100_000));
  const after = encodeMsg(3, "c", "after");
  const d = new FrameDecoder(SERVER_LIMITS);
  equal(d.buffer.length, INITIAL);
  const result = feed(d, concat([small, big]), 4096);
  deepStrictEqual(result.events, [frameEvent(small), frameEvent(big)]);
  // The buffer grew once, straight to the size of the big frame, and never beyond it.
  deepStrictEqual(runs(result.bufferLengths), [INITIAL, big.length]);
  equal(result.bufferSwaps, 1);
  equal(d.pendingBytes, 0);
  // Nothing is pending, so the next read goes back to a buffer of the initial size.
  const target = d.readTarget();
  equal(d.buffer.length, INITIAL);
  equal(target.length, INITIAL);
  target.set(after);
  d.commit(after.length);
  const events: Event[] = [];
  drain(d, events);
  deepStrictEqual(events, [frameEvent(after)]);
});

Deno.test("FrameDecoder grows the buffer in one step for a control frame over 16 KiB", () => {
  // A HELLO with a 30,000-byte token is a legal control frame (under 64 KiB + 16). With a small
  // MAX_MESSAGE_BYTES its length is above maxMsgLength, but it is not a MSG and must not be
  // treated like an oversized one: the buffer should grow once to hold it.
  const limits: DecoderLimits = {
    maxMsgLength: msgFrameLimit(1024),
    maxSkippedMsgLength: msgFrameLimit(16 * 1024),
    maxControlLength: MAX_CONTROL_FRAME_LENGTH,
  };
  const hello = encodeHello({ clientId: 1, session: 1n, token: "t".repeat(30_000) });
  const d = new FrameDecoder(limits);
  const result = feed(d, hello);
  deepStrictEqual(result.events, [frameEvent(hello)]);
  ok(result.reads <= 3, `took ${result.reads} reads for a ${hello.length}-byte frame`);
  equal(result.bufferSwaps, 1, `buffer replaced ${result.bufferSwaps} times for one frame`);
});

Deno.test("with a connection's limits, the largest HELLO grows the buffer once, also at MAX_MESSAGE_BYTES=100", () => {
  // The server's decoders start at 4 KiB and grow while reads fill them; a 65,552-byte HELLO is
  // far above the largest MSG frame here, and must still be taken in one growth, not piecemeal.
  const hello = encodeHello({ clientId: 1, session: 1n, token: "t".repeat(65535) });
  const d = new FrameDecoder(connectionDecoderLimits(100));
  const result = feed(d, hello);
  deepStrictEqual(result.events, [frameEvent(hello)]);
  equal(result.bufferSwaps, 1, `buffer replaced ${result.bufferSwaps} times for one frame`);
});

Deno.test("FrameDecoder refuses a frame of length 0", () => {
  const d = new FrameDecoder(SERVER_LIMITS);
  const bytes = concat([new Uint8Array([0, 0, 0, 0]), encodeMsg(1, "a", "b")]);
  const result = feed(d, bytes);
  deepStrictEqual(result.events, [{ kind: "error", error: "frame length is 0" }]);
  // Everything after the broken frame is dropped.
  equal(d.pendingBytes, 0);
  equal(d.next(), Decoded.NEED_MORE);
});

Deno.test("FrameDecoder refuses a length over every limit from the 4 length bytes alone", () => {
  const d = new FrameDecoder(SMALL_LIMITS);
  const target = d.readTarget();
  target.set([0x7f, 0xff, 0xff, 0xff]);
  d.commit(4);
  equal(d.next(), Decoded.ERROR);
  equal(d.error, "frame length 2147483647 is over the limit");
  equal(d.buffer.length, INITIAL);
  equal(d.pendingBytes, 0);
  equal(d.readTarget().length, INITIAL);
  equal(d.buffer.length, INITIAL);
});

Deno.test("FrameDecoder refuses an over-limit frame without growing when a read fills the buffer", () => {
  // length 1,000,000 is over maxSkippedMsgLength (65,797) and maxControlLength (65,552).
  const bytes = new Uint8Array(INITIAL);
  new DataView(bytes.buffer).setUint32(0, 1_000_000);
  bytes[4] = FrameType.MSG;
  const d = new FrameDecoder(SMALL_LIMITS);
  const result = feed(d, bytes);
  deepStrictEqual(result.events, [{
    kind: "error",
    error: "frame length 1000000 is over the limit",
  }]);
  equal(result.reads, 1);
  deepStrictEqual(result.bufferLengths, [INITIAL]);
  equal(d.buffer.length, INITIAL);
});

Deno.test("FrameDecoder refuses a MSG over maxSkippedMsgLength once the type byte is in", () => {
  // Over maxSkippedMsgLength but under maxControlLength: only the type byte can decide.
  const limits: DecoderLimits = {
    maxMsgLength: msgFrameLimit(100),
    maxSkippedMsgLength: msgFrameLimit(1600),
    maxControlLength: MAX_CONTROL_FRAME_LENGTH,
  };
  const d = new FrameDecoder(limits);
  const h = header(20_000, FrameType.MSG);
  d.readTarget().set(h.subarray(0, 4));
  d.commit(4);
  equal(d.next(), Decoded.NEED_MORE);
  equal(d.readTarget().length, INITIAL - 4);
  equal(d.buffer.length, INITIAL);
  d.readTarget()[0] = h[4]!;
  d.commit(1);
  equal(d.next(), Decoded.ERROR);
  equal(d.error, `MSG frame length 20000 is over ${msgFrameLimit(1600)}`);
  equal(d.buffer.length, INITIAL);
});

Deno.test("FrameDecoder refuses a non-MSG frame over maxControlLength", () => {
  for (const type of [FrameType.HELLO, 0x07, FrameType.ACK]) {
    const d = new FrameDecoder(SERVER_LIMITS);
    const h = header(MAX_CONTROL_FRAME_LENGTH + 1, type);
    const result = feed(d, concat([h, new Uint8Array(INITIAL)]), 1);
    const hex = type.toString(16).padStart(2, "0");
    deepStrictEqual(result.events, [{
      kind: "error",
      error: `frame type 0x${hex} length 65553 is over 65552`,
    }]);
    equal(result.reads, 5, "refused as soon as the type byte arrived");
    equal(d.buffer.length, INITIAL);
  }
});

Deno.test("FrameDecoder accepts a control frame of exactly maxControlLength", () => {
  const error = encodeError(ErrorCode.PROTOCOL_VIOLATION, "e".repeat(MAX_CONTROL_FRAME_LENGTH - 3));
  equal(new DataView(error.buffer).getUint32(0), MAX_CONTROL_FRAME_LENGTH);
  const d = new FrameDecoder(SERVER_LIMITS);
  const result = feed(d, error, 5000);
  deepStrictEqual(result.events, [frameEvent(error)]);
});

Deno.test("FrameDecoder buffers a MSG of exactly maxMsgLength and skips one a byte longer", () => {
  const limits: DecoderLimits = {
    maxMsgLength: 1000,
    maxSkippedMsgLength: 2000,
    maxControlLength: 500,
  };
  const fits = msgOfLength(5, 1000);
  const over = msgOfLength(6, 1001);
  const d = new FrameDecoder(limits);
  const result = feed(d, concat([fits, over, encodeAck(1)]));
  deepStrictEqual(result.events, [
    frameEvent(fits),
    { kind: "oversized", msgId: 6, length: 1000 },
    // The ACK has length 5, within maxControlLength.
    frameEvent(encodeAck(1)),
  ]);
});

Deno.test("FrameDecoder skips a MSG of exactly maxSkippedMsgLength and refuses a byte longer", () => {
  const limits: DecoderLimits = {
    maxMsgLength: 1000,
    maxSkippedMsgLength: 2000,
    maxControlLength: 500,
  };
  const d1 = new FrameDecoder(limits);
  deepStrictEqual(feed(d1, msgOfLength(8, 2000), 100).events, [
    { kind: "oversized", msgId: 8, length: 1999 },
  ]);
  const d2 = new FrameDecoder(limits);
  deepStrictEqual(feed(d2, msgOfLength(9, 2001), 100).events, [
    { kind: "error", error: "frame length 2001 is over the limit" },
  ]);
});

Deno.test("FrameDecoder skips an oversized MSG as it streams in and decodes the next frame", () => {
  const name = "client_1";
  const oversized = encodeMsg(0xdeadbeef, name, pattern(40_000));
  const length = oversized.length - 4;
  ok(length > SMALL_LIMITS.maxMsgLength && length <= SMALL_LIMITS.maxSkippedMsgLength);
  const next = encodeMsg(0xdeadbef0, name, "fine");
  const d = new FrameDecoder(SMALL_LIMITS);
  const events: Event[] = [];
  const bytes = concat([oversized, next]);
  let reported = -1;
  for (let at = 0; at < bytes.length;) {
    const target = d.readTarget();
    equal(d.buffer.length, INITIAL, `buffer grew at byte ${at}`);
    const n = Math.min(target.length, 7, bytes.length - at);
    target.set(bytes.subarray(at, at + n));
    d.commit(n);
    at += n;
    const before = events.length;
    drain(d, events);
    if (events.length > before && reported < 0) reported = at;
    if (at < oversized.length && reported >= 0) {
      equal(d.skipping, true, `skipping at byte ${at}`);
      // Skipped bytes are consumed, not kept.
      equal(d.pendingBytes, 0);
    }
  }
  // Reported as soon as the msg_id was in: the first read that reached byte 9.
  equal(reported, 14);
  equal(d.skipping, false);
  deepStrictEqual(events, [
    { kind: "oversized", msgId: 0xdeadbeef, length: 5 + name.length + 40_000 },
    frameEvent(next),
  ]);
});

Deno.test("FrameDecoder skips an oversized MSG fed one byte at a time", () => {
  const oversized = encodeMsg(77, "n", pattern(20_000));
  const next = encodeAck(78);
  const d = new FrameDecoder(SMALL_LIMITS);
  const result = feed(d, concat([oversized, next]), 1);
  deepStrictEqual(result.events, [
    { kind: "oversized", msgId: 77, length: 5 + 1 + 20_000 },
    frameEvent(next),
  ]);
  deepStrictEqual(new Set(result.bufferLengths), new Set([INITIAL]));
  equal(result.bufferSwaps, 0);
});

Deno.test("FrameDecoder skips an oversized MSG that arrives whole in one read", () => {
  const oversized = encodeMsg(5, "n", pattern(8000));
  const after = encodeMsg(6, "n", "ok");
  const d = new FrameDecoder(SMALL_LIMITS);
  const bytes = concat([encodeMsg(4, "n", "first"), oversized, after]);
  const target = d.readTarget();
  ok(target.length >= bytes.length);
  target.set(bytes);
  d.commit(bytes.length);
  const events: Event[] = [];
  drain(d, events);
  deepStrictEqual(events, [
    frameEvent(encodeMsg(4, "n", "first")),
    { kind: "oversized", msgId: 5, length: 5 + 1 + 8000 },
    frameEvent(after),
  ]);
  equal(d.skipping, false);
  equal(d.pendingBytes, 0);
});

Deno.test("FrameDecoder frame offsets stay valid until the next readTarget()", () => {
  const frames = [encodeMsg(1, "a", "one"), encodeAck(2), encodeMsg(3, "c", "three")];
  const d = new FrameDecoder(SERVER_LIMITS);
  d.readTarget().set(concat(frames));
  d.commit(frames.reduce((n, f) => n + f.length, 0));
  const buffer = d.buffer;
  const offsets: [number, number][] = [];
  for (let r = d.next(); r === Decoded.FRAME; r = d.next()) {
    offsets.push([d.frameStart, d.frameEnd]);
  }
  equal(offsets.length, 3);
  // All three are still readable at their offsets after later next() calls.
  equal(d.buffer, buffer);
  deepStrictEqual(offsets.map(([s, e]) => d.buffer.slice(s, e)), frames);
});

Deno.test("FrameDecoder readTarget() moves a partial frame to the buffer start when space runs low", () => {
  // Fill the buffer with frames and the first half of one more, leaving under 4 KiB free.
  const filler = encodeMsg(1, "f", pattern(13_000));
  const tail = encodeMsg(2, "t", pattern(2000));
  const d = new FrameDecoder(SERVER_LIMITS);
  d.readTarget().set(concat([filler, tail.subarray(0, 1000)]));
  d.commit(filler.length + 1000);
  equal(d.next(), Decoded.FRAME);
  const fillerStart = d.frameStart;
  deepStrictEqual(d.buffer.slice(d.frameStart, d.frameEnd), filler);
  equal(d.next(), Decoded.NEED_MORE);
  equal(d.pendingBytes, 1000);
  // The free space is under 4 KiB: the next readTarget() moves the partial frame to offset 0,
  // which overwrites the bytes the last frame's offsets point at.
  const target = d.readTarget();
  equal(d.buffer.length, INITIAL);
  equal(target.length, INITIAL - 1000);
  deepStrictEqual(d.buffer.slice(fillerStart, fillerStart + 1000), tail.subarray(0, 1000));
  target.set(tail.subarray(1000));
  d.commit(tail.length - 1000);
  equal(d.next(), Decoded.FRAME);
  equal(d.frameStart, 0);
  deepStrictEqual(d.buffer.slice(d.frameStart, d.frameEnd), tail);
});

Deno.test("FrameDecoder reads nothing more after an ERROR", () => {
  const d = new FrameDecoder(SERVER_LIMITS);
  const bytes = concat([encodeAck(1), new Uint8Array([0, 0, 0, 0]), encodeAck(2)]);
  d.readTarget().set(bytes);
  d.commit(bytes.length);
  equal(d.next(), Decoded.FRAME);
  equal(d.next(), Decoded.ERROR);
  equal(d.error, "frame length is 0");
  equal(d.next(), Decoded.NEED_MORE);
  equal(d.pendingBytes, 0);
});

/** Feeds `bytes` to `d` in reads of at most `chunk` bytes until a frame is whole. */
function readUntilFrame(d: FrameDecoder, bytes: Uint8Array, chunk: number): number {
  let fed = 0;
  for (;;) {
    const target = d.readTarget();
    const n = Math.min(chunk, target.length, bytes.length - fed);
    target.set(bytes.subarray(fed, fed + n));
    d.commit(n);
    fed += n;
    if (d.next() === Decoded.FRAME) return fed;
  }
}

Deno.test("handOver gives up a buffer grown for a large frame, once drained, and the decoder goes on in a new one", () => {
  const d = new FrameDecoder({ ...SERVER_LIMITS, initialBytes: 4096, maxReadBytes: 64 * 1024 });
  const big = encodeMsg(1, "n", new Uint8Array(200_000).fill(0x61));
  equal(readUntilFrame(d, big, 8192), big.length);
  const grown = d.buffer;
  ok(grown.length > 64 * 1024);
  const taken = d.handOver(d.frameStart, d.frameEnd);
  ok(taken !== null);
  equal(taken.buffer, grown.buffer, "no copy");
  deepStrictEqual(taken, big);
  // The decoder never writes to it again: the next frames land in a buffer of its own.
  const next = concat([encodeMsg(2, "n", "small"), encodeMsg(3, "n", "x")]);
  readUntilFrame(d, next, next.length);
  ok(d.buffer.buffer !== grown.buffer);
  deepStrictEqual(taken, big, "the frame handed over is as it was");
  equal(d.type, FrameType.MSG);
  equal(d.next(), Decoded.FRAME, "the second small frame is still there");
});

Deno.test("handOver refuses a resting-size buffer, and one with bytes after the region", () => {
  const d = new FrameDecoder({ ...SERVER_LIMITS, initialBytes: 4096, maxReadBytes: 64 * 1024 });
  const small = encodeMsg(1, "n", "p");
  readUntilFrame(d, small, small.length);
  equal(d.handOver(d.frameStart, d.frameEnd), null, "not grown: it is reused, so it is copied");
  // A large frame followed by the start of the next: the buffer holds bytes still to decode.
  const big = encodeMsg(2, "n", new Uint8Array(200_000));
  const both = concat([big, encodeMsg(3, "n", "q").subarray(0, 6)]);
  const d2 = new FrameDecoder({ ...SERVER_LIMITS, initialBytes: 4096, maxReadBytes: 64 * 1024 });
  let fed = readUntilFrame(d2, both, 8192);
  while (fed < both.length) {
    const target = d2.readTarget();
    const n = Math.min(target.length, both.length - fed);
    target.set(both.subarray(fed, fed + n));
    d2.commit(n);
    fed += n;
  }
  equal(d2.handOver(d2.frameStart, d2.frameEnd), null, "bytes follow the region");
});
