/**
 * A real NATS JetStream cluster for tests: `nats-server` processes started from the example
 * configs in `docs/nats/` (so the tests also test those files), each with free loopback ports,
 * its own store dir in a temporary folder and a unique server name, stopped by PID.
 *
 * {@linkcode startNatsCluster} resolves once JetStream is ready: every node's `/healthz` answers ok
 * (it is current with the meta leader) and a client's account info request succeeds. Nodes can be
 * killed with any signal and restarted with the same config and store dir, to test failover.
 *
 * Two rules from our measurements: close every nats.js connection a test opens (`await
 * nc.close()`), or the test process never exits; and never delete a stream and create it again
 * under the same name (nats-server 2.9.10 loses the head of such a stream on a restarted replica):
 * use a fresh cluster or a fresh stream name.
 *
 * (Over 400 lines: one node's process with its start, stop, kill and restart, and the cluster's
 * waits for JetStream and for stream leaders, which the tests and the cluster preset share.)
 *
 * @module
 */

import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { findBinary, TOOLS } from "../../tools/ensure_tools.ts";
import { freePort } from "./net.ts";

const CONFIGS = new URL("../../docs/nats/", import.meta.url);
/** The most nodes the example configs describe. */
const MAX_NODES = 3;
const READY_TIMEOUT_MS = 15_000;
/**
 * How long a restarted node may take to be current again. After all three were killed at once,
 * the meta leader came 6 s after the restart and the stream was still not current 15 s after it
 * (2 runs of 19 of the NATS-down test): each Raft group elects its leader in turn, with election
 * timeouts of several seconds in 2.9.10.
 */
const RESTART_TIMEOUT_MS = 40_000;
/** How long stop() waits after SIGTERM before SIGKILL. */
const STOP_GRACE_MS = 5_000;
/** Signals after which kill() waits for the process to exit. */
const ENDING = new Set<Deno.Signal>(["SIGKILL", "SIGTERM", "SIGINT", "SIGQUIT"]);
/** PIDs of every server started here, killed if the test process exits first. */
const running = new Set<number>();

globalThis.addEventListener("unload", () => {
  for (const pid of running) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
});

/** One `nats-server` of a {@linkcode NatsCluster}. */
export interface NatsNode {
  /** Its server name (also what JetStream calls it, e.g. as a stream leader). */
  readonly name: string;
  /** Its client port on 127.0.0.1. */
  readonly port: number;
  /** `nats://127.0.0.1:PORT`. */
  readonly url: string;
  /** The PID of its current process (a restart changes it). */
  readonly pid: number;
  /** False once its process has exited. */
  readonly alive: boolean;
  /**
   * Sends `signal` (SIGTERM by default); after SIGKILL, SIGTERM, SIGINT or SIGQUIT, resolves once
   * the process has exited (at once for others, e.g. SIGSTOP and SIGCONT). Nothing when it is not
   * alive.
   */
  kill(signal?: Deno.Signal): Promise<void>;
  /**
   * Stops it if alive (SIGTERM), starts it again with the same config, ports and store dir, and
   * resolves once it is current with the cluster (its `/healthz` is ok; at most 40 s, which a
   * whole cluster restarted at once may need).
   */
  restart(): Promise<void>;
}

/** Options of {@linkcode NatsCluster.streamLeader}. */
export interface StreamLeaderOptions {
  /** Wait for a leader other than this node (e.g. the one just killed). */
  excluding?: string;
  /** How long to wait for a leader; 15 s by default. */
  timeoutMs?: number;
}

/** A running cluster (see {@linkcode startNatsCluster}); `await using` stops it. */
export interface NatsCluster extends AsyncDisposable {
  /** The nodes' client URLs, in node order. */
  readonly urls: string[];
  /** The nodes, in the order of the example configs. */
  readonly nodes: NatsNode[];
  /** The temp folder of the nodes' configs, stores and logs; `stop()` removes it. */
  readonly dir: string;
  /**
   * The name of the node leading `stream`, asked through the client (of the live nodes) until
   * JetStream answers (it has a meta leader) and the stream has a leader (not
   * `options.excluding`); throws when there is none within the time allowed. After a node is
   * killed, `streamLeader(stream, { excluding: killed })` is the wait for the failover: both
   * elections can take seconds, and until then JetStream requests time out.
   */
  streamLeader(stream: string, options?: StreamLeaderOptions): Promise<string>;
  /** The node of that server name; throws a RangeError for an unknown name. */
  nodeByName(name: string): NatsNode;
  /** Every node's stdout and stderr so far, for failure messages. */
  logs(): Promise<string>;
  /** Kills every node by PID (SIGTERM, then SIGKILL after 5 s), waits, removes the temp dir. */
  stop(): Promise<void>;
}

