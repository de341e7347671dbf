/**
 * A reconnecting producer on top of {@linkcode MsgClient}: it keeps one session for its whole
 * life, numbers the messages itself (1, 2, 3, ...), keeps every message until the server has it,
 * and when the connection is lost it reconnects with exponential backoff and resends what the
 * server does not have yet, in order.
 *
 * This gives exactly-once delivery: on reconnect the server's WELCOME names the highest msg_id it
 * already holds for the session (also after a restart: the file store keeps a session journal),
 * and a resent message it already holds is refused as a duplicate (NACK 3), which counts as
 * delivered. Where the server says it no longer knows the session (forgotten past MAX_SESSIONS,
 * or lost in a restart), what was sent and not acked is reported with {@linkcode SessionLostError}
 * rather than resent, unless `onSessionLost: "resend"` asks for at-least-once.
 *
 * Given several `servers` (nodes sharing one store, so that any of them can resume the session),
 * it fails over between them: a failed attempt or a lost connection moves it to the next address
 * at once, and the backoff sleep comes once per round of addresses that all failed (see
 * `servers.ts`).
 *
 * (Over 400 lines: one class, whose state is the messages in flight across reconnects; splitting
 * it would only scatter that state. Its errors and options come first.)
 *
 * @example
 * ```ts
 * import { ReliableClient } from "./reliable.ts";
 * const client = await ReliableClient.connect({ port: 9000, clientId: 1 });
 * const delivered = await client.send("client_1", "hello");
 * console.log(delivered.msgId, delivered.how); // 1 "acked"
 * await client.close();
 * ```
 *
 * @module
 */

import { ErrorCode, NackCode } from "../protocol/frames.ts";
import { nameProblem } from "../protocol/name.ts";
import { ConnectionError, MsgClient, NackError, randomSession } from "./client.ts";
import { Rotation, type Server, type ServerAddress, serverList } from "./servers.ts";

/**
 * Options of {@linkcode ReliableClient}.
 *
 * @example
 * ```ts
 * const options: ReliableOptions = { port: 9000, clientId: 1, maxDelayMs: 500 };
 * const failover: ReliableOptions = {
 *   servers: [{ hostname: "10.0.0.1", port: 9000 }, { hostname: "10.0.0.2", port: 9000 }],
 *   clientId: 1,
 * };
 * ```
 */
export interface ReliableOptions {
  /** The server's address, with `port` (not with `servers`); default 127.0.0.1. */
  hostname?: string;
  /** The server's port, 1 to 65535; give it or `servers`, not both. */
  port?: number;
  /**
   * Several servers, tried in this order and round robin after each failed attempt or lost
   * connection (not with `hostname` and `port`). For exactly-once they must share one store, so
   * that each one's WELCOME.last_msg_id is right for the session; a node that does not know the
   * session is handled as `onSessionLost` says.
   */
  servers?: ReadonlyArray<ServerAddress>;
  /** u32 client id written at the start of each line. */
  clientId: number;
  /** The server's AUTH_TOKEN, if it has one. */
  token?: string;
  /** Connect with TLS; `caCerts` (PEM) are trusted besides the system's roots. */
  tls?: { caCerts?: string[] };
  /**
   * The u64 session id, used on every connection; default a fresh {@linkcode randomSession}.
   * It must be one no other producer uses: a server that holds ids this client never sent for it
   * stops the client with a {@linkcode ConnectionError} ("session conflict").
   */
  session?: bigint;
  /**
   * Go on in a `session` that already holds messages: number on after the msg_id the first
   * connection's WELCOME says the server holds (instead of from 1). `send` calls made before that
   * connection wait for it, in order. Default false.
   */
  resume?: boolean;
  /**
   * Reconnect delay in ms (before jitter) after the first round of addresses that all failed (with
   * one server: after each failed attempt or lost connection); it doubles each round. Default 50.
   */
  initialDelayMs?: number;
  /** Longest reconnect delay in ms (before jitter); default 2000. */
  maxDelayMs?: number;
  /**
   * How long to go without a connection before giving up, in ms; default 30000. Then every
   * pending message is rejected with {@linkcode GiveUpError} and the client stops for good.
   */
  giveUpAfterMs?: number;
  /** Most messages kept unacked at once; `send` waits for room beyond it. Default 10000. */
  maxInFlight?: number;
  /**
   * Longest wait for WELCOME on one connection attempt, in ms; default 5000. A node that drops
   * packets rather than refusing them costs this much before the next address is tried.
   */
  connectTimeoutMs?: number;
  /** Source of randomness in [0, 1) for the backoff jitter; default `Math.random`. */
  random?: () => number;
  /**
   * What to do with messages sent but not acknowledged when a reconnect finds that the server no
   * longer knows the session: `"reject"` them with {@linkcode SessionLostError} (default: never
   * a silent double), or `"resend"` them (at-least-once: a message stored before may be stored
   * twice).
   */
  onSessionLost?: "reject" | "resend";
}

