/**
 * STORE=jetstream: batches go to a replicated NATS JetStream stream instead of FILE_NAME. The
 * writer hands over a batch as for the file; this store publishes one message per session (the
 * layout is `jetstream_layout.ts`), all at once, and the batch counts as kept once every message
 * has its PubAck: JetStream sends one only when a quorum of the stream's replicas holds it.
 *
 * Exactly once, whatever node a session is on: each session message carries
 * `Nats-Expected-Last-Subject-Sequence`, the sequence of the last message this node saw on the
 * session's subject, so two nodes can never both append to one session; a node whose expectation
 * is stale (the session moved to another node and back) reads where the session stands, drops the
 * records already there (they are acked all the same) and publishes the rest. A publish that timed
 * out may still have been stored: it is sent again with the same `Nats-Msg-Id`, and JetStream's
 * duplicate window turns the second into a no-op.
 *
 * @module
 */

import { headers, type MsgHdrs, type NatsConnection } from "@nats-io/transport-node";
import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { concat } from "../io/concat.ts";
import type { Logger } from "../log.ts";
import type { RecordSource } from "../server/entry.ts";
import { BucketHistogram, LATENCY_BOUNDS, type Metric } from "../server/metrics.ts";
import {
  Header,
  lastIdOf,
  legacySubject,
  lineMsgId,
  linesAbove,
  sessionMsgId,
  sessionSubject,
} from "./jetstream_layout.ts";
import { type PubAck, Publisher, PublishError, WRONG_LAST_SEQUENCE } from "./publisher.ts";
import {
  type Batch,
  type BatchRun,
  PartialAppendError,
  type Store,
  type StoreStats,
} from "./store.ts";

/** Options of {@linkcode JetStreamStore.open}. */
export interface JetStreamStoreOptions {
  /** NATS_STREAM. */
  stream: string;
  /** NATS_SUBJECT: the prefix of every subject published. */
  subject: string;
  /** NATS_TIMEOUT_MS: longest wait for a PubAck or a lookup. */
  timeoutMs: number;
  /** Sessions whose last sequence is kept (MAX_SESSIONS); others are looked up again. */
  maxSessions: number;
  /** The largest message the NATS server takes (its `max_payload`), less room for headers. */
  maxMessageBytes: number;
  log: Logger;
}

/** One message of a batch: a session's lines, or those of a subject without a session. */
interface Part {
  subject: string;
  /** The runs whose lines it carries. */
  runs: BatchRun[];
  /** Their lines, a view into the batch each. */
  slices: Uint8Array[];
  /** The session's source, or null for a subject without a session. */
  source: RecordSource | null;
  /** The message id (for a session, computed from the ids it carries when published). */
  msgId: string;
}

/** Where a session's subject stands, as this node last saw it. */
interface SessionState {
  /** The stream sequence of the last message on the subject (0: none; UNKNOWN_SEQ: unknown). */
  seq: number;
  /** The last msg_id stored in the session (0: none). */
  last: number;
  /** The first msg_id this node failed to store since the last lookup (Infinity: none). */
  refusedFrom: number;
}

/** A session's state when its lookup failed: the next attempt looks it up first. */
const UNKNOWN_SEQ = -1;

/**
 * Batches the writer may have with the stream at once (see `JetStreamStore.pipeline`): 1. Two gave
 * R3 296,000 against 254,000 acked msg/s (docs/benchmarks.md), and a failed message holds its
 * subject's later ones back (`#held`); but one CI run of four with two lost an acked record in the
 * NATS-down test (cluster_faults_test.ts, client 7 msg_id 2639), cause not yet found: one at a
 * time until it is.
 */
const PIPELINE = 1;
const ignore = () => {};
/** How many times a stale expectation is corrected within one append before it fails. */
const CORRECTIONS = 3;
const LF = 0x0a;

