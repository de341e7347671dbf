import { equal, match, ok } from "node:assert/strict";
import { ServerStartError, spawnServer } from "./spawn.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "msgserver_spawn_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Settings by flags only: an empty MS_HOME reads no app.conf. */
function byFlags(dir: string): { args: string[]; env: Record<string, string> } {
  return {
    args: ["--port", "0", "--file-name", `${dir}/messages.log`, "--log-level", "info"],
    env: { MS_HOME: "" },
  };
}

Deno.test("spawnServer() hands each stderr line to onLine and shutdown() reports a clean exit", async () => {
  await withDir(async (dir) => {
    const lines: string[] = [];
    const server = await spawnServer(dir, { ...byFlags(dir), onLine: (l) => lines.push(l) });
    equal(server.pid, server.child.pid);
    equal(server.exitStatus(), null);
    ok(lines.some((l) => l.includes(`listening addr=127.0.0.1:${server.port}`)), lines.join("\n"));
    const result = await server.shutdown({ graceMs: 30_000 });
    equal(result.code, 0, server.stderr());
    equal(result.signal, null);
    equal(result.timedOut, false);
    ok(result.ms >= 0);
    equal(server.exitStatus()?.code, 0);
    equal(await server.stop("SIGKILL"), 0, "a later stop() shares the first outcome");
    equal(lines.join("\n") + "\n", server.stderr(), "every line, in order");
  });
});

Deno.test("shutdown() sends SIGKILL once graceMs runs out", async () => {
  await withDir(async (dir) => {
    const server = await spawnServer(dir, byFlags(dir));
    // A stopped process ignores SIGTERM until it continues, so only SIGKILL ends it.
    const result = await server.shutdown({ signal: "SIGSTOP", graceMs: 200 });
    equal(result.timedOut, true);
    equal(result.signal, "SIGKILL");
    ok(result.ms >= 200, `${result.ms} ms`);
  });
});

async function startError(start: Promise<unknown>): Promise<ServerStartError> {
  try {
    await start;
  } catch (e) {
    if (e instanceof ServerStartError) return e;
    throw e;
  }
  throw new Error("The server started, but it should not have");
}

Deno.test("spawnServer() passes options.env and says why a start failed", async () => {
  await withDir(async (dir) => {
    const home = `${dir}/home`;
    await Deno.mkdir(home);
    await Deno.writeTextFile(`${home}/app.conf`, "LOG_LEVEL=chatty\n");
    const exited = await startError(spawnServer(dir, { env: { MS_HOME: home } }));
    equal(exited.reason, "exited");
    match(exited.stderr, /LOG_LEVEL/);
    const silent = await startError(spawnServer(dir, { ...byFlags(dir), timeoutMs: 1 }));
    equal(silent.reason, "timeout");
  });
});
