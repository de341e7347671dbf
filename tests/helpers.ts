/**
 * Test helpers: a real server on a free loopback port writing to a file in a temporary folder,
 * and a raw peer that speaks frames byte by byte.
 *
 * @module
 */

import { type Config, DEFAULTS } from "../src/config.ts";
import { Logger } from "../src/log.ts";
import { Decoded, FrameDecoder } from "../src/protocol/decoder.ts";
import { encodeHello, FrameType, MAX_CONTROL_FRAME_LENGTH } from "../src/protocol/frames.ts";
import { type ParsedLine, parseFile } from "../src/server/line.ts";
import { type MsgServer, startServer } from "../src/server/server.ts";

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
  fn: (t: TestServer) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "msgserver_test_" });
  const file = `${dir}/messages.log`;
  const logs: string[] = [];
  const log = new Logger(overrides.LOG_LEVEL ?? "debug", (line) => logs.push(line));
  const server = await startServer(
    { ...DEFAULTS, PORT: 0, FILE_NAME: file, ...overrides },
    { log, writeRetryMs: 200 },
  );
  try {
    await fn({ server, port: server.addr.port, file, dir, logs });
  } finally {
    await server.shutdown();
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

const text = new TextDecoder();

/** Decodes an ACK, NACK or ERROR body for assertions. */
export function describeFrame(f: Frame): string {
  const view = new DataView(f.body.buffer, f.body.byteOffset, f.body.length);
  switch (f.type) {
    case FrameType.WELCOME:
      return `WELCOME v${view.getUint8(0)} max=${view.getUint32(1)} last=${view.getUint32(5)}`;
    case FrameType.ACK:
      return `ACK ${view.getUint32(0)}`;
    case FrameType.NACK:
      return `NACK ${view.getUint32(0)} ${view.getUint16(4)} ${text.decode(f.body.subarray(6))}`;
    case FrameType.ERROR:
      return `ERROR ${view.getUint16(0)} ${text.decode(f.body.subarray(2))}`;
    default:
      return `TYPE 0x${f.type.toString(16)}`;
  }
}

/** A client that sends raw bytes and reads frames one at a time. */
export class RawPeer {
  readonly conn: Deno.TcpConn;
  readonly #decoder = new FrameDecoder({
    maxMsgLength: MAX_CONTROL_FRAME_LENGTH,
    maxSkippedMsgLength: MAX_CONTROL_FRAME_LENGTH,
    maxControlLength: MAX_CONTROL_FRAME_LENGTH,
  });
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
  async write(bytes: Uint8Array): Promise<void> {
    let done = 0;
    while (done < bytes.length) done += await this.conn.write(bytes.subarray(done));
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
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }
}

/** Concatenates byte arrays. */
export function concat(parts: Uint8Array[]): Uint8Array {
  let total = 0;
  for (const p of parts) total += p.length;
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Resolves after `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
