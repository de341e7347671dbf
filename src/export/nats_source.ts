/**
 * The exporter's source over NATS JetStream: a durable pull consumer for the stream in order, and
 * the stream leader's message get (`STREAM.MSG.GET`, never a direct get, which a lagging replica
 * may answer) for a sequence it did not deliver.
 *
 * A consumer reads the replica it lives on, which may disagree with the stream's leader after a
 * crash: each batch is checked against the leader ({@linkcode checkAgainstLeader}), and one that
 * differs is read from the leader instead, the consumer made again after it.
 *
 * The consumer (AckAll: acknowledging the last message of a written batch acknowledges every one
 * before it) is only a cursor: the output's resume point is the truth. At start, a consumer that
 * would not deliver exactly the next sequence, owing nothing (its last delivered sequence is the
 * output's, none unacknowledged, no pull request of a killed run still waiting), is deleted and
 * made again to start there. So a kill -9 at any moment costs nothing but the batch in flight.
 *
 * Fetches are sized from what the consumer says is pending (each message carries the count
 * after it): at most {@linkcode FETCH_MAX_MESSAGES} messages or about
 * {@linkcode FETCH_TARGET_BYTES}, so a fetch ends as soon as its messages are in instead of
 * waiting out its expiry, and one is in flight while the exporter writes the one before. With
 * nothing pending, one waits up to {@linkcode IDLE_WAIT_MS} for a single message.
 *
 * A failing operation is retried until NATS has failed for NATS_TIMEOUT_MS in a row (counted
 * from the moment the connection was lost, when it was); then it rejects with an
 * {@linkcode ExportError} ("nats"). A fetch is cut short when the connection has been lost that
 * long, or when its answer is NATS_TIMEOUT_MS late (nats.js stops watching a fetch's heartbeats
 * while disconnected, so it would otherwise wait for ever). A consumer deleted under it is made
 * again after the last committed sequence.
 *
 * (Over 400 lines: the consumer's alignment, the sized fetches and the retry rules are one piece;
 * apart, each would only make sense beside the others.)
 *
 * @module
 */

import type { NatsConnection } from "@nats-io/transport-node";
import {
  AckPolicy,
  type Consumer,
  type ConsumerConfig,
  type ConsumerInfo,
  type ConsumerMessages,
  DeliverPolicy,
  jetstream,
  JetStreamApiError,
  type JetStreamManager,
  jetstreamManager,
  type JsMsg,
  type StoredMsg,
} from "@nats-io/jetstream";
import { delay } from "../io/within.ts";
import type { Logger } from "../log.ts";
import { lastIdOf } from "../store/jetstream_layout.ts";
import {
  expectedOf,
  ExportError,
  recordsOf,
  type SourceMessage,
  type StreamSource,
} from "./source.ts";

/** Most messages asked for in one fetch. */
export const FETCH_MAX_MESSAGES = 4096;
/** About the most bytes asked for in one fetch (from the average message size so far). */
export const FETCH_TARGET_BYTES = 8 * 1024 * 1024;
/** The consumer's limit of unacknowledged messages: room for two full fetches and more. */
export const MAX_ACK_PENDING = 4 * FETCH_MAX_MESSAGES;
/** Longest wait for one message when none is pending (less when NATS_TIMEOUT_MS is). */
export const IDLE_WAIT_MS = 5000;
/** The pause after a batch the stream's leader holds none of (see `#rewind`). */
const REWIND_WAIT_MS = 1000;
/** The WARN of a rewind is logged at most this often. */
const REWIND_LOG_MS = 10_000;
/** How often a fetch in flight checks whether the connection has been lost too long. */
const WATCH_MS = 100;
/** The consumer's ack wait: a batch not acknowledged by then is delivered again. */
const ACK_WAIT_MS = 60_000;
/** nats.js refuses a fetch expiry under a second. */
const MIN_EXPIRES_MS = 1000;
const CONSUMER_NOT_FOUND = 10014;
const STREAM_NOT_FOUND = 10059;

