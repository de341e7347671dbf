/**
 * The server: wires the listener, the service tasks, the queue and the writer together, and
 * runs the graceful shutdown. One message's path: `listener.ts` accepts, `connection.ts` decodes
 * and queues it (`channel.ts`), `writer.ts` formats it (`line.ts`) and hands it to the store
 * (`../store/`), then acks it.
 *
 * (Over 400 lines: the start-up order (store, listeners, writer, monitoring) and the shutdown
 * order are one story each, and read best in one place.)
 *
 * @module
 */

import type { Config } from "../config.ts";
import { Logger } from "../log.ts";
import type { DecoderLimits } from "../protocol/decoder.ts";
import {
  ErrorCode,
  MAX_CONTROL_FRAME_LENGTH,
  msgFrameLimit,
  NackCode,
  OVERSIZE_FACTOR,
} from "../protocol/frames.ts";
import { Channel } from "./channel.ts";
import { Connection } from "./connection.ts";
import {
  type ConnectionStats,
  RefusalBudget,
  REFUSALS_PER_SECOND,
  type Served,
  type ServerContext,
} from "./served.ts";
import { LegacyConnection } from "./legacy_connection.ts";
import { acceptLoop, listen, refuse } from "./listener.ts";
import { TlsFront } from "./tls_front.ts";
import { HttpServer, type HttpStats } from "../http/http_server.ts";
import { monitorRoutes, processMetricsProblem } from "./monitor.ts";
import { SessionTable } from "./sessions.ts";
import type { Entry } from "./entry.ts";
import { BufferPool } from "./buffer_pool.ts";
import { Writer, type WriterStats } from "./writer.ts";
import type { Metric } from "./metrics.ts";
import { openStore } from "../store/open.ts";
import type { Store, StoreStats } from "../store/store.ts";
import { closeQuietly } from "../io/close_quietly.ts";

/** Each connection's read buffer starts this small, so idle connections cost little. */
const READ_BUFFER_BYTES = 4 * 1024;
/** ...and doubles, while reads keep filling it, up to this (large frames grow it further). */
const MAX_READ_BUFFER_BYTES = 64 * 1024;

/**
 * The size limits of each connection's frame decoder for a MAX_MESSAGE_BYTES.
 *
 * @example
 * ```ts
 * import { FrameDecoder } from "../protocol/decoder.ts";
 * const decoder = new FrameDecoder(connectionDecoderLimits(1024 * 1024));
 * ```
 */
export function connectionDecoderLimits(maxMessageBytes: number): DecoderLimits {
  return {
    initialBytes: READ_BUFFER_BYTES,
    maxReadBytes: MAX_READ_BUFFER_BYTES,
    maxMsgLength: msgFrameLimit(maxMessageBytes),
    maxSkippedMsgLength: msgFrameLimit(maxMessageBytes * OVERSIZE_FACTOR),
    maxControlLength: MAX_CONTROL_FRAME_LENGTH,
  };
}

/** Counters of a running server. */
export interface ServerStats extends ConnectionStats {
  /** Connections open now, both kinds. */
  connectionsOpen: number;
  /** Connections accepted since start. */
  connectionsTotal: number;
  /** Records waiting in the queue for the writer. */
  queueRecords: number;
  /** Bytes waiting in the queue for the writer. */
  queueBytes: number;
  /** What the queue holds at most: QUEUE_CAPACITY records, QUEUE_MAX_BYTES bytes. */
  queueCapacity: { records: number; bytes: number };
  /** Reply bytes (acks, NACKs, errors) waiting for their peers to take them. */
  replyBytesPending: number;
  /** Records acked, in any ACK_MODE. */
  acked: number;
  /** The writer's counters. */
  writer: WriterStats;
  /** The store's timings. */
  store: StoreStats;
  /** Metrics of the store's own (a JetStream store's connection state, say). */
  storeMetrics: Metric[];
  /** The message ports' accept loops: failed accepts, connections shed and refused. */
  accept: { acceptErrors: number; shed: number; refused: number };
  /** The monitoring port's counters, when METRICS_PORT is set. */
  http: HttpStats | null;
}

