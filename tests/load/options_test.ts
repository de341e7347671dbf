import { deepStrictEqual, equal, match, ok, throws } from "node:assert/strict";
import {
  type Options,
  parseOptions,
  type PhaseSpec,
  PRESETS,
  USAGE,
  UsageError,
} from "../../bench/load/options.ts";

/** Parses with no MS_AUTH_TOKEN in the environment; fails on `--help`. */
function parse(args: string[], env: Record<string, string> = {}): Options {
  const options = parseOptions(args, { env: (name) => env[name] });
  if (options === null) throw new Error(`${args.join(" ")} asked for help`);
  return options;
}

function only(options: Options): PhaseSpec {
  equal(options.phases.length, 1);
  return options.phases[0]!;
}

Deno.test("parseOptions() without flags runs 64 x 256 for 5 s against a server it starts", () => {
  deepStrictEqual(parse([]), {
    phases: [{
      name: "run",
      connections: 64,
      window: 256,
      size: 100,
      durationS: 5,
      count: null,
      perClientTable: false,
    }],
    preset: null,
    host: "127.0.0.1",
    port: null,
    legacyPort: null,
    ackMode: "written",
    json: false,
    keep: false,
    timeoutS: null,
    connectConcurrency: 500,
    token: "",
    cluster: false,
    statusPages: 0,
  });
});

Deno.test("parseOptions() reads every flag", () => {
  const options = parse([
    ...["--connections", "3", "--window", "7", "--size", "0", "--duration", "2.5"],
    ...["--host", "10.0.0.2", "--port", "9001", "--ack-mode", "durable", "--timeout", "9"],
    ...["--connect-concurrency", "4", "--token", "t0k", "--json", "--keep"],
  ]);
  deepStrictEqual(options, {
    phases: [{
      name: "run",
      connections: 3,
      window: 7,
      size: 0,
      durationS: 2.5,
      count: null,
      perClientTable: false,
    }],
    preset: null,
    host: "10.0.0.2",
    port: 9001,
    legacyPort: null,
    ackMode: "durable",
    json: true,
    keep: true,
    timeoutS: 9,
    connectConcurrency: 4,
    token: "t0k",
    cluster: false,
    statusPages: 0,
  });
  const counted = only(parse(["--count", "1000", "--connections", "8"]));
  equal(counted.count, 1000);
  equal(counted.durationS, null);
  equal(parse(["--ack-mode", "received"]).ackMode, "received");
  equal(parse(["--ack-mode=written"]).ackMode, "written");
});

Deno.test("parseOptions() takes the token from MS_AUTH_TOKEN unless --token is given", () => {
  equal(parse([], { MS_AUTH_TOKEN: "from-env" }).token, "from-env");
  equal(parse(["--token", "flag"], { MS_AUTH_TOKEN: "from-env" }).token, "flag");
  equal(parse(["--token", ""], { MS_AUTH_TOKEN: "from-env" }).token, "");
});

Deno.test("parseOptions() returns null for --help, whatever else is given", () => {
  equal(parseOptions(["--help"]), null);
  equal(parseOptions(["--preset", "latency", "--help"]), null);
  match(USAGE, /^Usage: deno task bench \[flags\]\n/);
  for (const flag of ["--connections N", "--count N", "--ack-mode MODE", "--keep", "--json"]) {
    ok(USAGE.includes(`  ${flag}`), flag);
  }
  for (const name of Object.keys(PRESETS)) ok(USAGE.includes(`\n  ${name.padEnd(18)} `), name);
});