/**
 * The JetStream stream as a {@linkcode Store}.
 *
 * @example
 * ```ts
 * import { JetStreamStore } from "./jetstream_store.ts";
 * import { connect } from "@nats-io/transport-node";
 * import { Logger } from "../log.ts";
 * const nc = await connect({ servers: "nats://127.0.0.1:4222" });
 * const store = await JetStreamStore.open(nc, {
 *   stream: "MSGS",
 *   subject: "msgs",
 *   timeoutMs: 5000,
 *   maxSessions: 100_000,
 *   maxMessageBytes: 8 * 1024 * 1024,
 *   log: new Logger("info"),
 * });
 * await store.close(); // closes `nc` too
 * ```
 */
export class JetStreamStore implements Store {
  readonly name: string;
  /** A stream has no file to rotate: always 0. */
  readonly size = 0;
  readonly stats: StoreStats = {
    writeSeconds: new BucketHistogram(LATENCY_BOUNDS),
    syncSeconds: new BucketHistogram(LATENCY_BOUNDS),
  };
  readonly maxBatchBytes: number;
  /** Every msgserver node of a cluster appends to the stream. */
  readonly shared = true;
  /**
   * Every batch waits for its PubAcks, so the batch size sets the pace: at R3, 65,536 (and so
   * the writer's 4 MiB) gave 304,314 to 329,092 acked msg/s on a quiet 2-core machine against
   * 232,646 to 252,472 with MSG_PER_WRITE's 4,096, one batch in flight (docs/benchmarks.md).
   */
  readonly maxBatchRecords = 65_536;
  /**
   * Batches with the stream at once (see `PIPELINE`). With more than one, the next batch gathers
   * and goes while one waits for its PubAcks, and a subject's messages still go one after another
   * (`#inOrder`).
   */
  readonly pipeline = PIPELINE;

  readonly #nc: NatsConnection;
  readonly #jsm: JetStreamManager;
  readonly #publisher: Publisher;
  readonly #opts: JetStreamStoreOptions;
  /** Where each session this node has published to or looked up stands, least recent first. */
  readonly #states = new Map<string, SessionState>();
  /** Message ids of the parts without a session, kept per batch so that a retry reuses them. */
  readonly #ids = new WeakMap<Batch, string>();
  /** Told apart from other nodes' ids, for the parts without a session. */
  readonly #node = crypto.randomUUID().slice(0, 8);
  #batches = 0;
  /**
   * Per subject, the publish (with its corrections) of the latest batch that has one: the next
   * batch's message for the subject waits for it, since it carries the sequence that one gets.
   */
  readonly #tails = new Map<string, Promise<void>>();
  /**
   * Per subject, the batches whose message for it failed or was held back, and is neither stored
   * nor given up: a message goes only when no earlier batch of its subject is among them, so that
   * a failed one's retry never lands after a later one, nor reads its msg_ids as its own stored.
   */
  readonly #held = new Map<string, Set<Batch>>();
  /** Each batch's place in the order the writer handed them over. */
  readonly #numbers = new WeakMap<Batch, number>();
  #handed = 0;
  /** Seconds from publish to PubAck, per message. */
  readonly #publishSeconds = new BucketHistogram(LATENCY_BOUNDS);

  private constructor(nc: NatsConnection, jsm: JetStreamManager, options: JetStreamStoreOptions) {
    this.#nc = nc;
    this.#jsm = jsm;
    this.#opts = options;
    this.#publisher = new Publisher(nc, options.timeoutMs);
    this.name = `NATS stream ${options.stream}`;
    this.maxBatchBytes = options.maxMessageBytes;
  }

  /**
   * Uses the stream `options.stream` through `nc`, which must exist (see `ensureStream`); the
   * store owns `nc` from now on and closes it with itself.
   */
  static async open(nc: NatsConnection, options: JetStreamStoreOptions): Promise<JetStreamStore> {
    const jsm = await jetstreamManager(nc, { timeout: options.timeoutMs });
    return new JetStreamStore(nc, jsm, options);
  }

