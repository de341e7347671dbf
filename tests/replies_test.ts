import { deepStrictEqual, equal, throws } from "node:assert/strict";
import { Decoded } from "../src/protocol/decoder.ts";
import {
  encodeAck,
  encodeError,
  encodeNack,
  encodeWelcome,
  ErrorCode,
  FrameType,
  MAX_CONTROL_FRAME_LENGTH,
  NackCode,
  SessionState,
} from "../src/protocol/frames.ts";
import {
  decodeAck,
  decodeError,
  decodeNack,
  decodeWelcome,
  replyDecoder,
} from "../src/protocol/replies.ts";

const BODY = 5;

Deno.test("decodeWelcome() reads back what encodeWelcome() wrote", () => {
  const f = encodeWelcome(1048576, 4294967295);
  deepStrictEqual(decodeWelcome(f, BODY, f.length), {
    version: 1,
    maxMessageBytes: 1048576,
    lastMsgId: 4294967295,
    sessionKnown: null,
  });
  const v2 = encodeWelcome(10, 3, { version: 2, sessionState: SessionState.KNOWN });
  deepStrictEqual(decodeWelcome(v2, BODY, v2.length), {
    version: 2,
    maxMessageBytes: 10,
    lastMsgId: 3,
    sessionKnown: true,
  });
  const unknown = encodeWelcome(10, 0, { version: 2 });
  equal(decodeWelcome(unknown, BODY, unknown.length).sessionKnown, false);
  throws(() => decodeWelcome(v2, BODY, v2.length - 1), {
    message: "Cannot decode WELCOME: body is 9 bytes, at least 10",
  });
});

Deno.test("decodeAck() reads back what encodeAck() wrote", () => {
  const f = encodeAck(0x01020304);
  equal(decodeAck(f, BODY, f.length), 0x01020304);
});

Deno.test("decodeNack() reads back id, code and a UTF-8 reason", () => {
  const f = encodeNack(9, NackCode.STORAGE_ERROR, "storage error: é");
  deepStrictEqual(decodeNack(f, BODY, f.length), {
    msgId: 9,
    code: NackCode.STORAGE_ERROR,
    reason: "storage error: é",
  });
});

Deno.test("decodeError() reads back code and reason, also an empty reason", () => {
  const f = encodeError(ErrorCode.SESSION_TAKEN_OVER, "session taken over");
  deepStrictEqual(decodeError(f, BODY, f.length), { code: 7, reason: "session taken over" });
  const g = encodeError(ErrorCode.TIMEOUT, "");
  deepStrictEqual(decodeError(g, BODY, g.length), { code: 5, reason: "" });
});

Deno.test("the reply decoders refuse bodies too short for their fields with SyntaxError", () => {
  const b = new Uint8Array(16);
  throws(() => decodeWelcome(b, 0, 8), {
    name: "SyntaxError",
    message: "Cannot decode WELCOME: body is 8 bytes, at least 9",
  });
  throws(() => decodeAck(b, 0, 3), { name: "SyntaxError" });
  throws(() => decodeNack(b, 0, 5), { name: "SyntaxError" });
  throws(() => decodeError(b, 0, 1), { name: "SyntaxError" });
});

Deno.test("replyDecoder() splits replies fed one byte at a time and takes the largest ERROR", () => {
  const reason = "x".repeat(MAX_CONTROL_FRAME_LENGTH - 3);
  const frames = [encodeWelcome(10, 0), encodeAck(1), encodeError(ErrorCode.TIMEOUT, reason)];
  const stream = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
  let at = 0;
  for (const f of frames) {
    stream.set(f, at);
    at += f.length;
  }
  const decoder = replyDecoder();
  const seen: number[] = [];
  for (const byte of stream) {
    decoder.readTarget()[0] = byte;
    decoder.commit(1);
    for (let r = decoder.next(); r !== Decoded.NEED_MORE; r = decoder.next()) {
      equal(r, Decoded.FRAME, decoder.error);
      seen.push(decoder.type);
      if (decoder.type === FrameType.ERROR) {
        equal(decodeError(decoder.buffer, decoder.bodyStart, decoder.frameEnd).reason, reason);
      }
    }
  }
  deepStrictEqual(seen, [FrameType.WELCOME, FrameType.ACK, FrameType.ERROR]);
});

Deno.test("replyDecoder() refuses a reply longer than any the server sends", () => {
  const decoder = replyDecoder();
  decoder.readTarget().set([0, 1, 0, 17, 0x84]); // length 65,553
  decoder.commit(5);
  equal(decoder.next(), Decoded.ERROR);
});
