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
