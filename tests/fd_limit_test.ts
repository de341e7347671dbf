/**
 * The server at its limit of open files: spawned with a low limit (prlimit), flooded until
 * accepts fail, scraped meanwhile, then relieved. Nothing may bring it down, serving goes on
 * for connections already open, and everything recovers when descriptors come back.
 */

import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { MsgClient } from "../src/client/client.ts";
import { closeQuietly } from "../src/io/close_quietly.ts";
import { delay } from "../src/io/within.ts";
import { parseFile } from "../src/server/line.ts";
import { freePort } from "./support/net.ts";
import { readRecords, withTempDir } from "./support/server.ts";
import { spawnServer } from "./support/spawn.ts";

const FD_LIMIT = 128;

/** GET `path`, or null if no answer came within `ms` (the server could not take the connection). */
async function get(
  port: number,
  path: string,
  ms = 1000,
): Promise<{ status: number; text: string } | null> {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), ms);
  try {
    const r = await fetch(`http://127.0.0.1:${port}${path}`, { signal: abort.signal });
    return { status: r.status, text: await r.text() };
  } catch {
    return null;
  } finally {
    clearTimeout(timer);
  }
}

/** Opens `n` connections to `port` (they wait in the backlog once the server cannot accept). */
async function flood(port: number, n: number): Promise<Deno.Conn[]> {
  const conns: Deno.Conn[] = [];
  for (let i = 0; i < n; i++) conns.push(await Deno.connect({ hostname: "127.0.0.1", port }));
  return conns;
}

/** Waits until `server`'s stderr says `text`, or fails after `ms`. */
async function logged(stderr: () => string, text: string, ms = 10_000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!stderr().includes(text)) {
    if (performance.now() > deadline) throw new Error(`No "${text}" in the log:\n${stderr()}`);
    await delay(20);
  }
}

Deno.test("out of file descriptors: no crash, open connections are served, scrapes and new clients recover", async () => {
  await withTempDir("msgserver_fd_test_", async (dir) => {
    const metricsPort = freePort();
    const server = await spawnServer(dir, {
      args: ["--port", "0", "--metrics-port", String(metricsPort), "--max-connections", "5000"],
      env: { MS_HOME: "" }, // no app.conf: flags only
      maxOpenFiles: FD_LIMIT,
    });
    const conns: Deno.Conn[] = [];
    try {
      const survivor = await MsgClient.connect({ port: server.port, clientId: 1 });
      await survivor.send("s", "before");
      conns.push(...await flood(server.port, FD_LIMIT + 50));
      await logged(server.stderr, "accept failed");
      // Scrapes and idle connections to METRICS_PORT while the process is at its limit.
      conns.push(...await flood(metricsPort, 40));
      const during = await Promise.all([
        get(metricsPort, "/healthz"),
        get(metricsPort, "/metrics"),
      ]);
      // Serving goes on for the connection that was already open.
      for (let i = 0; i < 20; i++) await survivor.send("s", `during ${i}`);
      equal(server.exitStatus(), null, `the server exited:\n${server.stderr()}`);

      for (const c of conns.splice(0)) closeQuietly(c);
      await delay(1500); // accepts back off up to 1 s between tries
      const health = await get(metricsPort, "/healthz", 5000);
      deepStrictEqual(health, { status: 200, text: "ok\n" });
      const metrics = (await get(metricsPort, "/metrics", 5000))!.text;
      const acceptErrors = Number(/^msgserver_accept_errors_total (\d+)$/m.exec(metrics)?.[1]);
      ok(acceptErrors > 0, `accept errors counted: ${acceptErrors}`);
      ok(/^msgserver_http_accept_errors_total \d+$/m.test(metrics));
      const fresh = await MsgClient.connect({ port: server.port, clientId: 2 });
      await fresh.send("s", "after");
      await fresh.close();
      await survivor.send("s", "after");
      await survivor.close();
      equal(await server.stop(), 0, server.stderr());
      const records = await readRecords(`${dir}/messages.log`);
      deepStrictEqual(
        records.filter((r) => r.clientId === 1).map((r) => r.msgId),
        Array.from({ length: 22 }, (_, i) => i + 1),
      );
      equal(records.filter((r) => r.clientId === 2).length, 1);
      ok(!server.stderr().includes("panicked"), server.stderr());
      ok(during.length === 2); // the scrapes during the flood may or may not have been answered
    } finally {
      for (const c of conns) closeQuietly(c);
      await server.stop("SIGKILL");
    }
  });
});

Deno.test("rotation while out of file descriptors goes on in the rotated file, then FILE_MAX_BYTES holds again", async () => {
  await withTempDir("msgserver_fd_test_", async (dir) => {
    const max = 4000;
    const server = await spawnServer(dir, {
      args: ["--port", "0", "--file-max-bytes", String(max), "--max-connections", "5000"],
      env: { MS_HOME: "" }, // no app.conf: flags only
      maxOpenFiles: FD_LIMIT,
    });
    const conns: Deno.Conn[] = [];
    try {
      const client = await MsgClient.connect({ port: server.port, clientId: 3 });
      const payload = "p".repeat(90);
      let sent = 0;
      const send = async (n: number) => {
        for (let i = 0; i < n; i++) await client.send("rot", `${++sent} ${payload}`);
      };
      await send(10); // about 1 KiB: no rotation yet
      conns.push(...await flood(server.port, FD_LIMIT + 50));
      await logged(server.stderr, "accept failed");
      await send(80); // past FILE_MAX_BYTES: the rename works, the new file cannot be opened
      await logged(server.stderr, "cannot open a new data file");
      for (const c of conns.splice(0)) closeQuietly(c);
      await delay(300);
      await send(120); // descriptors are back: the next rotation opens FILE_NAME again
      await client.close();
      equal(await server.stop(), 0, server.stderr());

      const names: string[] = [];
      for await (const e of Deno.readDir(dir)) {
        if (e.name.startsWith("messages.log") && !e.name.includes(".sessions")) names.push(e.name);
      }
      ok(names.includes("messages.log"), `FILE_NAME exists again: ${names}`);
      const rotated = names.filter((n) => n !== "messages.log").sort();
      ok(rotated.length >= 2, `rotated files: ${rotated}`);
      const files = [...rotated, "messages.log"];
      const sizes = await Promise.all(
        files.map(async (n) => (await Deno.stat(`${dir}/${n}`)).size),
      );
      // The file that took the batches while FILE_NAME could not be opened grew past the limit;
      // every file after it holds the limit again.
      const over = sizes.findIndex((s) => s > max);
      ok(over >= 0, `one file grew past the limit while out of descriptors: ${sizes}`);
      for (const size of sizes.slice(over + 1)) ok(size <= max, `sizes ${sizes}`);
      const ids: number[] = [];
      for (const n of files) {
        for (const r of parseFile(await Deno.readFile(`${dir}/${n}`))) ids.push(r.msgId);
      }
      deepStrictEqual(ids, Array.from({ length: sent }, (_, i) => i + 1));
    } finally {
      for (const c of conns) closeQuietly(c);
      await server.stop("SIGKILL");
    }
  });
});
