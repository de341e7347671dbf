/**
 * The verifier against an oracle: `oracleVerifyFile` below is the verifier as it was before the
 * fast path (every line through `parseLine`, a `Map` of msg_id to hash per client), copied here
 * unchanged but for its name. Seeded files of valid lines, resends, ids going backwards, repeats
 * with other content, restarts, malformed lines of many kinds and torn tails must give the same
 * report from both, field for field, and every line must be accepted by `LineScan` exactly when
 * `parseLine` accepts it. A failing seed is printed and replays the same file.
 *
 * (Over 400 lines: most of it is the reference verifier, copied unchanged so that the comparison
 * is fair.)
 *
 * @module
 */

import { deepStrictEqual, equal, notEqual } from "node:assert/strict";
import { parseLine } from "../src/server/line.ts";
import {
  type ClientSummary,
  formatReport,
  LineScan,
  verifyFile,
  type VerifyReport,
} from "../src/verify.ts";
import { concat } from "../src/io/concat.ts";
import { mulberry32 } from "./support/prng.ts";

// ---- The oracle: src/verify.ts's verifyFile before the fast path, as it was. ----

const LF = 0x0a;
const CHUNK = 1024 * 1024;

interface RunState {
  last: number;
  /** msg_id -> hash of the line, for this run. */
  seen: Map<number, number>;
  summary: ClientSummary;
}

function fnv1a(bytes: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i]!, 0x01000193);
  return h >>> 0;
}

async function oracleVerifyFile(
  path: string,
  options: { maxDefects?: number } = {},
): Promise<VerifyReport> {
  const maxDefects = options.maxDefects ?? 100;
  const report: VerifyReport = {
    lines: 0,
    bytes: 0,
    tornBytes: 0,
    clients: new Map(),
    defects: [],
    defectCount: 0,
  };
  const defect = (text: string) => {
    report.defectCount++;
    if (report.defects.length < maxDefects) report.defects.push(`line ${report.lines}: ${text}`);
  };
  const runs = new Map<number, RunState>();

  const check = (line: Uint8Array) => {
    report.lines++;
    let rec;
    try {
      rec = parseLine(line);
    } catch (e) {
      defect((e as Error).message.replace(/^Cannot parse line: /, ""));
      return;
    }
    const hash = fnv1a(line);
    let state = runs.get(rec.clientId);
    if (state === undefined) {
      const summary = { lines: 0, runs: 1, resent: 0 };
      report.clients.set(rec.clientId, summary);
      state = { last: 0, seen: new Map(), summary };
      runs.set(rec.clientId, state);
    } else if (rec.msgId === 1 && state.last >= 1 && state.seen.get(1) !== hash) {
      state.summary.runs++;
      state.last = 0;
      state.seen.clear();
    }
    state.summary.lines++;
    if (rec.msgId <= state.last) {
      const earlier = state.seen.get(rec.msgId);
      if (earlier === hash) {
        state.summary.resent++;
        return;
      }
      defect(
        earlier === undefined
          ? `client ${rec.clientId} msg_id ${rec.msgId} goes backwards after ${state.last}`
          : `client ${rec.clientId} msg_id ${rec.msgId} repeated with other content`,
      );
      return;
    }
    state.last = rec.msgId;
    state.seen.set(rec.msgId, hash);
  };

  const file = await Deno.open(path, { read: true });
  try {
    let buf = new Uint8Array(CHUNK);
    let filled = 0;
    for (;;) {
      if (filled === buf.length) {
        const grown = new Uint8Array(buf.length * 2); // a line longer than the buffer
        grown.set(buf);
        buf = grown;
      }
      const n = await file.read(buf.subarray(filled));
      if (n === null) break;
      report.bytes += n;
      filled += n;
      let start = 0;
      for (let nl = buf.indexOf(LF, start); nl >= 0 && nl < filled; nl = buf.indexOf(LF, start)) {
        check(buf.subarray(start, nl));
        start = nl + 1;
      }
      buf.copyWithin(0, start, filled);
      filled -= start;
    }
    if (filled > 0) {
      report.tornBytes = filled;
      report.defectCount++;
      if (report.defects.length < maxDefects) {
        report.defects.push(`end of file: torn last line (${filled} bytes without a line feed)`);
      }
    }
  } finally {
    file.close();
  }
  return report;
}

// ---- The generator. ----

const enc = new TextEncoder();

function bytes(...parts: (string | number[] | Uint8Array)[]): Uint8Array {
  return concat(
    parts.map((p) =>
      typeof p === "string" ? enc.encode(p) : p instanceof Uint8Array ? p : new Uint8Array(p)
    ),
  );
}

