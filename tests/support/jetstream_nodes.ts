/**
 * msgserver nodes over a real NATS JetStream cluster (STORE=jetstream), and what the tests check
 * at the end: the stream exported to a file by `msgserver export`, each client's msg_ids in it.
 *
 * @module
 */

import { NackError } from "../../src/client/errors.ts";
import { ReliableClient, type ReliableOptions } from "../../src/client/reliable.ts";
import { type Config, DEFAULTS } from "../../src/config.ts";
import { Logger } from "../../src/log.ts";
import { type ParsedLine, parseFile } from "../../src/server/line.ts";
import type { NatsCluster } from "./nats_cluster.ts";
import { exportCommand } from "./spawn.ts";

let streams = 0;

/**
 * A config for a msgserver node over `cluster`: STORE=jetstream, PORT 0, and a stream name of its
 * own to this test (a stream is never deleted and created again under one name: nats-server
 * 2.9.10 can lose the head of such a stream on a restarted replica).
 */
export function jetstreamConfig(cluster: NatsCluster, overrides: Partial<Config> = {}): Config {
  return {
    ...DEFAULTS,
    PORT: 0,
    STORE: "jetstream",
    NATS_URLS: cluster.urls.join(","),
    NATS_STREAM: `T${Deno.pid}_${++streams}_${crypto.randomUUID().slice(0, 6)}`,
    NATS_REPLICAS: cluster.nodes.length,
    LOG_LEVEL: "warn",
    ...overrides,
  };
}

/** A logger that keeps its lines, for failure messages. */
export function keptLog(level: Config["LOG_LEVEL"] = "info"): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: new Logger(level, (line) => lines.push(line)), lines };
}

/**
 * Runs `msgserver export` (the real command, without --follow) of `config`'s stream into
 * `dir/export.log` and returns its records; throws with its stderr when it fails.
 */
export async function exportRecords(config: Config, dir: string): Promise<ParsedLine[]> {
  const output = `${dir}/export-${crypto.randomUUID().slice(0, 8)}.log`;
  const out = await exportCommand(
    ["--nats-urls", config.NATS_URLS, "--nats-stream", config.NATS_STREAM, output],
    dir,
  ).output();
  if (out.code !== 0) {
    throw new Error(
      `msgserver export exited ${out.code}:\n${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return parseFile(await Deno.readFile(output));
}

/** Each client's msg_ids, in the order of the records. */
export function idsByClient(records: ParsedLine[]): Map<number, number[]> {
  const ids = new Map<number, number[]>();
  for (const r of records) {
    let list = ids.get(r.clientId);
    if (list === undefined) ids.set(r.clientId, list = []);
    list.push(r.msgId);
  }
  return ids;
}

/**
 * What is wrong with `ids` (one client's msg_ids in stream order) given the ids `acked` for it:
 * a doubled id, an id out of order, an acked id missing. Empty when none.
 */
export function problemsOf(ids: readonly number[], acked: Iterable<number>): string[] {
  const problems: string[] = [];
  const seen = new Set<number>();
  let last = 0;
  for (const id of ids) {
    if (seen.has(id)) problems.push(`msg_id ${id} twice`);
    else if (id < last) problems.push(`msg_id ${id} after ${last}`);
    seen.add(id);
    last = Math.max(last, id);
  }
  let missing = 0;
  let firstMissing = 0;
  for (const id of acked) {
    if (!seen.has(id) && missing++ === 0) firstMissing = id;
  }
  if (missing > 0) problems.push(`${missing} acked msg_ids missing, the first ${firstMissing}`);
  return problems.slice(0, 10);
}

/** Options of {@linkcode SteadyLoad}. */
export interface SteadyLoadOptions {
  /** Client options but the client id (given per client, from `firstClientId`). */
  client: Omit<ReliableOptions, "clientId">;
  clients: number;
  firstClientId: number;
  /** Sends awaited at once per client. */
  window: number;
  payloadBytes?: number;
}

/**
 * Clients sending without a pause through {@linkcode ReliableClient}s until `stop()`, keeping
 * what became of each message: acked (delivered in any way) or refused, by msg_id.
 */
export class SteadyLoad {
  /** Each client's delivered msg_ids. */
  readonly acked = new Map<number, number[]>();
  /** Each client's msg_ids refused with a NACK (4: storage error), and other failures. */
  readonly refused = new Map<number, number[]>();
  readonly failures: string[] = [];
  /** performance.now() of the latest delivery. */
  lastAckAt = 0;
  #stopping = false;
  readonly #loops: Promise<void>[] = [];
  readonly #clients: ReliableClient[] = [];

  constructor(options: SteadyLoadOptions) {
    const payload = "x".repeat(options.payloadBytes ?? 100);
    for (let i = 0; i < options.clients; i++) {
      const clientId = options.firstClientId + i;
      const client = new ReliableClient({ ...options.client, clientId });
      this.#clients.push(client);
      const acked: number[] = [];
      const refused: number[] = [];
      this.acked.set(clientId, acked);
      this.refused.set(clientId, refused);
      for (let w = 0; w < options.window; w++) {
        this.#loops.push((async () => {
          while (!this.#stopping) {
            try {
              const delivery = await client.send(`c${clientId}`, payload);
              acked.push(delivery.msgId);
              this.lastAckAt = performance.now();
            } catch (e) {
              if (e instanceof NackError) refused.push(e.msgId);
              else {
                this.failures.push(`client ${clientId}: ${(e as Error).message}`);
                return;
              }
            }
          }
        })());
      }
    }
  }

  /** Deliveries so far, all clients. */
  get ackedCount(): number {
    let n = 0;
    for (const ids of this.acked.values()) n += ids.length;
    return n;
  }

  /** Refusals so far, all clients. */
  get refusedCount(): number {
    let n = 0;
    for (const ids of this.refused.values()) n += ids.length;
    return n;
  }

  /** Stops sending, waits for what was sent to be settled, and closes the clients. */
  async stop(): Promise<void> {
    this.#stopping = true;
    await Promise.all(this.#loops);
    await Promise.all(this.#clients.map((c) => c.close()));
  }
}

/** Waits until `check()` is true, polling; throws naming `what` after `timeoutMs`. */
export async function until(what: string, check: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
