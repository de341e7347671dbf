/**
 * One phase of a load run: open the connections, let them send together for a time or a count,
 * then gather what they measured into a {@linkcode PhaseResult}.
 *
 * (Over 400 lines: the phase's counters, its progress line, the stall measure and the run itself
 * read each other's state; the per-connection loop is apart, in connection.ts.)
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
import type { ClientLedger } from "./file_check.ts";
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
  resumed = 0;
  abandoned = 0;
  readonly errors: string[] = [];
  errorCount = 0;
  firstSendAt = 0;
  lastAckAt = 0;
  longestAckGapMs = 0;
  /** `performance.now()` when the longest wait for an ACK began. */
  longestAckGapFrom = 0;
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

  /** Keeps the wait that an ACK at `now` ends, if it is the longest so far. */
  ackGap(now: number): void {
    const from = this.lastAckAt > 0 ? this.lastAckAt : this.firstSendAt;
    if (now - from <= this.longestAckGapMs) return;
    this.longestAckGapMs = now - from;
    this.longestAckGapFrom = from;
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
  /** Sessions resumed after the server ended them with ERROR 8 (a shared store failed). */
  resumed: number;
  /** Messages in flight at a resume that the server had not stored (above last_msg_id). */
  abandoned: number;
  /** Sent but neither acked, NACKed nor abandoned when the phase ended. */
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
  /**
   * The longest time without any ACK, from the first send (or an ACK) to the next ACK, or to the
   * end of the phase: the stall a failover causes. `fromS` is when it began, in seconds after
   * the first send.
   */
  longestAckGap: { ms: number; fromS: number };
  /**
   * The longest stretch over which acks came at under a hundredth of the phase's usual rate (see
   * {@linkcode longestStall}): a failover's stall as a client feels it, which a few stray acks do
   * not cut short. `fromS` as for `longestAckGap`.
   */
  stall: { ms: number; fromS: number };
  /** Spread of acks over the connections: the fairness figures. */
  acksPerConnection: { min: number; median: number; max: number };
  /** Each connection's client_id, acks and average latency, when the phase asks for it. */
  perClient: { client: number; acked: number; avgLatencyUs: number }[] | null;
  /** client_id to acks, for the file check. */
  ackedByClient: Map<number, number>;
  /** client_id to what it sent and what was refused, for the file check of each msg_id. */
  ledgers: Map<number, ClientLedger>;
}

/** What {@linkcode runPhase} needs besides the spec: the server and the run's limits. */
export interface PhaseContext {
  /** Server address. */
  host: string;
  /** Server port. */
  port: number;
  /** The server's LEGACY_PORT, for legacy phases (`legacy.ts`); null or absent when none. */
  legacyPort?: number | null;
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
  /**
   * Called once every connection has started sending, with `performance.now()` of that moment
   * (e.g. to kill a node some seconds in); the phase ends only once its promise has settled, and
   * counts a rejection as an error.
   */
  whileSending?: (sendStart: number) => Promise<void>;
}

/** How often the phase notes how many messages were acked so far, for {@linkcode longestStall}. */
const TIMELINE_MS = 100;

/** Acks counted so far at a moment (`performance.now()`). */
export interface AckSample {
  at: number;
  acked: number;
}

/**
 * The longest stretch of a phase over which acks came at under a hundredth of its usual rate on
 * average, from samples of the ack count taken every {@linkcode TIMELINE_MS} or so (the first at
 * the first send, the last at the end). The usual rate is the median over the samples' intervals
 * that had acks while sending (up to `sendingUntil`); a stretch must begin while sending, so the
 * drain after the sends stopped is not one. Unlike the longest gap between two acks, a few stray
 * acks (a batch acked as a failover began) do not cut a stall in two. Returns its length and
 * start, or zeros.
 *
 * @example
 * ```ts
 * const acked = [0, 50, 100, 100, 101, 101, 150];
 * const samples = acked.map((n, i) => ({ at: i * 100, acked: n }));
 * longestStall(samples, 600); // { ms: 300, from: 200 }: one ack from 200 to 500
 * ```
 */
