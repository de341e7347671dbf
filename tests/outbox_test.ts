import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { concat } from "../src/io/concat.ts";
import { encodeAck, encodeError, encodeNack, ErrorCode } from "../src/protocol/frames.ts";
import { Outbox } from "../src/protocol/outbox.ts";

/** A sink whose writes wait until the test lets them through, taking at most `chunk` bytes each. */
class SlowSink {
  readonly writes: Uint8Array[] = [];
  #release: (() => void)[] = [];
  chunk = Infinity;
  failWith: Error | null = null;

  write(bytes: Uint8Array): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#release.push(() => {
        if (this.failWith !== null) return reject(this.failWith);
        const n = Math.min(bytes.length, this.chunk);
        this.writes.push(bytes.slice(0, n));
        resolve(n);
      });
    });
  }

  /** Lets every write waiting now complete; returns how many there were. */
  release(): number {
    const waiting = this.#release.splice(0);
    for (const r of waiting) r();
    return waiting.length;
  }

  /** Releases writes until none is left waiting. */
  async drain(): Promise<void> {
    for (;;) {
      await new Promise((r) => setTimeout(r, 0));
      if (this.release() === 0) return;
    }
  }

  get all(): Uint8Array {
    return concat(this.writes);
  }
}

Deno.test("Outbox writes the first frame at once and gathers what comes meanwhile into one write", async () => {
  const sink = new SlowSink();
  const outbox = new Outbox(sink);
  const a = encodeNack(1, 2, "a");
  const b = encodeNack(2, 2, "b");
  const c = encodeError(ErrorCode.TIMEOUT, "c");
  outbox.send(a);
  outbox.send(b);
  outbox.send(c);
  equal(outbox.pending, a.length + b.length + c.length);
  equal(outbox.buffered, b.length + c.length);
  await sink.drain();
  await outbox.flushing;
  deepStrictEqual(sink.writes, [a, concat([b, c])]);
  equal(outbox.pending, 0);
  equal(outbox.flushing, null);
});

Deno.test("Outbox raises a trailing ACK in place instead of adding another", async () => {
  const sink = new SlowSink();
  const outbox = new Outbox(sink);
  outbox.ack(1); // goes out at once
  outbox.ack(2);
  outbox.ack(3); // raises the buffered ACK 2
  const nack = encodeNack(4, 1, "too large");
  outbox.send(nack);
  outbox.ack(5); // after a NACK: a new ACK, so the NACK stays between them
  outbox.ack(6);
  await sink.drain();
  deepStrictEqual(sink.writes, [encodeAck(1), concat([encodeAck(3), nack, encodeAck(6)])]);
});

Deno.test("Outbox loops over short writes without reordering or losing bytes", async () => {
  const sink = new SlowSink();
  sink.chunk = 3;
  const outbox = new Outbox(sink);
  const frames = Array.from({ length: 20 }, (_, i) => encodeNack(i, 1, `reason ${i}`));
  for (const f of frames) outbox.send(f);
  await sink.drain();
  deepStrictEqual(sink.all, concat(frames));
});

Deno.test("Outbox.repeat queues a pattern many times over in one write", async () => {
  const sink = new SlowSink();
  const outbox = new Outbox(sink);
  const ack = new TextEncoder().encode("ack");
  outbox.repeat(ack, 1);
  outbox.repeat(ack, 1000);
  outbox.repeat(ack, 0);
  await sink.drain();
  equal(new TextDecoder().decode(sink.all), "ack".repeat(1001));
  equal(sink.writes.length, 2);
});

Deno.test("Outbox grows by doubling only up to its growth limit, unless one frame needs more", async () => {
  const sink = new SlowSink();
  const outbox = new Outbox(sink, { initialBytes: 16, growthLimit: 100 });
  outbox.send(new Uint8Array(1)); // in flight
  for (let i = 0; i < 9; i++) outbox.send(new Uint8Array(10)); // 90 buffered
  equal(outbox.capacity, 100); // 16 -> 32 -> 64 -> 100, not 128
  outbox.send(new Uint8Array(500)); // one frame past the limit still fits
  equal(outbox.buffered, 590);
  equal(outbox.capacity, 590);
  await sink.drain();
  equal(sink.all.length, 591);
});

Deno.test("Outbox reports a failed write once, then drops what it holds and takes nothing more", async () => {
  const sink = new SlowSink();
  const errors: string[] = [];
  const outbox = new Outbox(sink, { onError: (e) => errors.push(e.message) });
  outbox.send(new Uint8Array(5));
  outbox.send(new Uint8Array(7));
  sink.failWith = new Error("Broken pipe (os error 32)");
  await sink.drain();
  deepStrictEqual(errors, ["Broken pipe (os error 32)"]);
  ok(outbox.failed);
  equal(outbox.pending, 0);
  outbox.send(new Uint8Array(3));
  outbox.ack(9);
  equal(outbox.pending, 0);
  equal(outbox.flushing, null);
});

Deno.test("Outbox.discard drops what is buffered; the write under way still completes", async () => {
  const sink = new SlowSink();
  const outbox = new Outbox(sink);
  outbox.send(new Uint8Array([1]));
  outbox.send(new Uint8Array([2]));
  outbox.discard();
  equal(outbox.buffered, 0);
  await sink.drain();
  deepStrictEqual(sink.writes, [new Uint8Array([1])]);
});
