/**
 * Formatting 1,000 records with 100-byte payloads into one batch buffer, as the writer does it
 * (one `stage` of the queue entry, then one `writeFrames` for all its records), one
 * `writeStaged` call per record (as the writer did before), and through `writeRecord` (which
 * stages per record), with plain payloads and with one byte in ten to escape.
 *
 * @module
 */

import { encodeMsg } from "../src/protocol/frames.ts";
import { LineBuffer, parseFile } from "../src/server/line.ts";

const RECORDS = 1000;
const name = new TextEncoder().encode("client_1");

const plain = new Uint8Array(100);
for (let i = 0; i < plain.length; i++) plain[i] = 0x61 + (i % 26);
// Every tenth byte is a line feed, a carriage return or a backslash.
const escaped = plain.slice();
const specials = [0x0a, 0x0d, 0x5c];
for (let i = 5; i < escaped.length; i += 10) escaped[i] = specials[(i / 10 | 0) % 3]!;

/** A queue entry's bytes: RECORDS MSG frames of `payload`, back to back. */
function entry(payload: Uint8Array): Uint8Array {
  const length = encodeMsg(1, name, payload).length;
  const bytes = new Uint8Array(RECORDS * length);
  for (let i = 0; i < RECORDS; i++) bytes.set(encodeMsg(i + 1, name, payload), i * length);
  return bytes;
}
const plainEntry = entry(plain);
const escapedEntry = entry(escaped);
// Offsets in a frame: u32 length, type, u32 msg_id, u8 name_len, then name and payload.
const NAME_AT = 10;

const out = new LineBuffer(256 * 1024);

/** Formats the records of `bytes` into `out` from empty, as the writer does. */
function formatStaged(bytes: Uint8Array, payloadLength: number): void {
  out.clear();
  out.stage(bytes);
  const frameBytes = NAME_AT + name.length + payloadLength;
  for (let i = 0; i < RECORDS; i++) {
    const nameStart = i * frameBytes + NAME_AT;
    const nameEnd = nameStart + name.length;
    out.writeStaged(7, i + 1, nameStart, nameEnd, nameEnd + payloadLength);
  }
}

/** Formats the records of `bytes` into `out` from empty, as the writer does: one writeFrames. */
function formatFrames(bytes: Uint8Array): void {
  out.clear();
  out.stage(bytes);
  if (out.writeFrames(7, 0, RECORDS, 1 << 30) !== bytes.length || out.records !== RECORDS) {
    throw new Error("line_bench: writeFrames stopped early");
  }
}

/** Formats RECORDS records of `payload` into `out` from empty, one writeRecord each. */
function format(payload: Uint8Array): void {
  out.clear();
  for (let i = 1; i <= RECORDS; i++) {
    out.writeRecord(7, i, name, 0, name.length, payload, 0, payload.length);
  }
}

// What is benched must be right: every way of formatting gives the same 1,000 lines.
for (const [payload, bytes] of [[plain, plainEntry], [escaped, escapedEntry]] as const) {
  formatStaged(bytes, payload.length);
  const staged = out.bytes.slice(0, out.length);
  formatFrames(bytes);
  if (!out.bytes.subarray(0, out.length).every((b, i) => b === staged[i])) {
    throw new Error("line_bench: writeFrames and writeStaged differ");
  }
  format(payload);
  const records = parseFile(staged);
  if (
    records.length !== RECORDS || out.length !== staged.length ||
    !records.every((r) => r.payload.every((b, i) => b === payload[i]))
  ) {
    throw new Error("line_bench: the formatted lines are not the records given");
  }
}

Deno.bench({
  name: "stage + writeStaged, no escapes",
  group: "1,000 records x 100 B",
  baseline: true,
  fn() {
    formatStaged(plainEntry, plain.length);
  },
});

Deno.bench({
  name: "stage + writeStaged, 10% escaped bytes",
  group: "1,000 records x 100 B",
  fn() {
    formatStaged(escapedEntry, escaped.length);
  },
});

Deno.bench({
  name: "stage + writeFrames (the writer's way), no escapes",
  group: "1,000 records x 100 B",
  fn() {
    formatFrames(plainEntry);
  },
});

Deno.bench({
  name: "stage + writeFrames (the writer's way), 10% escaped bytes",
  group: "1,000 records x 100 B",
  fn() {
    formatFrames(escapedEntry);
  },
});

Deno.bench({
  name: "writeRecord, no escapes",
  group: "1,000 records x 100 B",
  fn() {
    format(plain);
  },
});

Deno.bench({
  name: "writeRecord, 10% escaped bytes",
  group: "1,000 records x 100 B",
  fn() {
    format(escaped);
  },
});