export function longestStall(
  samples: readonly AckSample[],
  sendingUntil: number,
): { ms: number; from: number } {
  const rates: number[] = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1]!;
    const b = samples[i]!;
    if (b.at > a.at && b.at <= sendingUntil && b.acked > a.acked) {
      rates.push((b.acked - a.acked) / (b.at - a.at));
    }
  }
  rates.sort((x, y) => x - y);
  const usual = rates.length === 0 ? 0 : rates[Math.floor((rates.length - 1) / 2)]!;
  // A stretch [a, b] is a stall when acks(a, b) < slow * (b - a): with s(k) the acks up to
  // sample k less slow * its time, when s(a) > s(b). The longest such is found in one pass over
  // the samples, holding the starts that no earlier one beats (s rising) and searching them.
  const slow = Math.max(usual / 100, 1e-9);
  const starts: number[] = [];
  const startS: number[] = [];
  let best = { ms: 0, from: 0 };
  for (let k = 0; k < samples.length; k++) {
    const { at, acked } = samples[k]!;
    const s = acked - slow * (at - samples[0]!.at);
    if (starts.length > 0 && startS[startS.length - 1]! > s) {
      let lo = 0;
      let hi = starts.length - 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (startS[mid]! > s) hi = mid;
        else lo = mid + 1;
      }
      const from = samples[starts[lo]!]!.at;
      if (at - from > best.ms) best = { ms: at - from, from };
    }
    if (at < sendingUntil && (starts.length === 0 || s > startS[startS.length - 1]!)) {
      starts.push(k);
      startS.push(s);
    }
  }
  return best;
}

/**
 * The protocol version the load tool speaks; a server from before version 2 refuses it, and the
 * tool then speaks 1 to it from there on (so one tool measures old and new servers alike).
 */
let speak = PROTOCOL_VERSION;

/**
 * Connects, sends HELLO in `session`, waits for WELCOME; returns the socket, decoder and
 * last_msg_id.
 */
