// A deterministic fuzz test: thousands of hostile or broken connections against one server, next
// to an honest client. Every case is generated from a fixed seed, and an independent model of
// docs/protocol.md predicts, from the bytes alone, what the server must write to the file and
// what it must reply. Replies and the file are checked against that prediction.
//
// (Over 400 lines: the independent model of the protocol and the fuzzer that drives the server
// with it belong together.)
import { deepStrictEqual, equal, fail, ok } from "node:assert/strict";
import { MsgClient } from "../src/client/client.ts";
import { encodeHello, encodeMsg } from "../src/protocol/frames.ts";
import { parseFile } from "../src/server/line.ts";
import { concat } from "../src/io/concat.ts";
import { delay } from "../src/io/within.ts";
import { mulberry32 } from "./support/prng.ts";
import { describeFrame, type Frame, RawPeer } from "./support/raw_peer.ts";
import { withServer } from "./support/server.ts";

const SEED = 0x5eed2024;
const CASES = 3000;
const PARALLEL = 50;
/** Small, so that the "too large" paths (NACK 1, skipping, ERROR 1) are easy to reach. */
const MAX_MESSAGE_BYTES = 512;
const MAX_MSG_LENGTH = 1 + 5 + 255 + MAX_MESSAGE_BYTES;
const MAX_SKIPPED_LENGTH = 1 + 5 + 255 + 16 * MAX_MESSAGE_BYTES;
const MAX_CONTROL_LENGTH = 64 * 1024 + 16;
const HONEST_ID = 7;
const FUZZ_ID_BASE = 0x10000000;
/** How long a case waits for a reply the model predicts (only slow when something is wrong). */
const EXPECT_MS = 5000;
/** How long a case listens for a reply the model does not predict. */
const QUIET_MS = 30;

class Rng {
  readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  /** An integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(0, items.length - 1)]!;
  }
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.int(0, 255);
    return out;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
}

// ---------------------------------------------------------------------------------------------
// The model: what docs/protocol.md says the server does with a byte stream.

interface Rec {
  clientId: number;
  msgId: number;
  name: string;
  payload: Uint8Array;
}

interface Expect {
  /** The HELLO was accepted: the first reply is WELCOME. */
  welcome: boolean;
  /** The version the accepted HELLO spoke: the WELCOME answers in it. */
  version: number;
  clientId: number;
  /** Records to be written, in order. */
  records: Rec[];
  /** NACKs, in order, as "id code". */
  nacks: string[];
  /** The ERROR code the stream earns, or 0 if none. */
  error: number;
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });
const FORBIDDEN = /[\s\p{Cc}]/u;

/** The name rule of the protocol: 1..255 bytes of UTF-8, no whitespace, no control character. */
function nameOk(name: Uint8Array): string | null {
  if (name.length === 0) return null;
  let text: string;
  try {
    text = strictUtf8.decode(name);
  } catch {
    return null;
  }
  return FORBIDDEN.test(text) ? null : text;
}

