/**
 * The load tool's command line: the flags, the presets, the `--help` text, and
 * {@linkcode parseOptions}, which turns the arguments into the phases to run.
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { AckMode } from "../../src/config.ts";
import { LEGACY_MESSAGE_BYTES } from "../../src/server/legacy_connection.ts";

/** One stretch of load: a set of connections, all opened first, then all sending together. */
export interface PhaseSpec {
  /** Label shown in the report. */
  name: string;
  /** Connections opened for the phase. */
  connections: number;
  /** Messages in flight per connection. */
  window: number;
  /** Payload bytes per message. */
  size: number;
  /** Seconds to send for; null when the phase sends a fixed count. */
  durationS: number | null;
  /** Total messages to send, spread evenly over the connections; null when timed. */
  count: number | null;
  /** Print each connection's average latency (the seed-latency table). */
  perClientTable: boolean;
  /**
   * Peers that never read, flooding frames the server must refuse, opened before the phase and
   * kept during it (see `stallers.ts`); 0 or absent for none.
   */
  stallers?: number;
  /**
   * Run the phase against a msgserver of its own with STORE=jetstream, over a fresh stream with
   * this many replicas in the NATS cluster the tool starts (the cluster preset); absent for the
   * one file-store server of the other presets.
   */
  replicas?: number;
  /** Seconds into the sends at which the stream's leader is killed with SIGKILL (failover). */
  killLeaderAtS?: number;
  /**
   * Talk the original C++ server's protocol to LEGACY_PORT instead (`legacy.ts`): fixed
   * 1,160-byte frames, one `ack` back for each; absent for the native protocol.
   */
  legacy?: true;
  /**
   * Run the phase this many times in a row, each round with fresh connections and client_ids
   * (the original's test run again and again); the figures are over all rounds. Absent: once.
   */
  rounds?: number;
}

/** A named benchmark: one or more phases run one after the other against one server. */
export interface Preset {
  /** What it measures, for `--help`. */
  description: string;
  /** The phases; a phase with `perConnection` sends that many messages on each connection. */
  phases: (Omit<PhaseSpec, "count"> & { count: number | null; perConnection?: number })[];
}

/** A phase that sends 100-byte messages for 5 seconds. */
function timed(name: string, connections: number, window: number): Preset["phases"][number] {
  return {
    name,
    connections,
    window,
    size: 100,
    durationS: 5,
    count: null,
    perClientTable: false,
  };
}

