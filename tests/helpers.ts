/**
 * Test helpers: a real server on a free loopback port writing to a file in a temporary folder,
 * the server as its own process, a raw peer that speaks frames byte by byte, a seeded PRNG and
 * small socket utilities.
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
      return `WELCOME v${w.version} max=${w.maxMessageBytes} last=${w.lastMsgId}`;
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

const MSGSERVER = new URL("../src/cli/msgserver.ts", import.meta.url).pathname;

/** msgserver running as its own process (see {@linkcode spawnServer}). */
export interface SpawnedServer {
  child: Deno.ChildProcess;
  /** The port of its `listening addr=HOST:PORT` line. */
  port: number;
  /** Everything it wrote to stderr so far. */
  stderr(): string;
  /** Resolves when its stderr is drained (after the process ended). */
  drained: Promise<void>;
  /**
   * Sends `signal` (SIGTERM by default) unless it has exited, waits for the exit and the drained
   * stderr, and returns the exit code. Later calls return the first call's result.
   */
  stop(signal?: Deno.Signal): Promise<number>;
}

/** Options of {@linkcode spawnServer}. */
export interface SpawnOptions {
  /** Arguments after the script, e.g. flags. */
  args?: string[];
  /** Only a listen line on this port counts (the server must be configured with it). */
  port?: number;
  /** How long to wait for the listen line; 15 s by default. */
  timeoutMs?: number;
}

/** {@linkcode spawnServer} gave up: the process exited or stayed silent before it listened. */
export class ServerStartError extends Error {
  /** Everything the process wrote to stderr. */
  readonly stderr: string;

  constructor(stderr: string) {
    super(`Server did not start:\n${stderr}`);
    this.name = "ServerStartError";
    this.stderr = stderr;
  }
}

/**
 * Starts `msgserver` as its own process with MS_HOME=dir, in `dir`, stdin and stdout closed and
 * stderr captured, and waits for its `listening addr=HOST:PORT` line. If the process exits first
 * or the line does not come in time, kills it, waits for it and throws a
 * {@linkcode ServerStartError}.
 */
export async function spawnServer(dir: string, options: SpawnOptions = {}): Promise<SpawnedServer> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MSGSERVER, ...(options.args ?? [])],
    env: { MS_HOME: dir },
    cwd: dir,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const wanted = new RegExp(`listening addr=\\S+:(${options.port ?? "\\d+"})\\s`);
  let text = "";
  let seen = false;
  let signal: (port: number | null) => void = () => {};
  const listening = new Promise<number | null>((r) => signal = r);
  const drained = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      text += chunk;
      const m = seen ? null : text.match(wanted);
      if (m !== null) {
        seen = true;
        signal(Number(m[1]));
      }
    }
    signal(null);
  })();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const port = await Promise.race([
    listening,
    new Promise<null>((r) => timer = setTimeout(() => r(null), options.timeoutMs ?? 15000)),
  ]);
  clearTimeout(timer);
  let exit: Promise<number> | null = null;
  const stop = (sig: Deno.Signal = "SIGTERM"): Promise<number> => {
    exit ??= (async () => {
      try {
        child.kill(sig);
      } catch {
        // exited already
      }
      const status = await child.status;
      await drained;
      return status.code;
    })();
    return exit;
  };
  if (port === null) {
    await stop("SIGKILL");
    throw new ServerStartError(text);
  }
  return { child, port, stderr: () => text, drained, stop };
}
