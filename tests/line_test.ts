// The line format's cases: every position of a special byte, differential checks against the
// plain escaping rule, parse-back (over 400 lines as a catalogue of cases).
import { deepStrictEqual, equal, ok, throws } from "node:assert/strict";
import { LineBuffer, type ParsedLine, parseFile, parseLine, Stopped } from "../src/server/line.ts";
import { concat } from "../src/io/concat.ts";
import { mulberry32 } from "./support/prng.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function bytes(...parts: (string | number[])[]): Uint8Array {
  return concat(parts.map((p) => typeof p === "string" ? enc.encode(p) : new Uint8Array(p)));
}

function write(
  out: LineBuffer,
  clientId: number,
  msgId: number,
  name: Uint8Array,
  payload: Uint8Array,
) {
  out.writeRecord(clientId, msgId, name, 0, name.length, payload, 0, payload.length);
}

function written(out: LineBuffer): Uint8Array {
  return out.bytes.slice(0, out.length);
}

function record(clientId: number, msgId: number, name: string, payload: Uint8Array): ParsedLine {
  return { clientId, msgId, name, payload };
}

Deno.test("LineBuffer escapes backslash, LF and CR and writes every other byte as it is", () => {
  const out = new LineBuffer(1024);
  const payload = new Uint8Array([
    0x5c, // \
    0x0a, // LF
    0x0d, // CR
    0x00,
    0xff,
    0x09, // tab
    0x20, // space
    0x41, // A
    0x5c,
    0x6e, // a real backslash then n: must not read back as LF
    0x20,
    0x20,
    0x80,
    0x7f,
  ]);
  write(out, 12, 34, enc.encode("client_1"), payload);
  deepStrictEqual(
    written(out),
    bytes("12 34 client_1 ", [
      0x5c,
      0x5c,
      0x5c,
      0x6e,
      0x5c,
      0x72,
      0x00,
      0xff,
      0x09,
      0x20,
      0x41,
      0x5c,
      0x5c,
      0x6e,
      0x20,
      0x20,
      0x80,
      0x7f,
      0x0a,
    ]),
  );
  equal(out.length, 15 + 19);
});

Deno.test("LineBuffer writes a record with an empty payload as the name and a space", () => {
  const out = new LineBuffer(64);
  write(out, 1, 2, enc.encode("n"), new Uint8Array(0));
  equal(dec.decode(written(out)), "1 2 n \n");
  deepStrictEqual(parseFile(written(out)), [record(1, 2, "n", new Uint8Array(0))]);
});

Deno.test("LineBuffer formats ids 0, 9, 10 and 4294967295 in decimal", () => {
  const out = new LineBuffer(256);
  const n = enc.encode("n");
  const p = enc.encode("p");
  for (const [c, m] of [[0, 9], [10, 4294967295], [4294967295, 0], [100, 1000000000], [99, 1]]) {
    write(out, c!, m!, n, p);
  }
  equal(
    dec.decode(written(out)),
    "0 9 n p\n10 4294967295 n p\n4294967295 0 n p\n100 1000000000 n p\n99 1 n p\n",
  );
  deepStrictEqual(parseFile(written(out)).map((r) => [r.clientId, r.msgId]), [
    [0, 9],
    [10, 4294967295],
    [4294967295, 0],
    [100, 1000000000],
    [99, 1],
  ]);
});

Deno.test("LineBuffer copies only the given ranges of the name and payload arrays", () => {
  const out = new LineBuffer(64);
  const src = enc.encode("xxclient_7yy");
  const payload = enc.encode("<<a\nb>>");
  out.writeRecord(7, 8, src, 2, 10, payload, 2, 5);
  equal(dec.decode(written(out)), "7 8 client_7 a\\nb\n");
});

Deno.test("LineBuffer appends records after each other and clear() starts over", () => {
  const out = new LineBuffer(64);
  write(out, 1, 1, enc.encode("a"), enc.encode("one"));
  write(out, 2, 2, enc.encode("b"), enc.encode("two"));
  equal(dec.decode(written(out)), "1 1 a one\n2 2 b two\n");
  const memory = out.bytes;
  out.clear();
  equal(out.length, 0);
  equal(out.bytes, memory);
  write(out, 3, 3, enc.encode("c"), enc.encode("three"));
  equal(dec.decode(written(out)), "3 3 c three\n");
});