Deno.test("parseOptions() expands each preset into its phases", () => {
  const latency = parse(["--preset", "seed-latency"]);
  equal(latency.preset, "seed-latency");
  deepStrictEqual(
    latency.phases.map((p) => [p.name, p.connections, p.window, p.count, p.durationS]),
    [["1 client", 1, 1, 100, null], ["100 clients", 100, 1, 10_000, null]],
  );
  ok(latency.phases.every((p) => p.perClientTable));
  const concurrency = only(parse(["--preset", "seed-concurrency"]));
  deepStrictEqual([concurrency.connections, concurrency.window, concurrency.count], [
    10_000,
    6,
    60_000,
  ]);
  const load = only(parse(["--preset", "seed-load"]));
  deepStrictEqual([load.connections, load.window, load.count], [100, 1, 10_000]);
  for (
    const [name, connections, window] of [
      ["throughput", 64, 256],
      ["request-ack", 64, 1],
      ["latency", 1, 1],
      ["fairness", 256, 1],
    ] as const
  ) {
    deepStrictEqual(only(parse(["--preset", name])), {
      name,
      connections,
      window,
      size: 100,
      durationS: 5,
      count: null,
      perClientTable: false,
    });
  }
});

Deno.test("flags override a preset's values; per-connection counts follow --connections", () => {
  const load = only(parse(["--preset", "seed-load", "--connections", "10", "--window", "2"]));
  deepStrictEqual([load.connections, load.window, load.count], [10, 2, 1000]);
  const counted = only(parse(["--preset", "throughput", "--count", "50", "--size", "8"]));
  deepStrictEqual([counted.durationS, counted.count, counted.size], [null, 50, 8]);
  const timed = only(parse(["--preset", "seed-load", "--duration", "1"]));
  deepStrictEqual([timed.durationS, timed.count], [1, null]);
});

Deno.test("parseOptions() refuses bad values with the flag, the value and what is allowed", () => {
  const cases: [string[], string][] = [
    [["--connections", "0"], '--connections is "0"; allowed: an integer from 1 to 100000'],
    [
      ["--connections", "100001"],
      '--connections is "100001"; allowed: an integer from 1 to 100000',
    ],
    [["--window", "abc"], '--window is "abc"; allowed: an integer from 1 to 1000000'],
    [["--window", "1.5"], '--window is "1.5"; allowed: an integer from 1 to 1000000'],
    [["--size=-1"], '--size is "-1"; allowed: an integer from 0 to 67108864'],
    [["--count", "0"], '--count is "0"; allowed: an integer from 1 to 4294967294'],
    [["--port", "65536"], '--port is "65536"; allowed: an integer from 1 to 65535'],
    [
      ["--connect-concurrency", "0"],
      '--connect-concurrency is "0"; allowed: an integer from 1 to 100000',
    ],
    [["--duration", "0"], '--duration is "0"; allowed: seconds, above 0, at most 86400'],
    [["--duration", "1e3"], '--duration is "1e3"; allowed: seconds, above 0, at most 86400'],
    [["--timeout", "86401"], '--timeout is "86401"; allowed: seconds, above 0, at most 86400'],
    [["--ack-mode", "sync"], '--ack-mode is "sync"; allowed: received, written, durable'],
    [
      ["--preset", "nope"],
      '--preset is "nope"; allowed: seed-latency, legacy-latency, seed-concurrency, seed-load, ' +
      "throughput, request-ack, latency, stalled-peers, fairness, cluster",
    ],
    [["--duration", "1", "--count", "5"], "--duration and --count exclude each other"],
  ];
  for (const [args, message] of cases) {
    throws(() => parse(args), (e) => e instanceof UsageError && e.message === message, message);
  }
  throws(() => parse(["--bogus"]), (e) => e instanceof UsageError && /--bogus/.test(e.message));
  throws(() => parse(["extra"]), (e) => e instanceof UsageError && /extra/.test(e.message));
  throws(() => parse(["--window"]), (e) => e instanceof UsageError && /--window/.test(e.message));
});

