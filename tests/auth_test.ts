import { equal } from "node:assert/strict";
import { timingSafeEqual } from "../src/server/auth.ts";

const enc = new TextEncoder();

Deno.test("timingSafeEqual() is true only for the same bytes", () => {
  equal(timingSafeEqual(enc.encode("secret"), enc.encode("secret")), true);
  equal(timingSafeEqual(enc.encode("secret"), enc.encode("secreT")), false);
  equal(timingSafeEqual(enc.encode("secret"), enc.encode("secre")), false);
  equal(timingSafeEqual(enc.encode("secret"), enc.encode("secrets")), false);
  equal(timingSafeEqual(enc.encode("secret"), new Uint8Array(0)), false);
  equal(timingSafeEqual(new Uint8Array(0), new Uint8Array(0)), true);
  // A prefix that repeats to the right length is still not the token.
  equal(timingSafeEqual(enc.encode("abab"), enc.encode("ab")), false);
});