Deno.test("LineBuffer grows by doubling for a big payload and keeps what it held", () => {
  const out = new LineBuffer(16);
  // 24 + 1 + 2 * 1 bytes reserved, plus 32 spare: 16 doubles to 64.
  write(out, 1, 1, enc.encode("a"), enc.encode("x"));
  equal(out.capacity, 64);
  // 8 written + 24 + 1 + 2 * 100 + 32 = 265 bytes needed: 64 doubles to 512.
  const payload = new Uint8Array(100).fill(0x5c);
  write(out, 2, 2, enc.encode("b"), payload);
  equal(out.capacity, 512);
  equal(out.length, 8 + 6 + 200 + 1);
  equal(dec.decode(out.bytes.subarray(0, 8)), "1 1 a x\n");

  const rand = mulberry32(7);
  const big = new Uint8Array(3 * 1024 * 1024);
  for (let i = 0; i < big.length; i++) big[i] = Math.floor(rand() * 256);
  write(out, 3, 3, enc.encode("c"), big);
  ok(out.capacity >= out.length);
  equal(out.capacity & (out.capacity - 1), 0, "a power of two times 16");
  const records = parseFile(written(out));
  equal(records.length, 3);
  deepStrictEqual(records[2], record(3, 3, "c", big));
  deepStrictEqual(records[1], record(2, 2, "b", payload));
});

Deno.test("LineBuffer shrinkTo releases grown memory only when empty", () => {
  const out = new LineBuffer(64);
  write(out, 1, 1, enc.encode("a"), new Uint8Array(1000));
  equal(out.capacity, 4096); // 24 + 1 + 2 * 1000 + 32 spare, doubled up from 64
  out.shrinkTo(64);
  equal(out.capacity, 4096, "not while it holds a record");
  out.clear();
  out.shrinkTo(64);
  equal(out.capacity, 64);
  out.shrinkTo(128);
  equal(out.capacity, 64, "never grows");
  write(out, 2, 2, enc.encode("b"), enc.encode("after"));
  equal(dec.decode(written(out)), "2 2 b after\n");
});

/** MSG-like records back to back: `name | payload` each, as the writer stages a queue entry. */
function stagedSource(records: [string, Uint8Array][]): {
  src: Uint8Array;
  ranges: [number, number, number][];
} {
  const parts: Uint8Array[] = [];
  const ranges: [number, number, number][] = [];
  let at = 3; // not at 0, so offsets are really taken from the ranges
  parts.push(enc.encode("xyz"));
  for (const [name, payload] of records) {
    const n = enc.encode(name);
    parts.push(n, payload);
    ranges.push([at, at + n.length, at + n.length + payload.length]);
    at += n.length + payload.length;
  }
  const src = new Uint8Array(at);
  let o = 0;
  for (const p of parts) {
    src.set(p, o);
    o += p.length;
  }
  return { src, ranges };
}

Deno.test("LineBuffer.writeStaged formats records of a staged source, also while it grows", () => {
  const rand = mulberry32(11);
  const records: [string, Uint8Array][] = [];
  for (let i = 0; i < 300; i++) {
    const payload = new Uint8Array(Math.floor(rand() * 70));
    // Mostly plain bytes, some to escape, at every position of a 16-byte block.
    for (let j = 0; j < payload.length; j++) {
      payload[j] = rand() < 0.05 ? [0x5c, 0x0a, 0x0d][Math.floor(rand() * 3)]! : 0x41 + j % 26;
    }
    records.push([`name_${i}`, payload]);
  }
  const { src, ranges } = stagedSource(records);
  const out = new LineBuffer(16); // grows many times with the source staged
  out.stage(src);
  src.fill(0); // what was staged is a copy
  ranges.forEach(([ns, ne, pe], i) => out.writeStaged(9, i + 1, ns, ne, pe));
  const parsed = parseFile(written(out));
  equal(parsed.length, records.length);
  parsed.forEach((r, i) => deepStrictEqual(r, record(9, i + 1, records[i]![0], records[i]![1])));
});

