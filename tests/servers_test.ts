// The address list of ReliableClient: its checks, and the order and pace of attempts (Rotation),
// on a fake clock; tests/failover_test.ts runs the same over real TCP.
import { deepStrictEqual, equal, throws } from "node:assert/strict";
import { ReliableClient } from "../src/client/reliable.ts";
import { formatServer, Rotation, type Server, serverList } from "../src/client/servers.ts";

const three: Server[] = [
  { hostname: "10.0.0.1", port: 9000 },
  { hostname: "10.0.0.2", port: 9000 },
  { hostname: "::1", port: 9001 },
];

/** A rotation on a clock the test moves, its jitter fixed in the middle (random 0.5). */
function rotation(servers: Server[], initialDelayMs = 100, maxDelayMs = 1000) {
  const clock = { now: 0 };
  const r = new Rotation(servers, {
    initialDelayMs,
    maxDelayMs,
    random: () => 0.5,
    now: () => clock.now,
  });
  return { r, clock };
}

Deno.test("serverList() takes hostname and port, or servers, and fills in 127.0.0.1", () => {
  deepStrictEqual(serverList({ port: 9000 }), [{ hostname: "127.0.0.1", port: 9000 }]);
  deepStrictEqual(serverList({ hostname: "::1", port: 1 }), [{ hostname: "::1", port: 1 }]);
  deepStrictEqual(serverList({ servers: [{ port: 65535 }, { hostname: "a.example", port: 2 }] }), [
    { hostname: "127.0.0.1", port: 65535 },
    { hostname: "a.example", port: 2 },
  ]);
});

Deno.test("new ReliableClient() refuses both, neither, an empty list, a bad port or hostname", () => {
  const common = { clientId: 1 };
  const cases: [object, ErrorConstructor, RegExp][] = [
    [{ port: 9000, servers: [{ port: 9001 }] }, TypeError, /both servers and hostname\/port/],
    [{ hostname: "a", servers: [{ port: 9001 }] }, TypeError, /both servers and hostname\/port/],
    [{}, TypeError, /give port \(and hostname\) or servers/],
    [{ hostname: "a" }, TypeError, /give port \(and hostname\) or servers/],
    [{ servers: [] }, RangeError, /servers is empty/],
    [{ servers: "a:1" }, TypeError, /servers is not an array/],
    [{ port: 0 }, RangeError, /the server: port is 0; allowed: an integer from 1 to 65535/],
    [{ port: 65536 }, RangeError, /port is 65536/],
    [{ port: 90.5 }, RangeError, /port is 90.5/],
    [{ port: "9000" }, RangeError, /port is 9000; allowed/],
    [{ servers: [{ port: 1 }, { port: 70000 }] }, RangeError, /servers\[1\]: port is 70000/],
    [{ servers: [{ port: 1 }, null] }, RangeError, /servers\[1\]: port is undefined/],
    [{ hostname: "", port: 1 }, TypeError, /hostname is ""; allowed: a non-empty host name/],
    [{ servers: [{ hostname: 7, port: 1 }] }, TypeError, /servers\[0\]: hostname is 7/],
  ];
  for (const [options, type, message] of cases) {
    // The cases are deliberately ill-typed: JavaScript callers can pass anything.
    const make = () => new ReliableClient({ ...common, ...options } as never);
    throws(make, (e) => e instanceof type && message.test(e.message), JSON.stringify(options));
  }
});

Deno.test("formatServer() writes host:port, an IPv6 address in brackets", () => {
  equal(formatServer({ hostname: "10.0.0.1", port: 9000 }), "10.0.0.1:9000");
  equal(formatServer({ hostname: "::1", port: 9000 }), "[::1]:9000");
});

Deno.test("Rotation goes round robin and sleeps once per round that all failed, doubling", () => {
  const { r } = rotation(three);
  const tried: number[] = [];
  const waits: (number | null)[] = [];
  for (let i = 0; i < 15; i++) {
    tried.push(r.index);
    waits.push(r.failed());
  }
  deepStrictEqual(tried, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]);
  // base = min(1000, 100 * 2^(round - 1)); sleep = base / 2 + 0.5 * base / 2 = 0.75 * base.
  deepStrictEqual(waits, [
    ...[null, null, 75],
    ...[null, null, 150],
    ...[null, null, 300],
    ...[null, null, 600],
    ...[null, null, 750],
  ]);
});

Deno.test("Rotation with one server sleeps after every failure, as a one-server client always did", () => {
  const { r, clock } = rotation([three[0]!]);
  deepStrictEqual([r.failed(), r.failed(), r.failed()], [75, 150, 300]);
  r.connected();
  clock.now += 10_000;
  equal(r.lost(), 75, "a lost connection waits the first delay, then it doubles again");
  equal(r.failed(), 150);
  r.connected();
  equal(r.lost(), 75, "also when the connection ended at once");
  equal(r.index, 0);
});

Deno.test("Rotation: a connection that lasted, when lost, moves on to the next server at once", () => {
  const { r, clock } = rotation(three);
  equal(r.failed(), null); // 10.0.0.1 refused: 10.0.0.2 at once
  r.connected();
  deepStrictEqual(r.current, three[1]);
  clock.now += 100; // lasted initialDelayMs
  equal(r.lost(), null);
  deepStrictEqual(r.current, three[2]);
  equal(r.failed(), null); // a fresh round: [::1] failed, then 10.0.0.1
  equal(r.failed(), 75); // 10.0.0.1 failed too: the round (lost 10.0.0.2, [::1], 10.0.0.1) is over
  deepStrictEqual(r.current, three[1]);
});

Deno.test("Rotation: connections that end at once still meet a sleep once per round", () => {
  // Two nodes that each accept and drop at once must not make the client hop in a tight loop.
  const { r, clock } = rotation(three.slice(0, 2));
  const waits: (number | null)[] = [];
  for (let i = 0; i < 6; i++) {
    r.connected();
    clock.now += 99; // shorter than initialDelayMs
    waits.push(r.lost());
  }
  deepStrictEqual(waits, [null, 75, null, 75, null, 75]);
});
