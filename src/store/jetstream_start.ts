/**
 * Starting STORE=jetstream: connect to NATS, make sure the stream is there and fits, and open the
 * {@linkcode JetStreamStore}. Every way this can fail is a {@linkcode StoreStartError} naming the
 * setting to change and the servers asked, which msgserver reports with exit status 2.
 *
 * @module
 */

import type { NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import type { Config } from "../config.ts";
import type { Logger } from "../log.ts";
import { MAX_NAME_BYTES } from "../protocol/frames.ts";
import { MAX_BATCH_BYTES } from "../server/writer.ts";
import { streamSubjects } from "./jetstream_layout.ts";
import { JetStreamStore } from "./jetstream_store.ts";
import { connectNats, natsServers, redactUrl } from "./nats_connect.ts";
import { StoreStartError } from "./store.ts";

/** Room for a message's headers (message id, first and last msg_id, expected sequence). */
const HEADER_ROOM = 1024;
/** The smallest batch worth publishing: below it, NATS's max_payload is the bottleneck. */
const MIN_BATCH_BYTES = 64 * 1024;
/** Duplicate window msgserver gives a stream it creates, and the least it accepts, in ns. */
const DUPLICATE_WINDOW_NS = 120_000_000_000;
const MIN_DUPLICATE_WINDOW_NS = 10_000_000_000;

/**
 * The longest line one record can make: client_id and msg_id (10 digits each), the name, the
 * payload with every byte escaped to two, three separators and the line feed.
 *
 * @example
 * ```ts
 * import { longestLine } from "./jetstream_start.ts";
 * longestLine(1024); // 2327
 * ```
 */
export function longestLine(maxMessageBytes: number): number {
  return 10 + 1 + 10 + 1 + MAX_NAME_BYTES + 1 + 2 * maxMessageBytes + 1;
}

/** What {@linkcode ensureStream} found or did. */
export interface StreamCheck {
  /** True when it created the stream. */
  created: boolean;
  /** The stream's replicas. */
  replicas: number;
}

/**
 * Makes sure the stream exists and can take the store's messages: creates it (with `replicas`
 * replicas, file storage, a 2-minute duplicate window) when it does not exist; when it does,
 * checks that it takes every subject under `subject` and keeps message ids long enough to
 * deduplicate a publish sent again. Throws a {@linkcode StoreStartError} that says what is wrong
 * and which setting to change.
 *
 * @example
 * ```ts
 * import { ensureStream } from "./jetstream_start.ts";
 * import { connect } from "@nats-io/transport-node";
 * const nc = await connect({ servers: "nats://127.0.0.1:4222" });
 * const check = await ensureStream(nc, { stream: "MSGS", subject: "msgs", replicas: 3, timeoutMs: 5000 });
 * console.log(check.created, check.replicas);
 * await nc.close();
 * ```
 */
export async function ensureStream(
  nc: NatsConnection,
  options: { stream: string; subject: string; replicas: number; timeoutMs: number },
): Promise<StreamCheck> {
  const where = `at ${nc.getServer()}`;
  const jsm = await jetstreamManager(nc, { timeout: options.timeoutMs, checkAPI: false });
  try {
    await jsm.getAccountInfo();
  } catch (e) {
    throw new StoreStartError(
      `STORE=jetstream: JetStream does not answer ${where} (${(e as Error).message}): ` +
        "enable it in nats-server's config (a jetstream block; see docs/nats/) and check that " +
        "the cluster has a meta leader",
      { cause: e },
    );
  }
  const wanted = streamSubjects(options.subject)[0]!;
  let info;
  // Read the stream, or make it. Both go unanswered while a stream has no leader yet (one
  // another node is making, say): a timeout is asked again, up to STREAM_ANSWER_TIMEOUTS times in
  // all; a make that timed out may have made it, so the next try reads first.
  for (let tries = 1;; tries++) {
    const again = (e: unknown) =>
      (e as Error).name === "TimeoutError" && tries < STREAM_ANSWER_TIMEOUTS;
    const timedOut = (e: unknown) =>
      (e as Error).name === "TimeoutError"
        ? `no answer in ${tries} tries of NATS_TIMEOUT_MS (${options.timeoutMs} ms) each`
        : (e as Error).message;
    try {
      info = await jsm.streams.info(options.stream);
      break;
    } catch (e) {
      if (again(e)) continue;
      if ((e as Error).name !== "StreamNotFoundError") {
        throw new StoreStartError(
          `STORE=jetstream: cannot read NATS_STREAM "${options.stream}" ${where}: ${timedOut(e)}`,
          { cause: e },
        );
      }
    }
    try {
      const created = await jsm.streams.add({
        name: options.stream,
        subjects: [wanted],
        num_replicas: options.replicas,
        duplicate_window: DUPLICATE_WINDOW_NS,
      });
      return { created: true, replicas: created.config.num_replicas };
    } catch (e) {
      if (again(e)) continue;
      throw new StoreStartError(
        `STORE=jetstream: cannot create NATS_STREAM "${options.stream}" with NATS_REPLICAS ` +
          `${options.replicas} ${where}: ${timedOut(e)}`,
        { cause: e },
      );
    }
  }
  const subjects = info.config.subjects ?? [];
  const covers = subjects.some((s) => s === wanted || s === ">");
  if (!covers) {
    throw new StoreStartError(
      `STORE=jetstream: NATS_STREAM "${options.stream}" ${where} takes subjects ` +
        `${JSON.stringify(subjects)}, not "${wanted}" (NATS_SUBJECT "${options.subject}"): ` +
        "set NATS_SUBJECT to a prefix it takes whole, or NATS_STREAM to another stream",
    );
  }
  const window = info.config.duplicate_window ?? 0;
  if (window < MIN_DUPLICATE_WINDOW_NS) {
    throw new StoreStartError(
      `STORE=jetstream: NATS_STREAM "${options.stream}" ${where} keeps message ids for ` +
        `${window / 1e9} s (duplicate_window): at least ${MIN_DUPLICATE_WINDOW_NS / 1e9} s are ` +
        "needed to send a timed-out publish again safely; raise it (nats stream edit)",
    );
  }
  return { created: false, replicas: info.config.num_replicas };
}

/**
 * How many times start-up asks a stream that does not answer (each waiting NATS_TIMEOUT_MS):
 * nats-server 2.9.10 leaves STREAM.INFO and STREAM.CREATE unanswered while a stream has no leader
 * yet, as when another msgserver node has just made it (two nodes started together: one waited
 * out NATS_TIMEOUT_MS and exited, twice in CI).
 */
const STREAM_ANSWER_TIMEOUTS = 3;

/**
 * Opens STORE=jetstream as `config` says: connects (NATS_URLS and the credentials), checks or
 * creates NATS_STREAM, and checks that a batch can carry the largest record MAX_MESSAGE_BYTES
 * allows within the servers' `max_payload`. ACK_MODE=durable is refused: nats-server 2.9 answers
 * a publish before it syncs the message to disk.
 *
 * @example
 * ```ts
 * import { DEFAULTS } from "../config.ts";
 * import { Logger } from "../log.ts";
 * import { openJetStream } from "./jetstream_start.ts";
 * const store = await openJetStream({ ...DEFAULTS, STORE: "jetstream" }, new Logger("info"));
 * await store.close();
 * ```
 */
export async function openJetStream(config: Config, log: Logger): Promise<JetStreamStore> {
  if (config.ACK_MODE === "durable") {
    throw new StoreStartError(
      "ACK_MODE=durable does not go with STORE=jetstream: nats-server 2.9 acknowledges a " +
        "message once a quorum of the stream's replicas holds it, before any of them syncs it " +
        'to disk, so an ACK could not mean "on disk"; use ACK_MODE=written (an ACK then means ' +
        "replicated to a quorum) and put the replicas on hosts that do not lose power together",
    );
  }
  let nc: NatsConnection;
  try {
    nc = await connectNats(config);
  } catch (e) {
    throw new StoreStartError(`STORE=jetstream: ${(e as Error).message}`, { cause: e });
  }
  try {
    // Checked before the stream is created: a stream msgserver cannot use is not left behind.
    const maxPayload = nc.info?.max_payload ?? 1024 * 1024;
    const line = longestLine(config.MAX_MESSAGE_BYTES);
    // The writer closes a batch once it reaches maxBatchBytes, so one may pass it by a line.
    const maxBatchBytes = Math.min(MAX_BATCH_BYTES, maxPayload - line - HEADER_ROOM);
    if (maxBatchBytes < MIN_BATCH_BYTES) {
      const most = Math.floor(
        (maxPayload - HEADER_ROOM - MIN_BATCH_BYTES - longestLine(0)) / 2,
      );
      throw new StoreStartError(
        `STORE=jetstream: the NATS servers at NATS_URLS "${
          natsServers(config.NATS_URLS).map(redactUrl).join(",")
        }" take messages of at most ${maxPayload} bytes (max_payload), too few for ` +
          `MAX_MESSAGE_BYTES=${config.MAX_MESSAGE_BYTES} (one record can make a line of ` +
          `${line} bytes, with every payload byte escaped): raise max_payload in nats-server's ` +
          `config (docs/nats/ uses 8MB) or set MAX_MESSAGE_BYTES to at most ${Math.max(0, most)}`,
      );
    }
    const check = await ensureStream(nc, {
      stream: config.NATS_STREAM,
      subject: config.NATS_SUBJECT,
      replicas: config.NATS_REPLICAS,
      timeoutMs: config.NATS_TIMEOUT_MS,
    });
    log.info(check.created ? "created the stream" : "using the stream", {
      stream: config.NATS_STREAM,
      replicas: check.replicas,
      server: redactUrl(nc.getServer()),
      max_payload: maxPayload,
    });
    return await JetStreamStore.open(nc, {
      stream: config.NATS_STREAM,
      subject: config.NATS_SUBJECT,
      timeoutMs: config.NATS_TIMEOUT_MS,
      maxSessions: config.MAX_SESSIONS,
      maxMessageBytes: maxBatchBytes,
      log,
    });
  } catch (e) {
    await nc.close().catch(() => {});
    throw e;
  }
}