Deno.test("LineBuffer.writeStaged refuses ranges outside the staged source", () => {
  const out = new LineBuffer(64);
  out.stage(enc.encode("nameabc"));
  throws(() => out.writeStaged(1, 1, 0, 4, 8), RangeError);
  throws(() => out.writeStaged(1, 1, 5, 4, 7), RangeError);
  throws(() => out.writeStaged(1, 1, -1, 4, 7), RangeError);
  throws(() => out.writeStaged(1, 1, NaN, 4, 7), RangeError);
  throws(() => out.writeStaged(1, 1, 0, 4, NaN), RangeError);
  throws(() => out.writeStaged(1, 1, 0, 3.5, 7), RangeError);
  equal(out.length, 0);
  out.writeStaged(1, 1, 0, 4, 7);
  equal(dec.decode(written(out)), "1 1 name abc\n");
  out.clear();
  out.shrinkTo(0); // a new memory: the staged source is gone
  throws(() => out.writeStaged(1, 1, 0, 4, 7), RangeError);
});

Deno.test("LineBuffer created with 0 bytes can still write a record", async () => {
  // reserve() doubles bytes.length until it is big enough; from 0 that never ends. Run it in a
  // child process so a hang fails this test instead of stalling the whole run.
  const url = new URL("../src/server/line.ts", import.meta.url).href;
  const code = `import { LineBuffer } from ${JSON.stringify(url)};
const out = new LineBuffer(0);
const n = new Uint8Array([0x6e]);
out.writeRecord(1, 2, n, 0, 1, n, 0, 1);
await Deno.stdout.write(out.bytes.slice(0, out.length));`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-config", code],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
  const result = await child.output();
  clearTimeout(timer);
  equal(result.signal, null, "writeRecord on a LineBuffer(0) did not return within 3 s");
  equal(result.code, 0, dec.decode(result.stderr));
  equal(dec.decode(result.stdout), "1 2 n n\n");
});

Deno.test("LineBuffer round-trips 2000 random payloads through parseFile", () => {
  const rand = mulberry32(0x5eed);
  const int = (n: number) => Math.floor(rand() * n);
  const special = [0x5c, 0x0a, 0x0d, 0x6e, 0x72, 0x20, 0x00, 0xff];
  const utf8Names = ["café", "名前", "ü_1", "😀"];
  const out = new LineBuffer(64);
  const expected: ParsedLine[] = [];
  for (let i = 0; i < 2000; i++) {
    const clientId = int(4) === 0 ? [0, 9, 10, 0xffffffff][int(4)]! : int(0x100000000);
    const msgId = int(0x100000000);
    let name: string;
    if (int(5) === 0) {
      name = utf8Names[int(utf8Names.length)]!;
    } else {
      const chars: number[] = [];
      const len = 1 + int(20);
      for (let j = 0; j < len; j++) chars.push(0x21 + int(0x7f - 0x21));
      name = String.fromCharCode(...chars);
    }
    const payload = new Uint8Array(int(4) === 0 ? 0 : int(300));
    for (let j = 0; j < payload.length; j++) {
      payload[j] = rand() < 0.4 ? special[int(special.length)]! : int(256);
    }
    write(out, clientId, msgId, enc.encode(name), payload);
    expected.push(record(clientId, msgId, name, payload));
  }
  const content = written(out);
  const parsed = parseFile(content);
  equal(parsed.length, 2000);
  for (let i = 0; i < parsed.length; i++) deepStrictEqual(parsed[i], expected[i], `record ${i}`);
  // Exactly one line feed per record: escaped payloads never contain a raw one.
  equal(content.filter((b) => b === 0x0a).length, 2000);
  equal(content.filter((b) => b === 0x0d).length, 0);
});

