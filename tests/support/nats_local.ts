/**
 * One local `nats-server -js` for a test: on a free loopback port, its store in a temporary
 * folder, stopped by its own PID (SIGTERM, then SIGKILL after a grace period) and its folder
 * removed. `withNats` never leaves one running, whatever the test does.
 *
 * (A three-node cluster for the tests that need one is `nats_cluster.ts`.)
 *
 * @module
 */

import { connect, type NatsConnection } from "@nats-io/transport-node";
import { freePort } from "./net.ts";

/** A running nats-server. */
export interface LocalNats {
  /** `nats://127.0.0.1:PORT`. */
  url: string;
  port: number;
  pid: number;
  /** Its JetStream store's folder. */
  dir: string;
  /** Everything it wrote to stderr so far. */
  log(): string;
  /** Stops it (SIGTERM, SIGKILL after 5 s) and waits for the exit; later calls share the first. */
  stop(): Promise<void>;
}

const READY = "Server is ready";

async function startOnce(dir: string, port: number): Promise<LocalNats | null> {
  const child = new Deno.Command("nats-server", {
    args: ["-js", "-a", "127.0.0.1", "-p", `${port}`, "-sd", dir],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let text = "";
  let ready: (ok: boolean) => void = () => {};
  const readiness = new Promise<boolean>((r) => ready = r);
  const drained = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      text += chunk;
      if (text.includes(READY)) ready(true);
    }
    ready(false);
  })();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const ok = await Promise.race([
    readiness,
    new Promise<boolean>((r) => timer = setTimeout(() => r(false), 10_000)),
  ]);
  clearTimeout(timer);
  let stopping: Promise<void> | null = null;
  const stop = () => {
    stopping ??= (async () => {
      try {
        child.kill("SIGTERM");
      } catch {
        // exited already
      }
      const grace = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch {
          // exited already
        }
      }, 5000);
      await child.status;
      clearTimeout(grace);
      await drained;
    })();
    return stopping;
  };
  if (!ok) {
    await stop();
    if (/address already in use/.test(text)) return null;
    throw new Error(`Cannot start nats-server on port ${port}:\n${text}`);
  }
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    pid: child.pid,
    dir,
    log: () => text,
    stop,
  };
}

/**
 * Starts a nats-server with JetStream on a free loopback port (trying another port if the one
 * picked was taken meanwhile).
 */
export async function startNats(): Promise<LocalNats> {
  const dir = await Deno.makeTempDir({ prefix: "msgserver_nats_" });
  try {
    for (let attempt = 0; attempt < 5; attempt++) {
      const server = await startOnce(dir, freePort());
      if (server !== null) return server;
    }
  } catch (e) {
    await Deno.remove(dir, { recursive: true });
    throw e;
  }
  await Deno.remove(dir, { recursive: true });
  throw new Error("Cannot start nats-server: no free port in five tries");
}

/**
 * Runs `fn` with a fresh nats-server and a connection to it; then closes the connection, stops
 * the server by its PID and removes its folder, whatever `fn` did.
 */
export async function withNats(
  fn: (server: LocalNats, nc: NatsConnection) => Promise<void>,
): Promise<void> {
  const server = await startNats();
  let nc: NatsConnection | null = null;
  try {
    nc = await connect({ servers: server.url });
    await fn(server, nc);
  } finally {
    await nc?.close().catch(() => {});
    await server.stop();
    await Deno.remove(server.dir, { recursive: true });
  }
}
