/**
 * One phase of a load run: open the connections, let them send together for a time or a count,
 * then gather what they measured into a {@linkcode PhaseResult}.
 *
 * @module
 */

import { randomSession } from "../../src/client/client.ts";
import { ConnectionError } from "../../src/client/errors.ts";
import { handshake } from "../../src/client/handshake.ts";
import { ErrorCode, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION } from "../../src/protocol/frames.ts";
import { closeQuietly } from "../../src/io/close_quietly.ts";
import type { FrameDecoder } from "../../src/protocol/decoder.ts";
import { replyDecoder } from "../../src/protocol/replies.ts";
import { Histogram } from "../histogram.ts";
import { LoadConnection, type PhaseCounters } from "./connection.ts";
import { type Stallers, startStallers } from "./stallers.ts";
import { fmtInt, fmtMiB } from "./format.ts";
import type { PhaseSpec } from "./options.ts";

/**
 * The counters shared by the connections of one phase, and the wait for all of them to finish.
 *
 * @example
 * ```ts
 * const phase = new PhaseState();
 * phase.expect(2);
 * phase.connectionDone();
 * phase.connectionDone();
 * await phase.finished;
 * ```
 */
export class PhaseState implements PhaseCounters {
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

  /** Counts one connection as done; the last one resolves `finished`. */
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

/** What {@linkcode runPhase} needs besides the spec: the server and the run's limits. */
export interface PhaseContext {
  /** Server address. */
  host: string;
  /** Server port. */
  port: number;
  /** Token sent in HELLO. */
  token: string;
  /** Connects in flight at once. */
  connectConcurrency: number;
  /** Hard limit per phase in seconds; null for the default (duration + 60, or 120). */
  timeoutS: number | null;
  /** Server RSS for the progress line, or null when unknown. */
  serverRss: () => Promise<number | null>;
  /** First client_id to use; advanced past the phase's ids. */
  nextClientId: number;
}

/**
 * The protocol version the load tool speaks; a server from before version 2 refuses it, and the
 * tool then speaks 1 to it from there on (so one tool measures old and new servers alike).
 */
let speak = PROTOCOL_VERSION;

/** Connects, sends HELLO, waits for WELCOME; returns the socket, decoder and last_msg_id. */
async function connectOne(
  ctx: PhaseContext,
  clientId: number,
): Promise<{ conn: Deno.TcpConn; decoder: FrameDecoder; lastMsgId: number }> {
  for (;;) {
    const conn = await Deno.connect({ hostname: ctx.host, port: ctx.port });
    const version = speak;
    try {
      conn.setNoDelay(true);
      const decoder = replyDecoder();
      const welcome = await handshake(conn, decoder, {
        clientId,
        session: randomSession(),
        token: ctx.token,
        version,
      });
      return { conn, decoder, lastMsgId: welcome.lastMsgId };
    } catch (e) {
      closeQuietly(conn);
      const old = e instanceof ConnectionError && e.code === ErrorCode.UNSUPPORTED_VERSION;
      if (!old || version === MIN_PROTOCOL_VERSION) throw e;
      speak = MIN_PROTOCOL_VERSION;
    }
  }
}

/**
 * Runs one phase: opens its connections (at most `ctx.connectConcurrency` at a time), starts them
 * all, prints a progress line every second, and waits until every connection is done or the
 * phase's hard timeout passes.
 *
 * @example
 * ```ts
 * import { parseOptions } from "./options.ts";
 *
 * const spec = parseOptions(["--connections", "2", "--count", "200"])!.phases[0]!;
 * const ctx = {
 *   host: "127.0.0.1",
 *   port: 9000,
 *   token: "",
 *   connectConcurrency: 500,
 *   timeoutS: null,
 *   serverRss: () => Promise.resolve(null),
 *   nextClientId: 1,
 * };
 * const result = await runPhase(spec, ctx);
 * console.log(`${result.acked} acked, ${result.msgsPerS} msg/s`);
 * ```
 */
export async function runPhase(spec: PhaseSpec, ctx: PhaseContext): Promise<PhaseResult> {
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
  let stallers: Stallers | null = null;
  if ((spec.stallers ?? 0) > 0) {
    stallers = await startStallers(ctx, spec.stallers!, 1_000_000);
    console.error(`[${spec.name}] ${stallers.opened} stalling peers flooding refusable frames`);
  }
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
        const { conn, decoder, lastMsgId } = await connectOne(ctx, firstClient + i);
        if (timedOut) {
          conn.close();
          continue;
        }
        conns.push(
          new LoadConnection({
            conn,
            decoder,
            phase,
            clientId: firstClient + i,
            quota: quotas[i]!,
            window: spec.window,
            lastMsgId,
            payload,
          }),
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
  console.error(
    `[${spec.name}] connected ${conns.length} of ${spec.connections} in ` +
      `${connectMs.toFixed(0)} ms (${connectFailures} failed)`,
  );
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
      console.error(
        `[${spec.name}] ${((now - sendStart) / 1000).toFixed(1)}s acked ${fmtInt(phase.acked)}` +
          ` (${fmtInt(rate)} msg/s now, ${fmtInt(avg)} avg) in flight ` +
          `${fmtInt(phase.sent - phase.acked - phase.nacked)} nacked ${fmtInt(phase.nacked)}` +
          ` errors ${phase.errorCount} server RSS ${fmtMiB(rss)}`,
      );
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
  if (stallers !== null) {
    phase.note(
      `${stallers.opened} stalling peers: ${stallers.stalled} stalled (the server stopped ` +
        `reading them) after it took ${fmtInt(stallers.bytes / 1e6)} MB of refusable frames`,
    );
    stallers.stop();
  }

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
