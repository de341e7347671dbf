// How lines and headers are read back from a stream's messages: a record's msg_id from its line
// (the store trims records already stored by it, the exporter leaves out repeated ones by it), and
// the expectation header the exporter checks each session's chain with.
import { equal } from "node:assert/strict";
import { expectedOf } from "../src/export/source.ts";
import { lineMsgId } from "../src/store/jetstream_layout.ts";

const enc = new TextEncoder();

Deno.test("lineMsgId() reads the second field of the line at an offset", () => {
  const lines = enc.encode("7 41 a x\n7 42 a y y\n12 4294967295 - \n");
  equal(lineMsgId(lines, 0), 41);
  equal(lineMsgId(lines, 9), 42);
  equal(lineMsgId(lines, 20), 4294967295);
});

Deno.test("lineMsgId() answers -1 for a line without a msg_id, and never reads past the end", () => {
  for (
    const text of [
      "", // nothing
      "abc\n1 2 n p\n", // no space before the line ends
      "1 2\n", // no space after the msg_id within the line
      "1 2", // ends inside the msg_id
      "1  x y\n", // an empty msg_id
      "1 -3 n p\n", // not digits
      "1 2x n p\n",
    ]
  ) {
    equal(lineMsgId(enc.encode(text), 0), -1, JSON.stringify(text));
  }
});

Deno.test("expectedOf() reads Nats-Expected-Last-Subject-Sequence, null when absent or not a number", () => {
  const header = (value: string) => (name: string) =>
    name === "Nats-Expected-Last-Subject-Sequence" ? value : "";
  equal(expectedOf(header("0")), 0);
  equal(expectedOf(header("123456789012")), 123456789012);
  equal(expectedOf(header("")), null);
  equal(expectedOf(header("-1")), null);
  equal(expectedOf(header("12a")), null);
});
