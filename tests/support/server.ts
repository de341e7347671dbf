/**
 * A real server on a free loopback port for a test, writing to a file in a temporary folder, and
 * reading that file back.
 *
 * @module
 */

import { deepStrictEqual, equal } from "node:assert/strict";
import { type Config, DEFAULTS } from "../../src/config.ts";
import { delay } from "../../src/io/within.ts";
import { Logger } from "../../src/log.ts";
import { type ParsedLine, parseFile } from "../../src/server/line.ts";
import { type MsgServer, startServer } from "../../src/server/server.ts";
import type { Store } from "../../src/store/store.ts";

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

/** Polls until the data file holds at least `n` records (for up to about 5 s). */
export async function waitForRecords(file: string, n: number): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if ((await readRecords(file)).length >= n) return;
    await delay(10);
  }
  throw new Error(`The file never reached ${n} records`);
}

/**
 * Asserts that the file holds client `clientId`'s messages 1..n exactly once, in order, each
 * with the payload `m<msg_id>`.
 */
export async function assertExactlyOnce(file: string, clientId: number, n: number): Promise<void> {
  const dec = new TextDecoder();
  const records = (await readRecords(file)).filter((r) => r.clientId === clientId);
  deepStrictEqual(records.map((r) => r.msgId), Array.from({ length: n }, (_, i) => i + 1));
  for (const r of records) equal(dec.decode(r.payload), `m${r.msgId}`);
}
