/**
 * The contract between the server and the connections it serves, native (`connection.ts`) or
 * legacy (`legacy_connection.ts`): what the server asks of a connection ({@linkcode Served}),
 * what it gives one ({@linkcode ServerContext}), and the two pieces both kinds of connection
 * share: putting an entry on the queue ({@linkcode enqueue}) and counting the records still
 * owed an outcome ({@linkcode Unsettled}).
 *
 * @module
 */

import type { Config } from "../config.ts";
import { within } from "../io/within.ts";
import type { Logger } from "../log.ts";
import type { BufferPool } from "./buffer_pool.ts";
import type { DecoderLimits } from "../protocol/decoder.ts";
import { type Channel, ChannelClosedError } from "./channel.ts";
import type { Entry } from "./entry.ts";
import type { SessionTable } from "./sessions.ts";
import type { Store } from "../store/store.ts";

/** Counters shared by all connections. */
export interface ConnectionStats {
  /** MSG frames (and legacy frames) received. */
  received: number;
  /** Records acked on receipt (ACK_MODE received); the writer counts the others. */
  ackedOnReceipt: number;
  /** Messages refused with NACK 1 or 2 (the writer counts NACK 4). */
  nacked: number;
  /** Messages refused with NACK 3. */
  duplicates: number;
  /** Connections closed with ERROR 1. */
  protocolErrors: number;
  /** NACK frames sent, by code (`nacks[3]`: NACK 3); slot 0 is unused. */
  nacks: number[];
  /** ERROR frames sent, by code (`errors[4]`: ERROR 4, refusals at accept too); slot 0 is unused. */
  errors: number[];
}

/** What the server needs of any connection it serves, native or legacy. */
export interface Served {
  readonly isClosed: boolean;
  /** True while a handshake is still owed (never for the legacy protocol). */
  readonly awaitingHello: boolean;
  /** When it was accepted (ms, `performance.now()`). */
  readonly openedAt: number;
  /** True while it waits on the server (queue room, session resume): timeouts do not run. */
  readonly waitingOnServer: boolean;
  /** When the last whole frame arrived (ms, `performance.now()`). */
  readonly lastActivity: number;
  /** Reply bytes not yet taken by the socket. */
  readonly pendingReplyBytes: number;
  /** Reads and serves until the connection ends. */
  serve(): Promise<void>;
  /** Shutdown: closes after every ack owed is sent. */
  finish(): Promise<void>;
  /** Closes at once. */
  abort(): void;
  /** Closes for a timeout, telling the peer if the protocol can. */
  timeout(reason: string): void;
}

/** What a connection needs from the server it belongs to. */
export interface ServerContext {
  readonly config: Config;
  readonly queue: Channel<Entry>;
  /** Buffers for queue entries, which the writer gives back (see `buffer_pool.ts`). */
  readonly pool: BufferPool;
  readonly sessions: SessionTable;
  /** Where records go, and where a session unknown to the table may be looked up. */
  readonly store: Store;
  readonly log: Logger;
  readonly stats: ConnectionStats;
  readonly limits: DecoderLimits;
  /** The AUTH_TOKEN as bytes, or null when none is required. */
  readonly token: Uint8Array | null;
  /** True from the moment shutdown begins: no new record is accepted. */
  readonly stopping: boolean;
  /** The refusals all connections share. */
  readonly refusals: RefusalBudget;
  /** Called once when the connection has ended. */
  closed(connection: Served): void;
}

/**
 * Past this many unsent reply bytes, a connection stops reading and decoding until the peer
 * catches up (the legacy protocol's acks count too).
 */
export const OUTBOX_HIGH_WATER = 64 * 1024;

/** How long a goodbye (an ERROR, the last acks) may take to reach the peer before the socket is closed anyway. */
export const ERROR_FLUSH_MS = 1000;

/**
 * After its last frame, a connection half-closes and keeps reading, throwing away what comes, until
 * the peer closes too or this long has passed: closing a socket with unread input makes the
 * kernel send a reset, and many client stacks then drop the replies they had already received.
 */
export const LINGER_MS = 2000;

/**
 * How many refusals (NACKs) all connections together may make in a second. A refusal costs the
 * server a NACK many times the size of the frame that earned it, so peers sending nothing but
 * refusable frames could otherwise keep it busy for all the others; past this rate they wait
 * their turn, 10 ms at a time, so no turn of the event loop spends long on them. Honest traffic is never refused.
 */
export const REFUSALS_PER_SECOND = 50_000;
/** How often the refusal budget is refilled. */
const TICK_MS = 10;

/**
 * The refusal budget all connections share (see {@linkcode REFUSALS_PER_SECOND}): a token bucket
 * refilled every 10 ms, holding at most two refills.
 *
 * @example
 * ```ts
 * import { RefusalBudget } from "./served.ts";
 * const budget = new RefusalBudget(100_000);
 * if (!budget.take()) await budget.wait(); // then send the NACK
 * ```
 */
export class RefusalBudget {
  readonly #perTick: number;
  readonly #burst: number;
  #tokens: number;
  #last = performance.now();
  #waiters: (() => void)[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;

