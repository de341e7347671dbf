/**
 * `msgserver status` as an operator runs it: its own process, against a real server spawned as
 * its own process (healthy, unreachable, over JetStream), and against small stand-in HTTP servers
 * for what today's server never answers (a 503 while stopping, a /metrics that wants the bearer
 * token another change is adding to the server).
 */

import { equal, match, ok } from "node:assert/strict";
import { MsgClient } from "../src/client/client.ts";
import { freePort } from "./support/net.ts";
import { startNats } from "./support/nats_local.ts";
import { withTempDir } from "./support/server.ts";
import { type SpawnedServer, spawnServer } from "./support/spawn.ts";
import { requireTool } from "./support/tools.ts";

const root = new URL("..", import.meta.url).pathname;
const MSGSERVER = `${root}src/cli/msgserver.ts`;

const inherited = Deno.env.toObject();
delete inherited.MS_AUTH_TOKEN;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** `msgserver status ARGS` in `cwd` (no app.conf there unless the test wrote one). */
async function status(
  args: string[],
  options: { cwd: string; env?: Record<string, string> },
): Promise<Run> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MSGSERVER, "status", ...args],
    cwd: options.cwd,
    // Not this process's MS_AUTH_TOKEN, if it has one: only what the test gives.
    clearEnv: true,
    env: { ...inherited, MS_HOME: "", ...options.env },
    stdin: "null",
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

/** The figure on the line of `label` in the status output (its first number). */
function figure(stdout: string, label: string): number {
  const line = stdout.split("\n").find((l) => l.trimStart().startsWith(`${label} `));
  ok(line !== undefined, `no "${label}" line in\n${stdout}`);
  const n = /\s(\d+)/.exec(line.trimStart().slice(label.length));
  ok(n !== null, line);
  return Number(n[1]);
}

function metricValue(text: string, series: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  ok(line !== undefined, `no ${series} in /metrics`);
  return Number(line.slice(series.length + 1));
}

async function spawnWithMetrics(dir: string, extra: string[] = []): Promise<{
  server: SpawnedServer;
  metricsPort: number;
}> {
  const metricsPort = freePort();
  const server = await spawnServer(dir, {
    args: ["--port", "0", "--metrics-port", `${metricsPort}`, ...extra],
    env: { MS_HOME: "" },
  });
  return { server, metricsPort };
}

Deno.test("status of a healthy server: exit 0, the figures of /metrics, the port from app.conf", async () => {
  await withTempDir("msgserver_status_test_", async (dir) => {
    const { server, metricsPort } = await spawnWithMetrics(dir, [
      "--file-name",
      `${dir}/m.log`,
      "--queue-capacity",
      "5000",
    ]);
    try {
      const client = await MsgClient.connect({ port: server.port, clientId: 1 });
      await Promise.all(Array.from({ length: 300 }, (_, i) => client.send("m", `p${i}`)));
      await client.send("bad name", "x").catch(() => {});
      await client.send("m", "again", 1).catch(() => {});
      await client.close();
      // What an operator has on the host: the server's config, nothing on the command line.
      await Deno.writeTextFile(`${dir}/app.conf`, `METRICS_PORT=${metricsPort}\n`);
      const run = await status(["--interval", "0.3"], { cwd: dir });
      equal(run.code, 0, run.stderr);
      equal(run.stderr, "");
      const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      match(
        run.stdout,
        new RegExp(`^msgserver +http://127\\.0\\.0\\.1:${metricsPort}/metrics$`, "m"),
      );
      match(run.stdout, /^health +ok, up \d+s$/m);
      equal(
        figure(run.stdout, "received"),
        metricValue(metrics, "msgserver_messages_received_total"),
      );
      equal(figure(run.stdout, "received"), 302);
      equal(figure(run.stdout, "written"), 300);
      equal(figure(run.stdout, "acked"), 300);
      equal(figure(run.stdout, "NACK 2 bad name"), 1);
      equal(figure(run.stdout, "NACK 3 duplicate"), 1);
      equal(figure(run.stdout, "NACK 4 storage"), 0);
      match(run.stdout, /^connections +0 open, 1 accepted, 0 refused$/m);
      match(run.stdout, /^queue +0 of 5000 records \(0\.0%\), 0 B of 64\.0 MiB \(0\.0%\)$/m);
      match(run.stdout, /^write time +p50 \S+ \w+, p99 \S+ \w+ \(\d+ batches since start\)$/m);
      match(run.stdout, /^store +file$/m);
      const fds = new RegExp(
        `^descriptors +\\d+ of ${metricValue(metrics, "process_max_fds")} open`,
      );
      match(run.stdout, new RegExp(fds.source, "m"));
      // Nothing moved between the two readings.
      match(run.stdout, /^ {2}written +300 {2}0\.0$/m);
    } finally {
      equal(await server.stop(), 0, server.stderr());
    }
  });
});