const CLIENTS = [0, 1, 2, 7, 10, 99, 123456789, 4294967295];
const NAMES: Uint8Array[] = [
  bytes("a"),
  bytes("client_1"),
  bytes("bench"),
  bytes("café"),
  bytes("名前"),
  bytes("back\\slash"),
  bytes([0xff, 0xfe]), // not UTF-8: parseLine does not check
  bytes([0xc3]), // a cut UTF-8 sequence
  bytes([0xe2, 0x80, 0xa8]), // U+2028, whitespace beyond ASCII: parseLine does not check
  bytes("n".repeat(300)), // over 255 bytes: parseLine does not check
];
/** Ids that are not a u32 in decimal as parseLine reads them. */
const BAD_IDS = [
  "",
  "a",
  "-1",
  "+1",
  "1a",
  "0x1",
  "01",
  "00",
  "007",
  "4294967296",
  "9999999999",
  "10000000000",
  "04294967295",
  "１",
  "1\r",
  "1\\",
];
/** Names parseLine refuses: it has no empty field, and no byte below 0x21 nor 0x7f. */
const BAD_NAMES: Uint8Array[] = [
  bytes("na\tme"),
  bytes([0x61, 0x01]),
  bytes([0x7f]),
  bytes([0x61, 0x1f, 0x62]),
  bytes([0x00]),
  bytes("a\rb"),
];
/** Bytes that matter to the line format, for mutations. */
const INTERESTING = [
  0x20,
  0x0d,
  0x0a,
  0x5c,
  0x30,
  0x31,
  0x39,
  0x2f,
  0x3a,
  0x7f,
  0x00,
  0x80,
  0xff,
  0x6e,
  0x72,
  0x09,
  0x21,
];

interface Options {
  lines: number;
  /** How often the next id of a client skips some (0.1 unless set). */
  gaps?: number;
  /** Some payloads this long, so that lines outgrow the verifier's 1 MiB read chunk. */
  bigPayload?: number;
}

