/**
 * One local `nats-server` with JetStream for a test: the first node of the cluster harness
 * (`nats_cluster.ts`, started from `docs/nats/node-1.conf` without its cluster block) on free
 * loopback ports, its store in a temporary folder, stopped by its PID. `withNats` never leaves one
 * running, whatever the test does.
 *
 * @module
 */

import { connect, type NatsConnection } from "@nats-io/transport-node";
import { startNatsCluster } from "./nats_cluster.ts";

/** A running nats-server. */
export interface LocalNats {
  /** `nats://127.0.0.1:PORT`. */
  url: string;
  /** The PID of its process. */
  pid: number;
  /** Stops it (SIGTERM, SIGKILL after 5 s), waits, removes its store; later calls share the first. */
  stop(): Promise<void>;
}

/** Starts a single nats-server with JetStream and resolves once JetStream answers. */
export async function startNats(): Promise<LocalNats> {
  const cluster = await startNatsCluster({ nodes: 1 });
  return { url: cluster.urls[0]!, pid: cluster.nodes[0]!.pid, stop: () => cluster.stop() };
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
  }
}