  async append(batch: Batch): Promise<void> {
    let number = this.#numbers.get(batch);
    if (number === undefined) this.#numbers.set(batch, number = ++this.#handed);
    const parts = this.#partsOf(batch);
    const t0 = performance.now();
    const stored = new Set<BatchRun>();
    const failures: Error[] = [];
    await Promise.all(parts.map(async (part) => {
      try {
        await this.#inOrder(part, batch, number);
        for (const run of part.runs) stored.add(run);
      } catch (e) {
        failures.push(e as Error);
      }
    }));
    this.stats.writeSeconds.observe((performance.now() - t0) / 1000);
    if (failures.length > 0) {
      const first = failures[0]!;
      const message = `${failures.length} of ${parts.length} messages not stored: ${first.message}`;
      if (stored.size === 0) throw new Error(message, { cause: first });
      throw new PartialAppendError(message, stored, { cause: first });
    }
  }

  /** Splits a batch into its messages: one per session, one per subject without a session. */
  #partsOf(batch: Batch): Part[] {
    const bySource = new Map<RecordSource, Part>();
    const bySubject = new Map<string, Part>();
    const parts: Part[] = [];
    let base = this.#ids.get(batch);
    if (base === undefined) {
      base = `${this.#node}.${++this.#batches}`;
      this.#ids.set(batch, base);
    }
    for (const run of batch.runs) {
      const source = run.source;
      if (source.session !== 0n) {
        let part = bySource.get(source);
        if (part === undefined) {
          part = {
            subject: sessionSubject(this.#opts.subject, source.clientId, source.session),
            runs: [],
            slices: [],
            source,
            msgId: "",
          };
          bySource.set(source, part);
          parts.push(part);
        }
        part.runs.push(run);
        part.slices.push(batch.bytes.subarray(run.lineStart, run.lineEnd));
        continue;
      }
      const subject = source.sessionKey === "" && source.clientId === 0
        ? legacySubject(this.#opts.subject)
        : sessionSubject(this.#opts.subject, source.clientId, 0n);
      let part = bySubject.get(subject);
      if (part === undefined) {
        part = { subject, runs: [], slices: [], source: null, msgId: `${base}.${parts.length}` };
        bySubject.set(subject, part);
        parts.push(part);
      }
      part.runs.push(run);
      part.slices.push(batch.bytes.subarray(run.lineStart, run.lineEnd));
    }
    return parts;
  }

  /**
   * Publishes `part` once the previous batch's message for its subject is answered (stored or
   * not): a session's messages carry the sequence of the one before, and go in batch order.
   */
  async #inOrder(part: Part, batch: Batch, number: number): Promise<void> {
    const tails = this.#tails;
    const before = tails.get(part.subject);
    const mine = before === undefined
      ? this.#afterHeld(part, batch, number)
      : before.then(() => this.#afterHeld(part, batch, number));
    const tail = mine.then(ignore, ignore);
    tails.set(part.subject, tail);
    try {
      await mine;
    } finally {
      if (tails.get(part.subject) === tail) tails.delete(part.subject);
    }
  }

  /**
   * Publishes `part` of batch `number` unless an earlier batch's message for its subject failed
   * and is not stored yet (see `#held`): then it is refused, to be retried after that one.
   */
  async #afterHeld(part: Part, batch: Batch, number: number): Promise<void> {
    const subject = part.subject;
    let held = this.#held.get(subject);
    if (held !== undefined) {
      for (const other of held) {
        if (other !== batch && this.#numbers.get(other)! < number) {
          held.add(batch);
          throw new PublishError(
            `${subject}: the message of an earlier batch is not stored yet, and goes first`,
            0,
            true,
          );
        }
      }
    }
    try {
      await this.#publishPart(part);
    } catch (e) {
      held = this.#held.get(subject);
      if (held === undefined) this.#held.set(subject, held = new Set());
      held.add(batch);
      throw e;
    }
    held = this.#held.get(subject);
    if (held !== undefined && held.delete(batch) && held.size === 0) this.#held.delete(subject);
  }

  /** The writer gave `batch` up: later batches' messages held back for it may go. */
  abandon(batch: Batch): void {
    for (const [subject, held] of this.#held) {
      if (held.delete(batch) && held.size === 0) this.#held.delete(subject);
    }
  }

  /** Publishes one part; for a session, with the expectation, correcting a stale one. */
  async #publishPart(part: Part): Promise<void> {
    if (part.source === null) {
      const lines = joined(part.slices);
      const h = headers();
      h.set(Header.MSG_ID, part.msgId);
      h.set(Header.RECORDS, String(part.runs.reduce((n, r) => n + r.records, 0)));
      await this.#timed(part.subject, lines, h);
      return;
    }
    const { clientId, session } = part.source;
    let state = this.#states.get(part.subject);
    if (state === undefined || state.seq === UNKNOWN_SEQ) {
      try {
        state = await this.#lookUp(part.subject, state?.refusedFrom);
      } catch (e) {
        this.#refuseFrom(part.subject, state, part.runs[0]!.firstId);
        throw e;
      }
    }
    for (let attempt = 0;; attempt++) {
      // Records at or below the session's last stored msg_id are in the stream already (sent
      // again after a resume, or by another node): they count as kept, and are not sent twice.
      const { lines, first, last, records } = linesAfter(part, state.last);
      if (records === 0) return;
      if (first > state.refusedFrom) {
        // Publishing these would leave a hole below them that a later lookup would read as
        // stored: the session waits for its client to resume (a HELLO looks it up afresh).
        throw new PublishError(
          `session ${clientId}/${session}: msg_id ${state.refusedFrom} and on were not stored, ` +
            "so nothing after them is until the client resumes",
          0,
          false,
        );
      }
      const h = headers();
      h.set(Header.MSG_ID, sessionMsgId(clientId, session, first, last));
      h.set(Header.FIRST, String(first));
      h.set(Header.LAST, String(last));
      h.set(Header.RECORDS, String(records));
      h.set(Header.EXPECTED_LAST_SUBJECT_SEQUENCE, String(state.seq));
      try {
        const ack = await this.#timed(part.subject, lines, h);
        this.#remember(part.subject, { seq: ack.seq, last, refusedFrom: Infinity });
        return;
      } catch (e) {
        if (e instanceof PublishError && e.code === WRONG_LAST_SEQUENCE && attempt < CORRECTIONS) {
          // Another node appended to the session since this one last looked: see where it
          // stands, and go on after it.
          try {
            state = await this.#lookUp(part.subject, state.refusedFrom);
          } catch (lookupError) {
            this.#refuseFrom(part.subject, state, first);
            throw lookupError;
          }
          this.#opts.log.warn("session appended to elsewhere: going on after its last stored id", {
            client_id: clientId,
            session,
            last_stored: state.last,
          });
          continue;
        }
        // A timed-out publish may have been stored all the same; the writer's retry sends it
        // with the same message id, which JetStream then answers as a duplicate.
        this.#refuseFrom(part.subject, state, first);
        throw e;
      }
    }
  }

  /**
   * Notes that the session of `subject` failed to store `first` and on: nothing after them is
   * published until they are stored or the client resumes. Without a state (its lookup failed),
   * one whose sequence is unknown, so that the next attempt looks the session up first.
   */
  #refuseFrom(subject: string, state: SessionState | undefined, first: number): void {
    const noted = state ?? { seq: UNKNOWN_SEQ, last: 0, refusedFrom: Infinity };
    noted.refusedFrom = Math.min(noted.refusedFrom, first);
    this.#remember(subject, noted);
  }

  async #timed(subject: string, data: Uint8Array, h: MsgHdrs): Promise<PubAck> {
    const t0 = performance.now();
    const ack = await this.#publisher.publish(subject, data, h);
    this.#publishSeconds.observe((performance.now() - t0) / 1000);
    return ack;
  }

  #remember(subject: string, state: SessionState): void {
    const states = this.#states;
    states.delete(subject); // re-inserted last: least recently used first
    states.set(subject, state);
    if (states.size <= this.#opts.maxSessions) return;
    // Forget the least recently used session, unless it holds a refusal: forgetting that would
    // let a later record be published above the hole.
    for (const [key, old] of states) {
      if (old.refusedFrom === Infinity) {
        states.delete(key);
        return;
      }
    }
    states.delete(states.keys().next().value!);
  }

  /**
   * Reads where the session of `subject` stands from the stream's leader (a direct get may be
   * answered by a lagging replica), keeping `refusedFrom`.
   */
  async #lookUp(subject: string, refusedFrom = Infinity): Promise<SessionState> {
    const msg = await this.#jsm.streams.getMessage(this.#opts.stream, { last_by_subj: subject });
    const last = msg === null ? 0 : lastIdOf((name) => msg.header.get(name)) ?? 0;
    // Stored after all (a publish that timed out), or resumed elsewhere past them: no hole.
    if (last >= refusedFrom) refusedFrom = Infinity;
    const state: SessionState = { seq: msg?.seq ?? 0, last, refusedFrom };
    this.#remember(subject, state);
    return state;
  }

  /**
   * The last msg_id of the session in the stream, read from its leader; null if the stream
   * holds none of its messages. The server asks on every HELLO: the client resumes from here,
   * so a refusal this node remembers for the session is over.
   */
  async lastStored(clientId: number, session: bigint): Promise<number | null> {
    const subject = sessionSubject(this.#opts.subject, clientId, session);
    const state = await this.#lookUp(subject);
    return state.seq === 0 ? null : state.last;
  }

  rotate(): Promise<void> {
    return Promise.resolve(); // a stream is not rotated by its writer
  }

  reopen(): Promise<void> {
    return Promise.resolve();
  }

  metrics(): Metric[] {
    return [
      {
        name: "msgserver_nats_connected",
        help: "1 while the connection to NATS is up.",
        type: "gauge",
        value: this.#publisher.connected ? 1 : 0,
      },
      {
        name: "msgserver_nats_publishes_in_flight",
        help: "Messages published to JetStream and not yet acknowledged.",
        type: "gauge",
        value: this.#publisher.inFlight,
      },
      {
        name: "msgserver_nats_publish_seconds",
        help: "Time from a publish to its PubAck.",
        type: "histogram",
        histogram: this.#publishSeconds,
      },
    ];
  }

  /** Stops publishing and closes the NATS connection. */
  async close(): Promise<void> {
    this.#publisher.close();
    await this.#nc.close();
  }
}

/** `slices` joined (a single one as it is: a view, not a copy). */
function joined(slices: Uint8Array[]): Uint8Array {
  return slices.length === 1 ? slices[0]! : concat(slices);
}

/** The lines of a part whose msg_id is above `after`, with their first and last msg_id. */
function linesAfter(
  part: Part,
  after: number,
): { lines: Uint8Array; first: number; last: number; records: number } {
  const runs = part.runs;
  const first = runs[0]!.firstId;
  const last = runs.at(-1)!.lastId;
  const records = runs.reduce((n, r) => n + r.records, 0);
  const all = joined(part.slices);
  if (after < first) return { lines: all, first, last, records };
  const at = linesAbove(all, after);
  let kept = records;
  for (let i = all.indexOf(LF); i >= 0 && i < at; i = all.indexOf(LF, i + 1)) kept--;
  return {
    lines: all.subarray(at),
    first: at < all.length ? lineMsgId(all, at) : last,
    last,
    records: kept,
  };
}