/** A seeded data file: mostly valid lines, and every kind of trouble the verifier reports. */
function generate(seed: number, options: Options): Uint8Array {
  const random = mulberry32(seed);
  const int = (n: number) => Math.floor(random() * n);
  const pick = <T>(a: readonly T[]): T => a[int(a.length)]!;

  const payload = (): Uint8Array => {
    const out: number[] = [];
    const n = options.bigPayload !== undefined && int(40) === 0
      ? int(options.bigPayload)
      : int(int(8) === 0 ? 200 : 30);
    for (let i = 0; i < n; i++) {
      const r = int(20);
      if (r < 10) out.push(0x61 + int(26));
      else if (r < 12) out.push(0x20);
      else if (r < 14) out.push(0x5c, pick([0x5c, 0x6e, 0x72]));
      else if (r < 16) {
        const b = int(256);
        out.push(b === 0x0a || b === 0x0d || b === 0x5c ? 0x2e : b);
      } else out.push(pick([0x09, 0x00, 0x7f, 0xff, 0x6e, 0x72, 0x22]));
    }
    return new Uint8Array(out);
  };
  const line = (client: number | string, id: number | string, name: Uint8Array, p: Uint8Array) =>
    bytes(`${client} ${id} `, name, " ", p);

  /** A line parseLine refuses, of one kind or another. */
  const malformed = (): Uint8Array => {
    const c = pick(CLIENTS);
    const name = pick(NAMES);
    switch (int(9)) {
      case 0: // a bad escape: an unknown letter, or a backslash at the end
        return int(2) === 0
          ? line(c, 1 + int(9), name, bytes(payload(), "\\", [pick([0x74, 0x78, 0x30, 0x4e])]))
          : line(c, 1 + int(9), name, bytes(payload(), "\\"));
      case 1: // a raw CR in the payload, or at the end (a CRLF file)
        return line(c, 1 + int(9), name, bytes(payload(), "\r", int(2) === 0 ? payload() : ""));
      case 2: // too few fields
        return bytes(pick(["", " ", "  ", "1", "1 2", "1 2 name", "12 ", "1 2 "]));
      case 3:
        return line(pick(BAD_IDS), 1 + int(9), name, payload());
      case 4:
        return line(c, pick(BAD_IDS), name, payload());
      case 5: // an empty name
        return line(c, 1 + int(9), new Uint8Array(0), payload());
      case 6:
        return line(c, 1 + int(9), pick(BAD_NAMES), payload());
      case 7: // a leading or doubled space
        return int(2) === 0
          ? bytes(" ", line(c, 1, name, payload()))
          : bytes(`${c}  1 `, name, " x");
      default: // arbitrary bytes
        return new Uint8Array(Array.from({ length: int(20) }, () => pick(INTERESTING)));
    }
  };

  /** One to three bytes inserted, deleted or replaced: mostly malformed, sometimes not. */
  const mutated = (from: Uint8Array): Uint8Array => {
    const b = [...from];
    for (let k = 1 + int(3); k > 0; k--) {
      const at = int(b.length + 1);
      const op = int(3);
      if (op === 0) b.splice(at, 0, pick(INTERESTING));
      else if (op === 1 && b.length > 0) b.splice(Math.min(at, b.length - 1), 1);
      else if (b.length > 0) b[Math.min(at, b.length - 1)] = pick(INTERESTING);
    }
    return new Uint8Array(b);
  };

  interface Model {
    last: number;
    /** Lines written per msg_id, of any run. */
    written: Map<number, Uint8Array[]>;
  }
  const clients = CLIENTS.filter(() => int(2) === 0);
  if (clients.length === 0) clients.push(pick(CLIENTS));
  const models = new Map<number, Model>(clients.map((c) => [c, { last: 0, written: new Map() }]));
  const out: Uint8Array[] = [];
  const emit = (l: Uint8Array) => out.push(l, new Uint8Array([LF]));
  const valid = (c: number, id: number, p = payload()) => {
    const l = line(c, id, int(4) === 0 ? pick(NAMES) : NAMES[1]!, p);
    const m = models.get(c)!;
    m.written.set(id, [...m.written.get(id) ?? [], l]);
    emit(l);
    return l;
  };

  for (let n = 0; n < options.lines; n++) {
    const c = pick(clients);
    const m = models.get(c)!;
    const earlier = [...m.written.keys()];
    const r = int(100);
    if (r < 50 || earlier.length === 0) {
      const id = random() < (options.gaps ?? 0.1) ? m.last + 2 + int(5) : m.last + 1;
      valid(c, id);
      m.last = id;
    } else if (r < 58) { // a resend: an earlier line again, byte for byte
      emit(pick(m.written.get(pick(earlier))!));
    } else if (r < 63) { // an earlier id with other content
      valid(c, pick(earlier));
    } else if (r < 67) { // an id at or below the last, maybe never written
      valid(c, int(m.last + 1));
    } else if (r < 71) { // a new run: ids restart at 1
      valid(c, 1);
      m.last = 1;
    } else if (r < 73) { // an id 1 line again: a resend of the run's first, or a new run
      const first = m.written.get(1);
      if (first !== undefined) emit(pick(first));
    } else if (r < 75) { // ids near the top of u32
      const id = pick([4294967294, 4294967295]);
      valid(c, id);
      m.last = id;
    } else if (r < 90) {
      emit(malformed());
    } else {
      const from = pick(m.written.get(pick(earlier))!);
      emit(mutated(from));
    }
  }
  const r = int(10);
  if (r < 2) { // a torn tail: part of a good line
    const l = line(pick(clients), 1, NAMES[0]!, payload());
    out.push(l.subarray(0, 1 + int(l.length)));
  } else if (r < 3) { // a whole line without its line feed, or bytes of any kind
    out.push(
      int(2) === 0
        ? line(pick(clients), 5, NAMES[0]!, bytes("x\\"))
        : new Uint8Array(Array.from({ length: 1 + int(8) }, () => pick(INTERESTING))),
    );
  }
  return concat(out);
}

// ---- The tests. ----

