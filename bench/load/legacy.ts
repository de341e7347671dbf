/**
 * A phase in the original C++ server's protocol, against LEGACY_PORT: each message one fixed
 * 1,160-byte frame (`u32 client_id | u32 msg_id | name[128] | message[1024]`, text NUL-padded),
 * each answered by the three bytes `ack`, in order. The `legacy-latency` preset runs the original's
 * own latency test this way, 1 client x 100 messages one at a time, for several rounds in a row,
 * each round a fresh connection and client_id as a fresh run of the original's client would be.
 *
 * @module
 */

import { closeQuietly } from "../../src/io/close_quietly.ts";
import { writeAll } from "../../src/io/write_all.ts";
import { LEGACY_FRAME_BYTES, LEGACY_NAME_BYTES } from "../../src/server/legacy_connection.ts";
import type { ClientLedger } from "./file_check.ts";
import type { PhaseSpec } from "./options.ts";
import { latencyOf, type PhaseContext, type PhaseResult, PhaseState, spreadOf } from "./phase.ts";

const ACK = new TextEncoder().encode("ack");

/** One legacy client: sends its quota with at most `window` frames unanswered. */
class LegacyLoadConnection {
  readonly clientId: number;
  acked = 0;
  latencySumUs = 0;
  readonly #conn: Deno.TcpConn;
  readonly #phase: PhaseState;
  readonly #quota: number;
  readonly #window: number;
  readonly #frame: Uint8Array;
  readonly #sendTimes: Float64Array;
  #sent = 0;
  /** Bytes of the ack reply stream so far, to check each byte against `ack`. */
  #ackBytes = 0;
  #writing = false;
  #done = false;

  constructor(
    conn: Deno.TcpConn,
    phase: PhaseState,
    spec: PhaseSpec,
    clientId: number,
    payload: Uint8Array,
  ) {
    this.#conn = conn;
    this.#phase = phase;
    this.clientId = clientId;
    this.#quota = Math.floor((spec.count ?? 0) / spec.connections);
    this.#window = spec.window;
    this.#sendTimes = new Float64Array(spec.window);
    const frame = new Uint8Array(LEGACY_FRAME_BYTES);
    new DataView(frame.buffer).setUint32(0, clientId);
    frame.set(new TextEncoder().encode(`client_${clientId}`), 8);
    frame.set(payload, 8 + LEGACY_NAME_BYTES);
    this.#frame = frame;
  }

  get sent(): number {
    return this.#sent;
  }

  start(): void {
    this.#readLoop();
    this.#pump();
  }