Deno.test("parseLine reads a record with spaces in its payload and undoes the escapes", () => {
  deepStrictEqual(
    parseLine(enc.encode("1 2 client_1 hello  world ")),
    record(1, 2, "client_1", enc.encode("hello  world ")),
  );
  deepStrictEqual(
    parseLine(bytes("4294967295 0 名前 ", [0x5c, 0x5c, 0x5c, 0x6e, 0x5c, 0x72, 0x00, 0xff, 0x09])),
    record(4294967295, 0, "名前", new Uint8Array([0x5c, 0x0a, 0x0d, 0x00, 0xff, 0x09])),
  );
});

function rejects(line: string | Uint8Array, message: string): void {
  const input = typeof line === "string" ? enc.encode(line) : line;
  throws(() => parseLine(input), (e: unknown) => {
    ok(e instanceof SyntaxError, `not a SyntaxError: ${e}`);
    equal(e.message, message);
    return true;
  }, JSON.stringify(typeof line === "string" ? line : Array.from(line)));
}

Deno.test("parseLine rejects a line with fewer than 4 fields", () => {
  for (const line of ["", "1", "1 2", "1 2 name", "12client_1payload"]) {
    rejects(line, "Cannot parse line: fewer than 4 fields");
  }
});

Deno.test("parseLine rejects a bad escape and a trailing lone backslash", () => {
  rejects("1 2 name a\\xb", "Cannot parse line: bad escape at byte 10");
  rejects("1 2 n ab\\", "Cannot parse line: bad escape at byte 8");
  rejects("1 2 n \\\\\\", "Cannot parse line: bad escape at byte 8");
  rejects("1 2 n \\N", "Cannot parse line: bad escape at byte 6");
  rejects("1 2 n \\ ", "Cannot parse line: bad escape at byte 6");
});

Deno.test("parseLine rejects ids with leading zeros, signs, other characters or over u32", () => {
  const client = "Cannot parse line: client_id is not a u32 in decimal";
  const msg = "Cannot parse line: msg_id is not a u32 in decimal";
  rejects("01 2 n p", client);
  rejects("00 2 n p", client);
  rejects("1 007 n p", msg);
  rejects("4294967296 1 n p", client);
  rejects("1 4294967296 n p", msg);
  rejects("1 99999999999 n p", msg);
  rejects("-1 2 n p", client);
  rejects("+1 2 n p", client);
  rejects("1a 2 n p", client);
  rejects("1 0x10 n p", msg);
  rejects(" 1 2 n p", client);
  rejects("1  2 n p", msg);
  // The largest u32 and a lone 0 are fine.
  equal(parseLine(enc.encode("0 4294967295 n p")).msgId, 4294967295);
});

Deno.test("parseLine rejects an empty name and a name with a control character", () => {
  rejects("1 2  payload", "Cannot parse line: the name is empty");
  rejects(bytes("1 2 a", [0x09], "b p"), "Cannot parse line: the name has a control character");
  rejects(bytes("1 2 a", [0x7f], " p"), "Cannot parse line: the name has a control character");
  rejects(bytes("1 2 ", [0x00], " p"), "Cannot parse line: the name has a control character");
});

Deno.test("parseLine rejects a raw line feed or carriage return in the payload", () => {
  rejects("1 2 n a\rb", "Cannot parse line: raw line break in payload");
  rejects("1 2 n a\nb", "Cannot parse line: raw line break in payload");
});

Deno.test("parseFile reads every line and returns nothing for empty content", () => {
  deepStrictEqual(parseFile(new Uint8Array(0)), []);
  deepStrictEqual(parseFile(enc.encode("1 1 a x\n2 2 b \n")), [
    record(1, 1, "a", enc.encode("x")),
    record(2, 2, "b", new Uint8Array(0)),
  ]);
});

Deno.test("parseFile reports a torn last line with its byte offset", () => {
  throws(
    () => parseFile(enc.encode("1 2 n a\n3 4 n b")),
    (e: unknown) => {
      ok(e instanceof SyntaxError);
      equal(e.message, "Cannot parse file: torn last line at byte 8");
      return true;
    },
  );
  throws(() => parseFile(enc.encode("1 2 n a")), {
    name: "SyntaxError",
    message: "Cannot parse file: torn last line at byte 0",
  });
});

