/**
 * The load tool end to end, as `deno task bench` runs it: a subprocess against a server it starts
 * itself, and against one already running.
 */

import { exists } from "../../src/io/exists.ts";
import { equal, match, ok } from "node:assert/strict";
import { spawnServer } from "../support/spawn.ts";
import { requireTool } from "../support/tools.ts";

const MAIN = decodeURIComponent(new URL("../../bench/load/main.ts", import.meta.url).pathname);

async function bench(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("the load tool starts its server, sends a count, checks the file and cleans up", async () => {
  const run = await bench(["--connections", "2", "--window", "4", "--count", "200"]);
  equal(run.code, 0, run.stdout + run.stderr);
  match(
    run.stdout,
    /^msgserver load: preset \(none\), server 127\.0\.0\.1:\d+ \(started by the bench, pid \d+, ack-mode written\)$/m,
  );
  match(run.stdout, /^connections x window +2 x 4$/m);
  match(run.stdout, /^messages acked +200$/m);
  match(run.stdout, /^exit after SIGTERM +code 0 in \d+ ms$/m);
  match(run.stdout, /\nfile check: 200 lines, 200 acked: OK\n$/);
  const file = /data file (\S+)\n/.exec(run.stderr)?.[1];
  ok(file !== undefined, run.stderr);
  equal(await exists(file), false, "the temp dir is removed after a clean run");
});

Deno.test("the load tool runs against a running server with --port and prints JSON", async () => {
  const dir = await Deno.makeTempDir({ prefix: "msgserver_load_test_" });
  try {
    const server = await spawnServer(dir, {
      args: ["--port", "0", "--file-name", `${dir}/messages.log`],
      env: { MS_HOME: "" },
    });
    try {
      const port = String(server.port);
      const run = await bench(["--port", port, "--connections", "3", "--count", "90", "--json"]);
      equal(run.code, 0, run.stdout + run.stderr);
      const report = JSON.parse(run.stdout);
      equal(report.ok, true);
      equal(report.server.startedByBench, false);
      equal(report.fileCheck, null);
      equal(report.phases[0].acked, 90);
    } finally {
      equal(await server.stop(), 0);
    }
    equal((await Deno.readTextFile(`${dir}/messages.log`)).split("\n").length, 91);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the load tool exits 2 with the usage text on a bad flag", async () => {
  const run = await bench(["--window", "0"]);
  equal(run.code, 2);
  match(run.stderr, /^bench: --window is "0"; allowed: an integer from 1 to 1000000\n\nUsage: /);
  equal(run.stdout, "");
});

Deno.test({
  name:
    "the load tool keeps status pages open in Chromium for the run, and says what they received",
  ignore: !requireTool("chromium"),
  async fn() {
    const run = await bench([
      ...["--connections", "2", "--window", "16", "--duration", "2.5", "--status-pages", "2"],
    ]);
    equal(run.code, 0, run.stdout + run.stderr);
    match(run.stderr, /^bench: 2 status pages open on port \d+$/m);
    const seen =
      /^status pages open during the run: 2 \(snapshots received: (\d+), (\d+); Chromium's CPU over the run: \d+\.\d\d s\)$/m
        .exec(run.stdout);
    ok(seen !== null, run.stdout);
    // One snapshot a second for 2.5 s of load: each page got at least two while it ran.
    ok(Number(seen[1]) >= 2 && Number(seen[2]) >= 2, seen[0]);
    match(run.stdout, /\nfile check: [\d,]+ lines, [\d,]+ acked: OK\n$/);
  },
});

Deno.test("the legacy-latency preset runs the original's test through LEGACY_PORT and checks the file", async () => {
  const run = await bench(["--preset", "legacy-latency", "--count", "30"]);
  equal(run.code, 0, run.stdout + run.stderr);
  match(
    run.stderr,
    /phase "legacy 1 x 100": 1 connections, window 1, 100 B payload, 30 messages, 20 rounds, LEGACY_PORT/,
  );
  match(run.stdout, /^run +30 msgs x 20 rounds$/m);
  match(run.stdout, /^messages acked +600$/m);
  match(run.stdout, /^each round's average latency \(a fresh client each round\)/m);
  match(run.stdout, /^20 +30 +[\d.,]+$/m);
  match(run.stdout, /^median round +[\d.,]+$/m);
  match(run.stdout, /\nfile check: 600 lines, 600 acked: OK\n$/);
});
