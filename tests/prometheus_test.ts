/**
 * A real Prometheus judges what msgserver ships for it: `promtool check metrics` lints the
 * `/metrics` of a running server (its own process, under load, with refusals, over the file store
 * with default settings and over JetStream), and `promtool check rules` and `promtool test rules`
 * check the alerting rules in `deploy/prometheus/`. Every metric the rules (and their unit tests)
 * name must be one a running server exports, so that a renamed metric cannot leave a rule that
 * never fires; and docs/operations.md's table of metrics must list exactly what is exported.
 */

import { deepEqual, equal, match, ok } from "node:assert/strict";
import { MsgClient } from "../src/client/client.ts";
import { freePort } from "./support/net.ts";
import { startNats } from "./support/nats_local.ts";
import { withTempDir } from "./support/server.ts";
import { type SpawnedServer, spawnServer } from "./support/spawn.ts";
import { requireTool } from "./support/tools.ts";

const present = requireTool("prometheus");
const RULES_DIR = new URL("../deploy/prometheus/", import.meta.url).pathname;
const RULES = `${RULES_DIR}msgserver-alerts.yml`;
const RULES_TEST = `${RULES_DIR}msgserver-alerts.test.yml`;

async function promtool(args: string[], stdin?: string): Promise<{ code: number; out: string }> {
  const child = new Deno.Command("promtool", {
    args,
    cwd: RULES_DIR,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const { code, stdout, stderr } = await child.output();
  const text = new TextDecoder();
  return { code, out: text.decode(stdout) + text.decode(stderr) };
}

/** promtool's lint of one scrape: exit 0 and not a word, else the complaint and the text. */
async function checkMetrics(text: string): Promise<void> {
  const { code, out } = await promtool(["check", "metrics"], text);
  equal(`${code} ${out}`, "0 ", `promtool check metrics:\n${out}\non:\n${text}`);
}

async function scrape(port: number): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  equal(response.status, 200);
  return await response.text();
}

/** The metric names of a text-format scrape (histograms under their family's name too). */
function exportedNames(text: string): Set<string> {
  const names = new Set<string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    names.add(m[1]!);
    if (m[2] === "histogram") {
      for (const suffix of ["_bucket", "_sum", "_count"]) names.add(m[1]! + suffix);
    }
  }
  return names;
}

const OPERATIONS = new URL("../docs/operations.md", import.meta.url).pathname;

/** The metric families docs/operations.md's table lists (labels dropped). */
async function documentedNames(): Promise<Set<string>> {
  const text = await Deno.readTextFile(OPERATIONS);
  const rows = text.split("\n").filter((l) => /^\| `(msgserver|process)_/.test(l));
  return new Set(
    rows.flatMap((row) =>
      [...row.split("|")[1]!.matchAll(/`((?:msgserver|process)_[a-z_]+)/g)].map((m) => m[1]!)
    ),
  );
}

/** The metric families of a scrape, from its `# TYPE` lines. */
function families(text: string): string[] {
  return [...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!);
}

/** The metric names a rules or rule-test file uses (ours, and the standard `up`). */
async function namesIn(file: string): Promise<Set<string>> {
  const text = await Deno.readTextFile(file);
  // Names in the prose (a hint to look at the write time) must exist as well.
  return new Set([...text.matchAll(/\b(?:msgserver|process)_[a-z_]+\b/g)].map((m) => m[0]));
}

/**
 * Load from 4 connections, some of it refused (bad names, duplicates), and a scrape taken while
 * it runs; resolves with that scrape once every message is answered.
 */
async function loadAndScrape(server: SpawnedServer, metricsPort: number): Promise<string> {
  const clients = await Promise.all(
    [1, 2, 3, 4].map((id) => MsgClient.connect({ port: server.port, clientId: id })),
  );
  try {
    const sends = clients.flatMap((client) =>
      Array.from(
        { length: 2000 },
        (_, i) =>
          i % 500 === 7
            ? client.send("bad name", "x").catch(() => {})
            : client.send("load", `payload ${i}`),
      )
    );
    const during = await scrape(metricsPort);
    await Promise.all(sends);
    await clients[0]!.send("load", "again", 1).catch(() => {}); // NACK 3
    return during;
  } finally {
    await Promise.all(clients.map((c) => c.close()));
  }
}

