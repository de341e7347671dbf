import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { concat } from "../src/io/concat.ts";
import {
  BatchRecordEncoder,
  crc32,
  type DataFileReader,
  encodeBatch,
  encodeFile,
  encodeSeal,
  encodeSnapshot,
  fingerprint,
  FINGERPRINT_BYTES,
  type JournalEntry,
  recoverJournal,
} from "../src/store/journal.ts";

const enc = new TextEncoder();

const e = (clientId: number, session: bigint, lastId: number): JournalEntry => ({
  clientId,
  session,
  lastId,
});

/** The table as `client/session=last` strings, in table order. */
function show(table: Map<string, JournalEntry>): string[] {
  return [...table.values()].map((x) => `${x.clientId}/${x.session}=${x.lastId}`);
}

/** A data file holding `bytes`. */
function file(bytes: Uint8Array): DataFileReader {
  return { size: bytes.length, read: (o, n) => bytes.subarray(o, o + n) };
}

/** Lines of session 1/1 with msg_ids `from..to`, long enough to pass the 64-byte fingerprints. */
function lines(from: number, to: number): Uint8Array {
  let text = "";
  for (let id = from; id <= to; id++) text += `1 ${id} s ${"p".repeat(40)}${id}\n`;
  return enc.encode(text);
}

/** The state of a data file holding `bytes`, as a SNAPSHOT or FILE record keeps it. */
function stateOf(bytes: Uint8Array) {
  return {
    size: bytes.length,
    tail: fingerprint(bytes.subarray(Math.max(0, bytes.length - FINGERPRINT_BYTES))),
  };
}

const EMPTY = new Uint8Array(0);

Deno.test("crc32() is the IEEE CRC-32", () => {
  equal(crc32(enc.encode("123456789")), 0xcbf43926);
  equal(crc32(EMPTY), 0);
});

Deno.test("crc32() of a range is the CRC-32 of that part alone", () => {
  const bytes = enc.encode("xx123456789yy");
  equal(crc32(bytes, 2, 11), 0xcbf43926);
  equal(crc32(bytes, 5, 5), 0);
});

/** A BATCH record built byte by byte from the format in journal_format.ts. */
function batchRecord(offset: number, bytes: Uint8Array, entries: JournalEntry[]): Uint8Array {
  const body = new Uint8Array(21 + 4 + 16 * entries.length);
  const v = new DataView(body.buffer);
  body[0] = 2;
  v.setBigUint64(1, BigInt(offset));
  v.setUint32(9, bytes.length);
  v.setUint32(13, crc32(bytes.subarray(0, FINGERPRINT_BYTES)));
  v.setUint32(17, crc32(bytes.subarray(Math.max(0, bytes.length - FINGERPRINT_BYTES))));
  v.setUint32(21, entries.length);
  entries.forEach((x, i) => {
    v.setUint32(25 + 16 * i, x.clientId);
    v.setBigUint64(29 + 16 * i, x.session);
    v.setUint32(37 + 16 * i, x.lastId);
  });
  const head = new Uint8Array(8);
  new DataView(head.buffer).setUint32(0, body.length);
  new DataView(head.buffer).setUint32(4, crc32(body));
  return concat([head, body]);
}

Deno.test("BatchRecordEncoder encodes BATCH records as the format says, reusing and growing its buffer", () => {
  const encoder = new BatchRecordEncoder(1);
  const many = Array.from({ length: 9 }, (_, i) => e(i + 1, BigInt(i) << 40n, 100 + i));
  for (
    const [offset, bytes, entries] of [
      [0, lines(1, 1), [e(1, 7n, 1)]],
      [2 ** 40, lines(2, 9), many],
      [5, enc.encode("1 1 a b\n"), [e(1, 0xffffffffffffffffn, 0xffffffff)]],
    ] as const
  ) {
    const want = batchRecord(offset, bytes, [...entries]);
    deepStrictEqual(encoder.encode(offset, bytes, entries), want);
    deepStrictEqual(encodeBatch(offset, bytes, entries), want);
  }
});

Deno.test("recoverJournal() replays a snapshot and whole batches", () => {
  const base = lines(1, 5);
  const a = lines(6, 9);
  const b = lines(10, 10);
  const bytes = concat([
    encodeSnapshot(new Map([["1/1", e(1, 1n, 5)]]), stateOf(base)),
    encodeBatch(base.length, a, [e(1, 1n, 9), e(2, 0xffffffffffffffffn, 3)]),
    encodeBatch(base.length + a.length, b, [e(2, 0xffffffffffffffffn, 4)]),
  ]);
  const r = recoverJournal(bytes, file(concat([base, a, b])));
  deepStrictEqual(show(r.table), ["1/1=9", "2/18446744073709551615=4"]);
  deepStrictEqual([r.cutBackTo, r.trusted, r.problems, r.soundBytes], [
    null,
    true,
    [],
    bytes.length,
  ]);
});

Deno.test("recoverJournal() checks the last batch by its bytes, so a copy of the files recovers alike", () => {
  const a = lines(1, 3);
  const bytes = concat([
    encodeSnapshot(new Map(), stateOf(EMPTY)),
    encodeBatch(0, a, [e(1, 1n, 3)]),
  ]);
  deepStrictEqual(show(recoverJournal(bytes, file(a.slice())).table), ["1/1=3"]);
  const other = a.slice();
  other[a.length - 5] = 0x21; // the same size, other bytes: not the batch the journal recorded
  const r = recoverJournal(bytes, file(other));
  deepStrictEqual(show(r.table), []);
  ok(
    r.problems.some((p) => p.includes("does not hold the journal's last batch")),
    r.problems.join(),
  );
});

