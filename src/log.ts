/**
 * Logging to stderr, one line per event: `2026-11-29T10:50:42.123Z INFO listening addr=...`.
 * Nothing is logged per message at the default level.
 *
 * @module
 */

import type { LogLevel } from "./config.ts";

const RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };
const encoder = new TextEncoder();

/** A leveled logger; the fields are written as `key=value` pairs. */
export class Logger {
  #min: number;
  readonly #sink: (line: string) => void;

  /**
   * @example
   * ```ts
   * const log = new Logger("info");
   * log.info("listening", { addr: "127.0.0.1:9000" });
   * ```
   */
  constructor(level: LogLevel, sink?: (line: string) => void) {
    this.#min = RANK[level];
    this.#sink = sink ?? ((line) => Deno.stderr.writeSync(encoder.encode(line)));
  }

  /** True when `level` would be written; guard costly debug lines with it. */
  enabled(level: LogLevel): boolean {
    return RANK[level] >= this.#min;
  }

  /** Logs at `level`. */
  log(level: LogLevel, message: string, fields?: Record<string, unknown>): void {
    if (RANK[level] < this.#min) return;
    let line = `${new Date().toISOString()} ${level.toUpperCase()} ${message}`;
    if (fields !== undefined) {
      for (const [k, v] of Object.entries(fields)) {
        const text = typeof v === "string" ? v : String(v);
        line += ` ${k}=${/[\s"=]/.test(text) || text === "" ? JSON.stringify(text) : text}`;
      }
    }
    this.#sink(line + "\n");
  }

  /** Logs a debugging detail. */
  debug(message: string, fields?: Record<string, unknown>): void {
    this.log("debug", message, fields);
  }
  /** Logs an event that matters. */
  info(message: string, fields?: Record<string, unknown>): void {
    this.log("info", message, fields);
  }
  /** Logs something wrong that the server survives. */
  warn(message: string, fields?: Record<string, unknown>): void {
    this.log("warn", message, fields);
  }
  /** Logs a failure. */
  error(message: string, fields?: Record<string, unknown>): void {
    this.log("error", message, fields);
  }
}