Deno.test({
  name: "promtool check metrics accepts /metrics of a server with default settings, under load",
  ignore: !present,
  async fn() {
    await withTempDir("msgserver_prometheus_test_", async (dir) => {
      const metricsPort = freePort();
      const server = await spawnServer(dir, {
        // Only what a test must set: everything else, STORE=file included, is the default.
        args: ["--port", "0", "--metrics-port", `${metricsPort}`, "--file-name", `${dir}/m.log`],
        env: { MS_HOME: "" },
      });
      try {
        const during = await loadAndScrape(server, metricsPort);
        await checkMetrics(during);
        const after = await scrape(metricsPort);
        await checkMetrics(after);
        match(after, /^msgserver_messages_written_total 7984$/m);
        match(after, /^msgserver_nacks_total\{code="2"\} 16$/m);
        match(after, /^msgserver_nacks_total\{code="3"\} 1$/m);
        const exported = exportedNames(after);
        for (const file of [RULES, RULES_TEST]) {
          const unknown = [...await namesIn(file)].filter((name) => !exported.has(name));
          deepEqual(unknown, [], `${file} names metrics /metrics does not have`);
        }
        // docs/operations.md's table, both ways (the NATS metrics are the JetStream test's).
        const documented = await documentedNames();
        deepEqual(families(after).filter((n) => !documented.has(n)), [], "exported, undocumented");
        deepEqual(
          [...documented].filter((n) => !n.startsWith("msgserver_nats_") && !exported.has(n)),
          [],
          `documented in ${OPERATIONS}, not exported`,
        );
      } finally {
        equal(await server.stop(), 0, server.stderr());
      }
    });
  },
});

Deno.test({
  name: "promtool check metrics accepts /metrics of a server over JetStream, under load",
  ignore: !present || !requireTool("nats-server"),
  async fn() {
    const nats = await startNats();
    try {
      await withTempDir("msgserver_prometheus_test_", async (dir) => {
        const metricsPort = freePort();
        const server = await spawnServer(dir, {
          args: [
            "--port",
            "0",
            "--metrics-port",
            `${metricsPort}`,
            "--store",
            "jetstream",
            "--nats-urls",
            nats.url,
            "--nats-replicas",
            "1",
          ],
          env: { MS_HOME: "" },
        });
        try {
          const during = await loadAndScrape(server, metricsPort);
          await checkMetrics(during);
          const after = await scrape(metricsPort);
          await checkMetrics(after);
          match(after, /^msgserver_nats_connected 1$/m);
          match(after, /^msgserver_nats_publish_seconds_count [1-9]\d*$/m);
          const documented = await documentedNames();
          deepEqual(
            families(after).filter((n) => !documented.has(n)),
            [],
            "exported, undocumented",
          );
        } finally {
          equal(await server.stop(), 0, server.stderr());
        }
      });
    } finally {
      await nats.stop();
    }
  },
});

Deno.test({
  name: "promtool check metrics fails on what it should (the check above can fail)",
  ignore: !present,
  async fn() {
    const { code, out } = await promtool(
      ["check", "metrics"],
      "# HELP x_seconds X.\n# TYPE x_seconds counter\nx_seconds 1\n",
    );
    ok(code !== 0, out);
    match(out, /counter metrics should have "_total" suffix/);
  },
});

Deno.test({
  name: "promtool check rules accepts deploy/prometheus/msgserver-alerts.yml, four alerts",
  ignore: !present,
  async fn() {
    const { code, out } = await promtool(["check", "rules", RULES]);
    equal(code, 0, out);
    match(out, /SUCCESS: 4 rules found/);
    for (const alert of ["Down", "StorageErrors", "QueueNearlyFull", "FileDescriptorsNearLimit"]) {
      match(await Deno.readTextFile(RULES), new RegExp(`^ +- alert: Msgserver${alert}$`, "m"));
    }
  },
});

Deno.test({
  name: "promtool test rules: each alert fires when it should and not otherwise",
  ignore: !present,
  async fn() {
    const { code, out } = await promtool(["test", "rules", RULES_TEST]);
    equal(code, 0, out);
    match(out, /SUCCESS/);
  },
});
