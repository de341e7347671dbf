import { equal, match, ok } from "node:assert/strict";
import { formatReport, type Report } from "../../bench/load/report.ts";

type PhaseReport = Report["phases"][number];

function phase(overrides: Partial<PhaseReport> = {}): PhaseReport {
  return {
    name: "throughput",
    connections: 64,
    window: 256,
    size: 100,
    durationS: 5,
    count: null,
    connected: 64,
    connectFailures: 0,
    connectMs: 137.52,
    sent: 7_395_080,
    acked: 7_395_080,
    nacked: 0,
    nackCodes: {},
    resumed: 0,
    abandoned: 0,
    unsettled: 0,
    errors: 0,
    errorSamples: [],
    timedOut: false,
    elapsedS: 5.0396,
    msgsPerS: 1_467_388.4,
    mbPerS: 146.7388,
    latencyUs: {
      min: 40,
      mean: 11_122.2,
      p50: 10_047,
      p90: 15_615,
      p99: 27_775,
      p999: 121_343,
      max: 132_264,
    },
    longestAckGap: { ms: 48.7, fromS: 2.1 },
    stall: { ms: 0, fromS: 0 },
    acksPerConnection: { min: 115_456, median: 115_456, max: 115_712 },
    perClient: null,
    ...overrides,
  };
}

function report(overrides: Partial<Report> = {}): Report {
  return {
    preset: "throughput",
    ackMode: "written",
    server: {
      host: "127.0.0.1",
      port: 45817,
      startedByBench: true,
      pid: 7697,
      cpuUserS: 2.1,
      cpuSysS: 1.68,
      cpuS: 3.78,
      peakRssBytes: 103.8 * 1024 * 1024,
      exit: { code: 0, signal: null, timedOut: false, ms: 12.6 },
      exitedEarly: false,
      dataFile: null,
    },
    loadCpuS: 1.333,
    phases: [phase()],
    fileCheck: {
      lines: 7_395_080,
      expected: 7_395_080,
      clientMismatches: [],
      clientMismatchCount: 0,
      tornTail: false,
      ok: true,
    },
    ok: true,
    problems: [],
    ...overrides,
  };
}

Deno.test("formatReport() prints the header, one column per phase, the server and the file check", () => {
  const text = formatReport(report());
  const lines = text.split("\n");
  equal(
    lines[0],
    "msgserver load: preset throughput, server 127.0.0.1:45817 " +
      "(started by the bench, pid 7697, ack-mode written)",
  );
  equal(lines[1], "");
  equal(lines[2], "phase                 throughput");
  equal(lines[3], "connections x window    64 x 256");
  for (
    const row of [
      "payload bytes                100",
      "run                          5 s",
      "connect time ms            137.5",
      "messages acked         7,395,080",
      "elapsed s                  5.040",
      "msgs/s                 1,467,388",
      "MB/s (payload)            146.74",
      "latency p50 us            10,047",
      "latency p99.9 us         121,343",
      "latency mean us           11,122",
      "longest ack gap ms            49",
      "longest stall ms               0",
      "acks/conn max            115,712",
      "CPU seconds           3.78 (user 2.10, sys 1.68)",
      "peak RSS (VmHWM)                       103.8 MiB",
      "exit after SIGTERM               code 0 in 13 ms",
      "load generator CPU s                        1.33",
    ]
  ) {
    ok(lines.includes(row), `row "${row}" in\n${text}`);
  }
  equal(lines.at(-1), "file check: 7,395,080 lines, 7,395,080 acked: OK");
  ok(!text.includes("per-client"), "no per-client table unless the phase asks");
});

Deno.test("formatReport() lines up several phases and prints each per-client table", () => {
  const perClient = [
    { client: 2, acked: 100, avgLatencyUs: 75.25 },
    { client: 3, acked: 0, avgLatencyUs: NaN },
  ];
  const text = formatReport(report({
    preset: "seed-latency",
    phases: [
      phase({ name: "1 client", connections: 1, window: 1, durationS: null, count: 100 }),
      phase({ name: "100 clients", durationS: null, count: 10_000, acked: 100, perClient }),
    ],
  }));
  const lines = text.split("\n");
  ok(lines.includes("phase                  1 client  100 clients"), text);
  ok(lines.includes("connections x window      1 x 1     64 x 256"), text);
  ok(lines.includes("run                    100 msgs  10,000 msgs"), text);
  ok(
    text.includes(
      '\nper-client average latency, phase "100 clients":\n' +
        "client   acked  avg latency us\n" +
        "2          100            75.3\n" +
        "3            0             n/a\n" +
        "overall    100          11,122\n",
    ),
    text,
  );
});

Deno.test("formatReport() says n/a for what it could not read, and a running server is not checked", () => {
  const text = formatReport(report({
    preset: null,
    ackMode: null,
    server: {
      host: "10.0.0.2",
      port: 9000,
      startedByBench: false,
      pid: null,
      cpuUserS: null,
      cpuSysS: null,
      cpuS: null,
      peakRssBytes: null,
      exit: null,
      exitedEarly: false,
      dataFile: null,
    },
    loadCpuS: null,
    fileCheck: null,
  }));
  match(text, /^msgserver load: preset \(none\), server 10\.0\.0\.2:9000\n/);
  for (
    const label of [
      "CPU seconds",
      "peak RSS \\(VmHWM\\)",
      "exit after SIGTERM",
      "load generator CPU s",
    ]
  ) {
    match(text, new RegExp(`^${label} +n/a$`, "m"));
  }
  match(text, /\nfile check: skipped \(server not started by the bench\)$/);
});

