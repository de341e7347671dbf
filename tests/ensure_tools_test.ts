import { deepEqual, equal, match, ok } from "node:assert/strict";
import {
  type AptResult,
  ensureTools,
  findBinary,
  testsUsing,
  type Tool,
} from "../tools/ensure_tools.ts";

/** A folder with an executable `present` and a non-executable `plain`, and fake tools over it. */
async function withTools(
  fn: (dir: string, tools: Record<string, Tool>) => Promise<void> | void,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "msgserver_tools_test_" });
  try {
    await Deno.writeTextFile(`${dir}/present`, "#!/bin/sh\n", { mode: 0o755 });
    await Deno.writeTextFile(`${dir}/plain`, "", { mode: 0o644 });
    await fn(dir, {
      here: { package: "here-pkg", binary: `${dir}/present` },
      gone: { package: "gone-pkg", binary: `${dir}/missing` },
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** An apt-get that records its calls and answers from `answer`. */
function fakeApt(answer: (args: string[]) => AptResult) {
  const calls: string[][] = [];
  return { calls, apt: (args: string[]) => (calls.push(args), Promise.resolve(answer(args))) };
}

Deno.test("findBinary() finds absolute paths and names on PATH, executables only", async () => {
  await withTools((dir) => {
    equal(findBinary(`${dir}/present`), `${dir}/present`);
    equal(findBinary(`${dir}/plain`), null);
    equal(findBinary(`${dir}/missing`), null);
    equal(findBinary("msgserver-no-such-binary"), null);
    ok(findBinary("sh")?.endsWith("/sh"));
  });
});

Deno.test("testsUsing() names the test files that call requireTool with that tool", async () => {
  ok((await testsUsing("nats-server")).includes("tests/support/nats_cluster_test.ts"));
  deepEqual(await testsUsing("no-such-tool"), []);
});

Deno.test("ensureTools() with every binary present calls no apt and says nothing", async () => {
  await withTools(async (_, tools) => {
    const { calls, apt } = fakeApt(() => ({ ok: true, output: "" }));
    const lines: string[] = [];
    const missing = await ensureTools({
      tools: { here: tools.here! },
      root: true,
      apt,
      log: (l) => lines.push(l),
    });
    deepEqual([missing, calls, lines], [[], [], []]);
  });
});

Deno.test("ensureTools() as a user installs nothing and prints one line per missing tool", async () => {
  await withTools(async (_, tools) => {
    const { calls, apt } = fakeApt(() => ({ ok: true, output: "" }));
    const lines: string[] = [];
    const missing = await ensureTools({ tools, root: false, apt, log: (l) => lines.push(l) });
    deepEqual(missing, ["gone"]);
    deepEqual(calls, []);
    equal(lines.length, 1);
    match(lines[0]!, /^ensure_tools: gone \(.*\/missing\) is missing: not root/);
    match(lines[0]!, /no test uses it yet\. Install it with: apt-get update && apt-get install/);
    match(lines[0]!, /--no-install-recommends gone-pkg$/);
  });
});

Deno.test("ensureTools() as root runs apt-get update once, then install, and reports apt's error", async () => {
  await withTools(async (_, tools) => {
    const { calls, apt } = fakeApt((args) =>
      args[0] === "update"
        ? { ok: false, output: "W: Failed to fetch x\nE: Some index files failed to download\n" }
        : { ok: false, output: "Reading package lists...\nE: Unable to locate package gone-pkg\n" }
    );
    const lines: string[] = [];
    const missing = await ensureTools({ tools, root: true, apt, log: (l) => lines.push(l) });
    deepEqual(missing, ["gone"]);
    deepEqual(calls, [["update"], ["install", "-y", "--no-install-recommends", "gone-pkg"]]);
    equal(lines.length, 2);
    match(lines[0]!, /^ensure_tools: installing gone-pkg with apt-get/);
    match(lines[1]!, /apt-get install gone-pkg failed: E: Unable to locate package gone-pkg/);
    match(lines[1]!, /apt-get update failed too: E: Some index files failed to download/);
  });
});

Deno.test("ensureTools() says so when apt-get succeeds but the binary is still missing", async () => {
  await withTools(async (_, tools) => {
    const { apt } = fakeApt(() => ({ ok: true, output: "" }));
    const lines: string[] = [];
    deepEqual(await ensureTools({ tools, root: true, apt, log: (l) => lines.push(l) }), ["gone"]);
    match(lines.at(-1)!, /apt-get installed gone-pkg, but .*\/missing is still missing/);
  });
});