/** The presets: the old C++ server's published tests (`seed-*`) and the performance targets. */
export const PRESETS: Readonly<Record<string, Preset>> = {
  "seed-latency": {
    description: "1 client x 100 messages one at a time, then 100 clients x 100 messages each " +
      "(window 1); each client's average latency",
    phases: [
      {
        name: "1 client",
        connections: 1,
        window: 1,
        size: 100,
        durationS: null,
        count: null,
        perConnection: 100,
        perClientTable: true,
      },
      {
        name: "100 clients",
        connections: 100,
        window: 1,
        size: 100,
        durationS: null,
        count: null,
        perConnection: 100,
        perClientTable: true,
      },
    ],
  },
  "legacy-latency": {
    description: "the original's latency test through LEGACY_PORT: 1 client x 100 messages " +
      "one at a time, 1,160-byte frames, an ack each; 20 rounds, a fresh client each",
    phases: [{
      name: "legacy 1 x 100",
      connections: 1,
      window: 1,
      size: 100,
      durationS: null,
      count: null,
      perConnection: 100,
      perClientTable: true,
      legacy: true,
      rounds: 20,
    }],
  },
  "seed-concurrency": {
    description: "10,000 connections x 6 messages each, window 6",
    phases: [{
      name: "10k connections",
      connections: 10_000,
      window: 6,
      size: 100,
      durationS: null,
      count: null,
      perConnection: 6,
      perClientTable: false,
    }],
  },
  "seed-load": {
    description: "10,000 requests: 100 connections x 100 messages, window 1",
    phases: [{
      name: "10k requests",
      connections: 100,
      window: 1,
      size: 100,
      durationS: null,
      count: null,
      perConnection: 100,
      perClientTable: false,
    }],
  },
  throughput: {
    description: "64 connections, window 256, 100 B, 5 s",
    phases: [timed("throughput", 64, 256)],
  },
  "request-ack": {
    description: "64 connections, window 1 (request/ack), 5 s",
    phases: [timed("request-ack", 64, 1)],
  },
  latency: {
    description: "1 connection, window 1, 5 s",
    phases: [timed("latency", 1, 1)],
  },
  "stalled-peers": {
    description: "500 peers flood frames the server must refuse and never read; 1 honest " +
      "connection, window 1, 10 s: its latency",
    phases: [{
      name: "stalled peers",
      connections: 1,
      window: 1,
      size: 100,
      durationS: 10,
      count: null,
      perClientTable: false,
      stallers: 500,
    }],
  },
  fairness: {
    description: "256 connections, window 1, 5 s; min/median acks per connection",
    phases: [timed("fairness", 256, 1)],
  },
  cluster: {
    description:
      "STORE=jetstream, its own 3-node NATS cluster: 64 x 256 at R1, at R3 (5 s each), " +
      "at R3 with the leader killed 3 s in (15 s); exports checked",
    phases: [
      { ...timed("R1", 64, 256), replicas: 1 },
      { ...timed("R3", 64, 256), replicas: 3 },
      { ...timed("R3 failover", 64, 256), durationS: 15, replicas: 3, killLeaderAtS: 3 },
    ],
  },
};

/** Everything the command line decides. */
export interface Options {
  /** The phases to run, presets and flags applied. */
  phases: PhaseSpec[];
  /** The preset named, if any. */
  preset: string | null;
  /** Server address. */
  host: string;
  /** A running server's port, or null to start one. */
  port: number | null;
  /** A running server's LEGACY_PORT, for legacy phases with `port`; null otherwise. */
  legacyPort: number | null;
  /** ACK_MODE of the server the bench starts. */
  ackMode: AckMode;
  /** Print JSON instead of the table. */
  json: boolean;
  /** Keep the temp dir (data file, server log). */
  keep: boolean;
  /** Hard limit per phase in seconds, connecting and draining included. */
  timeoutS: number | null;
  /** Connects in flight at once. */
  connectConcurrency: number;
  /** Token sent in HELLO. */
  token: string;
  /**
   * True when a phase names `replicas`: the tool starts a NATS cluster and a msgserver per phase
   * (STORE=jetstream), and checks each stream's export instead of a data file.
   */
  cluster: boolean;
  /** Status pages to keep open in headless Chromium during the run (0: none). */
  statusPages: number;
}

/** The `--help` text: every flag, then the presets. */
export const USAGE = `Usage: deno task bench [flags]

Load generator for msgserver. Without --port it starts its own server (a child process on a free
port, data file in a temp dir), and after the run stops it with SIGTERM and checks that the file
has one line per acked message (exit 1 on a mismatch). The cluster preset starts a 3-node NATS
cluster (nats-server) and a msgserver per phase with STORE=jetstream instead, and checks each
stream's export (msgserver export) the same way: every acked message once.

Flags:
  --connections N        connections (default 64)
  --window N             messages in flight per connection (default 256)
  --size BYTES           payload bytes (default 100)
  --duration SECONDS     send for this long (default 5)
  --count N              send N messages in total instead, spread over the connections
  --host HOST            server address (default 127.0.0.1)
  --port PORT            use the server running there instead of starting one
  --legacy-port PORT     that server's LEGACY_PORT, for the legacy-latency preset (a server the
                         bench starts gets one of its own)
  --ack-mode MODE        received | written | durable, for the server it starts (default written)
  --preset NAME          a preset (below); other flags given override its values
  --timeout SECONDS      hard limit per phase incl. connecting and draining
                         (default duration + 60, or 120 with a count)
  --connect-concurrency N  connects in flight at once (default 500)
  --stallers N           also keep N peers that flood frames the server must refuse and never
                         read (see the stalled-peers preset)
  --status-pages N       keep N live status pages (GET / on a METRICS_PORT the tool gives its
                         server) open in headless Chromium for the run (at most 16)
  --token TOKEN          AUTH_TOKEN for a running server (default $MS_AUTH_TOKEN)
  --json                 print one JSON object instead of the table
  --keep                 keep the temp dir: the data file (the exports, for the cluster
                         preset) and the server logs
  --help                 this text

Presets:
${Object.entries(PRESETS).map(([k, p]) => `  ${k.padEnd(18)} ${p.description}`).join("\n")}
`;