/** Options of {@linkcode startNatsCluster}. */
export interface NatsClusterOptions {
  /** How many nodes (1 to 3, the example configs in order); 3 by default. */
  nodes?: number;
  /** How long to wait for JetStream to be ready; 15 s by default. */
  timeoutMs?: number;
}

/** One server process, restartable. */
class NatsServerNode implements NatsNode {
  readonly name: string;
  readonly port: number;
  readonly url: string;
  readonly httpPort: number;
  readonly configPath: string;
  readonly logPath: string;
  #child!: Deno.ChildProcess;
  #exited!: Promise<void>;
  #alive = false;

  constructor(name: string, port: number, httpPort: number, configPath: string, logPath: string) {
    this.name = name;
    this.port = port;
    this.url = `nats://127.0.0.1:${port}`;
    this.httpPort = httpPort;
    this.configPath = configPath;
    this.logPath = logPath;
    this.#spawn();
  }

  get pid(): number {
    return this.#child.pid;
  }

  get alive(): boolean {
    return this.#alive;
  }

  #spawn(): void {
    const binary = findBinary(TOOLS["nats-server"].binary) ?? TOOLS["nats-server"].binary;
    const log = Deno.openSync(this.logPath, { append: true, create: true });
    const child = new Deno.Command(binary, {
      args: ["-c", this.configPath],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const pid = child.pid;
    running.add(pid);
    this.#child = child;
    this.#alive = true;
    this.#exited = Promise.all([
      child.status,
      copyInto(child.stdout, log),
      copyInto(child.stderr, log),
    ])
      .then(([status]) => {
        running.delete(pid);
        this.#alive = false;
        log.writeSync(
          new TextEncoder().encode(`== exited: code ${status.code} signal ${status.signal}\n`),
        );
        log.close();
      });
  }

  async kill(signal: Deno.Signal = "SIGTERM"): Promise<void> {
    if (!this.#alive) return;
    this.#signal(signal);
    if (ENDING.has(signal)) await this.#exited;
  }

  /** Sends `signal` by PID; nothing if the process has just ended by itself. */
  #signal(signal: Deno.Signal): void {
    try {
      Deno.kill(this.#child.pid, signal);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }

  /** Sends SIGTERM (and SIGCONT, for a stopped one), waits up to `graceMs`, then SIGKILL. */
  async stop(graceMs: number): Promise<void> {
    if (!this.#alive) return;
    this.#signal("SIGTERM");
    this.#signal("SIGCONT");
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<"late">((resolve) =>
      timer = setTimeout(() => resolve("late"), graceMs)
    );
    const outcome = await Promise.race([this.#exited, late]);
    clearTimeout(timer);
    if (outcome === "late" && this.#alive) await this.kill("SIGKILL");
  }

  async restart(): Promise<void> {
    await this.kill("SIGTERM");
    this.#spawn();
    try {
      await waitHealthy([this], Date.now() + RESTART_TIMEOUT_MS);
    } catch (error) {
      throw new Error(
        `Cannot restart ${this.name}: ${(error as Error).message}\n${await this.log()}`,
        {
          cause: error,
        },
      );
    }
  }

  async log(): Promise<string> {
    try {
      return await Deno.readTextFile(this.logPath);
    } catch {
      return "";
    }
  }
}

/** Copies a child's output into its log file as it comes. */
async function copyInto(stream: ReadableStream<Uint8Array>, file: Deno.FsFile): Promise<void> {
  for await (let chunk of stream) {
    while (chunk.length > 0) chunk = chunk.subarray(file.writeSync(chunk));
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves once every node's /healthz answers 200; throws when one exits or time runs out. */
async function waitHealthy(nodes: NatsServerNode[], deadline: number): Promise<void> {
  for (const node of nodes) {
    let last = "no answer yet";
    while (true) {
      if (!node.alive) throw new Error(`Cannot start ${node.name}: nats-server exited`);
      try {
        const response = await fetch(`http://127.0.0.1:${node.httpPort}/healthz`, {
          signal: AbortSignal.timeout(1_000),
        });
        last = `${response.status} ${(await response.text()).trim()}`;
        if (response.ok) break;
      } catch (error) {
        last = (error as Error).message;
      }
      if (Date.now() > deadline) throw new Error(`Cannot start ${node.name}: /healthz: ${last}`);
      await sleep(100);
    }
  }
}

/** Connects to `urls` with short timeouts and no reconnects; the caller closes it. */
function connectTo(urls: string[]): Promise<NatsConnection> {
  return connect({ servers: urls, timeout: 1_000, reconnect: false });
}

/** Resolves once a JetStream account info request succeeds through the client. */
async function waitJetStream(urls: string[], deadline: number): Promise<void> {
  let last = "no answer yet";
  while (true) {
    let nc: NatsConnection | undefined;
    try {
      nc = await connectTo(urls);
      const jsm = await jetstreamManager(nc, { timeout: 2_000 });
      await jsm.getAccountInfo();
      return;
    } catch (error) {
      last = (error as Error).message;
    } finally {
      await nc?.close();
    }
    if (Date.now() > deadline) throw new Error(`Cannot reach JetStream: ${last}`);
    await sleep(100);
  }
}

/** `count` distinct loopback ports that were free a moment ago. */
function freePorts(count: number): number[] {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(freePort());
  return [...ports];
}

/** One node's config, rewritten from its example; what the harness needs to know of it. */
interface NodeConfig {
  name: string;
  port: number;
  httpPort: number;
  text: string;
}

/** Replaces the one match of `pattern` in `text`; throws if there is not exactly one. */
function replaceOnce(text: string, pattern: RegExp, replacement: string, what: string): string {
  const matches = text.match(new RegExp(pattern.source, pattern.flags + "g"))?.length ?? 0;
  if (matches !== 1) {
    throw new SyntaxError(`Cannot rewrite the example NATS config: ${matches} lines set ${what}`);
  }
  return text.replace(pattern, replacement);
}

/**
 * The example configs of the first `count` nodes, with every `127.0.0.1:PORT` mapped to a fresh
 * free port (the same example port to the same new one, so routes follow), routes to nodes not
 * started dropped (and, for one node, the cluster block), and unique names and store dirs under
 * `dir`.
 */
function rewriteConfigs(examples: string[], dir: string, suffix: string): NodeConfig[] {
  const examplePorts = new Set<string>();
  for (const text of examples) {
    for (const [, port] of text.matchAll(/127\.0\.0\.1:(\d+)/g)) examplePorts.add(port!);
  }
  const fresh = freePorts(examplePorts.size);
  const portOf = new Map([...examplePorts].map((port, i) => [port, fresh[i]!]));
  const routed = new Set(
    examples.map((text) => /^\s+listen:\s*127\.0\.0\.1:(\d+)/m.exec(text)?.[1]),
  );
  return examples.map((example, i) => {
    const name = `node-${i + 1}-${suffix}`;
    // JetStream refuses a cluster block without routes: a single node runs standalone.
    let text = examples.length === 1
      ? replaceOnce(example, /^cluster\s*\{[\s\S]*?^\}\n?/m, "", "cluster")
      : example.replace(
        /^.*nats-route:\/\/127\.0\.0\.1:(\d+).*\n/gm,
        (line, port: string) => routed.has(port) ? line : "",
      );
    text = replaceOnce(text, /^(\s*server_name:\s*).*$/m, `$1${name}`, "server_name");
    text = replaceOnce(
      text,
      /^(\s*store_dir:\s*).*$/m,
      `$1${JSON.stringify(`${dir}/node-${i + 1}`)}`,
      "store_dir",
    );
    text = text.replace(
      /127\.0\.0\.1:(\d+)/g,
      (_, port: string) => `127.0.0.1:${portOf.get(port)}`,
    );
    const port = /^listen:\s*127\.0\.0\.1:(\d+)/m.exec(text)?.[1];
    const httpPort = /^http:\s*127\.0\.0\.1:(\d+)/m.exec(text)?.[1];
    if (port === undefined || httpPort === undefined) {
      throw new SyntaxError(`Cannot read node-${i + 1}.conf: no "listen" or "http" on 127.0.0.1`);
    }
    return { name, port: Number(port), httpPort: Number(httpPort), text };
  });
}

class Cluster implements NatsCluster {
  readonly urls: string[];
  readonly nodes: NatsServerNode[];
  readonly dir: string;
  #stopped: Promise<void> | undefined;

  constructor(dir: string, nodes: NatsServerNode[]) {
    this.dir = dir;
    this.nodes = nodes;
    this.urls = nodes.map((node) => node.url);
  }

  async streamLeader(stream: string, options: StreamLeaderOptions = {}): Promise<string> {
    const deadline = Date.now() + (options.timeoutMs ?? READY_TIMEOUT_MS);
    const urls = this.nodes.filter((node) => node.alive).map((node) => node.url);
    let last = "no answer yet";
    while (true) {
      let nc: NatsConnection | undefined;
      try {
        nc = await connectTo(urls);
        // checkAPI asks for the account info, which only a meta leader answers.
        const jsm = await jetstreamManager(nc, { timeout: 1_000, checkAPI: true });
        const info = await jsm.streams.info(stream);
        // A single node runs standalone: no cluster, and it leads every stream.
        const leader = this.nodes.length === 1 ? this.nodes[0]!.name : info.cluster?.leader;
        if (leader !== undefined && leader !== "" && leader !== options.excluding) return leader;
        last = `leader ${JSON.stringify(leader ?? null)}`;
      } catch (error) {
        last = (error as Error).message;
      } finally {
        await nc?.close();
      }
      if (Date.now() > deadline) {
        throw new Error(`Cannot find the leader of stream "${stream}": ${last}`);
      }
      await sleep(100);
    }
  }

  nodeByName(name: string): NatsNode {
    const node = this.nodes.find((n) => n.name === name);
    if (node === undefined) {
      const names = this.nodes.map((n) => `"${n.name}"`).join(", ");
      throw new RangeError(`Cannot find node "${name}": the cluster has ${names}`);
    }
    return node;
  }

  async logs(): Promise<string> {
    const logs = await Promise.all(this.nodes.map(async (n) => `== ${n.name}\n${await n.log()}`));
    return logs.join("\n");
  }

  stop(): Promise<void> {
    this.#stopped ??= (async () => {
      await Promise.all(this.nodes.map((node) => node.stop(STOP_GRACE_MS)));
      await Deno.remove(this.dir, { recursive: true });
    })();
    return this.#stopped;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

/**
 * Starts a NATS JetStream cluster from `docs/nats/node-N.conf` and resolves once it is ready.
 * Retries with other ports when one turned out to be taken; on failure kills what it started and
 * throws with the nodes' logs.
 *
 * @example
 * ```ts ignore
 * import { connect } from "@nats-io/transport-node";
 * import { jetstreamManager } from "@nats-io/jetstream";
 * import { startNatsCluster } from "./nats_cluster.ts";
 *
 * await using cluster = await startNatsCluster();
 * const nc = await connect({ servers: cluster.urls });
 * try {
 *   const jsm = await jetstreamManager(nc);
 *   await jsm.streams.add({ name: "orders", subjects: ["orders.>"], num_replicas: 3 });
 *   await cluster.nodeByName(await cluster.streamLeader("orders")).kill("SIGKILL");
 * } finally {
 *   await nc.close();
 * }
 * ```
 */
export async function startNatsCluster(options: NatsClusterOptions = {}): Promise<NatsCluster> {
  const count = options.nodes ?? MAX_NODES;
  if (!Number.isInteger(count) || count < 1 || count > MAX_NODES) {
    throw new RangeError(
      `Cannot start a NATS cluster of ${count} nodes: allowed 1 to ${MAX_NODES}`,
    );
  }
  const examples = await Promise.all(
    Array.from(
      { length: count },
      (_, i) => Deno.readTextFile(new URL(`node-${i + 1}.conf`, CONFIGS)),
    ),
  );
  for (let attempt = 1;; attempt++) {
    const dir = await Deno.makeTempDir({ prefix: "msgserver_nats_cluster_" });
    const suffix = crypto.randomUUID().slice(0, 8);
    const nodes: NatsServerNode[] = [];
    try {
      for (const [i, config] of rewriteConfigs(examples, dir, suffix).entries()) {
        const configPath = `${dir}/node-${i + 1}.conf`;
        await Deno.writeTextFile(configPath, config.text);
        nodes.push(
          new NatsServerNode(
            config.name,
            config.port,
            config.httpPort,
            configPath,
            `${dir}/node-${i + 1}.log`,
          ),
        );
      }
      const deadline = Date.now() + (options.timeoutMs ?? READY_TIMEOUT_MS);
      await waitHealthy(nodes, deadline);
      await waitJetStream(nodes.map((node) => node.url), deadline);
      return new Cluster(dir, nodes);
    } catch (error) {
      const cluster = new Cluster(dir, nodes);
      const logs = await cluster.logs();
      await cluster.stop();
      if (attempt < 3 && logs.includes("address already in use")) continue;
      throw new Error(
        `Cannot start a NATS cluster of ${count} nodes: ${(error as Error).message}\n${logs}`,
        { cause: error },
      );
    }
  }
}
