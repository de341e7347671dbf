/**
 * The load generator behind `deno task bench`: opens many connections to msgserver, keeps a
 * window of messages in flight on each, and measures throughput, per-message latency (ACK arrival
 * minus send time) and fairness. Unless `--port` names a running server, it starts its own
 * server as a child process on a free port with a fresh data file, and after the run stops it with
 * SIGTERM and checks that the file holds exactly one line per acknowledged message.
 *
 * Run `deno task bench --help` for the flags and presets.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { randomSession } from "../src/client/client.ts";
import { handshake } from "../src/client/handshake.ts";
import { closeQuietly } from "../src/io/close_quietly.ts";
import { writeAll } from "../src/io/write_all.ts";
import { Decoded, type FrameDecoder } from "../src/protocol/decoder.ts";
import { encodeMsg, FrameType } from "../src/protocol/frames.ts";
import { decodeAck, decodeError, decodeNack, replyDecoder } from "../src/protocol/replies.ts";
import { Histogram } from "./histogram.ts";

// ---------------------------------------------------------------------------------------------
// Options and presets

/** When the server acknowledges a message (passed to the server the bench starts). */
export type AckMode = "received" | "written" | "durable";

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
}

/** A named benchmark: one or more phases run one after the other against one server. */
export interface Preset {
  /** What it measures, for `--help`. */
  description: string;
  /** The phases; a phase with `perConnection` sends that many messages on each connection. */
  phases: (Omit<PhaseSpec, "count"> & { count: number | null; perConnection?: number })[];
}

const timed = (name: string, connections: number, window: number): Preset["phases"][number] => ({
  name,
  connections,
  window,
  size: 100,
  durationS: 5,
  count: null,
  perClientTable: false,
});

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
  fairness: {
    description: "256 connections, window 1, 5 s; min/median acks per connection",
    phases: [timed("fairness", 256, 1)],
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
}

const USAGE = `Usage: deno task bench [flags]

Load generator for msgserver. Without --port it starts its own server (a child process on a free
port, data file in a temp dir), and after the run stops it with SIGTERM and checks that the file
has one line per acked message (exit 1 on a mismatch).

Flags:
  --connections N        connections (default 64)
  --window N             messages in flight per connection (default 256)
  --size BYTES           payload bytes (default 100)
  --duration SECONDS     send for this long (default 5)
  --count N              send N messages in total instead, spread over the connections
  --host HOST            server address (default 127.0.0.1)
  --port PORT            use the server running there instead of starting one
  --ack-mode MODE        received | written | durable, for the server it starts (default written)
  --preset NAME          a preset (below); other flags given override its values
  --timeout SECONDS      hard limit per phase incl. connecting and draining
                         (default duration + 60, or 120 with a count)
  --connect-concurrency N  connects in flight at once (default 500)
  --token TOKEN          AUTH_TOKEN for a running server (default $MS_AUTH_TOKEN)
  --json                 print one JSON object instead of the table
  --keep                 keep the temp dir with the data file and server log
  --help                 this text

Presets:
${Object.entries(PRESETS).map(([k, p]) => `  ${k.padEnd(18)} ${p.description}`).join("\n")}
`;

class UsageError extends Error {}

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

/**
 * Parses the command line into {@linkcode Options}; throws on bad input. Returns null for
 * `--help`.
 *
 * @example
 * ```ts
 * const options = parseOptions(["--preset", "latency", "--duration", "3"]);
 * ```
 */
export function parseOptions(args: string[]): Options | null {
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
        "ack-mode": { type: "string" },
        preset: { type: "string" },
        timeout: { type: "string" },
        "connect-concurrency": { type: "string" },
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
  if (duration !== null && count !== null) {
    throw new UsageError("--duration and --count exclude each other");
  }
  const phases = base.map((p): PhaseSpec => {
    const conns = connections ?? p.connections;
    let durationS = p.durationS;
    let total = p.perConnection !== undefined ? p.perConnection * conns : p.count;
    if (duration !== null) {
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
    };
  });
  const port = int("port", values.port, 1, 65535);
  return {
    phases,
    preset: presetName,
    host: values.host ?? "127.0.0.1",
    port,
    ackMode,
    json: values.json ?? false,
    keep: values.keep ?? false,
    timeoutS: seconds("timeout", values.timeout),
    connectConcurrency: int("connect-concurrency", values["connect-concurrency"], 1, 100_000) ??
      500,
    token: values.token ?? Deno.env.get("MS_AUTH_TOKEN") ?? "",
  };
}

// ---------------------------------------------------------------------------------------------
// /proc readings

/**
 * Reads a /proc file. Deno asks for --allow-all to read /proc directly, which `deno task bench`
 * does not grant, so without it the file is read through `cat` (--allow-run).
 */
async function readProc(path: string): Promise<string | null> {
  try {
    return await Deno.readTextFile(path);
  } catch {
    try {
      const out = await new Deno.Command("cat", { args: [path], stdout: "piped", stderr: "null" })
        .output();
      return out.success ? new TextDecoder().decode(out.stdout) : null;
    } catch {
      return null;
    }
  }
}

