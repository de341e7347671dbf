import { deepStrictEqual, equal, ok, rejects } from "node:assert/strict";
import { closeQuietly, concat, deadline, delay, within, writeAll } from "../src/io/mod.ts";

Deno.test("writeAll() loops over short writes until every byte is taken", async () => {
  const taken: number[][] = [];
  const stingy = {
    write(bytes: Uint8Array): Promise<number> {
      const n = Math.min(2, bytes.length);
      taken.push([...bytes.subarray(0, n)]);
      return Promise.resolve(n);
    },
  };
  await writeAll(stingy, new Uint8Array([1, 2, 3, 4, 5]));
  deepStrictEqual(taken, [[1, 2], [3, 4], [5]]);
});

Deno.test("writeAll() hands the caller's array to the first write as it is", async () => {
  const bytes = new Uint8Array([1, 2, 3]);
  let first: Uint8Array | null = null;
  await writeAll({
    write(b: Uint8Array) {
      first ??= b;
      return Promise.resolve(b.length);
    },
  }, bytes);
  equal(first, bytes);
});

Deno.test("writeAll() of nothing writes nothing", async () => {
  let calls = 0;
  await writeAll({
    write() {
      calls++;
      return Promise.resolve(0);
    },
  }, new Uint8Array(0));
  equal(calls, 0);
});

Deno.test("closeQuietly() closes once and ignores a second close", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const accepted = await listener.accept();
  closeQuietly(conn);
  closeQuietly(conn);
  closeQuietly(null);
  closeQuietly(undefined);
  equal(await accepted.read(new Uint8Array(1)), null); // the peer saw the close
  accepted.close();
  listener.close();
});

Deno.test("within() says whether the promise settled in time, and never rejects", async () => {
  equal(await within(null, 10), true);
  equal(await within(delay(1), 1000), true);
  equal(await within(Promise.reject(new Error("no")), 1000), true);
  equal(await within(new Promise(() => {}), 20), false);
});

Deno.test("deadline() passes the value through, or rejects with TimedOut naming the wait", async () => {
  equal(await deadline(Promise.resolve(7), 1000, "Cannot get seven"), 7);
  await rejects(
    deadline(new Promise(() => {}), 20, "Cannot get seven"),
    (e: unknown) => {
      ok(e instanceof Deno.errors.TimedOut);
      equal(e.message, "Cannot get seven: nothing within 20 ms");
      return true;
    },
  );
  await rejects(deadline(Promise.reject(new RangeError("bad")), 1000, "x"), RangeError);
});

Deno.test("concat() joins arrays in order", () => {
  deepStrictEqual(
    concat([new Uint8Array([1]), new Uint8Array(0), new Uint8Array([2, 3])]),
    new Uint8Array([1, 2, 3]),
  );
  deepStrictEqual(concat([]), new Uint8Array(0));
});
