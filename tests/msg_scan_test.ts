// The MSG run scanner (msg_scan.wat through msg_scan.ts), and FrameDecoder.nextMsgRun beside
// next(): a reference written from docs/protocol.md decides which frames a run may take, and the
// decoder with runs must find exactly what the decoder without them finds, at every cut.
import { deepStrictEqual, equal } from "node:assert/strict";
import { MSG_SCAN_WINDOW, MsgScanner } from "../src/protocol/msg_scan.ts";
import { Decoded, FrameDecoder } from "../src/protocol/decoder.ts";
import {
  encodeHello,
  encodeMsg,
  FrameType,
  MAX_CONTROL_FRAME_LENGTH,
  msgFrameLimit,
  readU32,
} from "../src/protocol/frames.ts";
import { nameProblem } from "../src/protocol/name.ts";
import { concat } from "../src/io/concat.ts";

const MAX_PAYLOAD = 300;
const LIMITS = { maxFrameLength: msgFrameLimit(MAX_PAYLOAD), maxPayloadBytes: MAX_PAYLOAD };
const text = new TextEncoder();

function scanner(): MsgScanner {
  return new MsgScanner(LIMITS);
}

/** A MSG frame with its length prefix, type byte and name_len set by hand. */
function rawMsg(
  fields: { length?: number; type?: number; msgId: number; nameLength?: number; rest: Uint8Array },
): Uint8Array {
  const length = fields.length ?? 6 + fields.rest.length;
  const bytes = new Uint8Array(10 + fields.rest.length);
  new DataView(bytes.buffer).setUint32(0, length);
  bytes[4] = fields.type ?? FrameType.MSG;
  new DataView(bytes.buffer).setUint32(5, fields.msgId);
  bytes[9] = fields.nameLength ?? fields.rest.length;
  bytes.set(fields.rest, 10);
  return bytes;
}

Deno.test("MsgScanner takes a run of good MSG frames and says where it ended", () => {
  const frames = [1, 2, 5, 1000, 0xffffffff].map((id) => encodeMsg(id, "client_1", "hello"));
  const bytes = concat(frames);
  const s = scanner();
  equal(s.scan(bytes, 0), 5);
  equal(s.end, bytes.length);
  equal(s.lastId, 0xffffffff);
  equal(s.stoppedAtFrame, false);
});

Deno.test("MsgScanner takes nothing from empty input and keeps lastId", () => {
  const s = scanner();
  equal(s.scan(new Uint8Array(0), 42), 0);
  equal(s.end, 0);
  equal(s.lastId, 42);
  equal(s.stoppedAtFrame, false);
});

Deno.test("MsgScanner takes names of 1 and 255 bytes, every printable ASCII byte, any payload", () => {
  const printable = Array.from({ length: 0x7e - 0x21 + 1 }, (_, i) => String.fromCharCode(0x21 + i))
    .join("");
  const payload = new Uint8Array(256).map((_, i) => i); // every byte, spaces and NULs included
  const frames = [
    encodeMsg(1, "a", ""),
    encodeMsg(2, "x".repeat(255), payload),
    encodeMsg(3, printable, payload),
    encodeMsg(4, "b", " \t\x00\xff"),
    encodeMsg(5, "c", new Uint8Array(MAX_PAYLOAD)), // exactly MAX_MESSAGE_BYTES
  ];
  const s = scanner();
  equal(s.scan(concat(frames), 0), frames.length);
  equal(s.stoppedAtFrame, false);
});