/**
 * How a message came to count as delivered: `acked` (the server's ACK for it arrived),
 * `resumed` (after a reconnect, WELCOME.last_msg_id was at or above its id) or `duplicate`
 * (a resend was refused with NACK 3: the server already had it).
 *
 * @example
 * ```ts
 * const how: DeliveryKind = "acked";
 * ```
 */
export type DeliveryKind = "acked" | "resumed" | "duplicate";

/**
 * What a successful {@linkcode ReliableClient.send} resolves to.
 *
 * @example
 * ```ts
 * declare const client: ReliableClient;
 * const { msgId, how } = await client.send("orders", "42");
 * ```
 */
export interface Delivery {
  /** The msg_id the client gave the message. */
  msgId: number;
  /** How delivery was established. */
  how: DeliveryKind;
}

/**
 * The client went too long without a connection (`giveUpAfterMs`); every message not yet
 * delivered is rejected with it, and so is every later `send`.
 *
 * @example
 * ```ts
 * declare const client: ReliableClient;
 * try {
 *   await client.send("orders", "42");
 * } catch (e) {
 *   if (e instanceof GiveUpError) console.error(`gave up: ${e.message}`);
 * }
 * ```
 */
export class GiveUpError extends Error {
  /** `afterMs`: how long the client went without a connection; `cause`: the last failure. */
  constructor(afterMs: number, cause: unknown) {
    super(
      `Gave up after ${afterMs} ms without a connection` +
        (cause instanceof Error ? `: ${cause.message}` : ""),
      { cause },
    );
    this.name = "GiveUpError";
  }
}

/**
 * After a reconnect the server said it holds no record of the session (WELCOME `session_state`
 * unknown): it forgot it (past MAX_SESSIONS, or a restart that could not recover it). A message
 * sent before and never acknowledged may or may not have been stored, and resending it could store
 * it twice, so with `onSessionLost: "reject"` (the default) each such message is rejected with
 * this error instead, naming it; messages not yet sent go on as usual.
 *
 * @example
 * ```ts
 * declare const client: ReliableClient;
 * try {
 *   await client.send("orders", "42");
 * } catch (e) {
 *   if (e instanceof SessionLostError) console.error(`msg ${e.msgId}: fate unknown`);
 * }
 * ```
 */
export class SessionLostError extends Error {
  /** The message whose fate is unknown. */
  readonly msgId: number;
  /** `session` is the session the server forgot. */
  constructor(msgId: number, session: bigint) {
    super(
      `Message ${msgId} may or may not have been stored: the server no longer knows session ` +
        `${session} (forgotten past MAX_SESSIONS, or lost in a restart), so it cannot say`,
    );
    this.name = "SessionLostError";
    this.msgId = msgId;
  }
}

/**
 * `send` after `close()` or `abort()`, or a message still pending when `abort()` was called.
 *
 * @example
 * ```ts
 * declare const client: ReliableClient;
 * client.abort();
 * await client.send("orders", "42").catch((e) => e instanceof ClientClosedError); // true
 * ```
 */
export class ClientClosedError extends Error {
  /** `message` says what was refused. */
  constructor(message: string) {
    super(message);
    this.name = "ClientClosedError";
  }
}

/**
 * Counters of a {@linkcode ReliableClient}, for logs and tests.
 *
 * @example
 * ```ts
 * declare const client: ReliableClient;
 * const { connects, resent } = client.stats;
 * ```
 */