/** CPU seconds (user, system) of a process from /proc/<pid>/stat, at 100 clock ticks a second. */
async function readCpu(pid: number): Promise<{ user: number; sys: number } | null> {
  const text = await readProc(`/proc/${pid}/stat`);
  if (text === null) return null;
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  // After "pid (comm) ", field 3 (state) is index 0, so utime (14) is 11 and stime (15) 12.
  return { user: Number(fields[11]) / 100, sys: Number(fields[12]) / 100 };
}

/** A `kB` line of /proc/<pid>/status (VmRSS, VmHWM) in bytes. */
async function readStatusBytes(pid: number, key: string): Promise<number | null> {
  const text = await readProc(`/proc/${pid}/status`);
  if (text === null) return null;
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(text);
  return m === null ? null : Number(m[1]) * 1024;
}

// ---------------------------------------------------------------------------------------------
// The server child process

interface ChildServer {
  process: Deno.ChildProcess;
  pid: number;
  host: string;
  port: number;
  dir: string;
  file: string;
  /** Resolves with the exit status; `exited` is set once it has. */
  status: Promise<Deno.CommandStatus>;
  exited: Deno.CommandStatus | null;
  /** Every line it wrote to stderr, for the log file and the report. */
  log: string[];
}

const ECHO_LIMIT = 40;

async function startChildServer(
  host: string,
  ackMode: AckMode,
  quiet: boolean,
): Promise<ChildServer> {
  const dir = await Deno.makeTempDir({ prefix: "msgserver-bench-" });
  const file = `${dir}/messages.log`;
  const script = decodeURIComponent(new URL("../src/cli/msgserver.ts", import.meta.url).pathname);
  const process = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      script,
      "--ip",
      host,
      "--port",
      "0",
      "--file-name",
      file,
      "--ack-mode",
      ackMode,
      "--log-level",
      "info",
      "--auth-token",
      "",
    ],
    // In the temp dir no ./app.conf is picked up, and an empty MS_HOME skips $MS_HOME/app.conf.
    cwd: dir,
    env: { MS_HOME: "" },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const child: ChildServer = {
    process,
    pid: process.pid,
    host,
    port: 0,
    dir,
    file,
    status: process.status,
    exited: null,
    log: [],
  };
  child.status.then((s) => child.exited = s);
  let resolvePort!: (port: number) => void;
  const portFound = new Promise<number>((r) => resolvePort = r);
  let echoed = 0;
  // Drain stderr for the whole run (a full pipe would block the server's log writes).
  (async () => {
    let rest = "";
    for await (const text of process.stderr.pipeThrough(new TextDecoderStream())) {
      rest += text;
      let nl;
      while ((nl = rest.indexOf("\n")) >= 0) {
        const line = rest.slice(0, nl);
        rest = rest.slice(nl + 1);
        child.log.push(line);
        const m = / INFO listening addr=(\S+):(\d+)/.exec(line);
        if (m !== null) resolvePort(Number(m[2]));
        if (!/ (INFO|DEBUG) /.test(line) && !quiet) {
          if (echoed < ECHO_LIMIT) console.error(`[server] ${line}`);
          else if (echoed === ECHO_LIMIT) console.error("[server] (more lines in the server log)");
          echoed++;
        }
      }
    }
    if (rest !== "") child.log.push(rest);
  })().catch(() => {});
  let timer: ReturnType<typeof setTimeout> | undefined;
  const outcome = await Promise.race([
    portFound,
    child.status.then(() => "exited" as const),
    new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), 30_000)),
  ]);
  clearTimeout(timer);
  if (typeof outcome !== "number") {
    if (outcome === "timeout") process.kill("SIGKILL");
    await child.status;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw new Error(
      `Cannot start the server (${
        outcome === "timeout" ? "no listening line in 30 s" : "exited"
      })` +
        `; its log:\n${child.log.join("\n")}`,
    );
  }
  child.port = outcome;
  return child;
}

/** Sends SIGTERM and waits up to `limitMs` for the exit; SIGKILL after that. */
async function stopChildServer(
  child: ChildServer,
  limitMs: number,
): Promise<{ code: number | null; signal: string | null; timedOut: boolean; ms: number }> {
  const t0 = performance.now();
  if (child.exited === null) {
    try {
      child.process.kill("SIGTERM");
    } catch {
      // already gone
    }
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const outcome = await Promise.race([
    child.status,
    new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), limitMs)),
  ]);
  clearTimeout(timer);
  if (outcome === "timeout") {
    try {
      child.process.kill("SIGKILL");
    } catch {
      // gone meanwhile
    }
    const s = await child.status;
    return { code: s.code, signal: s.signal, timedOut: true, ms: performance.now() - t0 };
  }
  return {
    code: outcome.code,
    signal: outcome.signal,
    timedOut: false,
    ms: performance.now() - t0,
  };
}

// ---------------------------------------------------------------------------------------------
// The lean client: one per connection

const NAME = new TextEncoder().encode("bench");
/** Most bytes of frames handed to one socket write. */
const MAX_WRITE_BYTES = 256 * 1024;

/** State shared by the connections of one phase. */
class PhaseState {
  readonly hist = new Histogram();
  stopping = false;
  sent = 0;
  acked = 0;
  nacked = 0;
  readonly nackCodes = new Map<number, number>();
  readonly errors: string[] = [];
  errorCount = 0;
  firstSendAt = 0;
  lastAckAt = 0;
  #done = 0;
  #total = 0;
  #resolve: (() => void) | null = null;
  /** Resolves once every connection counted by `expect` is done. */
  finished: Promise<void> = Promise.resolve();