Deno.test("recoverJournal(): a batch recorded but not begun does not count, silently", () => {
  const bytes = concat([
    encodeSnapshot(new Map(), stateOf(EMPTY)),
    encodeBatch(0, lines(1, 3), [e(1, 1n, 3)]),
  ]);
  const none = recoverJournal(bytes, file(EMPTY));
  deepStrictEqual([show(none.table), none.cutBackTo, none.problems], [[], null, []]);
});

Deno.test("recoverJournal(): a torn last batch does not count and the data file is cut back to it", () => {
  const a = lines(1, 3);
  const b = lines(4, 7);
  const bytes = concat([
    encodeSnapshot(new Map(), stateOf(EMPTY)),
    encodeBatch(0, a, [e(1, 1n, 3)]),
    encodeBatch(a.length, b, [e(1, 1n, 7)]),
  ]);
  const data = concat([a, b]).subarray(0, a.length + 100);
  const r = recoverJournal(bytes, file(data));
  deepStrictEqual(show(r.table), ["1/1=3"]);
  equal(r.cutBackTo, a.length);
  ok(r.problems[0]!.includes("is torn: 100 bytes of it are moved aside"), r.problems[0]);
});

Deno.test("recoverJournal(): a batch recorded again at the same offset undoes the refused one", () => {
  const a = lines(1, 3);
  const refused = lines(4, 9);
  const c = lines(4, 4);
  const bytes = concat([
    encodeSnapshot(new Map(), stateOf(EMPTY)),
    encodeBatch(0, a, [e(1, 1n, 3)]),
    encodeBatch(a.length, refused, [e(1, 1n, 9), e(2, 2n, 1)]), // its data was cut back
    encodeBatch(a.length, c, [e(3, 3n, 1)]),
  ]);
  deepStrictEqual(show(recoverJournal(bytes, file(concat([a, c]))).table), ["1/1=3", "3/3=1"]);
});

Deno.test("recoverJournal(): a torn or damaged tail is dropped, what came before is kept", () => {
  const a = lines(1, 3);
  const b = lines(4, 6);
  const good = concat([
    encodeSnapshot(new Map(), stateOf(EMPTY)),
    encodeBatch(0, a, [e(1, 1n, 3)]),
  ]);
  const next = encodeBatch(a.length, b, [e(1, 1n, 6)]);
  const data = file(concat([a, b]));
  const r = recoverJournal(concat([good, next.subarray(0, 10)]), data);
  deepStrictEqual([show(r.table), r.soundBytes], [["1/1=3"], good.length]);
  ok(r.problems[0]!.includes("10 bytes of a torn or damaged tail"));
  const flipped = concat([good, next]);
  flipped[good.length + 12]! ^= 0xff; // a bit flip in the last record's body
  deepStrictEqual(show(recoverJournal(flipped, data).table), ["1/1=3"]);
});

Deno.test("recoverJournal(): an empty, headless or overreaching journal is not trusted", () => {
  const a = lines(1, 3);
  const empty = recoverJournal(EMPTY, file(a));
  deepStrictEqual([empty.trusted, empty.table.size], [false, 0]);
  const headless = recoverJournal(encodeBatch(0, a, [e(1, 1n, 3)]), file(a));
  deepStrictEqual([headless.trusted, headless.problems], [false, ["the journal has no snapshot"]]);
  // The data file is shorter than the journal knew: someone cut it, and the journal would claim
  // records that are not there (a resend would then be refused as a duplicate: lost).
  const short = recoverJournal(
    encodeSnapshot(new Map([["1/1", e(1, 1n, 5)]]), stateOf(lines(1, 5))),
    file(a),
  );
  deepStrictEqual([short.trusted, short.table.size], [false, 0]);
});

Deno.test("recoverJournal(): SEAL and FILE carry the table across a rotation", () => {
  const a = lines(1, 3);
  const sealed = concat([
    encodeSnapshot(new Map(), stateOf(EMPTY)),
    encodeBatch(0, a, [e(1, 1n, 3)]),
    encodeSeal(),
  ]);
  // Killed after the rename, before the new file was recorded: the sealed batch still counts.
  const r = recoverJournal(sealed, file(EMPTY));
  deepStrictEqual([show(r.table), r.problems], [["1/1=3"], []]);
  const b = lines(4, 5);
  const moved = concat([sealed, encodeFile(stateOf(EMPTY)), encodeBatch(0, b, [e(1, 1n, 5)])]);
  deepStrictEqual(show(recoverJournal(moved, file(b)).table), ["1/1=5"]);
});

Deno.test("recoverJournal(): a last batch that went to a file no longer there is not counted, loudly", () => {
  const a = lines(1, 3);
  const b = lines(4, 6);
  const bytes = concat([
    encodeSnapshot(new Map(), stateOf(EMPTY)),
    encodeBatch(0, a, [e(1, 1n, 3)]),
    encodeBatch(a.length, b, [e(1, 1n, 6)]),
  ]);
  const r = recoverJournal(bytes, file(EMPTY)); // logrotate moved it; no SIGHUP came
  deepStrictEqual(show(r.table), ["1/1=3"]);
  ok(r.trusted);
  ok(
    r.problems.some((p) => p.includes("does not hold the journal's last batch")),
    r.problems.join(),
  );
});