Deno.test("parseFile names the line number of a malformed line", () => {
  throws(() => parseFile(enc.encode("1 2 n a\n3 4 n b\nbad\n")), {
    name: "SyntaxError",
    message: "Cannot parse line: fewer than 4 fields (line 3)",
  });
  throws(() => parseFile(enc.encode("1 2 n a\r\n")), {
    name: "SyntaxError",
    message: "Cannot parse line: raw line break in payload (line 1)",
  });
  throws(() => parseFile(enc.encode("\n")), {
    name: "SyntaxError",
    message: "Cannot parse line: fewer than 4 fields (line 1)",
  });
});

/** The escaping rule, written plainly, to check the formatter against. */
function escapeReference(payload: Uint8Array): string {
  let s = "";
  for (const c of payload) {
    s += c === 0x5c ? "\\\\" : c === 0x0a ? "\\n" : c === 0x0d ? "\\r" : String.fromCharCode(c);
  }
  return s;
}

Deno.test("LineBuffer escapes a special byte at every position of payloads of 0 to 48 bytes", () => {
  const out = new LineBuffer(64);
  for (let length = 0; length <= 48; length++) {
    const cases: Uint8Array[] = [new Uint8Array(length).fill(0x61)];
    for (let at = 0; at < length; at++) {
      for (const special of [0x5c, 0x0a, 0x0d]) {
        const payload = new Uint8Array(length).fill(0x61);
        payload[at] = special;
        payload[length - 1 - at] = special; // and a second one, mirrored
        cases.push(payload);
      }
    }
    cases.push(new Uint8Array(length).fill(0x5c));
    for (const payload of cases) {
      out.clear();
      write(out, 1, 2, enc.encode("n"), payload);
      equal(dec.decode(written(out)), `1 2 n ${escapeReference(payload)}\n`);
    }
  }
});

Deno.test("LineBuffer matches the escaping rule on 20,000 random records, staged and not", () => {
  const rand = mulberry32(0xf0f0);
  const int = (n: number) => Math.floor(rand() * n);
  const specials = [0x5c, 0x0a, 0x0d];
  const randomBytes = (n: number) => {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = rand() < 0.3 ? specials[int(3)]! : int(256);
    return b;
  };
  const ids = [0, 9, 10, 2 ** 31 - 1, 2 ** 31, 0xffffffff];
  const out = new LineBuffer(1); // grows often, moving the staged source each time
  const expected: number[] = [];
  const written: number[] = [];
  const line = (clientId: number, msgId: number, name: Uint8Array, payload: Uint8Array) => {
    expected.push(...enc.encode(`${clientId} ${msgId} `), ...name, 0x20);
    for (const c of payload) {
      if (c === 0x5c) expected.push(0x5c, 0x5c);
      else if (c === 0x0a) expected.push(0x5c, 0x6e);
      else if (c === 0x0d) expected.push(0x5c, 0x72);
      else expected.push(c);
    }
    expected.push(0x0a);
  };
  let formatted = 0;
  let nextShrink = 1000;
  let shrinks = 0;
  while (formatted < 20_000) {
    if (formatted >= nextShrink) {
      for (const b of out.bytes.subarray(0, out.length)) written.push(b);
      out.clear();
      out.shrinkTo(1); // a new memory: what was staged is gone and is staged again below
      nextShrink += 1000;
      shrinks++;
    }
    // An entry of 1 to 8 records, `name | payload` each, as the writer stages it.
    const records: [Uint8Array, Uint8Array, number, number][] = [];
    for (let r = 1 + int(8); r > 0; r--) {
      const name = enc.encode(`n${int(1e6)}`.repeat(1 + int(20)).slice(0, 1 + int(60)));
      const payload = randomBytes(rand() < 0.1 ? int(300) : int(40));
      const clientId = rand() < 0.2 ? ids[int(ids.length)]! : int(0x100000000);
      records.push([name, payload, clientId, int(0x100000000)]);
    }
    if (rand() < 0.5) {
      const { src, ranges } = stagedSource(records.map(([n, p]) => [dec.decode(n), p]));
      if (!out.isStaged(src)) out.stage(src);
      ranges.forEach(([ns, ne, pe], r) => {
        out.writeStaged(records[r]![2], records[r]![3], ns, ne, pe);
        formatted++;
      });
    } else {
      for (const [name, payload, clientId, msgId] of records) {
        const pad = int(4);
        const padded = new Uint8Array(pad + payload.length + 3).fill(0x0a);
        padded.set(payload, pad);
        out.writeRecord(clientId, msgId, name, 0, name.length, padded, pad, pad + payload.length);
        formatted++;
      }
    }
    for (const [name, payload, clientId, msgId] of records) line(clientId, msgId, name, payload);
  }
  for (const b of out.bytes.subarray(0, out.length)) written.push(b);
  ok(shrinks >= 19, `the buffer started over ${shrinks} times`);
  equal(written.length, expected.length);
  deepStrictEqual(new Uint8Array(written), new Uint8Array(expected));
});

