import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { decodeHello } from "../src/protocol/hello.ts";
import { encodeHello, ErrorCode } from "../src/protocol/frames.ts";

const BODY = 5;

Deno.test("decodeHello() reads version, client_id, the full u64 session and where the token is", () => {
  const f = encodeHello({ clientId: 0xfffffffe, session: 0xfedcba9876543210n, token: "tok" });
  const hello = decodeHello(f, BODY, f.length);
  ok(!("reason" in hello));
  deepStrictEqual(hello, {
    version: 2,
    clientId: 0xfffffffe,
    session: 0xfedcba9876543210n,
    tokenStart: f.length - 3,
  });
  equal(new TextDecoder().decode(f.subarray(hello.tokenStart)), "tok");
});

Deno.test("decodeHello() refuses an empty body as a protocol violation", () => {
  deepStrictEqual(decodeHello(new Uint8Array(0), 0, 0), {
    code: ErrorCode.PROTOCOL_VIOLATION,
    reason: "HELLO has no version",
  });
});

Deno.test("decodeHello() refuses another version with ERROR 2, before looking at the rest", () => {
  const f = encodeHello({ clientId: 1, session: 0n, version: 9 });
  deepStrictEqual(decodeHello(f.subarray(0, 6), BODY, 6), {
    code: ErrorCode.UNSUPPORTED_VERSION,
    reason: "unsupported version 9; this server speaks 1 to 2",
  });
});

Deno.test("decodeHello() refuses a body shorter than its fixed part", () => {
  const f = encodeHello({ clientId: 1, session: 0n });
  deepStrictEqual(decodeHello(f, BODY, f.length - 1), {
    code: ErrorCode.PROTOCOL_VIOLATION,
    reason: "HELLO body is 14 bytes, at least 15",
  });
});

Deno.test("decodeHello() refuses a token_len that does not match the frame, either way", () => {
  const f = encodeHello({ clientId: 1, session: 0n, token: "abcd" });
  for (const end of [f.length - 1, f.length + 1]) {
    const b = new Uint8Array(f.length + 1);
    b.set(f);
    deepStrictEqual(decodeHello(b, BODY, end), {
      code: ErrorCode.PROTOCOL_VIOLATION,
      reason: "HELLO token_len 4 does not match the frame",
    });
  }
});