/** Frames the scanner must stop at, each after one good frame (msg_id 1); lastId given 0. */
const STOPPERS: [string, Uint8Array][] = [
  ["HELLO", encodeHello({ clientId: 1, session: 0n })],
  ["an unknown type", rawMsg({ type: 0x07, msgId: 2, rest: text.encode("name") })],
  ["a reply type", rawMsg({ type: 0x82, msgId: 2, rest: text.encode("name") })],
  ["length 0", rawMsg({ length: 0, msgId: 2, rest: text.encode("n") })],
  ["length 1 (no body)", rawMsg({ length: 1, msgId: 2, rest: text.encode("n") })],
  ["length 5 (no name_len)", rawMsg({ length: 5, msgId: 2, rest: text.encode("n") })],
  [
    "a length over maxFrameLength",
    rawMsg({ length: LIMITS.maxFrameLength + 1, msgId: 2, rest: new Uint8Array(0) }),
  ],
  ["a length over 2^31", rawMsg({ length: 0x80000010, msgId: 2, rest: new Uint8Array(0) })],
  ["name_len 0", rawMsg({ msgId: 2, nameLength: 0, rest: text.encode("payload") })],
  [
    "a name longer than the body",
    rawMsg({ msgId: 2, nameLength: 9, rest: text.encode("12345678") }),
  ],
  ["msg_id 0", encodeMsg(0, "name", "p")],
  ["a duplicate msg_id", encodeMsg(1, "name", "p")],
  ["a msg_id below the last", encodeMsg(0, "name", "p")],
  ["a payload over maxPayloadBytes", encodeMsg(2, "n", new Uint8Array(MAX_PAYLOAD + 1))],
  ["a name with a space", encodeMsg(2, "a b", "p")],
  ["a name with a tab", encodeMsg(2, "a\tb", "p")],
  ["a name with DEL", encodeMsg(2, "a\x7f", "p")],
  ["a name with NUL", encodeMsg(2, new Uint8Array([0x61, 0]), "p")],
  ["a name in valid UTF-8 beyond ASCII", encodeMsg(2, "café", "p")],
  ["a name with a byte that is not UTF-8", encodeMsg(2, new Uint8Array([0x61, 0xff]), "p")],
];

for (const [what, frame] of STOPPERS) {
  Deno.test(`MsgScanner stops at ${what}, after the frames before it`, () => {
    const first = encodeMsg(1, "client_1", "hello");
    const s = scanner();
    equal(s.scan(concat([first, frame, encodeMsg(3, "ok", "p")]), 0), 1);
    equal(s.end, first.length);
    equal(s.lastId, 1);
    equal(s.stoppedAtFrame, true);
    // Alone, too: nothing taken.
    equal(s.scan(frame, 1), 0);
    equal(s.end, 0);
    equal(s.stoppedAtFrame, true);
  });
}

Deno.test("MsgScanner stops at a bad name byte in every position of names up to 255 bytes", () => {
  const s = scanner();
  for (const length of [1, 2, 15, 16, 17, 31, 32, 33, 100, 254, 255]) {
    for (let at = 0; at < length; at++) {
      for (const bad of [0x20, 0x00, 0x1f, 0x7f, 0x80, 0xff]) {
        const name = new Uint8Array(length).fill(0x61);
        name[at] = bad;
        // The payload starts with printable bytes, and 16 more after that: none may count.
        const frame = encodeMsg(2, name, "x".repeat(40));
        equal(s.scan(frame, 1), 0, `length ${length}, byte 0x${bad.toString(16)} at ${at}`);
        equal(s.stoppedAtFrame, true);
      }
      // Bytes just past the name do not count, whatever they are.
      const good = encodeMsg(2, "a".repeat(length), " \x00\x7f\x80".repeat(8));
      equal(s.scan(good, 1), 1, `name of ${length} bytes before a payload of spaces and NULs`);
    }
  }
});

Deno.test("MsgScanner takes only ids that increase along the run", () => {
  const s = scanner();
  const bytes = concat([encodeMsg(5, "a", ""), encodeMsg(7, "a", ""), encodeMsg(7, "a", "")]);
  equal(s.scan(bytes, 4), 2);
  equal(s.lastId, 7);
  equal(s.stoppedAtFrame, true);
  equal(s.scan(bytes, 5), 0);
  equal(s.lastId, 5);
});