  /** Starts waiting for `n` connections to finish. */
  expect(n: number): void {
    this.#total = n;
    this.#done = 0;
    this.finished = new Promise((r) => this.#resolve = r);
    if (n === 0) this.#resolve!();
  }

  connectionDone(): void {
    if (++this.#done >= this.#total && this.#resolve !== null) {
      const r = this.#resolve;
      this.#resolve = null;
      r();
    }
  }

  /** Counts an error and keeps its message as a sample. */
  error(message: string): void {
    this.errorCount++;
    this.note(message);
  }

  /** Keeps a message as a sample for the report, without counting an error. */
  note(message: string): void {
    if (this.errors.length < 20) this.errors.push(message);
  }
}

/** One connection: HELLO once, then a window of pipelined MSG frames settled by ACKs. */
class LoadConnection {
  readonly clientId: number;
  /** Messages this connection sends; Infinity when the phase is timed. */
  readonly quota: number;
  acked = 0;
  nacked = 0;
  latencySumUs = 0;
  done = false;

  readonly #conn: Deno.TcpConn;
  readonly #decoder: FrameDecoder;
  readonly #phase: PhaseState;
  readonly #window: number;
  /** Send time of id i at `i % window`. */
  readonly #sendTimes: Float64Array;
  /** Frames with name and payload in place; only the msg_ids are written before each send. */
  readonly #frames: Uint8Array;
  readonly #frameBytes: number;
  readonly #framesPerWrite: number;
  readonly #firstId: number;
  /** Highest id sent. */
  #sent: number;
  /** Every id up to this one is settled. */
  #head: number;
  #nackedIds: Set<number> | null = null;
  #writing = false;
  #dead = false;
  #closing = false;

  constructor(
    conn: Deno.TcpConn,
    decoder: FrameDecoder,
    phase: PhaseState,
    spec: PhaseSpec,
    clientId: number,
    quota: number,
    lastMsgId: number,
    payload: Uint8Array,
  ) {
    this.#conn = conn;
    this.#decoder = decoder;
    this.#phase = phase;
    this.clientId = clientId;
    this.quota = quota;
    this.#window = spec.window;
    this.#sendTimes = new Float64Array(spec.window);
    this.#firstId = lastMsgId;
    this.#sent = lastMsgId;
    this.#head = lastMsgId;
    const frame = encodeMsg(0, NAME, payload);
    this.#frameBytes = frame.length;
    this.#framesPerWrite = Math.max(
      1,
      Math.min(spec.window, Math.floor(MAX_WRITE_BYTES / frame.length)),
    );
    this.#frames = new Uint8Array(this.#framesPerWrite * frame.length);
    for (let i = 0; i < this.#framesPerWrite; i++) this.#frames.set(frame, i * frame.length);
  }

  /** Messages sent so far. */
  get sent(): number {
    return this.#sent - this.#firstId;
  }

  /** Starts the read loop and the first send. */
  start(): void {
    this.#readLoop();
    this.pump();
  }