Deno.test("status measures rates between its two readings while messages flow", async () => {
  await withTempDir("msgserver_status_test_", async (dir) => {
    const { server, metricsPort } = await spawnWithMetrics(dir, ["--file-name", `${dir}/m.log`]);
    const client = await MsgClient.connect({ port: server.port, clientId: 1 });
    let sending = true;
    const load = (async () => {
      while (sending) await client.send("m", "x");
    })();
    try {
      const run = await status(["--metrics-port", `${metricsPort}`, "--interval", "0.5"], {
        cwd: dir,
      });
      equal(run.code, 0, run.stderr);
      const line = run.stdout.split("\n").find((l) => l.startsWith("  written "));
      const m = /^ {2}written +(\d+) +([\d.]+)$/.exec(line ?? "");
      ok(m !== null, run.stdout);
      ok(Number(m[2]) > 0, `written ${m[1]} at ${m[2]} a second while a client sends`);
      match(run.stdout, /^write time .* in the last interval\)$/m);
    } finally {
      sending = false;
      await load;
      await client.close();
      equal(await server.stop(), 0, server.stderr());
    }
  });
});

Deno.test("status of a server that does not answer: exit 1, naming the URL", async () => {
  await withTempDir("msgserver_status_test_", async (dir) => {
    const port = freePort();
    const run = await status(["--metrics-port", `${port}`], { cwd: dir });
    equal(run.code, 1);
    equal(run.stdout, "");
    match(
      run.stderr,
      new RegExp(
        `^msgserver status: Cannot reach http://127\\.0\\.0\\.1:${port}/metrics: .*refused`,
      ),
    );
  });
});

Deno.test("status with METRICS_PORT 0 and no --url, or bad flags: exit 2, saying what to give", async () => {
  await withTempDir("msgserver_status_test_", async (dir) => {
    const off = await status([], { cwd: dir });
    equal(off.code, 2);
    match(
      off.stderr,
      /METRICS_PORT is 0 \(off\) in the config; give .*--metrics-port N.* or --url URL/,
    );
    for (
      const [args, message] of [
        [["--url", "ftp://h/metrics"], /--url is "ftp:\/\/h\/metrics"; allowed: an http/],
        [["--url", "http://h:1/metrics", "--interval=-1"], /--interval is "-1"; allowed/],
        [["--metrics-port", "9100", "extra"], /Unexpected argument 'extra'/],
        [["--metrics-prot", "9100"], /did you mean "--metrics-port"/],
      ] as const
    ) {
      const run = await status([...args], { cwd: dir });
      equal(run.code, 2, `${args.join(" ")}: ${run.stderr}`);
      match(run.stderr, message);
    }
  });
});

/** An HTTP server standing in for msgserver's METRICS_PORT; `answer` decides each reply. */
async function withStandIn(
  answer: (req: Request) => Response,
  fn: (port: number) => Promise<void>,
): Promise<void> {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, answer);
  try {
    await fn(server.addr.port);
  } finally {
    await server.shutdown();
  }
}

const METRICS = "msgserver_connections_open 1\nmsgserver_messages_written_total 5\n";

Deno.test("status sends Authorization: Bearer AUTH_TOKEN, and says so when /metrics wants one", async () => {
  const seen: (string | null)[] = [];
  await withStandIn((req) => {
    seen.push(req.headers.get("authorization"));
    if (new URL(req.url).pathname === "/healthz") return new Response("ok\n");
    return req.headers.get("authorization") === "Bearer s3cret"
      ? new Response(METRICS)
      : new Response("unauthorized\n", { status: 401 });
  }, async (port) => {
    await withTempDir("msgserver_status_test_", async (dir) => {
      const url = `http://127.0.0.1:${port}/metrics`;
      const fromEnv = await status(["--url", url, "--interval", "0"], {
        cwd: dir,
        env: { MS_AUTH_TOKEN: "s3cret" },
      });
      equal(fromEnv.code, 0, fromEnv.stderr);
      match(fromEnv.stdout, /^ {2}written +5$/m);
      await Deno.writeTextFile(`${dir}/app.conf`, "AUTH_TOKEN=s3cret\n");
      const fromConf = await status(["--url", url, "--interval", "0"], { cwd: dir });
      equal(fromConf.code, 0, fromConf.stderr);
      equal(seen.filter((h) => h !== "Bearer s3cret").length, 0, seen.join(", "));
      await Deno.writeTextFile(`${dir}/app.conf`, "AUTH_TOKEN=wrong\n");
      const wrong = await status(["--url", url], { cwd: dir });
      equal(wrong.code, 1);
      match(
        wrong.stderr,
        new RegExp(`Cannot read ${url}: HTTP 401; the server refused AUTH_TOKEN`),
      );
      ok(!wrong.stderr.includes("wrong"), "the token is never shown");
      await Deno.remove(`${dir}/app.conf`);
      const none = await status(["--url", url], { cwd: dir });
      equal(none.code, 1);
      match(none.stderr, /HTTP 401; the server wants a token: set AUTH_TOKEN .* or MS_AUTH_TOKEN/);
    });
  });
});

