/**
 * One round trip, `MsgClient.send` to its ACK, against an in-process server in each ack mode:
 * `received` (acked when queued), `written` (after the file write) and `durable` (after fsync).
 * The servers start at module load on free ports with their files in a temp dir; an `unload`
 * handler shuts them down and removes the dir once the benches are over.
 *
 * @module
 */

import { MsgClient } from "../src/client/client.ts";
import { type AckMode, DEFAULTS } from "../src/config.ts";
import { type MsgServer, startServer } from "../src/server/server.ts";

const MODES: AckMode[] = ["received", "written", "durable"];
const dir = await Deno.makeTempDir({ prefix: "msgserver-roundtrip-bench-" });
const payload = new Uint8Array(100).fill(0x61);

const running: { mode: AckMode; server: MsgServer; client: MsgClient }[] = [];
for (const mode of MODES) {
  const server = await startServer({
    ...DEFAULTS,
    PORT: 0,
    FILE_NAME: `${dir}/${mode}.log`,
    ACK_MODE: mode,
    LOG_LEVEL: "error",
  });
  const client = await MsgClient.connect({ port: server.addr.port, clientId: 1 });
  running.push({ mode, server, client });
}

// deno bench has no "after all" hook and runs no async work once the benches are done, so the
// teardown is synchronous: start each graceful shutdown (it closes the listener and the queue at
// once), drop the sockets, remove the temp dir; the process exit closes the rest.
globalThis.addEventListener("unload", () => {
  for (const { server, client } of running) {
    void client.close().catch(() => {});
    void server.shutdown();
  }
  try {
    Deno.removeSync(dir, { recursive: true });
  } catch {
    // removed already
  }
});

for (const { mode, client } of running) {
  Deno.bench({
    name: `round trip, ACK_MODE=${mode}`,
    group: "round trip (MsgClient.send, 100 B)",
    baseline: mode === "received",
    // durable costs an fsync per message: fewer iterations keep the run short.
    ...(mode === "durable" ? { n: 300, warmup: 20 } : {}),
    async fn() {
      await client.send("bench", payload);
    },
  });
}
