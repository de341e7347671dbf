import { equal } from "node:assert/strict";
import { nameProblem } from "../src/protocol/name.ts";

const WHITESPACE = "name has whitespace or a control character";
const NOT_UTF8 = "name is not valid UTF-8";

function check(bytes: Uint8Array | string): string {
  const b = typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes;
  return nameProblem(b, 0, b.length);
}

Deno.test("nameProblem accepts printable ASCII names", () => {
  for (const name of ["client_1", "a", "A-Z.0~9!", "~", "!", "x".repeat(255)]) {
    equal(check(name), "", name);
  }
});

Deno.test("nameProblem accepts every printable ASCII byte", () => {
  let all = "";
  for (let c = 0x21; c < 0x7f; c++) all += String.fromCharCode(c);
  equal(all.length, 94);
  equal(check(all), "");
});

Deno.test("nameProblem accepts valid UTF-8 names", () => {
  for (const name of ["café", "名前", "ü_1", "😀", "Ωmega", "a\u200bb", "é".repeat(127)]) {
    equal(check(name), "", name);
  }
});

Deno.test("nameProblem refuses an empty name", () => {
  equal(check(""), "name is empty");
  const b = new TextEncoder().encode("abc");
  equal(nameProblem(b, 2, 2), "name is empty");
  equal(nameProblem(b, 2, 1), "name is empty");
});

Deno.test("nameProblem refuses a name over 255 bytes, counting bytes not characters", () => {
  equal(check("x".repeat(256)), "name is over 255 bytes");
  // 128 two-byte characters: 128 characters but 256 bytes.
  equal(check("é".repeat(128)), "name is over 255 bytes");
});

Deno.test("nameProblem refuses ASCII space, tab, DEL, NUL and other control bytes", () => {
  for (const c of [0x20, 0x09, 0x7f, 0x00, 0x0a, 0x0d, 0x1b, 0x1f, 0x0b, 0x0c]) {
    equal(check(new Uint8Array([0x61, c, 0x62])), WHITESPACE, `byte 0x${c.toString(16)}`);
    equal(check(new Uint8Array([c])), WHITESPACE, `byte 0x${c.toString(16)} alone`);
  }
});

Deno.test("nameProblem refuses Unicode whitespace like NBSP and U+2028", () => {
  for (
    const ch of ["\u00a0", "\u2028", "\u2029", "\u3000", "\u2003", "\u1680", "\u202f", "\u205f"]
  ) {
    const hex = ch.codePointAt(0)!.toString(16);
    equal(check(`a${ch}b`), WHITESPACE, `U+${hex}`);
    equal(check(`é${ch}`), WHITESPACE, `U+${hex} after a non-ASCII letter`);
  }
});

Deno.test("nameProblem refuses C1 control characters like U+0085", () => {
  for (const cp of [0x80, 0x85, 0x9b, 0x9f]) {
    equal(check(`a${String.fromCodePoint(cp)}b`), WHITESPACE, `U+${cp.toString(16)}`);
  }
  // U+0085 in UTF-8 is C2 85.
  equal(check(new Uint8Array([0x61, 0xc2, 0x85])), WHITESPACE);
});

Deno.test("nameProblem refuses bytes that are not valid UTF-8", () => {
  const cases: [string, number[]][] = [
    ["lone continuation byte", [0x61, 0x80]],
    ["lone 0xff", [0xff]],
    ["lone 0xfe", [0x61, 0xfe, 0x62]],
    ["truncated two-byte sequence", [0x61, 0xc3]],
    ["truncated three-byte sequence", [0xe5, 0x90]],
    ["overlong encoding of '/'", [0xc0, 0xaf]],
    ["overlong encoding of NUL", [0xc0, 0x80]],
    ["UTF-16 surrogate half", [0xed, 0xa0, 0x80]],
    ["code point over U+10FFFF", [0xf4, 0x90, 0x80, 0x80]],
    ["Latin-1 'café'", [0x63, 0x61, 0x66, 0xe9]],
  ];
  for (const [what, bytes] of cases) equal(check(new Uint8Array(bytes)), NOT_UTF8, what);
});

Deno.test("nameProblem checks only bytes[start, end) of a larger buffer", () => {
  const b = new TextEncoder().encode(" \tcafé\u00a0 ");
  // " \t" is 2 bytes, "café" 5 bytes, NBSP 2 bytes, then a space.
  equal(nameProblem(b, 2, 7), "");
  equal(nameProblem(b, 1, 7), WHITESPACE);
  equal(nameProblem(b, 2, 9), WHITESPACE);
  // Cutting the "é" in half leaves invalid UTF-8.
  equal(nameProblem(b, 2, 6), NOT_UTF8);
  const long = new Uint8Array(300).fill(0x61);
  equal(nameProblem(long, 45, 300), "");
  equal(nameProblem(long, 44, 300), "name is over 255 bytes");
});