  /** Sends as many messages as the window, the quota and the phase allow. */
  pump(): void {
    if (this.#writing || this.done) return;
    const phase = this.#phase;
    const room = this.#window - (this.#sent - this.#head);
    const left = phase.stopping ? 0 : this.quota - this.sent;
    const n = Math.min(room, left, this.#framesPerWrite);
    if (n <= 0 || this.#dead) {
      this.#checkDone();
      return;
    }
    const frames = this.#frames;
    const size = this.#frameBytes;
    const now = performance.now();
    const times = this.#sendTimes;
    const window = this.#window;
    for (let i = 0; i < n; i++) {
      const id = this.#sent + 1 + i;
      const at = i * size + 5;
      frames[at] = id >>> 24;
      frames[at + 1] = (id >>> 16) & 0xff;
      frames[at + 2] = (id >>> 8) & 0xff;
      frames[at + 3] = id & 0xff;
      times[id % window] = now;
    }
    this.#sent += n;
    phase.sent += n;
    this.#writing = true;
    this.#write(frames.subarray(0, n * size));
  }

  async #write(bytes: Uint8Array): Promise<void> {
    try {
      await writeAll(this.#conn, bytes);
    } catch (e) {
      this.#fail(`write failed: ${(e as Error).message}`);
    }
    this.#writing = false;
    this.pump();
  }

  async #readLoop(): Promise<void> {
    const decoder = this.#decoder;
    try {
      for (;;) {
        const n = await this.#conn.read(decoder.readTarget());
        if (n === null) {
          if (!this.done) this.#fail("closed by the server");
          return;
        }
        const now = performance.now();
        decoder.commit(n);
        for (let r = decoder.next(); r !== Decoded.NEED_MORE; r = decoder.next()) {
          if (r !== Decoded.FRAME) {
            this.#fail(`bad frame from the server: ${decoder.error}`);
            return;
          }
          this.#onFrame(decoder.buffer, decoder.type, decoder.bodyStart, decoder.frameEnd, now);
          if (this.#dead) return;
        }
        this.pump();
      }
    } catch (e) {
      if (!this.#closing) this.#fail(`read failed: ${(e as Error).message}`);
    }
  }

  #onFrame(b: Uint8Array, type: number, body: number, end: number, now: number): void {
    const phase = this.#phase;
    if (type === FrameType.ACK) {
      const upTo = decodeAck(b, body, end);
      if (upTo > this.#sent) {
        this.#fail(`ACK ${upTo} is above the highest msg_id sent, ${this.#sent}`);
        return;
      }
      if (upTo <= this.#head) return;
      const times = this.#sendTimes;
      const window = this.#window;
      const hist = phase.hist;
      const nackedIds = this.#nackedIds;
      let count = 0;
      let sum = 0;
      for (let id = this.#head + 1; id <= upTo; id++) {
        if (nackedIds !== null && nackedIds.delete(id)) continue;
        const us = (now - times[id % window]!) * 1000;
        hist.record(us);
        sum += us;
        count++;
      }
      this.#head = upTo;
      this.acked += count;
      this.latencySumUs += sum;
      phase.acked += count;
      phase.lastAckAt = now;
      this.#popNacked();
    } else if (type === FrameType.NACK) {
      const { msgId, code, reason } = decodeNack(b, body, end);
      phase.nackCodes.set(code, (phase.nackCodes.get(code) ?? 0) + 1);
      if (msgId <= this.#head || msgId > this.#sent || this.#nackedIds?.has(msgId)) {
        phase.error(`client ${this.clientId}: NACK for msg_id ${msgId}, not in flight`);
        return;
      }
      (this.#nackedIds ??= new Set()).add(msgId);
      this.nacked++;
      phase.nacked++;
      if (phase.nacked <= 5) {
        phase.note(
          `client ${this.clientId}: NACK ${msgId} code ${code}: ${reason}`,
        );
      }
      this.#popNacked();
    } else if (type === FrameType.ERROR) {
      const { code, reason } = decodeError(b, body, end);
      this.#fail(`ERROR ${code}: ${reason}`);
    } else {
      this.#fail(`unexpected frame type 0x${type.toString(16)}`);
    }
  }

  #popNacked(): void {
    const ids = this.#nackedIds;
    if (ids === null) return;
    while (ids.size > 0 && ids.delete(this.#head + 1)) this.#head++;
  }

  #checkDone(): void {
    if (this.done) return;
    const idle = this.#sent === this.#head && (this.#phase.stopping || this.sent >= this.quota);
    if (this.#dead || idle) {
      this.done = true;
      this.#phase.connectionDone();
    }
  }

  #fail(reason: string): void {
    if (this.#dead) return;
    this.#dead = true;
    if (!this.#closing) this.#phase.error(`client ${this.clientId}: ${reason}`);
    this.close();
    this.#checkDone();
  }

  /** Closes the socket; a read or write under way ends quietly. */
  close(): void {
    this.#closing = true;
    closeQuietly(this.#conn);
  }

  /** Marks the connection done without waiting for what is in flight (hard timeout). */
  abandon(): void {
    this.#dead = true;
    this.#checkDone();
  }
}

/** Connects, sends HELLO, waits for WELCOME; returns the socket, decoder and last_msg_id. */
async function connectOne(
  host: string,
  port: number,
  clientId: number,
  token: string,
): Promise<{ conn: Deno.TcpConn; decoder: FrameDecoder; lastMsgId: number }> {
  const conn = await Deno.connect({ hostname: host, port });
  try {
    conn.setNoDelay(true);
    const decoder = replyDecoder();
    const welcome = await handshake(conn, decoder, { clientId, session: randomSession(), token });
    return { conn, decoder, lastMsgId: welcome.lastMsgId };
  } catch (e) {
    closeQuietly(conn);
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// Running a phase

/** What one phase measured, with the spec it ran (less the report-only flag). */
export interface PhaseResult extends Omit<PhaseSpec, "perClientTable"> {
  /** Connections that completed HELLO/WELCOME. */
  connected: number;
  /** Connections that could not be opened or were refused. */
  connectFailures: number;
  /** Milliseconds to open every connection. */
  connectMs: number;
  /** Messages sent. */
  sent: number;
  /** Messages acknowledged. */
  acked: number;
  /** Messages refused with NACK. */
  nacked: number;
  /** NACK code to count. */
  nackCodes: Record<string, number>;
  /** Sent but neither acked nor NACKed when the phase ended. */
  unsettled: number;
  /** Connection errors (ERROR frames, resets, refused connects, protocol anomalies). */
  errors: number;
  /** The first errors and NACKs, as text. */
  errorSamples: string[];
  /** True when the phase hit `--timeout` and was cut short. */
  timedOut: boolean;
  /** Seconds from the first send to the last ACK. */
  elapsedS: number;
  /** Messages acked per second of `elapsedS`. */
  msgsPerS: number;
  /** Payload megabytes (10^6) acked per second. */
  mbPerS: number;
  /** Send-to-ACK latency in microseconds (percentiles within 1%; min, mean and max exact). */
  latencyUs: {
    min: number;
    mean: number;
    p50: number;
    p90: number;
    p99: number;
    p999: number;
    max: number;
  };
  /** Spread of acks over the connections: the fairness figures. */
  acksPerConnection: { min: number; median: number; max: number };
  /** Each connection's client_id, acks and average latency, when the phase asks for it. */
  perClient: { client: number; acked: number; avgLatencyUs: number }[] | null;
  /** client_id to acks, for the file check. */
  ackedByClient: Map<number, number>;
}

interface RunContext {
  host: string;
  port: number;
  token: string;
  connectConcurrency: number;
  timeoutS: number | null;
  quiet: boolean;
  /** Server RSS for the progress line, or null when unknown. */
  serverRss: () => Promise<number | null>;
  /** First client_id to use; advanced past the phase's ids. */
  nextClientId: number;
}

function fmtInt(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

function fmtMiB(bytes: number | null): string {
  return bytes === null ? "n/a" : `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

async function runPhase(spec: PhaseSpec, ctx: RunContext): Promise<PhaseResult> {
  const phase = new PhaseState();
  const payload = new Uint8Array(spec.size);
  for (let i = 0; i < payload.length; i++) payload[i] = 0x61 + (i % 26); // a-z, no escapes
  const firstClient = ctx.nextClientId;
  ctx.nextClientId += spec.connections;
  const quotas: number[] = [];
  for (let i = 0; i < spec.connections; i++) {
    quotas.push(
      spec.count === null
        ? Infinity
        : Math.floor(spec.count / spec.connections) + (i < spec.count % spec.connections ? 1 : 0),
    );
  }
  const timeoutS = ctx.timeoutS ?? (spec.durationS === null ? 120 : spec.durationS + 60);
  const t0 = performance.now();
  const hardDeadline = t0 + timeoutS * 1000;
  let timedOut = false;
  const conns: LoadConnection[] = [];

  // Connect with bounded concurrency.
  let nextIndex = 0;
  let connectFailures = 0;
  const connectWorker = async () => {
    while (nextIndex < spec.connections && !timedOut) {
      const i = nextIndex++;
      try {
        const { conn, decoder, lastMsgId } = await connectOne(
          ctx.host,
          ctx.port,
          firstClient + i,
          ctx.token,
        );
        if (timedOut) {
          conn.close();
          continue;
        }
        conns.push(
          new LoadConnection(
            conn,
            decoder,
            phase,
            spec,
            firstClient + i,
            quotas[i]!,
            lastMsgId,
            payload,
          ),
        );
      } catch (e) {
        connectFailures++;
        phase.error(`client ${firstClient + i}: connect: ${(e as Error).message}`);
      }
    }
  };
  let hardTimer: ReturnType<typeof setTimeout> | undefined;
  const hardTimeout = new Promise<"timeout">((r) =>
    hardTimer = setTimeout(() => r("timeout"), timeoutS * 1000)
  );
  const workers = Math.min(ctx.connectConcurrency, spec.connections);
  const connecting = Promise.all(Array.from({ length: workers }, connectWorker));
  if (await Promise.race([connecting, hardTimeout]) === "timeout") timedOut = true;
  const connectMs = performance.now() - t0;
  if (!ctx.quiet) {
    console.error(
      `[${spec.name}] connected ${conns.length} of ${spec.connections} in ` +
        `${connectMs.toFixed(0)} ms (${connectFailures} failed)`,
    );
  }
  conns.sort((a, b) => a.clientId - b.clientId);

  // Send.
  let durationTimer: ReturnType<typeof setTimeout> | undefined;
  let progressTimer: ReturnType<typeof setInterval> | undefined;
  if (!timedOut) {
    phase.expect(conns.length);
    const sendStart = performance.now();
    phase.firstSendAt = sendStart;
    for (const c of conns) c.start();
    if (spec.durationS !== null) {
      durationTimer = setTimeout(() => {
        phase.stopping = true;
        for (const c of conns) c.pump();
      }, spec.durationS * 1000);
    }
    let lastAcked = 0;
    let lastAt = sendStart;
    let rss: number | null = null;
    ctx.serverRss().then((v) => rss = v);
    progressTimer = setInterval(() => {
      ctx.serverRss().then((v) => rss = v);
      const now = performance.now();
      const rate = (phase.acked - lastAcked) / ((now - lastAt) / 1000);
      const avg = phase.acked / ((now - sendStart) / 1000);
      lastAcked = phase.acked;
      lastAt = now;
      if (!ctx.quiet) {
        console.error(
          `[${spec.name}] ${((now - sendStart) / 1000).toFixed(1)}s acked ${fmtInt(phase.acked)}` +
            ` (${fmtInt(rate)} msg/s now, ${fmtInt(avg)} avg) in flight ` +
            `${fmtInt(phase.sent - phase.acked - phase.nacked)} nacked ${fmtInt(phase.nacked)}` +
            ` errors ${phase.errorCount} server RSS ${fmtMiB(rss)}`,
        );
      }
    }, 1000);
    const left = hardDeadline - performance.now();
    if (left <= 0 || await Promise.race([phase.finished, hardTimeout]) === "timeout") {
      timedOut = true;
      phase.stopping = true;
      for (const c of conns) c.abandon();
    }
  }
  clearTimeout(hardTimer);
  clearTimeout(durationTimer);
  clearInterval(progressTimer);
  if (timedOut) phase.error(`phase hit the --timeout of ${timeoutS} s`);
  for (const c of conns) c.close();

  const elapsedS = Math.max(
    ((phase.lastAckAt > 0 ? phase.lastAckAt : performance.now()) - phase.firstSendAt) / 1000,
    1e-9,
  );
  const h = phase.hist;
  const acks = conns.map((c) => c.acked).sort((a, b) => a - b);
  const ackedByClient = new Map<number, number>();
  for (const c of conns) ackedByClient.set(c.clientId, c.acked);
  return {
    name: spec.name,
    connections: spec.connections,
    window: spec.window,
    size: spec.size,
    durationS: spec.durationS,
    count: spec.count,
    connected: conns.length,
    connectFailures,
    connectMs,
    sent: phase.sent,
    acked: phase.acked,
    nacked: phase.nacked,
    nackCodes: Object.fromEntries([...phase.nackCodes].map(([k, v]) => [String(k), v])),
    unsettled: phase.sent - phase.acked - phase.nacked,
    errors: phase.errorCount,
    errorSamples: phase.errors,
    timedOut,
    elapsedS,
    msgsPerS: phase.acked / elapsedS,
    mbPerS: (phase.acked * spec.size) / elapsedS / 1e6,
    latencyUs: {
      min: h.min,
      mean: h.mean,
      p50: h.valueAtPercentile(50),
      p90: h.valueAtPercentile(90),
      p99: h.valueAtPercentile(99),
      p999: h.valueAtPercentile(99.9),
      max: h.max,
    },
    acksPerConnection: {
      min: acks[0] ?? 0,
      median: acks.length === 0 ? 0 : acks[Math.floor((acks.length - 1) / 2)]!,
      max: acks.at(-1) ?? 0,
    },
    perClient: spec.perClientTable
      ? conns.map((c) => ({
        client: c.clientId,
        acked: c.acked,
        avgLatencyUs: c.acked === 0 ? NaN : c.latencySumUs / c.acked,
      }))
      : null,
    ackedByClient,
  };
}

// ---------------------------------------------------------------------------------------------
// The file check

/** Result of comparing the data file with the acks. */
export interface FileCheck {
  /** Lines in the data file. */
  lines: number;
  /** Messages acked over all phases. */
  expected: number;
  /** Clients whose line count differs from their acks (the first 3). */
  clientMismatches: { client: number; lines: number; acked: number }[];
  /** Clients whose line count differs from their acks. */
  clientMismatchCount: number;
  /** True when the last byte is not a line feed. */
  tornTail: boolean;
  /** True when the file holds exactly one line per acked message, client by client. */
  ok: boolean;
}

/**
 * Counts the lines of a data file, in total and per client_id (the first field), streaming.
 *
 * @example
 * ```ts
 * const { lines, byClient } = await countLines("messages.log");
 * ```
 */
export async function countLines(
  path: string,
): Promise<{ lines: number; byClient: Map<number, number>; tornTail: boolean }> {
  const byClient = new Map<number, number>();
  let lines = 0;
  let atStart = true;
  let inId = false;
  let id = 0;
  let last = 0x0a;
  using file = await Deno.open(path);
  const buf = new Uint8Array(1 << 20);
  for (;;) {
    const n = await file.read(buf);
    if (n === null) break;
    for (let i = 0; i < n; i++) {
      const c = buf[i]!;
      if (atStart) {
        atStart = false;
        inId = true;
        id = 0;
      }
      if (inId) {
        if (c >= 0x30 && c <= 0x39) {
          id = id * 10 + (c - 0x30);
          continue;
        }
        inId = false;
        byClient.set(id, (byClient.get(id) ?? 0) + 1);
      }
      if (c === 0x0a) {
        lines++;
        atStart = true;
      }
    }
    if (n > 0) last = buf[n - 1]!;
  }
  return { lines, byClient, tornTail: last !== 0x0a };
}

async function checkFile(path: string, results: PhaseResult[]): Promise<FileCheck> {
  const { lines, byClient, tornTail } = await countLines(path);
  const expectedByClient = new Map<number, number>();
  for (const r of results) for (const [k, v] of r.ackedByClient) expectedByClient.set(k, v);
  const mismatches: FileCheck["clientMismatches"] = [];
  let mismatchCount = 0;
  const clients = new Set([...byClient.keys(), ...expectedByClient.keys()]);
  for (const client of [...clients].sort((a, b) => a - b)) {
    const got = byClient.get(client) ?? 0;
    const want = expectedByClient.get(client) ?? 0;
    if (got !== want) {
      mismatchCount++;
      if (mismatches.length < 3) mismatches.push({ client, lines: got, acked: want });
    }
  }
  const expected = results.reduce((s, r) => s + r.acked, 0);
  return {
    lines,
    expected,
    clientMismatches: mismatches,
    clientMismatchCount: mismatchCount,
    tornTail,
    ok: lines === expected && mismatchCount === 0 && !tornTail,
  };
}

// ---------------------------------------------------------------------------------------------
// Report

/** Everything a run produced; `--json` prints it. */
export interface Report {
  /** The preset run, if any. */
  preset: string | null;
  /** ACK_MODE of the server the bench started (null for a running server). */
  ackMode: AckMode | null;
  /** The server and, when the bench started it, what it cost. */
  server: {
    host: string;
    port: number;
    startedByBench: boolean;
    pid: number | null;
    /** CPU seconds in user mode over the whole run (/proc/<pid>/stat). */
    cpuUserS: number | null;
    /** CPU seconds in the kernel over the whole run. */
    cpuSysS: number | null;
    /** User plus system CPU seconds. */
    cpuS: number | null;
    /** Peak resident memory (VmHWM). */
    peakRssBytes: number | null;
    /** How it ended after SIGTERM. */
    exit: { code: number | null; signal: string | null; timedOut: boolean; ms: number } | null;
    /** True when it was gone before the bench stopped it. */
    exitedEarly: boolean;
    /** The data file, when it was kept. */
    dataFile: string | null;
  };
  /** CPU seconds the load generator used. */
  loadCpuS: number | null;
  /** One result per phase run. */
  phases: Omit<PhaseResult, "ackedByClient">[];
  /** The line count check, or null for a running server. */
  fileCheck: FileCheck | null;
  /** True when nothing went wrong (the exit status is 0). */
  ok: boolean;
  /** What went wrong, one line each. */
  problems: string[];
}

function us(v: number): string {
  if (Number.isNaN(v)) return "n/a";
  return v >= 100 ? fmtInt(v) : v.toFixed(1);
}

function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((c, i) => widths[i] = Math.max(widths[i] ?? 0, c.length));
  return rows.map((row) =>
    row.map((c, i) => i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)).join("  ")
      .trimEnd()
  ).join("\n");
}

function formatReport(r: Report): string {
  const out: string[] = [];
  const s = r.server;
  out.push(
    `msgserver load: preset ${r.preset ?? "(none)"}, server ${s.host}:${s.port}` +
      (s.startedByBench ? ` (started by the bench, pid ${s.pid}, ack-mode ${r.ackMode})` : ""),
  );
  out.push("");
  const p = r.phases;
  const row = (label: string, f: (x: (typeof p)[number]) => string) => [label, ...p.map(f)];
  out.push(table([
    ["phase", ...p.map((x) => x.name)],
    row("connections x window", (x) => `${fmtInt(x.connections)} x ${fmtInt(x.window)}`),
    row("payload bytes", (x) => fmtInt(x.size)),
    row("run", (x) => x.durationS !== null ? `${x.durationS} s` : `${fmtInt(x.count ?? 0)} msgs`),
    row("connect time ms", (x) => x.connectMs.toFixed(1)),
    row("connect failures", (x) => fmtInt(x.connectFailures)),
    row("messages sent", (x) => fmtInt(x.sent)),
    row("messages acked", (x) => fmtInt(x.acked)),
    row("messages NACKed", (x) => fmtInt(x.nacked)),
    row("unsettled", (x) => fmtInt(x.unsettled)),
    row("errors", (x) => fmtInt(x.errors)),
    row("elapsed s", (x) => x.elapsedS.toFixed(3)),
    row("msgs/s", (x) => fmtInt(x.msgsPerS)),
    row("MB/s (payload)", (x) => x.mbPerS.toFixed(2)),
    row("latency p50 us", (x) => us(x.latencyUs.p50)),
    row("latency p90 us", (x) => us(x.latencyUs.p90)),
    row("latency p99 us", (x) => us(x.latencyUs.p99)),
    row("latency p99.9 us", (x) => us(x.latencyUs.p999)),
    row("latency max us", (x) => us(x.latencyUs.max)),
    row("latency mean us", (x) => us(x.latencyUs.mean)),
    row("acks/conn min", (x) => fmtInt(x.acksPerConnection.min)),
    row("acks/conn median", (x) => fmtInt(x.acksPerConnection.median)),
    row("acks/conn max", (x) => fmtInt(x.acksPerConnection.max)),
  ]));
  for (const x of p) {
    if (x.perClient === null) continue;
    out.push("");
    out.push(`per-client average latency, phase "${x.name}":`);
    const rows = [["client", "acked", "avg latency us"]];
    for (const c of x.perClient) rows.push([String(c.client), fmtInt(c.acked), us(c.avgLatencyUs)]);
    rows.push(["overall", fmtInt(x.acked), us(x.latencyUs.mean)]);
    out.push(table(rows));
  }
  out.push("");
  out.push(table([
    ["server", ""],
    [
      "CPU seconds",
      s.cpuS === null
        ? "n/a"
        : `${s.cpuS.toFixed(2)} (user ${s.cpuUserS!.toFixed(2)}, sys ${s.cpuSysS!.toFixed(2)})`,
    ],
    ["peak RSS (VmHWM)", fmtMiB(s.peakRssBytes)],
    [
      "exit after SIGTERM",
      s.exit === null
        ? "n/a"
        : s.exit.timedOut
        ? `did not exit in time: killed`
        : `code ${s.exit.code}${s.exit.signal ? ` signal ${s.exit.signal}` : ""} in ` +
          `${s.exit.ms.toFixed(0)} ms`,
    ],
    ["load generator CPU s", r.loadCpuS === null ? "n/a" : r.loadCpuS.toFixed(2)],
  ]));
  out.push("");
  const f = r.fileCheck;
  if (f === null) {
    out.push("file check: skipped (server not started by the bench)");
  } else {
    out.push(
      `file check: ${fmtInt(f.lines)} lines, ${fmtInt(f.expected)} acked: ` +
        (f.ok ? "OK" : "MISMATCH") +
        (f.clientMismatchCount > 0
          ? ` (${f.clientMismatchCount} clients differ, e.g. ` +
            f.clientMismatches.map((m) => `client ${m.client}: ${m.lines} lines/${m.acked} acked`)
              .join("; ") +
            ")"
          : "") +
        (f.tornTail ? " (last line torn)" : ""),
    );
  }
  for (const x of p) {
    for (const e of x.errorSamples) out.push(`note [${x.name}]: ${e}`);
  }
  for (const problem of r.problems) out.push(`PROBLEM: ${problem}`);
  return out.join("\n");
}

// ---------------------------------------------------------------------------------------------
// Main

async function main(args: string[]): Promise<number> {
  let options: Options | null;
  try {
    options = parseOptions(args);
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`bench: ${e.message}\n\n${USAGE}`);
      return 2;
    }
    throw e;
  }
  if (options === null) {
    console.log(USAGE);
    return 0;
  }
  const quiet = false;
  let child: ChildServer | null = null;
  if (options.port === null) {
    try {
      child = await startChildServer(options.host, options.ackMode, quiet);
    } catch (e) {
      console.error(`bench: ${(e as Error).message}`);
      return 1;
    }
    console.error(
      `bench: started msgserver pid ${child.pid} on ${child.host}:${child.port}, ` +
        `ack-mode ${options.ackMode}, data file ${child.file}`,
    );
  }
  const onSignal = () => {
    if (child !== null && child.exited === null) child.process.kill("SIGKILL");
    if (child !== null && !options.keep) {
      try {
        Deno.removeSync(child.dir, { recursive: true });
      } catch {
        // best effort
      }
    }
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onSignal);
  const port = child?.port ?? options.port!;
  const ctx: RunContext = {
    host: options.host,
    port,
    token: options.token,
    connectConcurrency: options.connectConcurrency,
    timeoutS: options.timeoutS,
    quiet,
    serverRss: () => child === null ? Promise.resolve(null) : readStatusBytes(child.pid, "VmRSS"),
    nextClientId: 1,
  };
  const results: PhaseResult[] = [];
  const problems: string[] = [];
  for (const spec of options.phases) {
    if (child?.exited) break;
    const what = spec.durationS !== null ? `${spec.durationS} s` : `${spec.count} messages`;
    console.error(
      `bench: phase "${spec.name}": ${spec.connections} connections, window ${spec.window}, ` +
        `${spec.size} B payload, ${what}`,
    );
    const result = await runPhase(spec, ctx);
    results.push(result);
    if (result.timedOut) break;
  }

  // Read before the file check, which is the bench's own work, not load generation.
  const selfCpu = await readCpu(Deno.pid);
  let cpu: { user: number; sys: number } | null = null;
  let peak: number | null = null;
  let exit: Report["server"]["exit"] = null;
  let fileCheck: FileCheck | null = null;
  const exitedEarly = child !== null && child.exited !== null;
  if (child !== null) {
    cpu = await readCpu(child.pid);
    peak = await readStatusBytes(child.pid, "VmHWM");
    exit = await stopChildServer(child, 30_000);
    if (exitedEarly) problems.push(`the server exited during the run (code ${exit.code})`);
    if (exit.timedOut) problems.push("the server did not exit within 30 s of SIGTERM");
    else if (exit.code !== 0 && !exitedEarly) {
      problems.push(`the server exited with code ${exit.code} after SIGTERM`);
    }
    await Deno.writeTextFile(`${child.dir}/server.log`, child.log.join("\n") + "\n");
    fileCheck = await checkFile(child.file, results);
    if (!fileCheck.ok) {
      const unsettled = results.reduce((s, r) => s + r.unsettled, 0);
      const extra = fileCheck.lines - fileCheck.expected;
      problems.push(
        `MISMATCH: the data file has ${fileCheck.lines} lines, ${fileCheck.expected} acked` +
          (extra > 0 && extra <= unsettled
            ? ` (the ${extra} extra lines may be among the ${unsettled} messages left unsettled)`
            : ""),
      );
    }
  }
  for (const r of results) {
    if (r.timedOut) problems.push(`phase "${r.name}" timed out`);
    if (r.unsettled > 0) problems.push(`phase "${r.name}": ${r.unsettled} messages never settled`);
    if (r.errors > 0) problems.push(`phase "${r.name}": ${r.errors} errors`);
  }
  if (results.length < options.phases.length) problems.push("not every phase ran");
  const report: Report = {
    preset: options.preset,
    ackMode: child === null ? null : options.ackMode,
    server: {
      host: options.host,
      port,
      startedByBench: child !== null,
      pid: child?.pid ?? null,
      cpuUserS: cpu?.user ?? null,
      cpuSysS: cpu?.sys ?? null,
      cpuS: cpu === null ? null : cpu.user + cpu.sys,
      peakRssBytes: peak,
      exit,
      exitedEarly,
      dataFile: child !== null && (options.keep || problems.length > 0) ? child.file : null,
    },
    loadCpuS: selfCpu === null ? null : selfCpu.user + selfCpu.sys,
    phases: results.map(({ ackedByClient: _, ...rest }) => rest),
    fileCheck,
    ok: problems.length === 0,
    problems,
  };
  if (options.json) console.log(JSON.stringify(report, null, 2));
  else console.log(formatReport(report));
  Deno.removeSignalListener("SIGINT", onSignal);
  if (child !== null) {
    if (options.keep || problems.length > 0) {
      console.error(`bench: kept ${child.dir} (messages.log, server.log)`);
    } else {
      await Deno.remove(child.dir, { recursive: true });
    }
  }
  return problems.length === 0 ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