Deno.test("MsgScanner takes the whole frames of a stream cut at every offset, and stops out of bytes", () => {
  const frames = [
    encodeMsg(1, "client_1", "hello"),
    encodeMsg(2, "n".repeat(255), "x".repeat(MAX_PAYLOAD)),
    encodeMsg(3, "a", ""),
    encodeMsg(9, "client_1", "a\nb\\c"),
  ];
  const bytes = concat(frames);
  const ends: number[] = [];
  let at = 0;
  for (const f of frames) ends.push(at += f.length);
  const s = scanner();
  for (let cut = 0; cut <= bytes.length; cut++) {
    const whole = ends.filter((e) => e <= cut);
    equal(s.scan(bytes.subarray(0, cut), 0), whole.length, `cut at ${cut}`);
    equal(s.end, whole.at(-1) ?? 0);
    equal(s.stoppedAtFrame, false);
    // And from every cut on, the rest: what the scan left is where the next one starts.
    const rest = bytes.subarray(s.end);
    equal(s.scan(rest, s.lastId), frames.length - whole.length, `rest after ${cut}`);
  }
});

Deno.test("MsgScanner scans at most MSG_SCAN_WINDOW bytes of a longer input", () => {
  const frame = encodeMsg(1, "a", "x".repeat(94)); // 104 bytes
  const n = Math.ceil((MSG_SCAN_WINDOW + 1000) / frame.length);
  const frames = Array.from({ length: n }, (_, i) => encodeMsg(i + 1, "a", "x".repeat(94)));
  const s = scanner();
  const taken = s.scan(concat(frames), 0);
  equal(taken, Math.floor(MSG_SCAN_WINDOW / frame.length));
  equal(s.end, taken * frame.length);
  equal(s.stoppedAtFrame, false);
});

// ---- The reference: which frames a run takes (docs/protocol.md). ----

/**
 * True if a greeted connection whose last id is `lastId` accepts `frame` as it is, and its name is
 * ASCII: the frames a run takes (names beyond ASCII are left to the name rule in name.ts).
 */
function takes(frame: Uint8Array, lastId: number, maxPayload: number): boolean {
  if (frame.length < 5) return false;
  const length = readU32(frame, 0);
  if (frame[4] !== FrameType.MSG || length < 6 || frame.length !== 4 + length) return false;
  const id = readU32(frame, 5);
  const nameLength = frame[9]!;
  const payload = length - 6 - nameLength;
  if (id === 0 || id <= lastId || payload < 0 || payload > maxPayload) return false;
  if (frame.subarray(10, 10 + nameLength).some((c) => c >= 0x80)) return false;
  return nameProblem(frame, 10, 10 + nameLength) === "";
}

/** A random frame: mostly good, sometimes each kind of bad. */
function randomFrame(rand: () => number, nextId: number): Uint8Array {
  const pick = Math.floor(rand() * 14);
  const nameLength = 1 + Math.floor(rand() * (rand() < 0.9 ? 20 : 255));
  const name = new Uint8Array(nameLength).map(() => 0x21 + Math.floor(rand() * 94));
  const payload = new Uint8Array(Math.floor(rand() * (rand() < 0.9 ? 120 : MAX_PAYLOAD + 2)))
    .map(() => Math.floor(rand() * 256));
  switch (pick) {
    case 0:
      name[Math.floor(rand() * nameLength)] = [0x20, 0x09, 0x7f, 0x00, 0xc3, 0xff][
        Math.floor(rand() * 6)
      ]!;
      return encodeMsg(nextId, name, payload);
    case 1:
      return encodeMsg(Math.floor(rand() * nextId), name, payload); // duplicate or 0
    case 2:
      return encodeMsg(nextId, "é" + "a".repeat(Math.floor(rand() * 4)), payload);
    case 3:
      return encodeHello({ clientId: 1, session: 0n });
    default:
      return encodeMsg(nextId, name, payload);
  }
}

function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