function u32(b: Uint8Array, p: number): number {
  return ((b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!) >>> 0;
}

function model(s: Uint8Array): Expect {
  const e: Expect = { welcome: false, version: 0, clientId: 0, records: [], nacks: [], error: 0 };
  let ready = false;
  let lastId = 0;
  let pos = 0;
  while (e.error === 0) {
    const avail = s.length - pos;
    if (avail < 4) break;
    const length = u32(s, pos);
    if (length === 0 || (length > MAX_SKIPPED_LENGTH && length > MAX_CONTROL_LENGTH)) {
      e.error = 1;
      break;
    }
    if (avail < 5) break;
    const type = s[pos + 4]!;
    // The type is judged from the header alone: before HELLO only HELLO, after it only MSG.
    if (ready ? type !== 0x02 : type !== 0x01) {
      e.error = 1;
      break;
    }
    if (type === 0x02 && length > MAX_MSG_LENGTH) {
      if (length > MAX_SKIPPED_LENGTH) {
        e.error = 1;
        break;
      }
      if (avail < 9) break;
      if (!ready) {
        e.error = 1;
        break;
      }
      e.nacks.push(`${u32(s, pos + 5)} 1`);
      pos += 4 + length;
      continue;
    }
    if (type !== 0x02 && length > MAX_CONTROL_LENGTH) {
      e.error = 1;
      break;
    }
    if (avail < 4 + length) break;
    const body = s.subarray(pos + 5, pos + 4 + length);
    pos += 4 + length;
    if (type === 0x02 && ready) {
      if (body.length < 5 || 5 + body[4]! > body.length) {
        e.error = 1;
        break;
      }
      const msgId = u32(body, 0);
      if (msgId === 0) {
        e.error = 1;
        break;
      }
      const nameBytes = body.subarray(5, 5 + body[4]!);
      const payload = body.subarray(5 + body[4]!);
      if (msgId <= lastId) {
        e.nacks.push(`${msgId} 3`);
        continue;
      }
      if (payload.length > MAX_MESSAGE_BYTES) {
        e.nacks.push(`${msgId} 1`);
        continue;
      }
      const name = nameOk(nameBytes);
      if (name === null) {
        e.nacks.push(`${msgId} 2`);
        continue;
      }
      lastId = msgId;
      e.records.push({ clientId: e.clientId, msgId, name, payload: payload.slice() });
    } else if (type === 0x01 && !ready) {
      if (body.length < 1) e.error = 1;
      else if (body[0] !== 1 && body[0] !== 2) e.error = 2;
      else if (body.length < 15) e.error = 1;
      else if (15 + ((body[13]! << 8) | body[14]!) !== body.length) e.error = 1;
      else {
        ready = true;
        e.welcome = true;
        e.version = body[0]!;
        e.clientId = u32(body, 1);
      }
    } else {
      e.error = 1;
    }
  }
  return e;
}

// ---------------------------------------------------------------------------------------------
// The cases.

/** How a case ends: keep reading until the server is done, half-close, or close abruptly. */
type Ending = "open" | "half" | "abrupt";

interface Case {
  index: number;
  kind: string;
  bytes: Uint8Array;
  /** Write boundaries: the stream is sent as bytes[cuts[i], cuts[i+1]). */
  cuts: number[];
  /** Whether to pause between writes (so chunks arrive as separate reads). */
  pauses: boolean;
  ending: Ending;
  expect: Expect;
}

const NAMES = ["a", "client_1", "name-é", "ünï", "x".repeat(255), "日本", "n.m:1/2", "✓"];
const BAD_NAMES = [
  "",
  "has space",
  "tab\there",
  "line\nfeed",
  "nbsp\u00a0",
  "ctl\u0085",
  "\u3000",
  new Uint8Array([0xff, 0xfe]),
  new Uint8Array([0xc3]),
  new Uint8Array([0x7f]),
];

function randomPayload(rng: Rng, max: number): Uint8Array {
  const n = rng.chance(0.1) ? 0 : rng.int(0, max);
  const out = rng.bytes(n);
  // Plenty of the bytes the file escapes.
  for (let i = 0; i < n; i++) if (rng.chance(0.1)) out[i] = rng.pick([0x0a, 0x0d, 0x5c]);
  return out;
}

function hello(rng: Rng, clientId: number): Uint8Array {
  // A random session, so that no two cases share one (a shared one would be a takeover).
  const session = (BigInt(rng.int(1, 0xffffffff)) << 32n) | BigInt(rng.int(0, 0xffffffff));
  return encodeHello({ clientId, session: rng.chance(0.2) ? 0n : session });
}

function validStream(rng: Rng, clientId: number): Uint8Array {
  const parts = [hello(rng, clientId)];
  let id = 0;
  for (let m = rng.int(1, 8); m > 0; m--) {
    id += rng.int(1, 3);
    parts.push(encodeMsg(id, rng.pick(NAMES), randomPayload(rng, 200)));
  }
  return concat(parts);
}

/** A frame of any type with a body of `n` random bytes. */
function rawFrame(rng: Rng, type: number, n: number): Uint8Array {
  const f = new Uint8Array(5 + n);
  new DataView(f.buffer).setUint32(0, 1 + n);
  f[4] = type;
  f.set(rng.bytes(n), 5);
  return f;
}

const WRONG_TYPES = [0x00, 0x03, 0x04, 0x7f, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0xfe, 0xff];

function makeCase(index: number): Case {
  const rng = new Rng(SEED + index * 7919);
  const clientId = FUZZ_ID_BASE + index;
  const kinds = ["random", "framed-random", "mutated", "truncated", "wrong-state", "refusals"];
  const kind = kinds[index % kinds.length]!;
  let bytes: Uint8Array;
  let ending: Ending = rng.pick(["open", "open", "half"] as const);
  switch (kind) {
    case "random": {
      const noise = rng.bytes(rng.int(1, 300));
      bytes = rng.chance(0.5) ? concat([hello(rng, clientId), noise]) : noise;
      break;
    }
    case "framed-random": {
      // Well-framed frames of random types and bodies, sometimes after a valid HELLO.
      const parts = rng.chance(0.6) ? [hello(rng, clientId)] : [];
      for (let f = rng.int(1, 5); f > 0; f--) {
        const type = rng.chance(0.5) ? rng.pick([0x01, 0x02]) : rng.int(0, 255);
        parts.push(rawFrame(rng, type, rng.int(0, 40)));
      }
      bytes = concat(parts);
      break;
    }
    case "mutated": {
      bytes = validStream(rng, clientId);
      for (let m = rng.int(1, 3); m > 0; m--) bytes[rng.int(0, bytes.length - 1)] = rng.int(0, 255);
      break;
    }
    case "truncated": {
      const whole = validStream(rng, clientId);
      bytes = whole.slice(0, rng.int(0, whole.length - 1));
      ending = rng.pick(["half", "abrupt"] as const);
      break;
    }
    case "wrong-state": {
      // Every frame type where it does not belong: before HELLO, or after it.
      const type = rng.pick([0x02, ...WRONG_TYPES, 0x01]);
      const after = type === 0x01 || (type !== 0x02 && rng.chance(0.5));
      let frame: Uint8Array;
      if (type === 0x01) frame = hello(rng, clientId);
      else if (type === 0x02) frame = encodeMsg(1, "a", "b");
      else frame = rawFrame(rng, type, rng.int(0, 16));
      bytes = after ? concat([hello(rng, clientId), frame]) : frame;
      break;
    }
    default: {
      // Messages the server must refuse one by one (NACK 1, 2, 3), and sizes at the edges.
      const parts = [hello(rng, clientId)];
      let id = 10;
      for (let m = rng.int(1, 8); m > 0; m--) {
        const r = rng.int(0, 5);
        if (r === 0) parts.push(encodeMsg(rng.int(0, id), "dup", "x"));
        else if (r === 1) parts.push(encodeMsg(++id, rng.pick(BAD_NAMES), "bad name"));
        else if (r === 2) {
          const size = rng.pick([MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES + 1, 700, 2000, 8000]);
          parts.push(encodeMsg(++id, rng.pick(NAMES), new Uint8Array(size).fill(0x41)));
        } else if (r === 3) {
          // A MSG header whose length is just past the skip limit, or just within it.
          const length = MAX_SKIPPED_LENGTH + rng.int(0, 1);
          const head = new Uint8Array(10);
          new DataView(head.buffer).setUint32(0, length);
          head[4] = 0x02;
          new DataView(head.buffer).setUint32(5, ++id);
          head[9] = 1;
          parts.push(head, new Uint8Array(length - 6).fill(0x42));
        } else parts.push(encodeMsg(++id, rng.pick(NAMES), randomPayload(rng, 100)));
      }
      bytes = concat(parts);
    }
  }
  const cuts = [0];
  const splits = rng.int(0, Math.min(6, bytes.length));
  const points = new Set<number>();
  for (let i = 0; i < splits; i++) points.add(rng.int(1, Math.max(1, bytes.length - 1)));
  cuts.push(...[...points].filter((p) => p < bytes.length).sort((a, b) => a - b), bytes.length);
  return {
    index,
    kind,
    bytes,
    cuts,
    pauses: rng.chance(0.3),
    ending,
    expect: model(bytes),
  };
}

// ---------------------------------------------------------------------------------------------
// Running a case.

interface Outcome {
  frames: string[];
  /** The server closed the connection (as opposed to us giving up listening). */
  closed: boolean;
  /** Why the case could not run to its end, if it could not. */
  broke?: string;
}

function hex(bytes: Uint8Array): string {
  const shown = [...bytes.subarray(0, 96)].map((b) => b.toString(16).padStart(2, "0")).join("");
  return bytes.length > 96 ? `${shown}... (${bytes.length} bytes)` : shown;
}

function explain(c: Case, out: Outcome | null, why: string): string {
  return `case ${c.index} (${c.kind}, ${c.ending}): ${why}\n  sent: ${hex(c.bytes)}\n` +
    `  expected: welcome=${c.expect.welcome} nacks=[${c.expect.nacks}] error=${c.expect.error} ` +
    `records=${c.expect.records.map((r) => r.msgId)}\n  got: ${JSON.stringify(out?.frames)} ` +
    `closed=${out?.closed}`;
}

/** Reads the next frame, null on close, "quiet" if nothing comes within `ms`. */
async function nextFrame(peer: RawPeer, ms: number): Promise<Frame | null | "quiet"> {
  try {
    return await peer.readOrClose(ms);
  } catch (e) {
    if (e instanceof Deno.errors.ConnectionReset) return null;
    if (e instanceof Error && e.message.startsWith("No frame within")) return "quiet";
    throw e;
  }
}

/** True once `frames` hold every reply the model predicts for a connection that stays open. */
function complete(c: Case, frames: string[]): boolean {
  const e = c.expect;
  if (e.error !== 0) return false; // then we wait for the close
  const nacks = frames.filter((f) => f.startsWith("NACK ")).length;
  const last = e.records.at(-1)?.msgId;
  return (frames.length > 0 || !e.welcome) && nacks >= e.nacks.length &&
    (last === undefined || frames.includes(`ACK ${last}`));
}

async function runCase(c: Case, port: number): Promise<Outcome> {
  const peer = await RawPeer.connect(port);
  const out: Outcome = { frames: [], closed: false };
  try {
    for (let i = 0; i + 1 < c.cuts.length; i++) {
      try {
        await peer.write(c.bytes.subarray(c.cuts[i], c.cuts[i + 1]));
      } catch {
        break; // the server already closed: the rest of the stream is moot
      }
      if (c.pauses && i + 2 < c.cuts.length) await delay(1);
    }
    if (c.ending === "abrupt") return out;
    if (c.ending === "half") {
      try {
        await peer.conn.closeWrite();
      } catch {
        // already closed by the server
      }
    }
    // Read until the server closes, or until the predicted replies are in and then some quiet.
    for (;;) {
      const done = c.ending === "open" && complete(c, out.frames);
      const f = await nextFrame(peer, done ? QUIET_MS : EXPECT_MS);
      if (f === "quiet") {
        if (!done) out.broke = `no reply or close within ${EXPECT_MS} ms`;
        return out;
      }
      if (f === null) {
        out.closed = true;
        return out;
      }
      out.frames.push(describeFrame(f));
    }
  } finally {
    peer.close();
  }
}

/** Checks a case's replies against the model; returns what is wrong, or "" if nothing. */
function check(c: Case, out: Outcome): string {
  const e = c.expect;
  if (out.broke !== undefined) return out.broke;
  if (c.ending === "abrupt") return "";
  const frames = out.frames;
  let i = 0;
  if (e.welcome && (c.ending === "open" || frames.length > 0)) {
    // Version 2 adds whether the server knows the session; a fresh one it cannot.
    const state = e.version === 1 ? "" : " unknown";
    if (frames[0] !== `WELCOME v${e.version} max=${MAX_MESSAGE_BYTES} last=0${state}`) {
      return "WELCOME first";
    }
    i = 1;
  }
  const nacks: string[] = [];
  let lastAck = 0;
  let error = 0;
  const accepted = new Set(e.records.map((r) => r.msgId));
  for (; i < frames.length; i++) {
    const f = frames[i]!;
    if (error !== 0) return "a frame after ERROR";
    const parts = f.split(" ");
    if (parts[0] === "NACK") nacks.push(`${parts[1]} ${parts[2]}`);
    else if (parts[0] === "ACK") {
      const id = Number(parts[1]);
      if (id <= lastAck || !accepted.has(id)) {
        return `ACK ${id}: not an accepted record, or no rise`;
      }
      lastAck = id;
    } else if (parts[0] === "ERROR") error = Number(parts[1]);
    else return `unexpected frame ${f}`;
  }
  // Every NACK and the ERROR are decided before the server reads our EOF (half-close), so they
  // are owed in both endings; only the ACKs of records written after our EOF may be missing.
  if (nacks.join() !== e.nacks.join()) return "NACKs differ";
  if (error !== e.error) return `ERROR ${error} instead of ${e.error}`;
  if (c.ending === "open" && out.closed !== (e.error !== 0)) return "closed iff an ERROR is owed";
  if (c.ending === "half" && !out.closed) return "the server closes after our EOF";
  return "";
}

// ---------------------------------------------------------------------------------------------

Deno.test("fuzz: 3,000 hostile connections never corrupt the file or disturb an honest client", async () => {
  const cases = Array.from({ length: CASES }, (_, i) => makeCase(i));
  await withServer(
    { MAX_MESSAGE_BYTES, LOG_LEVEL: "error" },
    async ({ port, file, server }) => {
      // The honest client: sends all along, and every message must be acked.
      const honest = await MsgClient.connect({ port, clientId: HONEST_ID });
      let stop = false;
      let honestSent = 0;
      const honestRun = (async () => {
        while (!stop) {
          const batch = [];
          for (let k = 0; k < 4; k++) batch.push(honest.send("honest", `h${++honestSent}`));
          await Promise.all(batch);
        }
      })();

      let next = 0;
      const outcomes: (Outcome | null)[] = new Array(CASES).fill(null);
      const worker = async () => {
        while (next < CASES) {
          const c = cases[next++]!;
          outcomes[c.index] = await runCase(c, port).catch((e) => ({
            frames: [],
            closed: false,
            broke: `${(e as Error).message}`,
          }));
        }
      };
      try {
        await Promise.all(Array.from({ length: PARALLEL }, worker));
      } finally {
        stop = true;
        await honestRun;
      }
      const wrong = cases.map((c) => [c, check(c, outcomes[c.index]!)] as const)
        .filter(([, why]) => why !== "");
      if (wrong.length > 0) {
        const byWhy = new Map<string, number>();
        for (const [c, why] of wrong) {
          const key = `${why} (${c.ending})`;
          byWhy.set(key, (byWhy.get(key) ?? 0) + 1);
        }
        fail(
          `${wrong.length} of ${CASES} cases got replies the protocol does not allow: ` +
            `${JSON.stringify(Object.fromEntries(byWhy))}\nfirst:\n` +
            wrong.slice(0, 3).map(([c, why]) => explain(c, outcomes[c.index]!, why)).join("\n"),
        );
      }

      // Still serving: a fresh client's round trip works.
      const fresh = await MsgClient.connect({ port, clientId: HONEST_ID + 1 });
      await fresh.send("fresh", "still serving");
      await fresh.close();
      await honest.close();

      const records = parseFile(await Deno.readFile(file));
      const dec = new TextDecoder();
      // Every honest message, exactly once, in order.
      const honestRecords = records.filter((r) => r.clientId === HONEST_ID);
      deepStrictEqual(
        honestRecords.map((r) => `${r.msgId} ${r.name} ${dec.decode(r.payload)}`),
        Array.from({ length: honestSent }, (_, i) => `${i + 1} honest h${i + 1}`),
      );
      const freshRecords = records.filter((r) => r.clientId === HONEST_ID + 1);
      equal(freshRecords.length, 1);

      // Every other record came from a valid MSG of a fuzz connection: exactly the predicted
      // records (a prefix of them for connections we cut abruptly).
      const byClient = new Map<number, Case[]>();
      for (const c of cases) {
        if (!c.expect.welcome) continue;
        ok(c.expect.clientId !== HONEST_ID && c.expect.clientId !== HONEST_ID + 1);
        byClient.set(c.expect.clientId, [...(byClient.get(c.expect.clientId) ?? []), c]);
      }
      const fuzzRecords = new Map<number, string[]>();
      for (const r of records) {
        if (r.clientId === HONEST_ID || r.clientId === HONEST_ID + 1) continue;
        ok(byClient.has(r.clientId), `record of client ${r.clientId}, which no fuzz HELLO carried`);
        ok(!FORBIDDEN.test(r.name) && r.name.length > 0, `record name ${JSON.stringify(r.name)}`);
        const list = fuzzRecords.get(r.clientId) ?? [];
        list.push(`${r.msgId} ${r.name} ${hex(r.payload)}`);
        fuzzRecords.set(r.clientId, list);
      }
      let predicted = 0;
      for (const [clientId, group] of byClient) {
        const got = fuzzRecords.get(clientId) ?? [];
        const want = group.flatMap((c) =>
          c.expect.records.map((r) => `${r.msgId} ${r.name} ${hex(r.payload)}`)
        );
        predicted += want.length;
        if (group.length === 1 && group[0]!.ending === "abrupt") {
          deepStrictEqual(got, want.slice(0, got.length), explain(group[0]!, null, "records"));
        } else if (group.some((c) => c.ending === "abrupt")) {
          const left = [...want];
          for (const g of got) {
            const at = left.indexOf(g);
            ok(at >= 0, `client ${clientId}: record ${g.slice(0, 80)} was never sent valid`);
            left.splice(at, 1);
          }
        } else {
          deepStrictEqual(got.toSorted(), want.toSorted(), explain(group[0]!, null, "records"));
        }
      }
      ok(predicted > 1000, `the fuzz wrote records (${predicted} predicted)`);

      // The counters agree with the model: every ERROR 1 and every refusal was reached.
      const stats = server.stats();
      const open = cases.filter((c) => c.ending !== "abrupt");
      const count = (f: (c: Case) => number) => open.reduce((n, c) => n + f(c), 0);
      ok(stats.protocolErrors > 0);
      equal(stats.protocolErrors, count((c) => c.expect.error === 1 ? 1 : 0));
      equal(stats.duplicates, count((c) => c.expect.nacks.filter((n) => n.endsWith(" 3")).length));
      equal(stats.nacked, count((c) => c.expect.nacks.filter((n) => !n.endsWith(" 3")).length));
    },
  );
});
