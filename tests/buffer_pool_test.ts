// BufferPool: sizes, reuse, what it takes back and what it refuses, and its idle bound.
import { equal, notEqual, ok } from "node:assert/strict";
import { BufferPool } from "../src/server/buffer_pool.ts";

Deno.test("BufferPool hands out views of the length asked, on buffers of the next power of two from 1 KiB", () => {
  const pool = new BufferPool();
  for (
    const [length, size] of [
      [0, 1024],
      [1, 1024],
      [1024, 1024],
      [1025, 2048],
      [65_536, 65_536],
      [65_537, 131_072],
      [131_072, 131_072],
    ] as const
  ) {
    const view = pool.take(length);
    equal(view.length, length);
    equal(view.byteOffset, 0);
    equal(view.buffer.byteLength, size, `take(${length})`);
  }
  // Over 128 KiB: a buffer of its own, exactly as large, never pooled.
  const big = pool.take(131_073);
  equal(big.buffer.byteLength, 131_073);
  pool.give(big);
  equal(pool.idleBytes, 0);
});

Deno.test("BufferPool reuses a buffer given back, for a request of its size class only", () => {
  const pool = new BufferPool();
  const a = pool.take(3000);
  pool.give(a);
  equal(pool.idleBytes, 4096);
  notEqual(pool.take(5000).buffer, a.buffer, "another class");
  const b = pool.take(2049);
  equal(b.buffer, a.buffer);
  equal(b.length, 2049);
  equal(pool.idleBytes, 0);
  equal(pool.made, 2);
  equal(pool.reused, 1);
});

Deno.test("BufferPool takes back only its own views, and each once until handed out again", () => {
  const pool = new BufferPool();
  pool.give(new Uint8Array(1024)); // not the pool's
  equal(pool.idleBytes, 0);
  const a = pool.take(100);
  pool.give(a);
  pool.give(a); // twice: would hand one buffer to two entries
  pool.give(a.subarray(10)); // another view of it, also after it went back
  equal(pool.idleBytes, 1024);
  const b = pool.take(100);
  const c = pool.take(100);
  notEqual(b.buffer, c.buffer, "two takes never share a buffer");
  pool.give(b);
  pool.give(c);
  equal(pool.idleBytes, 2048);
});

Deno.test("BufferPool keeps at most maxIdleBytes idle and leaves the rest to the garbage collector", () => {
  const pool = new BufferPool(10 * 1024);
  const views = Array.from({ length: 20 }, () => pool.take(1000));
  for (const v of views) pool.give(v);
  equal(pool.idleBytes, 10 * 1024);
  for (let i = 0; i < 20; i++) pool.take(1000);
  equal(pool.reused, 10);
  equal(pool.made, 30);
  ok(pool.idleBytes === 0);
});