/** What {@linkcode MsgServer.start} opens before the server exists. */
interface Parts {
  config: Config;
  log: Logger;
  listener: Deno.Listener;
  legacyListener: Deno.Listener | null;
  tls: TlsFront | null;
  store: Store;
}

/** Options of {@linkcode startServer}. */
export interface ServerOptions {
  /** Where log lines go; defaults to a stderr logger at LOG_LEVEL. */
  log?: Logger;
  /** How long a failing write is retried before NACK 4 (default 5000 ms). */
  writeRetryMs?: number;
  /**
   * Where records go instead of FILE_NAME (to embed the server over another store, or to test
   * it over one that fails on demand); the server closes it at shutdown.
   */
  store?: Store;
}

/**
 * A running msgserver.
 *
 * @example
 * ```ts
 * import { DEFAULTS } from "../config.ts";
 * const server = await startServer({ ...DEFAULTS, PORT: 0, FILE_NAME: "/tmp/m.log" });
 * console.log(server.addr.port);
 * await server.shutdown();
 * ```
 */
export class MsgServer {
  /** The address the server listens on (with the real port when PORT was 0). */
  readonly addr: Deno.NetAddr;
  /**
   * Resolves when the server has shut down: true if cleanly, false if the writer failed or the
   * shutdown ran out of time (so a supervisor can tell, from the exit status).
   */
  readonly finished: Promise<boolean>;

