/**
 * Logging to stderr, one line per event: `2026-11-29T10:50:42.123Z INFO listening addr=...`.
 * Nothing is logged per message at the default level.
 *
 * @module
 */

import type { LogLevel } from "./config.ts";

const RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };
const encoder = new TextEncoder();
/** Lines below `error` per second; past it they are counted, not written, so a flood of bad peers cannot flood the log. */
const LINES_PER_SECOND = 1000;

/** Writes to stderr, whole, and never throws: a closed or broken stderr must not stop the server. */
function writeStderr(line: string): void {
  try {
    const bytes = encoder.encode(line);
    let done = 0;
    while (done < bytes.length) done += Deno.stderr.writeSync(bytes.subarray(done));
  } catch {
    // nowhere left to report it
  }
}

/** A leveled logger; the fields are written as `key=value` pairs. */
export class Logger {
  #min: number;
  readonly #sink: (line: string) => void;
  #second = 0;
  #lines = 0;
  #dropped = 0;
  readonly #throttles = new Map<string, { next: number; suppressed: number }>();

  /**
   * @example
   * ```ts
   * const log = new Logger("info");
   * log.info("listening", { addr: "127.0.0.1:9000" });
   * ```
   */
  /** Lines below `level` are dropped; `sink` receives each line (stderr by default). */
  constructor(level: LogLevel, sink?: (line: string) => void) {
    this.#min = RANK[level];
    this.#sink = sink ?? writeStderr;
  }

  /** True when `level` would be written; guard costly debug lines with it. */
  enabled(level: LogLevel): boolean {
    return RANK[level] >= this.#min;
  }

  /** Logs at `level`. */
  log(level: LogLevel, message: string, fields?: Record<string, unknown>): void {
    if (RANK[level] < this.#min) return;
    if (level !== "error") {
      const second = Math.floor(performance.now() / 1000);
      if (second !== this.#second) {
        const dropped = this.#dropped;
        this.#second = second;
        this.#lines = 0;
        this.#dropped = 0;
        if (dropped > 0) this.log("warn", "log lines dropped (over 1000 a second)", { dropped });
      }
      if (++this.#lines > LINES_PER_SECOND) {
        this.#dropped++;
        return;
      }
    }
    let line = `${new Date().toISOString()} ${level.toUpperCase()} ${message}`;
    if (fields !== undefined) {
      for (const [k, v] of Object.entries(fields)) {
        const text = typeof v === "string" ? v : String(v);
        line += ` ${k}=${/[\s"=]/.test(text) || text === "" ? JSON.stringify(text) : text}`;
      }
    }
    this.#sink(line + "\n");
  }

  /**
   * Logs at most one line per `intervalMs` for `key`, for a condition that can repeat as fast as
   * the server loops (an accept that keeps failing, a file that cannot be opened). The lines in
   * between are counted, and the count is written with the next line as `suppressed=N`.
   *
   * @example
   * ```ts
   * import { Logger } from "./log.ts";
   * const log = new Logger("info");
   * for (let i = 0; i < 3; i++) log.throttled("accept", 1000, "warn", "accept failed");
   * // one line now; the next one after a second says suppressed=2
   * ```
   */
  throttled(
    key: string,
    intervalMs: number,
    level: LogLevel,
    message: string,
    fields: Record<string, unknown> = {},
  ): void {
    const now = performance.now();
    let state = this.#throttles.get(key);
    if (state === undefined) {
      state = { next: 0, suppressed: 0 };
      this.#throttles.set(key, state);
    }
    if (now < state.next) {
      state.suppressed++;
      return;
    }
    const suppressed = state.suppressed;
    state.next = now + intervalMs;
    state.suppressed = 0;
    this.log(level, message, suppressed > 0 ? { ...fields, suppressed } : fields);
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
