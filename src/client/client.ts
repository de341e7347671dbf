/**
 * The client library: connect, say HELLO, then `send` messages, each settled by the server's
 * ACK (or NACK). Sends are pipelined through an outbox with one socket write in flight: frames
 * queued while one write is under way go out together in the next. The CLI, the tests and the
 * benchmarks all use it.
 *
 * @module
 */

import { closeQuietly } from "../io/close_quietly.ts";
import { Decoded, type FrameDecoder } from "../protocol/decoder.ts";
import {
  encodeMsg,
  ErrorCode,
  FrameType,
  MIN_PROTOCOL_VERSION,
  PROTOCOL_VERSION,
} from "../protocol/frames.ts";
import { Outbox } from "../protocol/outbox.ts";
import {
  decodeAck,
  decodeError,
  decodeNack,
  replyDecoder,
  type Welcome,
} from "../protocol/replies.ts";
import { ConnectionError, NackError } from "./errors.ts";
import { handshake } from "./handshake.ts";

export { ConnectionError, NackError };

/** Options of {@linkcode MsgClient.connect}. */
export interface ConnectOptions {
  /** Server address; default 127.0.0.1. */
  hostname?: string;
  /** Server port. */
  port: number;
  /** u32 client id written at the start of each line. */
  clientId: number;
  /** u64 session id; default a fresh random one. 0 means no session. */
  session?: bigint;
  /** The server's AUTH_TOKEN, if it has one. */
  token?: string;
  /** Connect with TLS; `caCerts` (PEM) are trusted besides the system's roots. */
  tls?: { caCerts?: string[] };
  /** Speak exactly this protocol version (no fallback); by default 2, falling back to 1. */
  version?: number;
}

interface Pending {
  msgId: number;
  resolve: () => void;
  reject: (e: Error) => void;
  settled: boolean;
}

/**
 * A fresh random non-zero u64 session id.
 *
 * @example
 * ```ts
 * const session = randomSession();
 * ```
 */
export function randomSession(): bigint {
  const words = crypto.getRandomValues(new Uint32Array(2));
  const id = (BigInt(words[0]!) << 32n) | BigInt(words[1]!);
  return id === 0n ? 1n : id;
}

/**
 * A connection to msgserver.
 *
 * @example
 * ```ts
 * const client = await MsgClient.connect({ port: 9000, clientId: 1 });
 * await Promise.all([client.send("client_1", "hi"), client.send("client_1", "hello")]);
 * await client.close();
 * ```
 */
export class MsgClient {
  /** WELCOME.last_msg_id: the highest id the server already holds for this session. */
  readonly lastMsgId: number;
  /** WELCOME.max_message_bytes: the largest payload the server accepts. */
  readonly maxMessageBytes: number;
  /**
   * WELCOME.session_state (protocol 2): true when the server knows the session, false when it
   * holds no record of it (new, or forgotten: see docs/protocol.md); null from a version 1 server.
   */
  readonly sessionKnown: boolean | null;
  /** The session id sent in HELLO. */
  readonly session: bigint;
  /** Resolves when the connection has ended, with the reason if it was not `close()`. */
  readonly closed: Promise<ConnectionError | null>;

  readonly #conn: Deno.Conn;
  readonly #decoder: FrameDecoder;
  #nextId: number;
  #pending: Pending[] = [];
  #head = 0;
  readonly #outbox: Outbox;
  #error: ConnectionError | null = null;
  #closing = false;
  #resolveClosed!: (e: ConnectionError | null) => void;