export interface ReliableStats {
  /** Connections established (WELCOME received). */
  connects: number;
  /** Messages sent again on a later connection. */
  resent: number;
  /** Messages delivered by ACK. */
  acked: number;
  /** Messages delivered by WELCOME.last_msg_id. */
  resumed: number;
  /** Messages delivered by NACK 3. */
  duplicates: number;
  /** Messages refused (NACK 1, 2 or 4, or refused locally for the same reasons). */
  refused: number;
  /** Reconnects after which the server no longer knew the session (see SessionLostError). */
  sessionsLost: number;
  /** Messages rejected with SessionLostError: they may or may not have been stored. */
  uncertain: number;
  /** Connections made to another address than the connection before (several `servers`). */
  failovers: number;
}

interface Entry {
  readonly msgId: number;
  readonly name: Uint8Array;
  readonly payload: Uint8Array;
  readonly resolve: (d: Delivery) => void;
  readonly reject: (e: Error) => void;
  /** Whether it was already sent on an earlier connection. */
  sent: boolean;
  done: boolean;
}

/** A `send` waiting for the first connection (option `resume`). */
interface Parked {
  readonly name: Uint8Array;
  readonly payload: Uint8Array;
  readonly resolve: (d: Delivery) => void;
  readonly reject: (e: Error) => void;
}

/** ERROR codes after which reconnecting cannot help: protocol, version, authentication. */
const FATAL_ERRORS: ReadonlySet<number> = new Set([
  ErrorCode.PROTOCOL_VIOLATION,
  ErrorCode.UNSUPPORTED_VERSION,
  ErrorCode.AUTH_FAILED,
]);
const encoder = new TextEncoder();

function toBytes(value: string | Uint8Array): Uint8Array {
  return typeof value === "string" ? encoder.encode(value) : value.slice();
}

/**
 * A producer that survives connection loss and server restarts; see the module documentation.
 *
 * Messages are delivered in the order `send` was called; each `send` resolves with a
 * {@linkcode Delivery} once the server has the message, or rejects with {@linkcode NackError}
 * (code 1 payload too large, 2 bad name, 4 storage error: not retried), with
 * {@linkcode GiveUpError}, with the {@linkcode ConnectionError} of a fatal server ERROR (1, 2
 * or 3, after which the client stops), or with {@linkcode ClientClosedError}.
 *
 * Only `acked` carries the ACK_MODE guarantee. `resumed` and `duplicate` rest on the server's
 * session table, which counts a message once it is accepted (queued), before it is written: such
 * a message is lost if the server dies before writing it, and a NACK 4 (storage error) lost with
 * its connection cannot be told from a delivery. Bad names and oversized payloads are refused
 * here, before sending, so their NACKs cannot be lost that way.
 *
 * @example
 * ```ts
 * const client = new ReliableClient({ port: 9000, clientId: 7, maxInFlight: 1000 });
 * for (let i = 0; i < 100; i++) client.send("events", `event ${i}`);
 * await client.close(); // waits until all 100 are delivered (or the client gives up)
 * ```
 */
export class ReliableClient {
  /** The session id used on every connection. */
  readonly session: bigint;
  /** The client_id sent in HELLO. */
  readonly clientId: number;
  /** Counters. */
  readonly stats: ReliableStats = {
    connects: 0,
    resent: 0,
    acked: 0,
    resumed: 0,
    duplicates: 0,
    refused: 0,
    sessionsLost: 0,
    uncertain: 0,
    failovers: 0,
  };

  readonly #options: ReliableOptions;
  readonly #rotation: Rotation;
  readonly #giveUpAfter: number;
  readonly #maxInFlight: number;
  readonly #connectTimeout: number;

  /** Admitted messages not yet delivered or refused, in msg_id order. */
  readonly #unacked = new Map<number, Entry>();
  /** Messages waiting for room under maxInFlight, in msg_id order. */
  #waiting: Entry[] = [];
  #waitingHead = 0;
  /** Admitted messages not yet sent on the current connection, in msg_id order. */
  #toSend: Entry[] = [];
  #toSendHead = 0;
  #draining = false;
  /**
   * With `resume`, until the first connection: the sends waiting for it to learn where numbering
   * starts, in call order. Null otherwise.
   */
  #parked: Parked[] | null;