Deno.test("status against today's server with AUTH_TOKEN set: the header is ignored, exit 0", async () => {
  await withTempDir("msgserver_status_test_", async (dir) => {
    const { server, metricsPort } = await spawnWithMetrics(dir, ["--file-name", `${dir}/m.log`]);
    try {
      const run = await status(["--metrics-port", `${metricsPort}`, "--interval", "0"], {
        cwd: dir,
        env: { MS_AUTH_TOKEN: "s3cret" },
      });
      equal(run.code, 0, run.stderr);
      match(run.stdout, /^health +ok/m);
    } finally {
      equal(await server.stop(), 0, server.stderr());
    }
  });
});

Deno.test("status of a server shutting down (/healthz 503): the figures, then exit 1 and why", async () => {
  await withStandIn(
    (req) =>
      new URL(req.url).pathname === "/healthz"
        ? new Response("stopping\n", { status: 503 })
        : new Response(METRICS),
    async (port) => {
      await withTempDir("msgserver_status_test_", async (dir) => {
        const run = await status(["--url", `http://127.0.0.1:${port}`, "--interval", "0"], {
          cwd: dir,
        });
        equal(run.code, 1);
        match(run.stdout, /^ {2}written +5$/m);
        const why = `NOT OK: http://127.0.0.1:${port}/healthz answered HTTP 503 "stopping"`;
        ok(run.stdout.includes(`health       ${why}`), run.stdout);
        equal(run.stderr.trim(), `msgserver status: unhealthy: ${why}`);
      });
    },
  );
});

Deno.test("status of something that is not /metrics: exit 1, naming the URL and the line", async () => {
  await withStandIn(() => new Response("<html>\n"), async (port) => {
    await withTempDir("msgserver_status_test_", async (dir) => {
      const url = `http://127.0.0.1:${port}/metrics`;
      const run = await status(["--url", url, "--interval", "0"], { cwd: dir });
      equal(run.code, 1);
      match(run.stderr, new RegExp(`Cannot read ${url}: Cannot parse metrics line 1: `));
    });
  });
});

Deno.test({
  name: "status of a server over JetStream shows the NATS connection and publish time",
  ignore: !requireTool("nats-server"),
  async fn() {
    const nats = await startNats();
    try {
      await withTempDir("msgserver_status_test_", async (dir) => {
        const { server, metricsPort } = await spawnWithMetrics(dir, [
          "--store",
          "jetstream",
          "--nats-urls",
          nats.url,
          "--nats-replicas",
          "1",
        ]);
        try {
          const client = await MsgClient.connect({ port: server.port, clientId: 1 });
          await Promise.all(Array.from({ length: 50 }, (_, i) => client.send("m", `p${i}`)));
          await client.close();
          const run = await status(["--metrics-port", `${metricsPort}`, "--interval", "0"], {
            cwd: dir,
          });
          equal(run.code, 0, run.stderr);
          match(run.stdout, /^store +jetstream, NATS connected, 0 publishes in flight$/m);
          match(run.stdout, /^publish time +p50 .*publishes since start\)$/m);
          equal(figure(run.stdout, "written"), 50);
        } finally {
          equal(await server.stop(), 0, server.stderr());
        }
      });
    } finally {
      await nats.stop();
    }
  },
});

Deno.test("deno task status runs msgserver status", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", "-q", "status", "--help"],
    cwd: root,
    stdin: "null",
  }).output();
  equal(out.code, 0);
  match(new TextDecoder().decode(out.stdout), /^Usage: msgserver status /);
});