/**
 * A bad command line: an unknown flag, a bad value, or flags that exclude each other. The load
 * tool prints its message and the usage text and exits with status 2.
 *
 * @example
 * ```ts
 * try {
 *   parseOptions(["--window", "0"]);
 * } catch (e) {
 *   if (e instanceof UsageError) console.error(e.message);
 * }
 * ```
 */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

function int(name: string, raw: string | undefined, min: number, max: number): number | null {
  if (raw === undefined) return null;
  if (!/^\d+$/.test(raw) || Number(raw) < min || Number(raw) > max) {
    throw new UsageError(`--${name} is "${raw}"; allowed: an integer from ${min} to ${max}`);
  }
  return Number(raw);
}

function seconds(name: string, raw: string | undefined): number | null {
  if (raw === undefined) return null;
  if (!/^\d+(\.\d+)?$/.test(raw) || Number(raw) <= 0 || Number(raw) > 86_400) {
    throw new UsageError(`--${name} is "${raw}"; allowed: seconds, above 0, at most 86400`);
  }
  return Number(raw);
}

/** Options of {@linkcode parseOptions}. */
export interface ParseOptions {
  /** Reads an environment variable (MS_AUTH_TOKEN); `Deno.env.get` by default. */
  env?: (name: string) => string | undefined;
}

/**
 * Parses the command line into {@linkcode Options}; throws a {@linkcode UsageError} on bad input.
 * Returns null for `--help`.
 *
 * @example
 * ```ts
 * const options = parseOptions(["--preset", "latency", "--duration", "3"]);
 * console.log(options?.phases[0]?.durationS); // 3
 * ```
 */
