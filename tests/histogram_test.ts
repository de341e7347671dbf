import { ok, strictEqual, throws } from "node:assert";
import { bucketIndex, bucketRange, DEFAULT_HIGHEST_US, Histogram } from "../bench/histogram.ts";

Deno.test("bucketIndex and bucketRange agree, with buckets within 1% of their value", () => {
  let previous = -1;
  const values: number[] = [];
  for (let v = 0; v < 5000; v++) values.push(v);
  for (let v = 5000; v <= DEFAULT_HIGHEST_US; v = Math.floor(v * 1.0007) + 1) values.push(v);
  values.push(DEFAULT_HIGHEST_US, 2 ** 32 - 1);
  for (const v of values) {
    const i = bucketIndex(v);
    const [low, high] = bucketRange(i);
    ok(low <= v && v <= high, `${v} not in bucket ${i} [${low}, ${high}]`);
    ok(i >= previous, `index went down at ${v}`);
    ok(high - low <= Math.max(0, low / 128), `bucket ${i} [${low}, ${high}] is too wide`);
    previous = i;
  }
  strictEqual(bucketIndex(255), 255);
  strictEqual(bucketIndex(256), 256);
  strictEqual(bucketIndex(511), 383);
  strictEqual(bucketIndex(512), 384);
  // The bucket after each one starts right after it: no gaps.
  for (let i = 0; i < bucketIndex(DEFAULT_HIGHEST_US); i++) {
    strictEqual(bucketRange(i + 1)[0], bucketRange(i)[1] + 1);
  }
});

Deno.test("Histogram percentiles are within 1% on a uniform 1..100000 us spread", () => {
  const h = new Histogram();
  for (let v = 1; v <= 100_000; v++) h.record(v);
  strictEqual(h.count, 100_000);
  strictEqual(h.min, 1);
  strictEqual(h.max, 100_000);
  ok(Math.abs(h.mean - 50_000.5) < 1e-6);
  for (const p of [1, 10, 50, 90, 99, 99.9]) {
    const want = p * 1000;
    const got = h.valueAtPercentile(p);
    ok(Math.abs(got - want) / want <= 0.01, `p${p}: got ${got}, want about ${want}`);
  }
  strictEqual(h.valueAtPercentile(100), 100_000);
  strictEqual(h.valueAtPercentile(0), 1);
});

Deno.test("Histogram: exact small values, clamping, fractions, add and reset", () => {
  const h = new Histogram(1000);
  strictEqual(Number.isNaN(h.valueAtPercentile(50)), true);
  strictEqual(Number.isNaN(h.min), true);
  h.record(3);
  h.record(3);
  h.record(7.6);
  h.record(-2); // counts as 0
  strictEqual(h.valueAtPercentile(25), 0);
  strictEqual(h.valueAtPercentile(50), 3);
  strictEqual(h.valueAtPercentile(100), 7.6);
  h.record(5000); // above the range: clamped into the top bucket, max stays exact
  strictEqual(h.clamped, 1);
  strictEqual(h.max, 5000);
  strictEqual(h.valueAtPercentile(100), bucketRange(bucketIndex(1000))[1]);

  const other = new Histogram(1000);
  other.record(10, 5);
  h.add(other);
  strictEqual(h.count, 10);
  strictEqual(h.valueAtPercentile(90), 10);
  throws(() => h.add(new Histogram()), RangeError);
  h.reset();
  strictEqual(h.count, 0);
  strictEqual(h.clamped, 0);
  throws(() => new Histogram(0), RangeError);
});