  /** Sends the next frame while the window and the quota allow, one write at a time. */
  async #pump(): Promise<void> {
    if (this.#writing) return;
    this.#writing = true;
    try {
      while (!this.#done && this.#sent < this.#quota && this.#sent - this.acked < this.#window) {
        const id = ++this.#sent;
        new DataView(this.#frame.buffer).setUint32(4, id);
        this.#sendTimes[id % this.#window] = performance.now();
        this.#phase.sent++;
        await writeAll(this.#conn, this.#frame);
      }
    } catch (e) {
      this.#fail(`write failed: ${(e as Error).message}`);
    } finally {
      this.#writing = false;
    }
  }

  async #readLoop(): Promise<void> {
    const buf = new Uint8Array(4096);
    try {
      while (!this.#done) {
        const n = await this.#conn.read(buf);
        if (n === null) return this.#fail("closed by the server");
        const now = performance.now();
        for (let i = 0; i < n; i++) {
          if (buf[i] !== ACK[this.#ackBytes++ % 3]) return this.#fail("a reply other than ack");
          if (this.#ackBytes % 3 !== 0) continue;
          const id = this.acked + 1;
          if (id > this.#sent) return this.#fail(`an ack for msg_id ${id}, never sent`);
          const us = (now - this.#sendTimes[id % this.#window]!) * 1000;
          this.#phase.hist.record(us);
          this.latencySumUs += us;
          this.acked = id;
          this.#phase.acked++;
          this.#phase.lastAckAt = now;
        }
        if (this.acked === this.#quota) return this.#finish();
        this.#pump();
      }
    } catch (e) {
      this.#fail(`read failed: ${(e as Error).message}`);
    }
  }

  #fail(reason: string): void {
    if (this.#done) return;
    this.#phase.error(`client ${this.clientId}: ${reason}`);
    this.#finish();
  }

  #finish(): void {
    if (this.#done) return;
    this.#done = true;
    closeQuietly(this.#conn);
    this.#phase.connectionDone();
  }

  /** Gives up on what is in flight (the phase timed out). */
  abandon(): void {
    this.#finish();
  }
}

/**
 * Runs a legacy phase: `spec.rounds` rounds (1 if absent) one after another, each opening
 * `spec.connections` connections to `ctx.legacyPort` that send `spec.count` messages between
 * them, then closing them. Latency is from a frame's write to its `ack`.
 *
 * @example
 * ```ts
 * import { parseOptions } from "./options.ts";
 * const spec = parseOptions(["--preset", "legacy-latency"])!.phases[0]!;
 * const ctx = {
 *   host: "127.0.0.1",
 *   port: 9000,
 *   legacyPort: 9001,
 *   token: "",
 *   connectConcurrency: 500,
 *   timeoutS: null,
 *   serverRss: () => Promise.resolve(null),
 *   nextClientId: 1,
 * };
 * const result = await runLegacyPhase(spec, ctx);
 * console.log(`average ${result.latencyUs.mean} us over ${result.acked} messages`);
 * ```
 */
export async function runLegacyPhase(spec: PhaseSpec, ctx: PhaseContext): Promise<PhaseResult> {
  const port = ctx.legacyPort;
  if (port === undefined || port === null) {
    throw new Error(`Cannot run phase "${spec.name}": the server has no LEGACY_PORT`);
  }
  const phase = new PhaseState();
  const payload = new Uint8Array(spec.size);
  for (let i = 0; i < payload.length; i++) payload[i] = 0x61 + (i % 26); // a-z, never NUL
  const rounds = spec.rounds ?? 1;
  const timeoutS = ctx.timeoutS ?? 120;
  const deadline = performance.now() + timeoutS * 1000;
  const conns: LegacyLoadConnection[] = [];
  let connectMs = 0;
  let connectFailures = 0;
  let timedOut = false;
  for (let round = 0; round < rounds && !timedOut; round++) {
    const t0 = performance.now();
    const opened: LegacyLoadConnection[] = [];
    for (let i = 0; i < spec.connections; i++) {
      const clientId = ctx.nextClientId++;
      try {
        const conn = await Deno.connect({ hostname: ctx.host, port });
        conn.setNoDelay(true);
        opened.push(new LegacyLoadConnection(conn, phase, spec, clientId, payload));
      } catch (e) {
        connectFailures++;
        phase.error(`client ${clientId}: connect: ${(e as Error).message}`);
      }
    }
    connectMs += performance.now() - t0;
    conns.push(...opened);
    phase.expect(opened.length);
    if (phase.firstSendAt === 0) phase.firstSendAt = performance.now();
    for (const c of opened) c.start();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const left = Math.max(0, deadline - performance.now());
    const timeout = new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), left));
    if (await Promise.race([phase.finished, timeout]) === "timeout") {
      timedOut = true;
      phase.error(`phase hit the --timeout of ${timeoutS} s`);
      for (const c of opened) c.abandon();
    }
    clearTimeout(timer);
  }
  const elapsedS = Math.max(
    ((phase.lastAckAt > 0 ? phase.lastAckAt : performance.now()) - phase.firstSendAt) / 1000,
    1e-9,
  );
  const ackedByClient = new Map<number, number>();
  const ledgers = new Map<number, ClientLedger>();
  for (const c of conns) {
    ackedByClient.set(c.clientId, c.acked);
    ledgers.set(c.clientId, { firstId: 0, settledThrough: c.acked, lastSent: c.sent, refused: [] });
  }
  return {
    name: spec.name,
    connections: spec.connections,
    window: spec.window,
    size: spec.size,
    durationS: null,
    count: spec.count,
    legacy: true,
    rounds,
    connected: conns.length,
    connectFailures,
    connectMs,
    sent: phase.sent,
    acked: phase.acked,
    nacked: 0,
    nackCodes: {},
    resumed: 0,
    abandoned: 0,
    unsettled: phase.sent - phase.acked,
    errors: phase.errorCount,
    errorSamples: phase.errors,
    timedOut,
    elapsedS,
    msgsPerS: phase.acked / elapsedS,
    mbPerS: (phase.acked * spec.size) / elapsedS / 1e6,
    latencyUs: latencyOf(phase.hist),
    longestAckGap: { ms: 0, fromS: 0 },
    stall: { ms: 0, fromS: 0 },
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