  #client: MsgClient | null = null;
  /** Where the previous connection was, to count failovers; -1 before the first. */
  #lastServerIndex = -1;
  #welcome: Readonly<{ lastMsgId: number; sessionKnown: boolean | null }> | null = null;
  #nextId = 1;
  #maxSentId = 0;
  #failure: Error | null = null;
  #closing = false;
  #stopped = false;
  #wake: (() => void) | null = null;
  #idleWaiters: (() => void)[] = [];
  #readyWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  readonly #loop: Promise<void>;

  /**
   * Creates the client and starts connecting in the background; `send` may be called at once.
   * Throws `TypeError` when the options give both `servers` and `hostname`/`port`, or neither, or
   * a hostname that is not a non-empty string; `RangeError` for an empty `servers` or a port that
   * is not an integer from 1 to 65535.
   *
   * @example
   * ```ts
   * const client = new ReliableClient({ port: 9000, clientId: 1 });
   * const spread = new ReliableClient({ servers: [{ port: 9000 }, { port: 9001 }], clientId: 2 });
   * ```
   */
  constructor(options: ReliableOptions) {
    this.#options = options;
    this.#rotation = new Rotation(serverList(options), {
      initialDelayMs: options.initialDelayMs ?? 50,
      maxDelayMs: options.maxDelayMs ?? 2000,
      ...(options.random === undefined ? {} : { random: options.random }),
    });
    this.session = options.session ?? randomSession();
    this.clientId = options.clientId;
    this.#giveUpAfter = options.giveUpAfterMs ?? 30000;
    this.#maxInFlight = Math.max(1, options.maxInFlight ?? 10000);
    this.#connectTimeout = options.connectTimeoutMs ?? 5000;
    this.#parked = options.resume === true ? [] : null;
    this.#loop = this.#run();
  }

  /**
   * Creates a client and waits for its first connection; rejects (and stops the client) if it
   * gives up or the server refuses it for good.
   *
   * @example
   * ```ts
   * const client = await ReliableClient.connect({ port: 9000, clientId: 1 });
   * ```
   */
  static async connect(options: ReliableOptions): Promise<ReliableClient> {
    const client = new ReliableClient(options);
    try {
      await client.ready();
    } catch (e) {
      await client.close();
      throw e;
    }
    return client;
  }

  /**
   * Resolves once a connection is up (at once if one is); rejects if the client has stopped
   * for good.
   *
   * @example
   * ```ts
   * declare const client: ReliableClient;
   * await client.ready();
   * ```
   */
  ready(): Promise<void> {
    if (this.#client !== null) return Promise.resolve();
    if (this.#failure !== null) return Promise.reject(this.#failure);
    if (this.#stopped) return Promise.reject(new ClientClosedError("The client is closed"));
    return new Promise((resolve, reject) => this.#readyWaiters.push({ resolve, reject }));
  }

  /** True while a connection is up. */
  get connected(): boolean {
    return this.#client !== null;
  }

  /**
   * The address of the connection that is up (one of `servers`, or `hostname` and `port`), or
   * null while there is none.
   *
   * @example
   * ```ts
   * declare const client: ReliableClient;
   * const at = client.server; // { hostname: "10.0.0.2", port: 9000 } after a failover
   * ```
   */
  get server(): Server | null {
    return this.#client === null ? null : this.#rotation.current;
  }

  /**
   * What the latest connection's WELCOME said: the highest msg_id the server held for the
   * session, and whether it knew the session (null from a version 1 server). Null before the
   * first connection.
   *
   * @example
   * ```ts
   * const client = await ReliableClient.connect({
   *   port: 9000,
   *   clientId: 1,
   *   session: 77n,
   *   resume: true,
   * });
   * if (client.welcome?.sessionKnown === false) console.error("session 77 is new to the server");
   * ```
   */
  get welcome(): Readonly<{ lastMsgId: number; sessionKnown: boolean | null }> | null {
    return this.#welcome;
  }

  /** The msg_id the next `send` will get (with `resume`: known once the first connection is up). */
  get nextMsgId(): number {
    return this.#nextId;
  }

  /** Messages sent and not yet settled, counting those waiting for room or a first connection. */
  get pending(): number {
    return this.#unacked.size + this.#waiting.length - this.#waitingHead +
      (this.#parked?.length ?? 0);
  }

  /** Messages admitted under maxInFlight and not yet settled. */
  get inFlight(): number {
    return this.#unacked.size;
  }

  /**
   * Sends one message with the next msg_id; resolves once the server has it. See the class
   * documentation for how it can fail.
   *
   * @example
   * ```ts
   * declare const client: ReliableClient;
   * const { msgId } = await client.send("client_1", "hi");
   * ```
   */
  send(name: string | Uint8Array, payload: string | Uint8Array): Promise<Delivery> {
    if (this.#failure !== null) return Promise.reject(this.#failure);
    if (this.#closing || this.#stopped) {
      return Promise.reject(new ClientClosedError("Cannot send: the client is closing"));
    }
    const parked = this.#parked;
    if (parked !== null) {
      const nameBytes = toBytes(name);
      const payloadBytes = toBytes(payload);
      return new Promise((resolve, reject) =>
        parked.push({ name: nameBytes, payload: payloadBytes, resolve, reject })
      );
    }
    return this.#number(toBytes(name), toBytes(payload));
  }

  /** Gives a message the next msg_id and admits it, or queues it for room. */
  #number(nameBytes: Uint8Array, payloadBytes: Uint8Array): Promise<Delivery> {
    const msgId = this.#nextId++;
    const problem = nameProblem(nameBytes, 0, nameBytes.length);
    if (problem !== "") {
      this.stats.refused++;
      return Promise.reject(
        new NackError(msgId, NackCode.BAD_NAME, `bad name: ${problem} (checked by the client)`),
      );
    }
    return new Promise((resolve, reject) => {
      const entry: Entry = {
        msgId,
        name: nameBytes,
        payload: payloadBytes,
        resolve,
        reject,
        sent: false,
        done: false,
      };
      if (this.#waiting.length === this.#waitingHead && this.#unacked.size < this.#maxInFlight) {
        this.#admit(entry);
      } else {
        this.#waiting.push(entry);
      }
    });
  }

  /**
   * Waits until every message sent so far is delivered or refused (or the client gives up),
   * then closes the connection. Later `send` calls are rejected.
   *
   * @example
   * ```ts
   * declare const client: ReliableClient;
   * client.send("client_1", "last words");
   * await client.close();
   * ```
   */
  async close(): Promise<void> {
    this.#closing = true;
    if (this.pending > 0 && this.#failure === null) {
      await new Promise<void>((r) => this.#idleWaiters.push(r));
    }
    await this.#stop();
  }

  /**
   * Stops at once: every message not yet delivered is rejected with
   * {@linkcode ClientClosedError} and the connection is closed.
   *
   * @example
   * ```ts
   * declare const client: ReliableClient;
   * await client.abort();
   * ```
   */
  async abort(): Promise<void> {
    this.#closing = true;
    this.#rejectAll(new ClientClosedError("The client was aborted"));
    await this.#stop();
  }

  async #stop(): Promise<void> {
    this.#stopped = true;
    this.#wake?.();
    const client = this.#client;
    if (client !== null) await client.close();
    await this.#loop;
    for (const w of this.#readyWaiters.splice(0)) {
      w.reject(this.#failure ?? new ClientClosedError("The client is closed"));
    }
  }

  #admit(entry: Entry): void {
    this.#unacked.set(entry.msgId, entry);
    this.#toSend.push(entry);
    if (this.#client !== null) this.#drain();
  }

  /** Sends, in msg_id order, every admitted message not yet sent on the current connection. */
  #drain(): void {
    if (this.#draining) return;
    this.#draining = true;
    try {
      while (this.#client !== null && this.#toSendHead < this.#toSend.length) {
        const entry = this.#toSend[this.#toSendHead++]!;
        if (!entry.done) this.#transmit(entry, this.#client);
      }
      if (this.#toSendHead === this.#toSend.length) {
        this.#toSend = [];
        this.#toSendHead = 0;
      }
    } finally {
      this.#draining = false;
    }
  }

  #transmit(entry: Entry, client: MsgClient): void {
    if (entry.payload.length > client.maxMessageBytes) {
      this.#refuse(
        entry,
        new NackError(
          entry.msgId,
          NackCode.PAYLOAD_TOO_LARGE,
          `payload too large: ${entry.payload.length} bytes, at most ${client.maxMessageBytes}` +
            " (checked by the client)",
        ),
      );
      return;
    }
    if (entry.sent) this.stats.resent++;
    entry.sent = true;
    if (entry.msgId > this.#maxSentId) this.#maxSentId = entry.msgId;
    client.send(entry.name, entry.payload, entry.msgId).then(
      () => this.#deliver(entry, "acked"),
      (e: unknown) => {
        if (e instanceof NackError) {
          if (e.code === NackCode.DUPLICATE) this.#deliver(entry, "duplicate");
          else this.#refuse(entry, e);
        }
        // A ConnectionError leaves the message unacked: it is resent after the reconnect.
      },
    );
  }

  #deliver(entry: Entry, how: DeliveryKind): void {
    if (entry.done) return;
    entry.done = true;
    this.#unacked.delete(entry.msgId);
    this.stats[how === "duplicate" ? "duplicates" : how]++;
    entry.resolve({ msgId: entry.msgId, how });
    this.#settled();
  }

  #refuse(entry: Entry, error: Error, counted = true): void {
    if (entry.done) return;
    entry.done = true;
    this.#unacked.delete(entry.msgId);
    if (counted) this.stats.refused++;
    entry.reject(error);
    this.#settled();
  }

  /** After a message settles: lets waiting messages in, and wakes `close()` when all are done. */
  #settled(): void {
    while (this.#waitingHead < this.#waiting.length && this.#unacked.size < this.#maxInFlight) {
      const next = this.#waiting[this.#waitingHead++]!;
      if (!next.done) this.#admit(next);
    }
    if (this.#waitingHead === this.#waiting.length) {
      this.#waiting = [];
      this.#waitingHead = 0;
    }
    if (this.pending === 0) { for (const w of this.#idleWaiters.splice(0)) w(); }
  }

  #rejectAll(error: Error): void {
    const entries = [...this.#unacked.values(), ...this.#waiting.slice(this.#waitingHead)];
    this.#unacked.clear();
    this.#waiting = [];
    this.#waitingHead = 0;
    this.#toSend = [];
    this.#toSendHead = 0;
    for (const entry of entries) {
      if (entry.done) continue;
      entry.done = true;
      entry.reject(error);
    }
    for (const parked of this.#parked?.splice(0) ?? []) parked.reject(error);
    for (const w of this.#idleWaiters.splice(0)) w();
  }

  /** Stops for good: rejects everything pending and every later `send` with `error`. */
  #fail(error: Error): void {
    this.#failure = error;
    this.#rejectAll(error);
    for (const w of this.#readyWaiters.splice(0)) w.reject(error);
  }

  /** Connects, and reconnects after every loss, until stopped or given up. */
  async #run(): Promise<void> {
    const rotation = this.#rotation;
    /** Null: the next attempt goes at once; else the backoff to sleep first. */
    let wait: number | null = null;
    let outageStart = performance.now();
    let lastError: unknown = null;
    while (!this.#stopped) {
      if (wait !== null) {
        const left = outageStart + this.#giveUpAfter - performance.now();
        await this.#sleep(Math.max(0, Math.min(left, wait)));
        if (this.#stopped) return;
      }
      const left = outageStart + this.#giveUpAfter - performance.now();
      if (left <= 0) {
        this.#fail(new GiveUpError(this.#giveUpAfter, lastError));
        return;
      }
      let client: MsgClient | null;
      try {
        client = await this.#connectOnce(rotation.current, Math.min(left, this.#connectTimeout));
      } catch (e) {
        if (e instanceof ConnectionError && FATAL_ERRORS.has(e.code)) {
          this.#fail(e);
          return;
        }
        lastError = e;
        wait = rotation.failed();
        continue;
      }
      if (client === null) return; // stopped while connecting
      // With `resume`, the first connection says where this client's numbering starts.
      if (this.#parked === null && client.lastMsgId > this.#maxSentId) {
        // The server holds ids this client never sent: someone else uses the session. Going on
        // would have new messages refused as duplicates and counted as delivered.
        await client.close();
        this.#fail(
          new ConnectionError(
            0,
            `session ${this.session} conflict: the server holds msg_id ${client.lastMsgId}, ` +
              `this client sent at most ${this.#maxSentId}`,
          ),
        );
        return;
      }
      rotation.connected();
      this.#attach(client);
      const reason = await client.closed;
      this.#client = null;
      this.#toSend = [];
      this.#toSendHead = 0;
      if (reason === null || this.#stopped) return;
      if (FATAL_ERRORS.has(reason.code)) {
        this.#fail(reason);
        return;
      }
      lastError = reason;
      outageStart = performance.now();
      wait = rotation.lost();
    }
  }

  /** Starts using a fresh connection: settles what it already holds, resends the rest. */
  #attach(client: MsgClient): void {
    this.stats.connects++;
    const index = this.#rotation.index;
    if (this.#lastServerIndex !== -1 && this.#lastServerIndex !== index) this.stats.failovers++;
    this.#lastServerIndex = index;
    this.#welcome = { lastMsgId: client.lastMsgId, sessionKnown: client.sessionKnown };
    const parked = this.#parked;
    if (parked !== null) {
      this.#parked = null;
      this.#nextId = client.lastMsgId + 1;
      this.#maxSentId = client.lastMsgId;
      for (const p of parked) this.#number(p.name, p.payload).then(p.resolve, p.reject);
    }
    // The server holds no record of a session this client has already sent in: whatever was
    // sent and not acknowledged may or may not be stored. (A version 1 server cannot say.)
    if (client.sessionKnown === false && this.#maxSentId > 0) {
      this.stats.sessionsLost++;
      if ((this.#options.onSessionLost ?? "reject") === "reject") {
        for (const entry of [...this.#unacked.values()]) {
          if (!entry.sent) continue;
          this.stats.uncertain++;
          this.#refuse(entry, new SessionLostError(entry.msgId, this.session), false);
        }
      }
    }
    const held = client.lastMsgId;
    for (const entry of [...this.#unacked.values()]) {
      if (entry.msgId > held) break;
      this.#deliver(entry, "resumed");
    }
    // Everything still unacked, including what the deliveries above let in, in msg_id order.
    this.#toSend = [...this.#unacked.values()];
    this.#toSendHead = 0;
    this.#client = client;
    this.#drain();
    for (const w of this.#readyWaiters.splice(0)) w.resolve();
  }

  /** One connection attempt, bounded by `timeoutMs`; null if the client stopped meanwhile. */
  async #connectOnce(server: Server, timeoutMs: number): Promise<MsgClient | null> {
    const options = this.#options;
    const attempt = MsgClient.connect({
      hostname: server.hostname,
      port: server.port,
      clientId: options.clientId,
      session: this.session,
      ...(options.token === undefined ? {} : { token: options.token }),
      ...(options.tls === undefined ? {} : { tls: options.tls }),
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((r) =>
      timer = setTimeout(() => r("timeout"), timeoutMs)
    );
    const stop = new Promise<"stop">((r) => this.#wake = () => r("stop"));
    try {
      const won = await Promise.race([attempt, timeout, stop]);
      if (won === "timeout") {
        attempt.then((c) => c.close(), () => {});
        throw new ConnectionError(0, `no WELCOME within ${timeoutMs} ms`);
      }
      if (won === "stop") {
        const late = await Promise.race([attempt.catch(() => null), timeout]);
        if (late === "timeout") attempt.then((c) => c.close(), () => {});
        else if (late !== null) await late.close();
        return null;
      }
      return won;
    } finally {
      clearTimeout(timer);
      this.#wake = null;
    }
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#wake = null;
        resolve();
      }, ms);
      this.#wake = () => {
        clearTimeout(timer);
        this.#wake = null;
        resolve();
      };
    });
  }
}
