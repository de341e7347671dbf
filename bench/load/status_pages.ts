/**
 * `--status-pages N`: N live status pages (`GET /` on the server's METRICS_PORT) open in headless
 * Chromium for the whole run, so the load's figures can be compared with and without viewers
 * (issue 13: one shared snapshot a tick, whatever the number of viewers). Playwright and Chromium
 * are loaded only when asked for; Chromium is Debian's (`tools/ensure_tools.ts` installs it).
 *
 * @module
 */

import type { Page } from "playwright-core";
import { TOOLS } from "../../tools/ensure_tools.ts";
import { readCpu } from "./proc.ts";

/** How long a page has to show its first snapshot. */
const LIVE_TIMEOUT_MS = 15_000;

/** The open pages. */
export interface StatusPages {
  /** How many are open. */
  readonly count: number;
  /**
   * Closes the pages and the browser; resolves with the snapshots each page received, the CPU
   * seconds Chromium's processes used while the pages were open (null where /proc says nothing),
   * and the problems the pages reported (console errors, uncaught exceptions).
   */
  close(): Promise<{ snapshots: number[]; browserCpuS: number | null; problems: string[] }>;
}

/**
 * CPU seconds used so far by this process's descendants that run Chromium: the browser shares
 * the machine's cores with the server and the load, so its cost is said apart from theirs.
 */
async function chromiumCpu(): Promise<number | null> {
  const parents = new Map<number, number>();
  try {
    for await (const entry of Deno.readDir("/proc")) {
      const pid = Number(entry.name);
      if (!Number.isInteger(pid)) continue;
      const stat = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => null);
      if (stat === null) continue;
      parents.set(pid, Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    }
  } catch {
    return null;
  }
  const descends = (pid: number): boolean => {
    for (let p = parents.get(pid); p !== undefined && p > 1; p = parents.get(p)) {
      if (p === Deno.pid) return true;
    }
    return false;
  };
  let total = 0;
  for (const pid of parents.keys()) {
    if (!descends(pid)) continue;
    const cmdline = await Deno.readTextFile(`/proc/${pid}/cmdline`).catch(() => "");
    if (!cmdline.includes("chromium")) continue;
    const cpu = await readCpu(pid);
    if (cpu !== null) total += cpu.user + cpu.sys;
  }
  return total;
}

/**
 * Opens `count` pages on `url` in one headless Chromium and waits until each shows a snapshot.
 * Throws when Chromium is missing or a page does not go live (the browser is closed first).
 *
 * @example
 * ```ts
 * const pages = await openStatusPages("http://127.0.0.1:9100/", 2);
 * // ... the load runs ...
 * const { snapshots } = await pages.close();
 * console.error(`snapshots received: ${snapshots.join(", ")}`);
 * ```
 */
export async function openStatusPages(url: string, count: number): Promise<StatusPages> {
  const binary = TOOLS.chromium.binary;
  try {
    await Deno.stat(binary);
  } catch {
    throw new Error(
      `--status-pages needs Chromium at ${binary} (apt-get install -y chromium, or deno task test ` +
        `as root, which installs it)`,
    );
  }
  const { chromium } = await import("playwright-core");
  const browser = await chromium.launch({ executablePath: binary, args: ["--no-sandbox"] });
  const problems: string[] = [];
  try {
    const pages: Page[] = [];
    for (let i = 0; i < count; i++) {
      const page = await browser.newPage();
      page.on("console", (m) => {
        if (m.type() === "error") problems.push(`status page ${i + 1}: console: ${m.text()}`);
      });
      page.on("pageerror", (e) => problems.push(`status page ${i + 1}: ${e.message}`));
      await page.goto(url);
      pages.push(page);
    }
    const seqs = () =>
      Promise.all(
        pages.map((p) => p.evaluate<number>("Number(document.body.dataset.seq ?? 0)")),
      );
    const deadline = performance.now() + LIVE_TIMEOUT_MS;
    while ((await seqs()).some((seq) => seq < 1)) {
      if (performance.now() > deadline) {
        throw new Error(`a status page at ${url} showed no snapshot in ${LIVE_TIMEOUT_MS} ms`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    // Snapshots each page took in (not the server's tick count, which a slow page may skip).
    const received = () =>
      Promise.all(pages.map((p) => p.evaluate<number>("globalThis.msgserverStatus.received()")));
    const first = await received();
    const cpuBefore = await chromiumCpu();
    return {
      count,
      close: async () => {
        const last = await received().catch(() => first);
        const cpuAfter = await chromiumCpu();
        await browser.close();
        return {
          snapshots: last.map((seq, i) => seq - first[i]!),
          browserCpuS: cpuBefore === null || cpuAfter === null ? null : cpuAfter - cpuBefore,
          problems,
        };
      },
    };
  } catch (e) {
    await browser.close();
    throw e;
  }
}
