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

/** How long a page has to show its first snapshot. */
const LIVE_TIMEOUT_MS = 15_000;

/** The open pages. */
export interface StatusPages {
  /** How many are open. */
  readonly count: number;
  /**
   * Closes the pages and the browser; resolves with the snapshots each page received, and the
   * problems the pages reported (console errors, uncaught exceptions).
   */
  close(): Promise<{ snapshots: number[]; problems: string[] }>;
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
    const first = await seqs();
    return {
      count,
      close: async () => {
        const last = await seqs().catch(() => first);
        await browser.close();
        return { snapshots: last.map((seq, i) => seq - first[i]!), problems };
      },
    };
  } catch (e) {
    await browser.close();
    throw e;
  }
}