async function withFile<T>(content: Uint8Array, fn: (path: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "msgserver_verify_diff_test_" });
  try {
    await Deno.writeFile(`${dir}/m.log`, content);
    return await fn(`${dir}/m.log`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Asserts that both verifiers report the same on `content`; returns the report. */
function assertSameReport(
  content: Uint8Array,
  maxDefects: number,
  what: string,
): Promise<VerifyReport> {
  return withFile(content, async (path) => {
    const got = await verifyFile(path, { maxDefects });
    const want = await oracleVerifyFile(path, { maxDefects });
    try {
      deepStrictEqual(got, want);
      equal(formatReport(path, got), formatReport(path, want));
    } catch (e) {
      throw new Error(`${what}, maxDefects ${maxDefects}: ${(e as Error).message}`, { cause: e });
    }
    return got;
  });
}

function lines(content: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  let start = 0;
  for (let nl = content.indexOf(LF); nl >= 0; nl = content.indexOf(LF, start)) {
    out.push(content.subarray(start, nl));
    start = nl + 1;
  }
  return out;
}

Deno.test("verifyFile() reports exactly as the parseLine verifier on 400 seeded files", async () => {
  let defects = 0;
  let resent = 0;
  for (let seed = 1; seed <= 400; seed++) {
    // One file in three has gaps between most ids, the others now and then.
    const gaps = seed % 3 === 0 ? 0.9 : 0.1;
    const content = generate(seed, { lines: 20 + (seed % 7) * 40, gaps });
    const maxDefects = [100, 0, 1, 5][seed % 4]!;
    const report = await assertSameReport(content, maxDefects, `seed ${seed}`);
    defects += report.defectCount;
    for (const c of report.clients.values()) resent += c.resent;
  }
  // The files are not trivial: they have resends and defects by the thousand.
  equal(defects > 5000 && resent > 2000, true, `defects ${defects}, resent ${resent}`);
});

Deno.test("verifyFile() reports as the parseLine verifier with lines across read chunks", async () => {
  for (let seed = 1001; seed <= 1004; seed++) {
    const content = generate(seed, { lines: 400, bigPayload: 1_200_000 });
    const longest = Math.max(...lines(content).map((l) => l.length));
    equal(longest > CHUNK, true, `seed ${seed}: the longest line has ${longest} bytes`);
    await assertSameReport(content, 100, `seed ${seed}`);
  }
});

Deno.test("verifyFile() reads a line cut by the end of its first read at every byte", async () => {
  // The verifier reads 1 MiB at a time: a filler line fills the first read up to `cut` bytes
  // into the line under test, so each case has the read end at another byte of it.
  const cases = [
    "12 345 name a\\\\b\\nc\\r",
    "12 345 name abc\\",
    "12 345 name ab\\tc",
    "12 345 name abc\r",
    "12 3\r5 name abc",
    "4294967295 4294967295 n p",
    "4294967296 1 n p",
    "01 1 n p",
    "12 345 name",
    "12 345  p",
    "12 345 na\x01me p",
    "1 2 n ",
  ];
  // Also as the torn tail of the file, read to its end in two reads.
  const torn = [cases[0], cases[1], cases[11]];
  for (const text of cases) {
    const special = enc.encode(text);
    for (let cut = 0; cut <= special.length + 1; cut++) {
      const fillerLength = CHUNK - cut;
      const filler = new Uint8Array(fillerLength).fill(0x78);
      filler.set(enc.encode("12 1 f "));
      filler[fillerLength - 1] = LF;
      const lf = new Uint8Array([LF]);
      const what = `${JSON.stringify(text)} cut at ${cut}`;
      await assertSameReport(bytes(filler, special, lf, "12 1 f again\n"), 100, what);
      if (torn.includes(text)) await assertSameReport(bytes(filler, special), 100, `${what}, torn`);
    }
  }
});

Deno.test("LineScan accepts a line exactly when parseLine does, with the same ids", () => {
  const scan = new LineScan();
  let accepted = 0;
  let refused = 0;
  for (let seed = 1; seed <= 200; seed++) {
    const random = mulberry32(seed ^ 0x5ca1);
    for (const line of lines(generate(seed, { lines: 100 }))) {
      const withLf = bytes(line, [LF]);
      let parsed;
      try {
        parsed = parseLine(line);
      } catch {
        parsed = undefined;
      }
      const what = `seed ${seed}: ${JSON.stringify(new TextDecoder().decode(line))}`;
      const at = scan.scan(withLf, 0, withLf.length);
      if (parsed === undefined) {
        equal(at, -1, what);
        refused++;
        continue;
      }
      accepted++;
      equal(at, line.length, what);
      deepStrictEqual([scan.clientId, scan.msgId], [parsed.clientId, parsed.msgId], what);
      equal(scan.hash, LineScan.hashLine(line), what);
      // Not whole before the limit: refused, wherever the limit cuts it.
      equal(scan.scan(withLf, 0, Math.floor(random() * withLf.length)), -1, `${what} cut`);
    }
  }
  equal(accepted > 10000 && refused > 3000, true, `accepted ${accepted}, refused ${refused}`);
});

Deno.test("verifyFile() tells a resend from a repeat that moves the space after the name", async () => {
  // The same bytes but for where the name ends: another line, so a defect and not a resend.
  const report = await assertSameReport(enc.encode("1 2 ab c\n1 2 a bc\n1 2 ab c\n"), 100, "");
  deepStrictEqual(report.defects, ["line 2: client 1 msg_id 2 repeated with other content"]);
  deepStrictEqual(report.clients.get(1), { lines: 3, runs: 1, resent: 1 });
  notEqual(LineScan.hashLine(enc.encode("1 2 ab c")), LineScan.hashLine(enc.encode("1 2 a bc")));
});