/** What the exporter needs to know of the stream at start. */
export interface StreamFacts {
  name: string;
  /** Its creation time, as JetStream reports it. */
  created: string;
  /** Its first and last sequences (first is last + 1 when it holds none). */
  firstSeq: number;
  lastSeq: number;
  /** Its average message size in bytes (0 when it holds none). */
  averageBytes: number;
}

/** Options of {@linkcode NatsSource.open}. */
export interface NatsSourceOptions {
  /** The stream (NATS_STREAM). */
  stream: string;
  /** The durable consumer's name. */
  consumer: string;
  /** The last sequence the output holds: the consumer starts after it. */
  after: number;
  /** The last sequence to fetch (the end of an export without --follow); null for no end. */
  until: number | null;
  /** NATS_TIMEOUT_MS. */
  timeoutMs: number;
  log: Logger;
  /** The stream's average message size, to size the first fetch; 64 KiB when unknown. */
  averageBytes?: number;
}

function isApiError(e: unknown, code: number): boolean {
  return e instanceof JetStreamApiError && e.code === code;
}

/**
 * Reads the facts of `stream`, retrying until NATS has failed for `timeoutMs`. Rejects with an
 * {@linkcode ExportError} ("nats") when the stream does not exist or NATS keeps failing.
 *
 * Its first and last sequences come from the stream's leader (`STREAM.MSG.GET`, which only the
 * leader answers), not from `STREAM.INFO`: nats-server 2.9.10 lets a replica answer that from its
 * own copy while it sees no leader, and a replica back from a kill -9 may lag the stream or hold
 * messages the stream never took (see {@linkcode NatsSource}).
 *
 * @example
 * ```ts
 * import { jetstreamManager } from "@nats-io/jetstream";
 * import type { NatsConnection } from "@nats-io/transport-node";
 * import { Logger } from "../log.ts";
 *
 * declare const nc: NatsConnection;
 * const jsm = await jetstreamManager(nc);
 * const facts = await streamFacts(jsm, "MSGS", { timeoutMs: 5000, log: new Logger("info") });
 * console.log(facts.lastSeq);
 * ```
 */
export async function streamFacts(
  jsm: JetStreamManager,
  stream: string,
  options: { timeoutMs: number; log: Logger },
): Promise<StreamFacts> {
  const notFound = (e: unknown) => {
    if (isApiError(e, STREAM_NOT_FOUND)) {
      throw new ExportError("nats", `Cannot export stream "${stream}": it does not exist`);
    }
    throw e;
  };
  const info = await retrying(
    `read stream "${stream}"`,
    options,
    () => jsm.streams.info(stream).catch(notFound),
  );
  const [first, last] = await retrying(
    `read the first and last sequences of stream "${stream}" from its leader`,
    options,
    () =>
      Promise.all([
        // nats.js's type lacks next_by_subj, which nats-server 2.9 takes: the first message at
        // or after seq.
        jsm.streams.getMessage(stream, { seq: 1, next_by_subj: ">" } as unknown as { seq: number }),
        jsm.streams.getMessage(stream, { last_by_subj: ">" }),
      ]).catch(notFound),
  );
  const { messages, bytes } = info.state;
  // 2.9.10 finds no last message for ">" once the stream's last one was deleted (msgserver
  // deletes none): then STREAM.INFO's last sequence stands.
  const lastSeq = last?.seq ?? info.state.last_seq;
  return {
    name: stream,
    created: info.created,
    // No message at the leader: nothing to export, wherever the sequences stand.
    firstSeq: first === null ? lastSeq + 1 : first.seq,
    lastSeq,
    averageBytes: messages === 0 ? 0 : bytes / messages,
  };
}

/**
 * Runs `attempt` until it resolves; a failure is retried (with a short backoff) until failures
 * have lasted `timeoutMs`, then it rejects with an {@linkcode ExportError} ("nats") naming
 * `what`. An {@linkcode ExportError} from `attempt` is final at once.
 */
