/**
 * Test helpers: a real server on a free loopback port writing to a file in a temporary folder,
 * the server as its own process (re-exported from `support/spawn.ts`, which the load tool shares),
 * a raw peer that speaks frames byte by byte, a seeded PRNG and small socket utilities.
 *
 * @module
 */

import { type Config, DEFAULTS } from "../src/config.ts";
import { Logger } from "../src/log.ts";
import { Decoded } from "../src/protocol/decoder.ts";
import { encodeHello, FrameType } from "../src/protocol/frames.ts";
import {
  decodeAck,
  decodeError,
  decodeNack,
  decodeWelcome,
  replyDecoder,
} from "../src/protocol/replies.ts";
import { type ParsedLine, parseFile } from "../src/server/line.ts";
import { type MsgServer, startServer } from "../src/server/server.ts";
import type { Store } from "../src/store/store.ts";

/** A server under test and where it writes. */
export interface TestServer {
  server: MsgServer;
  port: number;
  file: string;
  dir: string;
  /** Log lines the server wrote. */
  logs: string[];
}

/**
 * Runs `fn` against a fresh server (PORT 0, file in a new temp folder), then shuts the server
 * down and removes the folder.
 */
export async function withServer(
  overrides: Partial<Config>,
  fn: (t: TestServer) => void | Promise<void>,
  options: { store?: Store } = {},
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "msgserver_test_" });
  const file = `${dir}/messages.log`;
  const logs: string[] = [];
  const log = new Logger(overrides.LOG_LEVEL ?? "debug", (line) => logs.push(line));
  const server = await startServer(
    { ...DEFAULTS, PORT: 0, FILE_NAME: file, ...overrides },
    { log, writeRetryMs: 200, ...options },
  );
  try {
    await fn({ server, port: server.addr.port, file, dir, logs });
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Runs `fn` with a fresh temporary folder named `prefix...`, removed afterwards. */
export async function withTempDir(
  prefix: string,
  fn: (dir: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Reads and parses the data file. */
export async function readRecords(file: string): Promise<ParsedLine[]> {
  return parseFile(await Deno.readFile(file));
}

/** Reads the data file as text. */
export function readText(file: string): Promise<string> {
  return Deno.readTextFile(file);
}

/** One frame received by a {@linkcode RawPeer}. */
export interface Frame {
  type: number;
  body: Uint8Array;
}

/** Decodes a WELCOME, ACK, NACK or ERROR body for assertions. */
export function describeFrame(f: Frame): string {
  const { body } = f;
  switch (f.type) {
    case FrameType.WELCOME: {
      const w = decodeWelcome(body, 0, body.length);
      const state = w.sessionKnown === null ? "" : w.sessionKnown ? " known" : " unknown";
      return `WELCOME v${w.version} max=${w.maxMessageBytes} last=${w.lastMsgId}${state}`;
    }
    case FrameType.ACK:
      return `ACK ${decodeAck(body, 0, body.length)}`;
    case FrameType.NACK: {
      const n = decodeNack(body, 0, body.length);
      return `NACK ${n.msgId} ${n.code} ${n.reason}`;
    }
    case FrameType.ERROR: {
      const e = decodeError(body, 0, body.length);
      return `ERROR ${e.code} ${e.reason}`;
    }
    default:
      return `TYPE 0x${f.type.toString(16)}`;
  }
}

/** A client that sends raw bytes and reads frames one at a time. */
export class RawPeer {
  readonly conn: Deno.TcpConn;
  readonly #decoder = replyDecoder();
  #closed = false;

  private constructor(conn: Deno.TcpConn) {
    this.conn = conn;
  }

  /** Connects to the server on `port`. */
  static async connect(port: number): Promise<RawPeer> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.setNoDelay(true);
    return new RawPeer(conn);
  }

  /** Connects and completes HELLO/WELCOME; returns the peer and the WELCOME text. */
  static async hello(
    port: number,
    clientId: number,
    session = 0n,
    token = "",
  ): Promise<{ peer: RawPeer; welcome: string }> {
    const peer = await RawPeer.connect(port);
    await peer.write(encodeHello({ clientId, session, token }));
    return { peer, welcome: describeFrame(await peer.read()) };
  }

  /** Writes every byte. */
  write(bytes: Uint8Array): Promise<void> {
    return writeAll(this.conn, bytes);
  }

  /** Reads the next frame; throws if the connection closes first or nothing comes in time. */
  async read(timeoutMs = 5000): Promise<Frame> {
    const frame = await this.readOrClose(timeoutMs);
    if (frame === null) throw new Error("Connection closed while a frame was expected");
    return frame;
  }

  /** Reads the next frame, or null if the server closed the connection. */
  async readOrClose(timeoutMs = 5000): Promise<Frame | null> {
    const d = this.#decoder;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`No frame within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    try {
      for (;;) {
        const r = d.next();
        if (r === Decoded.FRAME) {
          return { type: d.type, body: d.buffer.slice(d.bodyStart, d.frameEnd) };
        }
        if (r !== Decoded.NEED_MORE) throw new Error(`Bad frame from server: ${d.error}`);
        if (this.#closed) return null;
        const n = await Promise.race([this.conn.read(d.readTarget()), timeout]);
        if (n === null) {
          this.#closed = true;
          return null;
        }
        d.commit(n);
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** Reads frames until the server closes; returns them described. */
  async readUntilClose(timeoutMs = 5000): Promise<string[]> {
    const seen: string[] = [];
    for (;;) {
      let frame: Frame | null;
      try {
        frame = await this.readOrClose(timeoutMs);
      } catch (e) {
        if (e instanceof Deno.errors.ConnectionReset) return seen;
        throw e;
      }
      if (frame === null) return seen;
      seen.push(describeFrame(frame));
    }
  }

  /** Closes the socket. */
  close(): void {
    closeQuietly(this.conn);
  }
}

export { closeQuietly, concat, delay, writeAll } from "../src/io/mod.ts";
import { closeQuietly, writeAll } from "../src/io/mod.ts";

/**
 * A loopback port that was free a moment ago: binds 127.0.0.1 port 0, notes the port, closes.
 * Nothing listens on it afterwards (unless something else takes it meanwhile).
 */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/**
 * mulberry32: a small seeded PRNG, uniform in [0, 1). The same seed always gives the same
 * sequence, so a test that draws from it checks the same cases on every run.
 *
 * @example
 * ```ts
 * const random = mulberry32(7);
 * const coin = random() < 0.5;
 * ```
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export {
  ServerStartError,
  type ShutdownOptions,
  type SpawnedServer,
  type SpawnOptions,
  spawnServer,
  type StopResult,
} from "./support/spawn.ts";
