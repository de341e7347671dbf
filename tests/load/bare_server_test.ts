/**
 * The throughput floor's bare server (`bench/floor/bare_server.ts`) as docs/benchmarks.md uses it:
 * the real load tool drives it, every message is acked, and what it wrote is the frames it read.
 */

import { equal } from "node:assert/strict";
import { withTempDir } from "../support/server.ts";
import { LEGACY_FRAME_BYTES } from "../../src/server/legacy_connection.ts";

const BARE = decodeURIComponent(
  new URL("../../bench/floor/bare_server.ts", import.meta.url).pathname,
);
const MAIN = decodeURIComponent(new URL("../../bench/load/main.ts", import.meta.url).pathname);

/** The port the bare server prints on its first line. */
async function portOf(server: Deno.ChildProcess): Promise<string> {
  const reader = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the bare server exited before its port: ${text}`);
    text += value;
  }
  reader.releaseLock();
  return text.trim();
}

/** A phase of the load tool's `--json` report. */
interface Phase {
  acked: number;
  errors: number;
}

/**
 * Starts the bare server with `flags` writing to `log`, runs the load tool against it with
 * `--port <its port>` and `loadArgs(port)`, and resolves with the report's first phase once the
 * server is stopped again.
 */
async function driveBare(
  flags: string[],
  log: string,
  loadArgs: (port: string) => string[],
): Promise<Phase> {
  const server = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-write", BARE, ...flags, log],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  try {
    const port = await portOf(server);
    const run = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", MAIN, "--port", port, ...loadArgs(port)],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(run.stdout);
    equal(run.code, 0, stdout + new TextDecoder().decode(run.stderr));
    return JSON.parse(stdout).phases[0];
  } finally {
    server.kill("SIGTERM");
    await server.status;
    await server.stdout.cancel().catch(() => {});
  }
}

for (const durable of [false, true]) {
  Deno.test(`the bare server of the throughput floor${durable ? " (--durable)" : ""} acks what the load tool sends and writes it`, async () => {
    await withTempDir("msgserver_bare_test_", async (dir) => {
      const phase = await driveBare(durable ? ["--durable"] : [], `${dir}/floor.log`, () => [
        "--connections",
        "3",
        "--window",
        "8",
        "--count",
        "300",
        "--json",
      ]);
      equal(phase.acked, 300);
      equal(phase.errors, 0);
      // 300 MSG frames, each 4 + 1 + 4 + 1 + name + payload bytes, written as read.
      const written = await Deno.readFile(`${dir}/floor.log`);
      let frames = 0;
      for (let at = 0; at < written.length; frames++) {
        at += 4 + new DataView(written.buffer, at, 4).getUint32(0);
      }
      equal(frames, 300);
    });
  });
}

Deno.test("the bare server's --legacy mode answers the legacy-latency preset and writes each frame", async () => {
  await withTempDir("msgserver_bare_test_", async (dir) => {
    const phase = await driveBare(["--legacy"], `${dir}/floor.log`, (port) => [
      "--preset",
      "legacy-latency",
      "--legacy-port",
      port,
      "--json",
    ]);
    equal(phase.acked, 2000, "20 rounds of 100");
    equal((await Deno.stat(`${dir}/floor.log`)).size, 2000 * LEGACY_FRAME_BYTES);
  });
});
