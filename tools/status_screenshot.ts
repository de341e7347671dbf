/**
 * Takes the README's picture of the status page under load (`docs/status-page.png`): starts a
 * server with METRICS_PORT in a temp folder, opens its page in headless Chromium, runs loads
 * against it with the load tool (64 connections x 256 in flight, then 16 x 32, 15 s each, then
 * 64 x 1) and saves a screenshot of the top of the page 10 s into the last one. About a minute.
 *
 * `deno run -A tools/status_screenshot.ts [OUTPUT.png]`
 *
 * @module
 */

import { chromium } from "playwright-core";
import { freePort } from "../tests/support/net.ts";
import { spawnServer } from "../tests/support/spawn.ts";
import { TOOLS } from "./ensure_tools.ts";

const LOADS = [
  ["--connections", "64", "--window", "256", "--duration", "15"],
  ["--connections", "16", "--window", "32", "--duration", "15"],
];
const LAST = ["--connections", "64", "--window", "1", "--duration", "15"];

const output = Deno.args[0] ?? "docs/status-page.png";
const loadTool = new URL("../bench/load/main.ts", import.meta.url).pathname;
const dir = await Deno.makeTempDir({ prefix: "msgserver_screenshot_" });
const metricsPort = freePort();
const server = await spawnServer(dir, {
  args: [
    ...["--port", "0", "--metrics-port", String(metricsPort)],
    ...["--file-name", `${dir}/messages.log`, "--file-max-bytes", "500000000"],
  ],
  env: { MS_HOME: "" },
});
const browser = await chromium.launch({
  executablePath: TOOLS.chromium.binary,
  args: ["--no-sandbox"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(`http://127.0.0.1:${metricsPort}/`);
  const load = (args: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", loadTool, "--port", String(server.port), ...args],
      stdout: "null",
      stderr: "null",
    }).output().then((run) => {
      if (!run.success) throw new Error(`the load tool failed: ${args.join(" ")}`);
    });
  for (const args of LOADS) await load(args);
  const last = load(LAST);
  await new Promise((resolve) => setTimeout(resolve, 10_000));
  await page.screenshot({ path: output });
  await last;
  console.log(`saved ${output}`);
} finally {
  await browser.close();
  await server.stop();
  await Deno.remove(dir, { recursive: true });
}