/** A MSG frame (type 0x02), a refused one (type 0) or a RECORD_WITH_CLIENT (0x7e), as queued. */
function queuedFrame(
  type: number,
  clientId: number,
  msgId: number,
  name: Uint8Array,
  payload: Uint8Array,
): Uint8Array {
  const head = type === 0x7e ? 14 : 10;
  const frame = new Uint8Array(head + name.length + payload.length);
  const view = new DataView(frame.buffer);
  view.setUint32(0, frame.length - 4);
  frame[4] = type;
  let at = 5;
  if (type === 0x7e) {
    view.setUint32(at, clientId);
    at += 4;
  }
  view.setUint32(at, msgId);
  frame[at + 4] = name.length;
  frame.set(name, at + 5);
  frame.set(payload, at + 5 + name.length);
  return frame;
}

function escapedLine(clientId: number, msgId: number, name: Uint8Array, payload: Uint8Array) {
  const line: number[] = [...enc.encode(`${clientId} ${msgId} `), ...name, 0x20];
  for (const c of payload) {
    if (c === 0x5c) line.push(0x5c, 0x5c);
    else if (c === 0x0a) line.push(0x5c, 0x6e);
    else if (c === 0x0d) line.push(0x5c, 0x72);
    else line.push(c);
  }
  line.push(0x0a);
  return line;
}