Deno.test("MsgScanner takes exactly the frames the reference accepts, in random streams", () => {
  const s = scanner();
  for (let seed = 1; seed <= 300; seed++) {
    const rand = seeded(seed);
    const firstLastId = Math.floor(rand() * 3);
    const frames: Uint8Array[] = [];
    for (let i = 0, id = 1; i < 40; i++, id += 1 + Math.floor(rand() * 3)) {
      frames.push(randomFrame(rand, id));
    }
    let lastId = firstLastId;
    let expected = 0;
    let end = 0;
    for (const f of frames) {
      if (!takes(f, lastId, MAX_PAYLOAD)) break;
      lastId = readU32(f, 5);
      end += f.length;
      expected++;
    }
    equal(s.scan(concat(frames), firstLastId), expected, `seed ${seed}`);
    equal(s.end, end, `seed ${seed}`);
    equal(s.lastId, lastId, `seed ${seed}`);
    equal(s.stoppedAtFrame, expected < frames.length, `seed ${seed}`);
  }
});

// ---- FrameDecoder.nextMsgRun beside next(): the same outcome for every frame. ----

const DECODER_LIMITS = {
  initialBytes: 4096,
  maxReadBytes: 64 * 1024,
  maxMsgLength: msgFrameLimit(MAX_PAYLOAD),
  maxSkippedMsgLength: msgFrameLimit(MAX_PAYLOAD * 16),
  maxControlLength: MAX_CONTROL_FRAME_LENGTH,
  maxPayloadBytes: MAX_PAYLOAD,
};

/**
 * What a greeted connection makes of each frame (as connection.ts's frame loop does): `ok` with
 * the frame's bytes, a NACK code, an oversized MSG, or the ERROR that ends the stream.
 */
class Consumer {
  readonly outcomes: string[] = [];
  lastId = 0;
  ended = false;
  readonly decoder = new FrameDecoder(DECODER_LIMITS);
  constructor(readonly useRuns: boolean) {}

  feed(chunk: Uint8Array): void {
    let at = 0;
    while (at < chunk.length && !this.ended) {
      const target = this.decoder.readTarget();
      const n = Math.min(target.length, chunk.length - at);
      target.set(chunk.subarray(at, at + n));
      at += n;
      this.decoder.commit(n);
      this.#drain();
    }
  }

  #drain(): void {
    const d = this.decoder;
    while (!this.ended) {
      if (this.useRuns) {
        const taken = d.nextMsgRun(this.lastId);
        if (taken > 0) {
          let p = d.frameStart;
          for (let i = 0; i < taken; i++) {
            const end = p + 4 + readU32(d.buffer, p);
            this.#accepted(d.buffer.subarray(p, end));
            p = end;
          }
          equal(p, d.frameEnd);
          equal(this.lastId, d.lastMsgId);
          continue;
        }
      }
      const r = d.next();
      if (r === Decoded.NEED_MORE) return;
      if (r === Decoded.OVERSIZED_MSG) this.outcomes.push(`oversized ${d.oversizedMsgId}`);
      else if (r === Decoded.ERROR) this.#end(`error ${d.error}`);
      else if (d.type !== FrameType.MSG) this.outcomes.push(`frame 0x${d.type.toString(16)}`);
      else this.#check(d.buffer.subarray(d.frameStart, d.frameEnd));
    }
  }

  /** connection.ts's #checkMsg, outcome by outcome. */
  #check(frame: Uint8Array): void {
    const body = frame.length - 5;
    const nameLength = frame[9] ?? 0;
    if (body < 5 || 5 + nameLength > body) return this.#end("error too short");
    const id = readU32(frame, 5);
    if (id === 0) return this.#end("error msg_id 0");
    if (id <= this.lastId) return void this.outcomes.push(`nack 3 ${id}`);
    if (body - 5 - nameLength > MAX_PAYLOAD) return void this.outcomes.push(`nack 1 ${id}`);
    const problem = nameProblem(frame, 10, 10 + nameLength);
    if (problem !== "") return void this.outcomes.push(`nack 2 ${id} ${problem}`);
    this.#accepted(frame);
  }

  #accepted(frame: Uint8Array): void {
    this.lastId = readU32(frame, 5);
    this.outcomes.push(`ok ${Array.from(frame).join(",")}`);
  }

  #end(outcome: string): void {
    this.outcomes.push(outcome);
    this.ended = true;
  }
}