async function retrying<T>(
  what: string,
  options: {
    timeoutMs: number;
    log: Logger;
    closed?: () => boolean;
    /** When the connection was lost, if it is lost now: failures began no later. */
    lostSince?: () => number | null;
  },
  attempt: () => Promise<T>,
): Promise<T> {
  let since: number | null = null;
  for (let tries = 0;; tries++) {
    try {
      return await attempt();
    } catch (e) {
      if (e instanceof ExportError || options.closed?.() === true) throw e;
      const now = performance.now();
      since = Math.min(since ?? now, options.lostSince?.() ?? now);
      const message = (e as Error).message;
      if (now - since >= options.timeoutMs) {
        throw new ExportError(
          "nats",
          `Cannot ${what}: NATS has failed for ${Math.round(now - since)} ms ` +
            `(NATS_TIMEOUT_MS is ${options.timeoutMs}): ${message}`,
        );
      }
      options.log.throttled(`nats:${what}`, 1000, "warn", "NATS failed; retrying", {
        what,
        error: message,
      });
      await delay(Math.min(500, 25 * 2 ** tries, Math.max(1, since + options.timeoutMs - now)));
    }
  }
}

/** A message handed out by the source, and what acknowledges it (null: read from the leader). */
interface Delivered {
  message: SourceMessage;
  ack: JsMsg | null;
}

function sameMessage(a: SourceMessage, b: SourceMessage): boolean {
  if (a.seq !== b.seq || a.subject !== b.subject || a.data.length !== b.data.length) return false;
  for (let i = 0; i < a.data.length; i++) if (a.data[i] !== b.data[i]) return false;
  return true;
}

/**
 * Checks a delivered batch against the stream's leader: its first and last messages must be the
 * leader's at their sequences. Resolves with null when they are; else with the leader's messages
 * for every sequence of the batch's span, up to the first the leader does not hold.
 *
 * Why: a consumer reads the replica it lives on, and nats-server 2.9.10 can bring a stream leader
 * killed with SIGKILL back holding messages the cluster never took (its own proposals, applied at
 * restart): seen here as a restarted node at sequence 491 while the leader was at 483, and as an
 * export that held, at one sequence, a message whose publish had timed out instead of the acked
 * one the leader held there. Such a replica's messages start where the leader's differ and run
 * to its end, so a batch holding any of them has them first or last.
 *
 * @example
 * ```ts
 * import { checkAgainstLeader } from "./nats_source.ts";
 * import type { SourceMessage } from "./source.ts";
 *
 * const m = (seq: number, text: string): SourceMessage => ({
 *   seq,
 *   subject: "msgs.1.2",
 *   data: new TextEncoder().encode(text),
 *   last: null,
 *   records: 1,
 *   expected: null,
 * });
 * const leader = new Map([[1, m(1, "1 1 a x\n")], [2, m(2, "1 2 a y\n")]]);
 * const replaced = await checkAgainstLeader(
 *   [m(1, "1 1 a x\n"), m(2, "9 9 z z\n")],
 *   (seq) => Promise.resolve(leader.get(seq) ?? null),
 * );
 * console.log(replaced?.length); // 2: the leader's two messages
 * ```
 */
export async function checkAgainstLeader(
  batch: readonly SourceMessage[],
  leader: (seq: number) => Promise<SourceMessage | null>,
): Promise<SourceMessage[] | null> {
  const first = batch[0];
  const last = batch.at(-1);
  if (first === undefined || last === undefined) return null;
  const agrees = async (m: SourceMessage) => {
    const held = await leader(m.seq);
    return held !== null && sameMessage(held, m);
  };
  if (await agrees(first) && (last === first || await agrees(last))) return null;
  const replaced: SourceMessage[] = [];
  for (let seq = first.seq; seq <= last.seq; seq++) {
    const held = await leader(seq);
    if (held === null) break;
    replaced.push(held);
  }
  return replaced;
}

function toSource(m: JsMsg | StoredMsg, seq: number): SourceMessage {
  const headers = "headers" in m ? m.headers : m.header;
  const header = (name: string) => headers?.get(name) ?? "";
  return {
    seq,
    subject: m.subject,
    data: m.data,
    last: lastIdOf(header),
    records: recordsOf(header),
    expected: expectedOf(header),
  };
}