  /** `perSecond` refusals a second, at most a fiftieth of that at once. */
  constructor(perSecond: number) {
    this.#perTick = perSecond * TICK_MS / 1000;
    this.#burst = 2 * this.#perTick;
    this.#tokens = this.#burst;
  }

  #refill(): void {
    const now = performance.now();
    const ticks = Math.floor((now - this.#last) / TICK_MS);
    if (ticks > 0) {
      this.#tokens = Math.min(this.#burst, this.#tokens + ticks * this.#perTick);
      this.#last += ticks * TICK_MS;
    }
  }

  /** Takes one refusal from the budget if there is one now. */
  take(): boolean {
    if (this.#tokens < 1) this.#refill();
    if (this.#tokens < 1 || this.#waiters.length > 0) return false;
    this.#tokens--;
    return true;
  }

  /** Waits, in arrival order, until a refusal may be made (and takes it). */
  wait(): Promise<void> {
    return new Promise((resolve) => {
      this.#waiters.push(resolve);
      this.#timer ??= setTimeout(() => this.#admit(), TICK_MS);
    });
  }

  #admit(): void {
    this.#timer = undefined;
    this.#refill();
    let n = 0;
    while (n < this.#waiters.length && this.#tokens >= 1) {
      this.#tokens--;
      this.#waiters[n++]!();
    }
    if (n > 0) this.#waiters.splice(0, n);
    if (this.#waiters.length > 0) this.#timer = setTimeout(() => this.#admit(), TICK_MS);
  }

  /** Lets everyone waiting go (shutdown). */
  release(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const w of this.#waiters.splice(0)) w();
  }
}

/**
 * `host:port` of a peer, for log lines.
 *
 * @example
 * ```ts
 * import { describeRemote } from "./served.ts";
 * describeRemote({ transport: "tcp", hostname: "127.0.0.1", port: 5000 }); // "127.0.0.1:5000"
 * ```
 */
export function describeRemote(addr: Deno.Addr): string {
  return "hostname" in addr ? `${addr.hostname}:${addr.port}` : addr.transport;
}

/** What {@linkcode enqueue} updates on the connection while it waits. */
export interface Waiting {
  /** Set while waiting for room: the server's wait, during which timeouts do not run. */
  waitingOnServer: boolean;
  /** Moved to the end of the wait, which was the server's, not the peer's. */
  lastActivity: number;
}

/**
 * Puts `entry` on the queue, waiting for room when it is full (TCP then pushes back on the
 * peer). Returns true at once when there was room, so that the caller can ack on receipt before
 * anything else runs; otherwise a promise of the same. False (or a promise of false) if the queue
 * was closed for shutdown: the records were not accepted. `beforeWait` runs once before a wait,
 * to drop what need not be held through it.
 *
 * @example
 * ```ts
 * import { enqueue } from "./served.ts";
 * import { Channel } from "./channel.ts";
 * import type { Entry } from "./entry.ts";
 * declare const entry: Entry;
 * const queue = new Channel<Entry>({ maxRecords: 10, maxBytes: 1024 });
 * const task = { waitingOnServer: false, lastActivity: performance.now() };
 * if (!await enqueue(queue, entry, task)) console.log("shutting down: not accepted");
 * ```
 */
export function enqueue(
  queue: Channel<Entry>,
  entry: Entry,
  task: Waiting,
  beforeWait?: () => void,
): boolean | Promise<boolean> {
  try {
    if (queue.tryPush(entry)) return true;
  } catch (e) {
    if (e instanceof ChannelClosedError) return false;
    throw e;
  }
  return waitForRoom(queue, entry, task, beforeWait);
}

async function waitForRoom(
  queue: Channel<Entry>,
  entry: Entry,
  task: Waiting,
  beforeWait?: () => void,
): Promise<boolean> {
  beforeWait?.();
  task.waitingOnServer = true;
  try {
    await queue.push(entry);
  } catch (e) {
    if (e instanceof ChannelClosedError) return false;
    throw e;
  } finally {
    task.waitingOnServer = false;
  }
  task.lastActivity = performance.now();
  return true;
}

/**
 * Records a connection queued that the writer has not yet stored or refused, so that a peer
 * that ends its input still gets the acks it is owed before the socket closes.
 *
 * @example
 * ```ts
 * import { Unsettled } from "./served.ts";
 * const unsettled = new Unsettled();
 * unsettled.add(3);
 * setTimeout(() => unsettled.settle(3), 10);
 * await unsettled.wait(1000); // true: all three settled in time
 * ```
 */
export class Unsettled {
  #count = 0;
  #wake: (() => void) | null = null;

  /** Records not yet settled. */
  get count(): number {
    return this.#count;
  }

  /** `records` more were queued. */
  add(records: number): void {
    this.#count += records;
  }

  /** `records` were stored or refused; wakes a `wait` when none is left. */
  settle(records: number): void {
    this.#count -= records;
    if (this.#count <= 0 && this.#wake !== null) {
      this.#wake();
      this.#wake = null;
    }
  }

  /** Waits at most `ms` for every record to settle; true if they did. */
  async wait(ms: number): Promise<boolean> {
    if (this.#count <= 0) return true;
    const settled = new Promise<void>((r) => this.#wake = r);
    const done = await within(settled, ms);
    this.#wake = null;
    return done;
  }
}