  private constructor(
    conn: Deno.Conn,
    decoder: FrameDecoder,
    session: bigint,
    welcome: Welcome,
  ) {
    this.#conn = conn;
    this.#decoder = decoder;
    this.#outbox = new Outbox(conn, {
      initialBytes: 4096,
      onError: (e) => this.#fail(new ConnectionError(0, e.message)),
    });
    this.session = session;
    this.lastMsgId = welcome.lastMsgId;
    this.maxMessageBytes = welcome.maxMessageBytes;
    this.sessionKnown = welcome.sessionKnown;
    this.#nextId = welcome.lastMsgId + 1;
    this.closed = new Promise((r) => this.#resolveClosed = r);
    this.#readLoop();
  }

  /**
   * Connects, sends HELLO and waits for WELCOME; throws {@linkcode ConnectionError} on refusal.
   * It speaks protocol version 2 and falls back to version 1 once if the server refuses 2 (a
   * server from before version 2): then `sessionKnown` is null.
   */
  static async connect(options: ConnectOptions): Promise<MsgClient> {
    const session = options.session ?? randomSession();
    try {
      return await MsgClient.#connectOnce(options, session, options.version ?? PROTOCOL_VERSION);
    } catch (e) {
      const refused = e instanceof ConnectionError && e.code === ErrorCode.UNSUPPORTED_VERSION;
      if (!refused || options.version !== undefined) throw e;
      return await MsgClient.#connectOnce(options, session, MIN_PROTOCOL_VERSION);
    }
  }

  static async #connectOnce(
    options: ConnectOptions,
    session: bigint,
    version: number,
  ): Promise<MsgClient> {
    const hostname = options.hostname ?? "127.0.0.1";
    let conn: Deno.Conn;
    if (options.tls === undefined) {
      const tcp = await Deno.connect({ hostname, port: options.port });
      tcp.setNoDelay(true);
      conn = tcp;
    } else {
      const tls = await Deno.connectTls({
        hostname,
        port: options.port,
        ...(options.tls.caCerts === undefined ? {} : { caCerts: options.tls.caCerts }),
      });
      await tls.handshake();
      conn = tls;
    }
    const decoder = replyDecoder();
    try {
      const welcome = await handshake(conn, decoder, {
        clientId: options.clientId,
        session,
        version,
        ...(options.token === undefined ? {} : { token: options.token }),
      });
      return new MsgClient(conn, decoder, session, welcome);
    } catch (e) {
      closeQuietly(conn);
      throw e;
    }
  }

  /** The msg_id the next `send` without an explicit id will use. */
  get nextMsgId(): number {
    return this.#nextId;
  }

  /** Messages sent and not yet settled. */
  get inFlight(): number {
    let n = 0;
    for (let i = this.#head; i < this.#pending.length; i++) if (!this.#pending[i]!.settled) n++;
    return n;
  }

  /**
   * Sends one message; resolves when the server acks it, rejects with {@linkcode NackError} if
   * refused or {@linkcode ConnectionError} if the connection ends first. Ids must increase.
   */
  send(name: string | Uint8Array, payload: string | Uint8Array, msgId?: number): Promise<void> {
    if (this.#error !== null) return Promise.reject(this.#error);
    const id = msgId ?? this.#nextId;
    this.#nextId = id + 1;
    return new Promise((resolve, reject) => {
      this.#pending.push({ msgId: id, resolve, reject, settled: false });
      this.sendRaw(encodeMsg(id, name, payload));
    });
  }

  /** Queues raw bytes for the server, as they are (tests use it to send broken frames). */
  sendRaw(bytes: Uint8Array): void {
    this.#outbox.send(bytes);
  }

  async #readLoop(): Promise<void> {
    const decoder = this.#decoder;
    try {
      for (;;) {
        for (let r = decoder.next(); r !== Decoded.NEED_MORE; r = decoder.next()) {
          if (r !== Decoded.FRAME) throw new ConnectionError(0, `bad frame: ${decoder.error}`);
          this.#onFrame(decoder.buffer, decoder.type, decoder.bodyStart, decoder.frameEnd);
        }
        const n = await this.#conn.read(decoder.readTarget());
        if (n === null) break;
        decoder.commit(n);
      }
      this.#fail(new ConnectionError(0, "closed by the server"));
    } catch (e) {
      this.#fail(e instanceof ConnectionError ? e : new ConnectionError(0, (e as Error).message));
    }
  }

  #onFrame(b: Uint8Array, type: number, body: number, end: number): void {
    if (type === FrameType.ACK) {
      const upTo = decodeAck(b, body, end);
      const pending = this.#pending;
      while (this.#head < pending.length && pending[this.#head]!.msgId <= upTo) {
        const p = pending[this.#head++]!;
        if (!p.settled) {
          p.settled = true;
          p.resolve();
        }
      }
      if (this.#head > 1024 && this.#head * 2 > pending.length) {
        this.#pending = pending.slice(this.#head);
        this.#head = 0;
      }
    } else if (type === FrameType.NACK) {
      const { msgId, code, reason } = decodeNack(b, body, end);
      for (let i = this.#head; i < this.#pending.length; i++) {
        const p = this.#pending[i]!;
        if (p.msgId === msgId && !p.settled) {
          p.settled = true;
          p.reject(new NackError(msgId, code, reason));
          break;
        }
      }
    } else if (type === FrameType.ERROR) {
      const { code, reason } = decodeError(b, body, end);
      throw new ConnectionError(code, reason);
    } else {
      throw new ConnectionError(0, `unexpected frame type 0x${type.toString(16)}`);
    }
  }

  #fail(error: ConnectionError): void {
    if (this.#error !== null) return;
    this.#error = this.#closing ? new ConnectionError(0, "closed by the client") : error;
    for (let i = this.#head; i < this.#pending.length; i++) {
      const p = this.#pending[i]!;
      if (!p.settled) {
        p.settled = true;
        p.reject(this.#error);
      }
    }
    this.#pending = [];
    this.#head = 0;
    closeQuietly(this.#conn);
    this.#resolveClosed(this.#closing ? null : error);
  }

  /** Closes the connection; messages not yet acked are rejected. */
  async close(): Promise<void> {
    this.#closing = true;
    await this.#outbox.flushing;
    this.#fail(new ConnectionError(0, "closed by the client"));
    await this.closed;
  }
}
