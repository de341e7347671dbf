import { deepStrictEqual, equal, throws } from "node:assert/strict";
import {
  ACK_FRAME_BYTES,
  encodeAck,
  encodeError,
  encodeHello,
  encodeMsg,
  encodeNack,
  encodeWelcome,
  ErrorCode,
  MAX_CONTROL_FRAME_LENGTH,
  msgFrameLimit,
  NackCode,
  readU32,
  SessionState,
  writeAck,
  writeU32,
} from "../src/protocol/frames.ts";

/** Hex bytes as docs/protocol.md writes them. */
function hex(text: string): Uint8Array {
  return new Uint8Array(text.trim().split(/\s+/).map((b) => parseInt(b, 16)));
}

Deno.test("encodeHello() gives the bytes of docs/protocol.md's HELLO example", () => {
  deepStrictEqual(
    encodeHello({ clientId: 7, session: 42n }),
    hex("00 00 00 10  01  02  00 00 00 07  00 00 00 00 00 00 00 2a  00 00"),
  );
});

Deno.test("encodeHello() puts the token after its length and refuses one over 65,535 bytes", () => {
  const f = encodeHello({ clientId: 1, session: 0xffffffffffffffffn, token: "ab" });
  deepStrictEqual(f.subarray(0, 5), hex("00 00 00 12 01"));
  deepStrictEqual(f.subarray(10), hex("ff ff ff ff ff ff ff ff 00 02 61 62"));
  throws(() => encodeHello({ clientId: 1, session: 0n, token: "x".repeat(65536) }), {
    name: "RangeError",
    message: "Cannot encode HELLO: token is over 65535 bytes",
  });
  // The largest HELLO is exactly the largest control frame.
  const largest = encodeHello({ clientId: 1, session: 0n, token: "x".repeat(65535) });
  equal(readU32(largest, 0), 16 + 65535);
  equal(16 + 65535 <= MAX_CONTROL_FRAME_LENGTH, true);
});

Deno.test("encodeMsg() gives the bytes of docs/protocol.md's MSG example", () => {
  deepStrictEqual(
    encodeMsg(1, "client_1", "hi"),
    hex("00 00 00 10  02  00 00 00 01  08  63 6c 69 65 6e 74 5f 31  68 69"),
  );
});

Deno.test("encodeMsg() takes raw bytes as they are and refuses a name over 255 bytes", () => {
  const f = encodeMsg(0xfffffffe, new Uint8Array([0xc3, 0xa9]), new Uint8Array([0, 10, 255]));
  deepStrictEqual(f, hex("00 00 00 0b 02 ff ff ff fe 02 c3 a9 00 0a ff"));
  throws(() => encodeMsg(1, "n".repeat(256), ""), {
    name: "RangeError",
    message: "Cannot encode MSG: name is 256 bytes, at most 255",
  });
});

Deno.test("the server's frames are laid out as docs/protocol.md says", () => {
  deepStrictEqual(encodeWelcome(1048576, 3), hex("00 00 00 0a 81 01 00 10 00 00 00 00 00 03"));
  deepStrictEqual(
    encodeWelcome(1048576, 3, { version: 2, sessionState: SessionState.KNOWN }),
    hex("00 00 00 0b 81 02 00 10 00 00 00 00 00 03 01"),
  );
  deepStrictEqual(encodeAck(3), hex("00 00 00 05 82 00 00 00 03"));
  equal(encodeAck(3).length, ACK_FRAME_BYTES);
  deepStrictEqual(
    encodeNack(5, NackCode.BAD_NAME, "x"),
    hex("00 00 00 08 83 00 00 00 05 00 02 78"),
  );
  deepStrictEqual(encodeError(ErrorCode.TIMEOUT, "t"), hex("00 00 00 04 84 00 05 74"));
});

Deno.test("writeAck() writes an ACK in place and returns where it ends", () => {
  const out = new Uint8Array(2 + ACK_FRAME_BYTES).fill(0xee);
  equal(writeAck(out, 1, 0x01020304), 1 + ACK_FRAME_BYTES);
  deepStrictEqual(out, hex("ee 00 00 00 05 82 01 02 03 04 ee"));
});

Deno.test("readU32() and writeU32() are big-endian and unsigned at every width", () => {
  const b = new Uint8Array(6);
  for (const n of [0, 1, 255, 256, 0x7fffffff, 0x80000000, 0xffffffff]) {
    writeU32(b, 1, n);
    equal(readU32(b, 1), n);
  }
  writeU32(b, 0, 0x01020304);
  deepStrictEqual(b.subarray(0, 4), hex("01 02 03 04"));
});

Deno.test("msgFrameLimit() is the length of a MSG with the longest name and the largest payload", () => {
  equal(msgFrameLimit(100), encodeMsg(1, "n".repeat(255), new Uint8Array(100)).length - 4);
});