/**
 * A {@linkcode StreamSource} over a durable pull consumer of a JetStream stream. See the module
 * comment.
 *
 * @example
 * ```ts
 * import type { NatsConnection } from "@nats-io/transport-node";
 * import { Logger } from "../log.ts";
 *
 * declare const nc: NatsConnection;
 * const source = await NatsSource.open(nc, {
 *   stream: "MSGS",
 *   consumer: "msgserver-export-1",
 *   after: 0,
 *   until: null,
 *   timeoutMs: 5000,
 *   log: new Logger("info"),
 * });
 * const first = await source.next();
 * await source.close();
 * ```
 */
export class NatsSource implements StreamSource {
  readonly #nc: NatsConnection;
  readonly #jsm: JetStreamManager;
  readonly #options: NatsSourceOptions;
  #consumer: Consumer;
  /** Messages the consumer has said follow the last one delivered. */
  #pending: number;
  /** The highest sequence delivered so far (or the one started after). */
  #delivered: number;
  /** The last sequence committed. */
  #committed: number;
  #averageBytes: number;
  /** The messages handed out by the last `next`, for `commit` to acknowledge. */
  #handedOut: Delivered[] = [];
  /** The fetch in flight (the next batch), if any. */
  #inflight: Promise<Delivered[]> | null = null;
  #fetching: ConsumerMessages | null = null;
  #closed = false;
  /** When the connection was lost, while it is lost. */
  #lostAt: number | null = null;
  /** The connection's events (nats.js's iterator has a `stop`, which its type does not say). */
  readonly #status: AsyncIterable<{ type: string }> & { stop?: () => void };

  private constructor(
    nc: NatsConnection,
    jsm: JetStreamManager,
    consumer: Consumer,
    info: ConsumerInfo,
    options: NatsSourceOptions,
  ) {
    this.#nc = nc;
    this.#jsm = jsm;
    this.#consumer = consumer;
    this.#options = options;
    this.#pending = info.num_pending;
    this.#delivered = options.after;
    this.#committed = options.after;
    this.#averageBytes = options.averageBytes !== undefined && options.averageBytes > 0
      ? options.averageBytes
      : 64 * 1024;
    const status = nc.status();
    this.#status = status;
    (async () => {
      for await (const s of status) {
        if (s.type === "disconnect") this.#lostAt ??= performance.now();
        else if (s.type === "reconnect") this.#lostAt = null;
      }
    })();
  }