  readonly #config: Config;
  readonly #log: Logger;
  readonly #listener: Deno.Listener;
  readonly #legacyListener: Deno.Listener | null;
  /** The legacy protocol's address, when LEGACY_PORT is set. */
  readonly legacyAddr: Deno.NetAddr | null;
  readonly #queue: Channel<Entry>;
  readonly #writer: Writer;
  readonly #store: Store;
  readonly #tls: TlsFront | null;
  readonly #connections = new Set<Served>();
  readonly #connStats: ConnectionStats = {
    received: 0,
    ackedOnReceipt: 0,
    nacked: 0,
    duplicates: 0,
    protocolErrors: 0,
    nacks: new Array(Math.max(...Object.values(NackCode)) + 1).fill(0),
    errors: new Array(Math.max(...Object.values(ErrorCode)) + 1).fill(0),
  };
  readonly #writerDone: Promise<void>;
  readonly #sweeper: ReturnType<typeof setInterval>;
  #statsTimer: ReturnType<typeof setInterval> | undefined;
  #monitor: HttpServer | null = null;
  /** The metrics address, when METRICS_PORT is set. */
  metricsAddr: Deno.NetAddr | null = null;
  #total = 0;
  /** When the server started (ms since the epoch), for the status page's uptime. */
  readonly #startedAt = Date.now();
  readonly #acceptStats = { acceptErrors: 0, shed: 0, refused: 0 };
  readonly #refusals = new RefusalBudget(REFUSALS_PER_SECOND);
  #stopping = false;
  #shutdown: Promise<void> | null = null;
  #resolveFinished!: (clean: boolean) => void;
  /** False once something was lost or cut short: the writer failed, or shutdown timed out. */
  #clean = true;

  private constructor(parts: Parts, options: ServerOptions) {
    const { config, log, listener, legacyListener, tls, store } = parts;
    this.#tls = tls;
    this.#config = config;
    this.#log = log;
    this.#listener = listener;
    this.#legacyListener = legacyListener;
    this.legacyAddr = legacyListener === null ? null : legacyListener.addr as Deno.NetAddr;
    this.addr = listener.addr as Deno.NetAddr;
    this.finished = new Promise((r) => this.#resolveFinished = r);
    this.#queue = new Channel<Entry>({
      maxRecords: config.QUEUE_CAPACITY,
      maxBytes: config.QUEUE_MAX_BYTES,
    });
    this.#store = store;
    const pool = new BufferPool();
    this.#writer = new Writer(this.#queue, store, {
      pool,
      maxFileBytes: config.FILE_MAX_BYTES,
      ackMode: config.ACK_MODE,
      msgPerWrite: store.maxBatchRecords ?? config.MSG_PER_WRITE,
      flushIntervalMs: config.FLUSH_INTERVAL_MS,
      log,
      ...(options.writeRetryMs === undefined ? {} : { writeRetryMs: options.writeRetryMs }),
    });
    this.#writerDone = this.#writer.run().catch((e) => {
      log.error("writer stopped", { error: (e as Error).message });
      this.#clean = false;
      this.shutdown();
    });

    const limits = connectionDecoderLimits(config.MAX_MESSAGE_BYTES);
    const token = config.AUTH_TOKEN === "" ? null : new TextEncoder().encode(config.AUTH_TOKEN);
    const sessions = new SessionTable(config.MAX_SESSIONS);
    const connections = this.#connections;
    // deno-lint-ignore no-this-alias
    const server = this;
    const context: ServerContext = {
      config,
      queue: this.#queue,
      pool,
      sessions,
      store,
      log,
      stats: this.#connStats,
      limits,
      token,
      refusals: this.#refusals,
      get stopping() {
        return server.#stopping;
      },
      closed(connection) {
        connections.delete(connection);
      },
    };

    const admit = (conn: Deno.Conn, legacy: boolean) => {
      if (connections.size >= config.MAX_CONNECTIONS) {
        log.throttled("refuse", 10_000, "warn", "refusing connections: too many connections", {
          remote: (conn.remoteAddr as Deno.NetAddr).hostname,
          max_connections: config.MAX_CONNECTIONS,
        });
        this.#acceptStats.refused++;
        // The legacy protocol has no ERROR frame, and on a TLS port a plaintext one would only
        // break the peer's handshake: there a refusal just closes.
        if (legacy || tls !== null) closeQuietly(conn);
        else {
          this.#connStats.errors[ErrorCode.TOO_MANY_CONNECTIONS]!++;
          refuse(conn, "too many connections");
        }
        return;
      }
      try {
        (conn as Deno.TcpConn).setNoDelay(true);
      } catch {
        // not every transport has Nagle's algorithm to turn off
      }
      const connection = legacy
        ? new LegacyConnection(conn, context, ++this.#total)
        : new Connection(tls === null ? conn : tls.wrap(conn), context, ++this.#total);
      connections.add(connection);
      connection.serve();
    };
    const stats = this.#acceptStats;
    acceptLoop(listener, (conn) => admit(conn, false), {
      name: "PORT",
      log,
      stats,
      shed: (conn) => {
        if (tls === null) {
          this.#connStats.errors[ErrorCode.TOO_MANY_CONNECTIONS]!++;
          return refuse(conn, "too many connections: out of file descriptors");
        }
        closeQuietly(conn);
        return Promise.resolve();
      },
    });
    if (legacyListener !== null) {
      acceptLoop(legacyListener, (conn) => admit(conn, true), { name: "LEGACY_PORT", log, stats });
    }

    const tick = Math.max(
      10,
      Math.min(
        1000,
        config.HANDSHAKE_TIMEOUT_MS / 4,
        config.IDLE_TIMEOUT_MS > 0 ? config.IDLE_TIMEOUT_MS / 4 : 1000,
      ),
    );
    this.#sweeper = setInterval(() => this.#sweep(), tick);
    if (config.STATS_INTERVAL_S > 0 && log.enabled("info")) {
      let last = this.stats();
      this.#statsTimer = setInterval(() => {
        const now = this.stats();
        const seconds = config.STATS_INTERVAL_S;
        log.info("stats", {
          connections: now.connectionsOpen,
          msgs_per_s: Math.round((now.writer.records - last.writer.records) / seconds),
          written: now.writer.records,
          acked: now.acked,
          nacked: now.nacked,
          duplicates: now.duplicates,
          queue: now.queueRecords,
          rss_mb: Math.round(Deno.memoryUsage().rss / 1048576),
        });
        last = now;
      }, config.STATS_INTERVAL_S * 1000);
    }
  }

  #startMonitor(): void {
    const config = this.#config;
    this.#monitor = HttpServer.listen(
      { hostname: config.IP, port: config.METRICS_PORT, name: "METRICS_PORT", log: this.#log },
      monitorRoutes({
        stats: () => this.stats(),
        stopping: () => this.#stopping,
        config,
        storeName: this.#store.name,
        startedAt: this.#startedAt,
      }),
    );
    this.metricsAddr = this.#monitor.addr;
  }

  /**
   * Opens the file, listens, and starts the writer; resolves once the server accepts
   * connections.
   */
  static async start(config: Config, options: ServerOptions = {}): Promise<MsgServer> {
    const log = options.log ?? new Logger(config.LOG_LEVEL);
    const store = options.store ?? await openStore(config, log);
    let listener: Deno.Listener | null = null;
    let legacy: Deno.Listener | null = null;
    let tls: TlsFront | null = null;
    try {
      // With TLS, PORT is still a plain TCP listener: see tls_front.ts for why.
      if (config.TLS_CERT !== "") tls = await TlsFront.open(config, log);
      listener = listen(config.IP, config.PORT, config.TCP_BACKLOG, "PORT");
      if (config.LEGACY_PORT !== 0) {
        legacy = listen(config.IP, config.LEGACY_PORT, config.TCP_BACKLOG, "LEGACY_PORT");
      }
    } catch (e) {
      await store.close();
      tls?.close();
      closeQuietly(listener);
      throw e;
    }
    const server = new MsgServer(
      { config, log, listener, legacyListener: legacy, tls, store },
      options,
    );
    if (config.METRICS_PORT !== 0) {
      try {
        server.#startMonitor();
      } catch (e) {
        await server.shutdown();
        throw e;
      }
      const problem = processMetricsProblem();
      if (problem !== null) {
        log.warn("/metrics leaves out process_open_fds and process_max_fds", { why: problem });
      }
    }
    if (!isLoopback(config.IP) && config.AUTH_TOKEN === "") {
      log.warn("listening beyond loopback without AUTH_TOKEN: anyone who can connect can write", {
        ip: config.IP,
      });
    }
    if (legacy !== null && !isLoopback(config.IP)) {
      log.warn("LEGACY_PORT has no authentication: keep it on loopback or behind a firewall", {
        ip: config.IP,
        legacy_port: server.legacyAddr!.port,
      });
    }
    log.info("listening", {
      addr: `${server.addr.hostname}:${server.addr.port}`,
      store: store.name,
      ack_mode: config.ACK_MODE,
      msg_per_write: config.MSG_PER_WRITE,
      ...store.maxBatchRecords === undefined ? {} : { batch_records: store.maxBatchRecords },
      flush_interval_ms: config.FLUSH_INTERVAL_MS,
      queue_capacity: config.QUEUE_CAPACITY,
      max_message_bytes: config.MAX_MESSAGE_BYTES,
      max_connections: config.MAX_CONNECTIONS,
      auth: config.AUTH_TOKEN === "" ? "off" : "on",
      tls: config.TLS_CERT === "" ? "off" : "on",
      metrics: server.metricsAddr === null
        ? "off"
        : `http://${server.metricsAddr.hostname}:${server.metricsAddr.port}/metrics`,
      legacy: server.legacyAddr === null
        ? "off"
        : `${server.legacyAddr.hostname}:${server.legacyAddr.port}`,
    });
    return server;
  }

  /** Current counters. */
  stats(): ServerStats {
    return {
      ...this.#connStats,
      nacks: [...this.#connStats.nacks],
      errors: [...this.#connStats.errors],
      connectionsOpen: this.#connections.size,
      connectionsTotal: this.#total,
      queueRecords: this.#queue.records,
      queueBytes: this.#queue.bytes,
      queueCapacity: { records: this.#config.QUEUE_CAPACITY, bytes: this.#config.QUEUE_MAX_BYTES },
      replyBytesPending: this.#replyBytesPending(),
      acked: this.#connStats.ackedOnReceipt + this.#writer.stats.acked,
      writer: { ...this.#writer.stats },
      store: this.#store.stats,
      storeMetrics: this.#store.metrics?.() ?? [],
      accept: { ...this.#acceptStats },
      http: this.#monitor === null ? null : { ...this.#monitor.stats },
    };
  }

  #replyBytesPending(): number {
    let bytes = 0;
    for (const connection of this.#connections) bytes += connection.pendingReplyBytes;
    return bytes;
  }

  #sweep(): void {
    const now = performance.now();
    const handshake = this.#config.HANDSHAKE_TIMEOUT_MS;
    const idle = this.#config.IDLE_TIMEOUT_MS;
    for (const connection of this.#connections) {
      if (connection.isClosed || connection.waitingOnServer) continue;
      if (connection.awaitingHello && now - connection.openedAt > handshake) {
        connection.timeout(`no HELLO within ${handshake} ms`);
      } else if (idle > 0 && now - connection.lastActivity > idle) {
        connection.timeout(`idle for ${idle} ms`);
      }
    }
  }

  /**
   * Reopens FILE_NAME after the batch in flight (SIGHUP: the logrotate convention is to move
   * the file, then signal).
   */
  reopen(): void {
    this.#log.info("reopen requested", { file: this.#config.FILE_NAME });
    this.#writer.reopen();
  }

  /**
   * Stops accepting, writes and acks everything already queued, tells every client
   * `ERROR 6 shutting down`, closes the file. Connections still open after SHUTDOWN_TIMEOUT_MS
   * are cut. Safe to call more than once.
   */
  shutdown(): Promise<void> {
    if (this.#shutdown === null) this.#shutdown = this.#runShutdown();
    return this.#shutdown;
  }

  async #runShutdown(): Promise<void> {
    const log = this.#log;
    log.info("shutting down", {
      connections: this.#connections.size,
      queued: this.#queue.records,
    });
    this.#stopping = true;
    this.#refusals.release();
    clearInterval(this.#sweeper);
    clearInterval(this.#statsTimer);
    for (const listener of [this.#listener, this.#legacyListener]) {
      closeQuietly(listener);
    }
    this.#queue.close();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((r) =>
      timer = setTimeout(() => r("timeout"), this.#config.SHUTDOWN_TIMEOUT_MS)
    );
    const graceful = (async () => {
      await this.#writerDone;
      await Promise.all([...this.#connections].map((c) => c.finish()));
    })();
    const outcome = await Promise.race([graceful, timeout]);
    clearTimeout(timer);
    if (outcome === "timeout") {
      this.#clean = false;
      log.error("shutdown timed out: cutting connections", {
        connections: this.#connections.size,
        queued: this.#queue.records,
      });
    }
    for (const c of this.#connections) c.abort();
    this.#tls?.close();
    await this.#store.close();
    if (this.#monitor !== null) await this.#monitor.close();
    const w = this.#writer.stats;
    log.info("stopped", { records: w.records, batches: w.batches, bytes: w.bytes });
    this.#resolveFinished(this.#clean);
  }
}

function isLoopback(ip: string): boolean {
  return ip === "localhost" || ip === "::1" || ip.startsWith("127.");
}

/**
 * Starts a server with `config`; see {@linkcode MsgServer}.
 *
 * @example
 * ```ts
 * declare const config: import("../config.ts").Config;
 * const server = await startServer(config);
 * Deno.addSignalListener("SIGTERM", () => server.shutdown());
 * ```
 */
export function startServer(config: Config, options: ServerOptions = {}): Promise<MsgServer> {
  return MsgServer.start(config, options);
}
