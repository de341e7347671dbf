/**
 * LineBuffer.writeRecord: formatting 1,000 records with 100-byte payloads into one batch buffer,
 * with plain payloads and with payloads where one byte in ten needs an escape.
 *
 * @module
 */

import { LineBuffer } from "../src/server/line.ts";

const RECORDS = 1000;
const name = new TextEncoder().encode("client_1");

const plain = new Uint8Array(100);
for (let i = 0; i < plain.length; i++) plain[i] = 0x61 + (i % 26);
// Every tenth byte is a line feed, a carriage return or a backslash.
const escaped = plain.slice();
const specials = [0x0a, 0x0d, 0x5c];
for (let i = 5; i < escaped.length; i += 10) escaped[i] = specials[(i / 10 | 0) % 3]!;

const out = new LineBuffer(256 * 1024);

/** Formats RECORDS records of `payload` into `out` from empty. */
function format(payload: Uint8Array): void {
  out.clear();
  for (let i = 1; i <= RECORDS; i++) {
    out.writeRecord(7, i, name, 0, name.length, payload, 0, payload.length);
  }
}

Deno.bench({
  name: "1,000 records, no escapes",
  group: "writeRecord 1,000 x 100 B",
  baseline: true,
  fn() {
    format(plain);
  },
});

Deno.bench({
  name: "1,000 records, 10% escaped bytes",
  group: "writeRecord 1,000 x 100 B",
  fn() {
    format(escaped);
  },
});