/** A random stream: mostly good MSGs, and every kind of frame a run does not take. */
function randomStream(rand: () => number, frames: number): Uint8Array {
  const parts: Uint8Array[] = [];
  for (let i = 0, id = 1; i < frames; i++, id += 1 + Math.floor(rand() * 3)) {
    const pick = rand();
    if (pick < 0.02) {
      parts.push(encodeMsg(id, "big", new Uint8Array(MAX_PAYLOAD + 300))); // skipped: NACK 1
    } else if (pick < 0.03) {
      parts.push(rawMsg({ msgId: id, nameLength: 200, rest: text.encode("short") })); // ERROR
      break;
    } else {
      parts.push(randomFrame(rand, id));
    }
  }
  return concat(parts);
}

function outcomes(stream: Uint8Array, cuts: number[], useRuns: boolean): string[] {
  const c = new Consumer(useRuns);
  let at = 0;
  for (const cut of [...cuts, stream.length]) {
    c.feed(stream.subarray(at, cut));
    at = cut;
  }
  return c.outcomes;
}

Deno.test("FrameDecoder.nextMsgRun finds what next() finds, for a stream cut at every offset", () => {
  const rand = seeded(7);
  for (let k = 0; k < 4; k++) {
    const stream = randomStream(rand, 30);
    const expected = outcomes(stream, [], false);
    // Not vacuous: the stream has frames a run takes and frames it leaves to next().
    equal(expected.some((o) => o.startsWith("ok")), true);
    equal(expected.some((o) => o.startsWith("nack")), true);
    for (let cut = 0; cut <= stream.length; cut++) {
      deepStrictEqual(outcomes(stream, [cut], true), expected, `cut at ${cut}`);
    }
  }
});

Deno.test("FrameDecoder.nextMsgRun finds what next() finds, fed one byte at a time", () => {
  const rand = seeded(11);
  for (let k = 0; k < 4; k++) {
    const stream = randomStream(rand, 40);
    const cuts = Array.from({ length: stream.length }, (_, i) => i);
    deepStrictEqual(outcomes(stream, cuts, true), outcomes(stream, [], false));
  }
});

Deno.test("FrameDecoder.nextMsgRun finds what next() finds, in reads of random sizes", () => {
  for (let seed = 1; seed <= 60; seed++) {
    const rand = seeded(seed);
    const stream = randomStream(rand, 800);
    const cuts: number[] = [];
    for (let at = 0; at < stream.length;) {
      at += 1 + Math.floor(rand() * (rand() < 0.5 ? 300 : 70_000));
      if (at < stream.length) cuts.push(at);
    }
    deepStrictEqual(outcomes(stream, cuts, true), outcomes(stream, [], false), `seed ${seed}`);
  }
});

Deno.test("FrameDecoder.nextMsgRun takes a read of good frames in a few runs, not one per frame", () => {
  const frames = Array.from(
    { length: 600 },
    (_, i) => encodeMsg(i + 1, "client_1", "x".repeat(100)),
  );
  const d = new FrameDecoder({ ...DECODER_LIMITS, initialBytes: 128 * 1024 });
  const stream = concat(frames);
  d.readTarget().set(stream);
  d.commit(stream.length);
  let runs = 0;
  let taken = 0;
  for (let n = d.nextMsgRun(0); n > 0; n = d.nextMsgRun(d.lastMsgId)) {
    runs++;
    taken += n;
  }
  equal(taken, 600);
  // 2 KiB, then doubling to the 64 KiB window.
  equal(runs <= 8, true, `${runs} runs`);
  equal(d.next(), Decoded.NEED_MORE);
});