async function connectOne(
  ctx: PhaseContext,
  clientId: number,
  session: bigint,
): Promise<{ conn: Deno.TcpConn; decoder: FrameDecoder; lastMsgId: number }> {
  for (;;) {
    const conn = await Deno.connect({ hostname: ctx.host, port: ctx.port });
    const version = speak;
    try {
      conn.setNoDelay(true);
      const decoder = replyDecoder();
      const welcome = await handshake(conn, decoder, {
        clientId,
        session,
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
 * A phase's latency figures from its histogram of send-to-ACK times.
 *
 * @example
 * ```ts
 * import { Histogram } from "../histogram.ts";
 * const h = new Histogram();
 * h.record(120);
 * latencyOf(h).p50; // about 120
 * ```
 */
export function latencyOf(h: Histogram): PhaseResult["latencyUs"] {
  return {
    min: h.min,
    mean: h.mean,
    p50: h.valueAtPercentile(50),
    p90: h.valueAtPercentile(90),
    p99: h.valueAtPercentile(99),
    p999: h.valueAtPercentile(99.9),
    max: h.max,
  };
}

/**
 * The fairness figures: the least, median and most acks of one connection.
 *
 * @example
 * ```ts
 * spreadOf([5, 1, 3]); // { min: 1, median: 3, max: 5 }
 * ```
 */
export function spreadOf(acked: number[]): PhaseResult["acksPerConnection"] {
  const acks = acked.toSorted((a, b) => a - b);
  return {
    min: acks[0] ?? 0,
    median: acks.length === 0 ? 0 : acks[Math.floor((acks.length - 1) / 2)]!,
    max: acks.at(-1) ?? 0,
  };
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
      const clientId = firstClient + i;
      const session = randomSession();
      try {
        const { conn, decoder, lastMsgId } = await connectOne(ctx, clientId, session);
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
            resume: () => connectOne(ctx, clientId, session),
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
  let timelineTimer: ReturnType<typeof setInterval> | undefined;
  const timeline: AckSample[] = [];
  let sendingUntil = Infinity;
  let sideline: Promise<void> | null = null;
  if (!timedOut) {
    phase.expect(conns.length);
    const sendStart = performance.now();
    phase.firstSendAt = sendStart;
    timeline.push({ at: sendStart, acked: 0 });
    // A sample every 100 ms from a timer: the stall figure costs the per-message path nothing.
    timelineTimer = setInterval(
      () => timeline.push({ at: performance.now(), acked: phase.acked }),
      TIMELINE_MS,
    );
    for (const c of conns) c.start();
    if (ctx.whileSending !== undefined) {
      sideline = ctx.whileSending(sendStart).catch((e) =>
        phase.error(`while sending: ${(e as Error).message}`)
      );
    }
    if (spec.durationS !== null) {
      durationTimer = setTimeout(() => {
        sendingUntil = performance.now();
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
          `${fmtInt(phase.sent - phase.acked - phase.nacked - phase.abandoned)} nacked ` +
          `${fmtInt(phase.nacked)} resumed ${phase.resumed} errors ${phase.errorCount} ` +
          `server RSS ${fmtMiB(rss)}`,
      );
    }, 1000);
    const left = hardDeadline - performance.now();
    if (left <= 0 || await Promise.race([phase.finished, hardTimeout]) === "timeout") {
      timedOut = true;
      phase.stopping = true;
      for (const c of conns) c.abandon();
    }
  }
  // A stall that lasted to the end (no ACK after it) counts until the last connection was done.
  clearInterval(timelineTimer);
  if (phase.firstSendAt > 0) {
    const end = performance.now();
    phase.ackGap(end);
    timeline.push({ at: end, acked: phase.acked });
  }
  const stall = longestStall(timeline, sendingUntil);
  clearTimeout(durationTimer);
  clearInterval(progressTimer);
  if (sideline !== null && await Promise.race([sideline, hardTimeout]) === "timeout") {
    timedOut = true;
  }
  clearTimeout(hardTimer);
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
  const ackedByClient = new Map<number, number>();
  const ledgers = new Map<number, ClientLedger>();
  for (const c of conns) {
    ackedByClient.set(c.clientId, c.acked);
    ledgers.set(c.clientId, {
      firstId: c.firstId,
      settledThrough: c.settledThrough,
      lastSent: c.lastSent,
      refused: c.refusedIds,
      abandoned: c.abandonedRanges,
    });
  }
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
    resumed: phase.resumed,
    abandoned: phase.abandoned,
    unsettled: phase.sent - phase.acked - phase.nacked - phase.abandoned,
    errors: phase.errorCount,
    errorSamples: phase.errors,
    timedOut,
    elapsedS,
    msgsPerS: phase.acked / elapsedS,
    mbPerS: (phase.acked * spec.size) / elapsedS / 1e6,
    latencyUs: latencyOf(phase.hist),
    longestAckGap: {
      ms: phase.longestAckGapMs,
      fromS: phase.longestAckGapFrom === 0
        ? 0
        : (phase.longestAckGapFrom - phase.firstSendAt) / 1000,
    },
    stall: {
      ms: stall.ms,
      fromS: stall.ms === 0 ? 0 : (stall.from - phase.firstSendAt) / 1000,
    },
    acksPerConnection: spreadOf(conns.map((c) => c.acked)),
    perClient: spec.perClientTable
      ? conns.map((c) => ({
        client: c.clientId,
        acked: c.acked,
        avgLatencyUs: c.acked === 0 ? NaN : c.latencySumUs / c.acked,
      }))
      : null,
    ackedByClient,
    ledgers,
  };
}