  /** The options of `retrying` for this source. */
  get #retry() {
    return {
      ...this.#options,
      closed: () => this.#closed,
      lostSince: () => this.#lostAt,
    };
  }

  /**
   * Opens the consumer `options.consumer` on `options.stream` so that it delivers next the
   * sequence after `options.after`, making it (again) when it would not (see the module comment).
   */
  static async open(nc: NatsConnection, options: NatsSourceOptions): Promise<NatsSource> {
    const jsm = await jetstreamManager(nc, { timeout: options.timeoutMs, checkAPI: false });
    const info = await NatsSource.#align(jsm, options, options.after);
    const consumer = await retrying(
      "open the consumer",
      options,
      () => jetstream(nc, { timeout: options.timeoutMs }).consumers.get(options.stream, info.name),
    );
    return new NatsSource(nc, jsm, consumer, info, options);
  }

  /** The configuration of a consumer that starts after `after`. */
  static #config(name: string, after: number): Partial<ConsumerConfig> {
    return {
      durable_name: name,
      ack_policy: AckPolicy.All,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: after + 1,
      ack_wait: ACK_WAIT_MS * 1_000_000,
      max_ack_pending: MAX_ACK_PENDING,
      max_deliver: -1,
      description: "msgserver export: its output's resume point is the truth, not this cursor",
    };
  }

  /** Whether `info` is a consumer of ours that delivers `after + 1` next and owes nothing. */
  static #fits(info: ConsumerInfo, after: number): boolean {
    const c = info.config;
    return c.ack_policy === AckPolicy.All &&
      (c.filter_subject ?? "") === "" &&
      (c.filter_subjects ?? []).length === 0 &&
      (c.max_ack_pending ?? 0) >= MAX_ACK_PENDING &&
      info.delivered.stream_seq === after &&
      info.num_ack_pending === 0 &&
      info.num_waiting === 0;
  }

  /** Makes the consumer deliver `after + 1` next: keeps it if it does, else makes it again. */
  static async #align(
    jsm: JetStreamManager,
    options: NatsSourceOptions,
    after: number,
  ): Promise<ConsumerInfo> {
    const { stream, consumer: name, log } = options;
    return await retrying(`open consumer "${name}" of stream "${stream}"`, options, async () => {
      let info: ConsumerInfo | null = null;
      try {
        info = await jsm.consumers.info(stream, name);
      } catch (e) {
        if (isApiError(e, STREAM_NOT_FOUND)) {
          throw new ExportError("nats", `Cannot export stream "${stream}": it does not exist`);
        }
        if (!isApiError(e, CONSUMER_NOT_FOUND)) throw e;
      }
      if (info !== null && NatsSource.#fits(info, after)) return info;
      if (info !== null) {
        log.info("consumer made again at the output's resume point", {
          consumer: name,
          delivered: info.delivered.stream_seq,
          unacknowledged: info.num_ack_pending,
          waiting: info.num_waiting,
          start: after + 1,
        });
        await jsm.consumers.delete(stream, name);
      }
      return await jsm.consumers.add(stream, NatsSource.#config(name, after));
    });
  }

  /**
   * One fetch, sized from what is pending, checked against the stream's leader
   * ({@linkcode checkAgainstLeader}); resolves with the messages to hand out.
   */
  async #fetchOnce(): Promise<Delivered[]> {
    const { until, timeoutMs } = this.#options;
    const left = until === null ? Infinity : until - this.#delivered;
    let size = 1;
    let expires = Math.max(MIN_EXPIRES_MS, Math.min(IDLE_WAIT_MS, timeoutMs));
    if (this.#pending > 0 && left > 0) {
      size = Math.max(
        1,
        Math.min(
          this.#pending,
          left,
          FETCH_MAX_MESSAGES,
          Math.floor(FETCH_TARGET_BYTES / this.#averageBytes),
        ),
      );
      expires = Math.max(MIN_EXPIRES_MS, timeoutMs);
    }
    const fetching = await this.#consumer.fetch({ max_messages: size, expires });
    this.#fetching = fetching;
    const late = performance.now() + expires + timeoutMs;
    const watch = setInterval(() => {
      const now = performance.now();
      if (this.#lostAt !== null && now - this.#lostAt >= timeoutMs) {
        fetching.stop(new Error(`connection lost ${Math.round(now - this.#lostAt)} ms ago`));
      } else if (now > late) {
        fetching.stop(new Error(`no answer to a fetch within ${expires + timeoutMs} ms`));
      }
    }, WATCH_MS);
    const got: { seq: number; msg: JsMsg }[] = [];
    let bytes = 0;
    try {
      for await (const msg of fetching) {
        got.push({ seq: msg.seq, msg });
        bytes += msg.data.length;
      }
    } catch (e) {
      // What came before the failure was delivered: hand it out; the next fetch meets the failure.
      if (got.length === 0) throw e;
    } finally {
      clearInterval(watch);
      this.#fetching = null;
    }
    const last = got.at(-1);
    if (last === undefined) return [];
    const before = this.#delivered;
    this.#pending = last.msg.info.pending;
    for (const { seq } of got) if (seq > this.#delivered) this.#delivered = seq;
    this.#averageBytes = Math.max(1, bytes / got.length);
    const delivered = got.map(({ seq, msg }) => ({ message: toSource(msg, seq), ack: msg }));
    const replaced = await checkAgainstLeader(
      delivered.map((d) => d.message),
      (seq) => this.get(seq),
    );
    if (replaced === null) return delivered;
    await this.#rewind(before, got[0]!.seq, last.seq, replaced);
    return replaced.map((message) => ({ message, ack: null }));
  }

  /**
   * The consumer delivered `from` to `to` from a replica that disagrees with the stream's leader;
   * `replaced` are the leader's messages handed out instead: the consumer is made again after the
   * last of them (after `before` when there are none), so that it delivers nothing twice or
   * wrongly. With none, it waits a little: the replica is repaired when the stream takes more.
   */
  async #rewind(
    before: number,
    from: number,
    to: number,
    replaced: SourceMessage[],
  ): Promise<void> {
    const after = replaced.at(-1)?.seq ?? before;
    const { log, stream, consumer, timeoutMs } = this.#options;
    log.throttled(
      "nats:rewind",
      REWIND_LOG_MS,
      "warn",
      "the consumer's replica disagrees with the stream leader: read from the leader instead",
      { consumer, from, to, read: replaced.length, start: after + 1 },
    );
    this.#delivered = after;
    // It has delivered past `after`, so it does not fit: #align makes it again.
    const info = await NatsSource.#align(this.#jsm, this.#options, after);
    this.#pending = info.num_pending;
    this.#consumer = await retrying(
      `open consumer "${consumer}" of stream "${stream}"`,
      this.#retry,
      () => jetstream(this.#nc, { timeout: timeoutMs }).consumers.get(stream, info.name),
    );
    // Nothing the leader holds: the replica is repaired when the stream takes more; each try
    // makes the consumer again (a proposal to the cluster), so not often.
    if (replaced.length === 0) await delay(REWIND_WAIT_MS);
  }

  /** A fetch, retried until NATS has failed for NATS_TIMEOUT_MS; a lost consumer is made again. */
  #fetch(): Promise<Delivered[]> {
    const { stream, consumer, log } = this.#options;
    return retrying(
      `fetch from consumer "${consumer}" of stream "${stream}"`,
      this.#retry,
      async () => {
        try {
          return await this.#fetchOnce();
        } catch (e) {
          if (this.#closed) return [];
          if (this.#lostAt !== null) throw e;
          // The consumer may be gone (deleted by someone, or lost with its server): check.
          let exists = true;
          try {
            await this.#jsm.consumers.info(stream, consumer);
          } catch (infoError) {
            if (isApiError(infoError, STREAM_NOT_FOUND)) {
              throw new ExportError("nats", `Cannot export stream "${stream}": it was deleted`);
            }
            exists = !isApiError(infoError, CONSUMER_NOT_FOUND);
          }
          if (!exists) {
            log.warn("consumer lost; made again after the last sequence written", {
              consumer,
              start: this.#committed + 1,
            });
            const info = await NatsSource.#align(this.#jsm, this.#options, this.#committed);
            this.#consumer = await jetstream(this.#nc, { timeout: this.#options.timeoutMs })
              .consumers.get(stream, info.name);
            this.#pending = info.num_pending;
            this.#delivered = this.#committed;
            this.#handedOut = [];
          }
          throw e;
        }
      },
    );
  }

  /** Whether to start the next fetch at once: something is pending, short of the end. */
  #more(): boolean {
    const { until } = this.#options;
    return this.#pending > 0 && (until === null || this.#delivered < until);
  }

  async next(): Promise<SourceMessage[]> {
    if (this.#closed) return [];
    let got;
    try {
      got = await (this.#inflight ?? this.#fetch());
    } finally {
      this.#inflight = null;
    }
    if (got.length > 0 && this.#more() && !this.#closed) {
      this.#inflight = this.#fetch();
      this.#inflight.catch(() => {}); // met by the next call of next()
    }
    this.#handedOut = got;
    return got.map((d) => d.message);
  }

  async get(seq: number): Promise<SourceMessage | null> {
    const { stream } = this.#options;
    const stored = await retrying(
      `read sequence ${seq} of stream "${stream}"`,
      this.#retry,
      () => this.#jsm.streams.getMessage(stream, { seq }),
    );
    return stored === null ? null : toSource(stored, stored.seq);
  }

  commit(seq: number): void {
    if (seq > this.#committed) this.#committed = seq;
    for (let i = this.#handedOut.length - 1; i >= 0; i--) {
      const { message, ack } = this.#handedOut[i]!;
      if (ack !== null && message.seq <= seq) {
        ack.ack();
        break;
      }
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#status.stop?.();
    this.#fetching?.stop();
    await this.#inflight?.catch(() => {});
    try {
      await this.#nc.flush();
    } catch {
      // the connection is gone: the resume point is the truth, the acks were a courtesy
    }
  }
}