Deno.test("formatReport() ends with the notes and the problems", () => {
  const text = formatReport(report({
    server: {
      ...report().server,
      exit: { code: 137, signal: "SIGKILL", timedOut: true, ms: 30_000 },
    },
    phases: [phase({ errorSamples: ["client 3: closed by the server"], errors: 1 })],
    fileCheck: { ...report().fileCheck!, lines: 7_395_081, ok: false },
    ok: false,
    problems: ["the server did not exit within 30 s of SIGTERM", 'phase "throughput": 1 errors'],
  }));
  match(text, /^exit after SIGTERM +did not exit in time: killed$/m);
  ok(
    text.endsWith(
      "file check: 7,395,081 lines, 7,395,080 acked: MISMATCH\n" +
        "note [throughput]: client 3: closed by the server\n" +
        "PROBLEM: the server did not exit within 30 s of SIGTERM\n" +
        'PROBLEM: phase "throughput": 1 errors',
    ),
    text,
  );
  const exited = formatReport(report({
    server: { ...report().server, exit: { code: 1, signal: "SIGTERM", timedOut: false, ms: 4 } },
  }));
  match(exited, /^exit after SIGTERM +code 1 signal SIGTERM in 4 ms$/m);
});

Deno.test("formatReport() for the cluster preset: a table of the cluster beside the phases", () => {
  const cpu = (natsNodesS: (number | null)[], msgserverS: number, loadS: number) => ({
    wallS: 5,
    natsNodesS,
    natsS: natsNodesS.some((c) => c === null) ? null : natsNodesS.reduce((a, c) => a! + c!, 0),
    msgserverS,
    loadS,
    machineBusyS: 9.8,
  });
  const check = (lines: number, refused: number) => ({
    lines,
    expected: lines,
    clientMismatches: [],
    clientMismatchCount: 0,
    tornTail: false,
    ids: {
      lost: 0,
      doubled: 0,
      unexpected: 0,
      unackedKept: 0,
      refused,
      abandoned: 0,
      samples: [],
    },
    ok: true,
  });
  const server = {
    pid: 10,
    cpuS: 3.5,
    peakRssBytes: 128 * 1024 * 1024,
    exit: { code: 0, signal: null, timedOut: false, ms: 20 },
    exitedEarly: false,
  };
  const text = formatReport(report({
    preset: "cluster",
    phases: [
      phase({ name: "R3" }),
      phase({ name: "R3 failover", stall: { ms: 10_477.2, fromS: 3.04 }, nacked: 12 }),
    ],
    fileCheck: null,
    cluster: {
      nodes: [{ name: "node-1-x", pid: 1 }, { name: "node-2-x", pid: 2 }, {
        name: "node-3-x",
        pid: 3,
      }],
      cores: 2,
      phases: [
        {
          name: "R3",
          stream: "BENCH_2_a",
          subject: "bench_2_a",
          replicas: 3,
          leader: "node-1-x",
          msgserverNode: "node-2-x",
          server,
          cpu: cpu([1.5, 2.5, 3.3], 1.5, 0.5),
          failover: null,
          export: { code: 0, records: 1_000_000, ms: 900, recordsPerS: 1_111_111, wallS: 1.25 },
          fileCheck: check(1_000_000, 0),
        },
        {
          name: "R3 failover",
          stream: "BENCH_3_b",
          subject: "bench_3_b",
          replicas: 3,
          leader: "node-2-x",
          msgserverNode: null,
          server,
          cpu: cpu([1, null, 1], 1, 0.25),
          failover: {
            killed: "node-2-x",
            killedAtS: 3.06,
            newLeader: "node-3-x",
            electedAtS: 10.88,
            restartMs: 1971.4,
          },
          export: null,
          fileCheck: null,
        },
      ],
    },
  }));
  const lines = text.split("\n");
  equal(
    lines[0],
    "msgserver load: preset cluster, STORE=jetstream, ack-mode written, a msgserver per phase " +
      "over a 3-node NATS cluster (nats-server pids 1, 2, 3), 2 cores shared by all",
  );
  for (
    const row of [
      /^longest stall ms +0 +10,477$/,
      /^cluster +R3 +R3 failover$/,
      /^stream \(replicas\) +BENCH_2_a \(R3\) +BENCH_3_b \(R3\)$/,
      /^stream leader at the start +node-1-x +node-2-x$/,
      /^msgserver's NATS node +node-2-x +n\/a$/,
      /^leader killed \(SIGKILL\) +- +node-2-x at 3\.06 s$/,
      /^next leader seen +- +node-3-x at 10\.88 s$/,
      /^failover stall \(acks < 1%\) +- +10,477 ms from 3\.04 s$/,
      /^killed node restarted +- +in 1,971 ms$/,
      /^ {2}3 nats-servers, % of a core +146% \(30\+50\+66\) +n\/a \(20\+n\/a\+20\)$/,
      /^ {2}msgserver +30% +20%$/,
      /^ {2}these together +186% +n\/a$/,
      /^ {2}machine busy \(of 200%\) +196% +196%$/,
      /^ {2}the rest \(kernel, other work\) +10% +n\/a$/,
      /^export records\/s +1,111,111 +n\/a$/,
      /^export wall s \(start-up incl\.\) +1\.25 +n\/a$/,
    ]
  ) {
    ok(lines.some((l) => row.test(l)), `${row} in\n${text}`);
  }
  ok(
    lines.includes("export check [R3]: 1,000,000 lines, 1,000,000 acked: OK (0 lost, 0 doubled)"),
    text,
  );
  ok(lines.includes("export check [R3 failover]: skipped (no export)"), text);
  ok(!text.includes("file check:") && !text.includes("peak RSS (VmHWM)"), "no one-server table");
});