Deno.test("LineBuffer.writeFrames formats a staged entry's frames as the writer's rules say, limits and all", () => {
  const rand = mulberry32(1403);
  const int = (n: number) => Math.floor(rand() * n);
  const specials = [0x5c, 0x0a, 0x0d];
  let calls = 0;
  const stops = [0, 0, 0, 0];
  for (let round = 0; round < 3000; round++) {
    const out = new LineBuffer(int(3) === 0 ? 1 : 64 * 1024);
    const connClient = int(0x100000000);
    // An entry of 1 to 12 frames; the model keeps each frame's line (or null: passed over).
    const frames: { bytes: Uint8Array; line: number[] | null; msgId: number }[] = [];
    for (let f = 1 + int(12); f > 0; f--) {
      const type = [0x02, 0x02, 0x02, 0x00, 0x7e][int(5)]!;
      const name = enc.encode("n".repeat(1 + int(40)));
      const payload = new Uint8Array(int(10) === 0 ? int(400) : int(60));
      for (let i = 0; i < payload.length; i++) {
        payload[i] = rand() < 0.2 ? specials[int(3)]! : 0x20 + int(0x5f);
      }
      const ownClient = int(0x100000000);
      const msgId = 1 + int(0xfffffffe);
      frames.push({
        bytes: queuedFrame(type, ownClient, msgId, name, payload),
        line: type === 0
          ? null
          : escapedLine(type === 0x7e ? ownClient : connClient, msgId, name, payload),
        msgId,
      });
    }
    const src = concat(frames.map((f) => f.bytes));
    // Some lines already in the buffer, as in a batch that other entries began.
    const before = int(2) === 0 ? [] : escapedLine(1, 2, enc.encode("x"), new Uint8Array(int(50)));
    if (before.length > 0) write(out, 1, 2, enc.encode("x"), new Uint8Array(before.length - 7));
    const start = out.length;
    const from = int(3) === 0 ? frames[0]!.bytes.length : 0;
    const maxRecords = int(2) === 0 ? 1 + int(6) : 1000;
    const fullAt = int(2) === 0 ? start + int(600) : 1 << 30;
    const fileRoom = int(2) === 0 ? int(1200) : 1 << 30;
    out.stage(src);
    const at = out.writeFrames(connClient, from, maxRecords, fullAt, fileRoom);
    calls++;

    // The writer's rules, one frame at a time (what writer.ts did before writeFrames).
    let pos = from;
    let length = start;
    const lines: number[] = [];
    const ids: number[] = [];
    let stopped = 0;
    // `from` is 0 or the end of the first frame.
    for (let f = from === 0 ? 0 : 1; f < frames.length; f++) {
      const frame = frames[f]!;
      if (length > 0 && length + 24 + 2 * frame.bytes.length > fileRoom) {
        stopped = 3;
        break;
      }
      if (frame.line !== null) {
        lines.push(...frame.line);
        length += frame.line.length;
        ids.push(frame.msgId);
      }
      pos += frame.bytes.length;
      if (ids.length >= maxRecords || length >= fullAt) {
        stopped = 1;
        break;
      }
    }
    stops[stopped]!++;
    equal(at, pos, `round ${round}: stopped at`);
    equal(out.stopped, stopped, `round ${round}: why it stopped`);
    equal(out.records, ids.length, `round ${round}: records`);
    if (ids.length > 0) {
      equal(out.firstId, ids[0], `round ${round}: first msg_id`);
      equal(out.lastId, ids.at(-1), `round ${round}: last msg_id`);
    }
    equal(out.length, length, `round ${round}: length`);
    deepStrictEqual(written(out).subarray(start), new Uint8Array(lines), `round ${round}: lines`);
  }
  equal(calls, 3000);
  // Every way of stopping was exercised (0: the end, 1: full, 3: the file's room).
  ok(stops[0]! > 100 && stops[1]! > 100 && stops[3]! > 100, `stops ${stops}`);
});

Deno.test("LineBuffer.writeFrames refuses frames that do not fit in what is staged", () => {
  const name = enc.encode("name");
  const frame = queuedFrame(0x02, 0, 5, name, enc.encode("payload"));
  const out = new LineBuffer(64);
  out.stage(frame.subarray(0, frame.length - 1)); // the payload's last byte is missing
  throws(() => out.writeFrames(1, 0, 10, 1 << 20), RangeError);
  const lying = frame.slice();
  lying[9] = 200; // a name longer than the frame
  out.stage(lying);
  throws(() => out.writeFrames(1, 0, 10, 1 << 20), RangeError);
  out.stage(frame.subarray(0, 3)); // not even a length
  throws(() => out.writeFrames(1, 0, 10, 1 << 20), RangeError);
  // After all that, a whole frame formats.
  out.clear();
  out.stage(frame);
  equal(out.writeFrames(1, 0, 10, 1 << 20), frame.length);
  equal(dec.decode(written(out)), "1 5 name payload\n");
});

Deno.test("LineBuffer.writeFrames takes Infinity for no limit, and counts at least one record", () => {
  const name = enc.encode("n");
  const src = concat([1, 2, 3].map((id) => queuedFrame(0x02, 0, id, name, enc.encode("p"))));
  const out = new LineBuffer(64);
  out.stage(src);
  equal(out.writeFrames(4, 0, Infinity, Infinity, Infinity), src.length);
  equal(out.records, 3);
  equal(out.stopped, Stopped.END);
  out.clear();
  // A count of 0 or less still takes one record: the caller asks only with room for one.
  equal(out.writeFrames(4, 0, 0, Infinity), src.length / 3);
  equal(out.records, 1);
  equal(out.stopped, Stopped.FULL);
  equal(dec.decode(written(out)), "4 1 n p\n");
});