export function parseOptions(args: string[], options: ParseOptions = {}): Options | null {
  const env = options.env ?? ((name: string) => Deno.env.get(name));
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        connections: { type: "string" },
        window: { type: "string" },
        size: { type: "string" },
        duration: { type: "string" },
        count: { type: "string" },
        host: { type: "string" },
        port: { type: "string" },
        "legacy-port": { type: "string" },
        "ack-mode": { type: "string" },
        preset: { type: "string" },
        timeout: { type: "string" },
        "connect-concurrency": { type: "string" },
        stallers: { type: "string" },
        "status-pages": { type: "string" },
        token: { type: "string" },
        json: { type: "boolean" },
        keep: { type: "boolean" },
        help: { type: "boolean" },
      },
    }));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (values.help) return null;
  const ackMode = values["ack-mode"] ?? "written";
  if (ackMode !== "received" && ackMode !== "written" && ackMode !== "durable") {
    throw new UsageError(`--ack-mode is "${ackMode}"; allowed: received, written, durable`);
  }
  const presetName = values.preset ?? null;
  let base: Preset["phases"];
  if (presetName === null) {
    base = [{ ...timed("run", 64, 256) }];
  } else {
    const preset = PRESETS[presetName];
    if (preset === undefined) {
      throw new UsageError(
        `--preset is "${presetName}"; allowed: ${Object.keys(PRESETS).join(", ")}`,
      );
    }
    base = preset.phases;
  }
  const connections = int("connections", values.connections, 1, 100_000);
  const window = int("window", values.window, 1, 1_000_000);
  const size = int("size", values.size, 0, 64 * 1024 * 1024);
  const duration = seconds("duration", values.duration);
  const count = int("count", values.count, 1, 2 ** 32 - 2);
  const stallers = int("stallers", values.stallers, 0, 10_000);
  if (duration !== null && count !== null) {
    throw new UsageError("--duration and --count exclude each other");
  }
  const phases = base.map((p): PhaseSpec => {
    const conns = connections ?? p.connections;
    let durationS = p.durationS;
    let total = p.perConnection !== undefined ? p.perConnection * conns : p.count;
    let killLeaderAtS = p.killLeaderAtS;
    if (duration !== null) {
      // The kill keeps its place in the run (a fifth of the way in), so a short run has one too.
      if (killLeaderAtS !== undefined && p.durationS !== null) {
        killLeaderAtS = killLeaderAtS * duration / p.durationS;
      }
      durationS = duration;
      total = null;
    } else if (count !== null) {
      durationS = null;
      total = count;
    }
    return {
      name: p.name,
      connections: conns,
      window: window ?? p.window,
      size: size ?? p.size,
      durationS,
      count: total,
      perClientTable: p.perClientTable,
      ...(stallers ?? p.stallers ?? 0) > 0 ? { stallers: stallers ?? p.stallers! } : {},
      ...p.replicas !== undefined ? { replicas: p.replicas } : {},
      ...killLeaderAtS !== undefined ? { killLeaderAtS } : {},
      ...p.legacy === true ? { legacy: true } : {},
      ...p.rounds !== undefined ? { rounds: p.rounds } : {},
    };
  });
  const port = int("port", values.port, 1, 65535);
  const legacyPort = int("legacy-port", values["legacy-port"], 1, 65535);
  const legacy = phases.some((p) => p.legacy === true);
  if (legacy && phases.some((p) => p.durationS !== null)) {
    throw new UsageError(`--preset ${presetName} sends a count: --duration does not go with it`);
  }
  if (legacy && phases.some((p) => p.size > LEGACY_MESSAGE_BYTES)) {
    throw new UsageError(
      `--size is "${size}"; allowed with --preset ${presetName}: at most ${LEGACY_MESSAGE_BYTES}`,
    );
  }
  if (legacy && port !== null && legacyPort === null) {
    throw new UsageError(`--preset ${presetName} with --port needs --legacy-port too`);
  }
  if (legacyPort !== null && (!legacy || port === null)) {
    throw new UsageError("--legacy-port goes only with --port and the legacy-latency preset");
  }
  const cluster = phases.some((p) => p.replicas !== undefined);
  if (cluster && port !== null) {
    throw new UsageError(
      `--preset ${presetName} starts its own servers: --port does not go with it`,
    );
  }
  const statusPages = int("status-pages", values["status-pages"], 0, 16) ?? 0;
  if (statusPages > 0 && (port !== null || cluster)) {
    throw new UsageError(
      "--status-pages opens the status page of the one server the tool starts: it does not go " +
        (port !== null ? "with --port" : `with --preset ${presetName}`),
    );
  }
  if (cluster && ackMode === "durable") {
    throw new UsageError(
      `--preset ${presetName} runs STORE=jetstream, which does not take --ack-mode durable`,
    );
  }
  return {
    phases,
    preset: presetName,
    host: values.host ?? "127.0.0.1",
    port,
    legacyPort,
    ackMode,
    json: values.json ?? false,
    keep: values.keep ?? false,
    timeoutS: seconds("timeout", values.timeout),
    connectConcurrency: int("connect-concurrency", values["connect-concurrency"], 1, 100_000) ??
      500,
    token: values.token ?? env("MS_AUTH_TOKEN") ?? "",
    cluster,
    statusPages,
  };
}