Deno.test("the cluster preset runs R1, R3 and R3 with the leader killed a fifth of the way in", () => {
  const options = parse(["--preset", "cluster"]);
  equal(options.cluster, true);
  deepStrictEqual(
    options.phases.map((p) => [p.name, p.connections, p.window, p.durationS, p.replicas]),
    [["R1", 64, 256, 5, 1], ["R3", 64, 256, 5, 3], ["R3 failover", 64, 256, 15, 3]],
  );
  deepStrictEqual(options.phases.map((p) => p.killLeaderAtS), [undefined, undefined, 3]);
  const short = parse(["--preset", "cluster", "--duration", "1", "--connections", "4"]);
  deepStrictEqual(short.phases.map((p) => [p.durationS, p.connections]), [[1, 4], [1, 4], [1, 4]]);
  equal(short.phases[2]!.killLeaderAtS, 0.2, "the kill keeps its place in a shorter run");
  equal(parse(["--preset", "throughput"]).cluster, false);
  match(USAGE, /\n {2}cluster {12}STORE=jetstream, its own 3-node NATS cluster/);
});

Deno.test("the cluster preset refuses --port and --ack-mode durable", () => {
  throws(
    () => parse(["--preset", "cluster", "--port", "9000"]),
    (e) =>
      e instanceof UsageError &&
      e.message === "--preset cluster starts its own servers: --port does not go with it",
  );
  throws(
    () => parse(["--preset", "cluster", "--ack-mode", "durable"]),
    (e) => e instanceof UsageError && /does not take --ack-mode durable/.test(e.message),
  );
  equal(parse(["--preset", "cluster", "--ack-mode", "received"]).ackMode, "received");
});

Deno.test("--status-pages opens up to 16 pages on the server the tool starts, and only there", () => {
  equal(parse(["--status-pages", "2", "--preset", "throughput"]).statusPages, 2);
  throws(
    () => parse(["--status-pages", "17"]),
    (e) =>
      e instanceof UsageError &&
      e.message === '--status-pages is "17"; allowed: an integer from 0 to 16',
  );
  throws(
    () => parse(["--status-pages", "1", "--port", "9000"]),
    (e) =>
      e instanceof UsageError &&
      e.message ===
        "--status-pages opens the status page of the one server the tool starts: it does not go with --port",
  );
  throws(
    () => parse(["--status-pages", "1", "--preset", "cluster"]),
    (e) => e instanceof UsageError && /does not go with --preset cluster$/.test(e.message),
  );
  match(USAGE, /\n {2}--status-pages N {7}keep N live status pages/);
});

Deno.test("the legacy-latency preset is the original's test on LEGACY_PORT: 1 x 100 one at a time, 20 rounds", () => {
  const options = parse(["--preset", "legacy-latency"]);
  deepStrictEqual(only(options), {
    name: "legacy 1 x 100",
    connections: 1,
    window: 1,
    size: 100,
    durationS: null,
    count: 100,
    perClientTable: true,
    legacy: true,
    rounds: 20,
  });
  equal(options.legacyPort, null);
  match(USAGE, /\n {2}legacy-latency {5}the original's latency test through LEGACY_PORT/);
  ok(USAGE.includes("  --legacy-port PORT"));
  const running = parse(["--preset", "legacy-latency", "--port", "9000", "--legacy-port", "9001"]);
  deepStrictEqual([running.port, running.legacyPort], [9000, 9001]);
  equal(only(parse(["--preset", "legacy-latency", "--count", "50"])).count, 50);
});

Deno.test("the legacy-latency preset refuses what the legacy protocol or its server cannot take", () => {
  const cases: [string[], string][] = [
    [
      ["--preset", "legacy-latency", "--duration", "1"],
      "--preset legacy-latency sends a count: --duration does not go with it",
    ],
    [
      ["--preset", "legacy-latency", "--size", "1025"],
      '--size is "1025"; allowed with --preset legacy-latency: at most 1024',
    ],
    [
      ["--preset", "legacy-latency", "--port", "9000"],
      "--preset legacy-latency with --port needs --legacy-port too",
    ],
    [
      ["--preset", "legacy-latency", "--legacy-port", "9001"],
      "--legacy-port goes only with --port and the legacy-latency preset",
    ],
    [
      ["--port", "9000", "--legacy-port", "9001"],
      "--legacy-port goes only with --port and the legacy-latency preset",
    ],
  ];
  for (const [args, message] of cases) {
    throws(() => parse(args), (e) => e instanceof UsageError && e.message === message, message);
  }
});
