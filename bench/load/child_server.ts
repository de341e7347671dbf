/**
 * The server the load tool starts when no `--port` is given: msgserver as a child process
 * (through the tests' {@linkcode spawnServer}) on a free port, with a fresh data file in a temp
 * dir, settings by flags only (more can be given, e.g. the cluster preset's `--store jetstream`
 * and `--nats-*`), and its warnings echoed to stderr as they come.
 *
 * @module
 */

import type { AckMode } from "../../src/config.ts";
import {
  ServerStartError,
  type SpawnedServer,
  spawnServer,
  type StopResult,
} from "../../tests/support/spawn.ts";
import { readCpu, readStatusBytes } from "./proc.ts";

/** Server lines echoed to stderr at most; the rest are only in the server log. */
const ECHO_LIMIT = 40;
/** How long the server has to print its listening line. */
const START_TIMEOUT_MS = 30_000;

/** Options of {@linkcode ChildServer.start}. */
export interface ChildServerOptions {
  /** Flags after the tool's own (which they override), e.g. `["--store", "jetstream"]`. */
  args?: string[];
  /** Where to make its temp dir; the system's temp folder by default. */
  parentDir?: string;
  /** A label for the lines it echoes (`[server]` by default, `[server R1]` with "R1"). */
  label?: string;
  /** Serve the original server's protocol on this LEGACY_PORT too (a free port, say). */
  legacyPort?: number;
}

/** What the server cost over the run, and how it ended. */
export interface ServerOutcome {
  /** CPU seconds (user, system), read just before it was stopped. */
  cpu: { user: number; sys: number } | null;
  /** Peak resident memory (VmHWM), read just before it was stopped. */
  peakRssBytes: number | null;
  /** How it ended after SIGTERM. */
  exit: StopResult;
  /** True when it was gone before it was stopped. */
  exitedEarly: boolean;
}

/**
 * A msgserver child process with its temp dir (`messages.log`, and `server.log` once stopped).
 *
 * @example
 * ```ts
 * const server = await ChildServer.start("127.0.0.1", "written");
 * console.error(`pid ${server.pid}, port ${server.port}, data file ${server.file}`);
 * const { exit } = await server.stop(30_000);
 * await server.removeDir();
 * ```
 */
export class ChildServer {
  /** Its address. */
  readonly host: string;
  /** The temp dir it runs in. */
  readonly dir: string;
  /** Its data file. */
  readonly file: string;
  /** Its LEGACY_PORT, or null when it has none. */
  readonly legacyPort: number | null;
  readonly #spawned: SpawnedServer;

  private constructor(
    host: string,
    dir: string,
    spawned: SpawnedServer,
    legacyPort: number | null,
  ) {
    this.host = host;
    this.dir = dir;
    this.file = `${dir}/messages.log`;
    this.legacyPort = legacyPort;
    this.#spawned = spawned;
  }

  /**
   * Starts msgserver on `host`, port 0, with `ackMode` and `options.args`, and waits for it to
   * listen. Throws an `Error` with its log if it does not (and removes the temp dir).
   */
  static async start(
    host: string,
    ackMode: AckMode,
    options: ChildServerOptions = {},
  ): Promise<ChildServer> {
    const dir = await Deno.makeTempDir({
      prefix: "msgserver-bench-",
      ...(options.parentDir !== undefined ? { dir: options.parentDir } : {}),
    });
    const label = options.label === undefined ? "[server]" : `[server ${options.label}]`;
    let echoed = 0;
    const echo = (line: string) => {
      if (/ (INFO|DEBUG) /.test(line)) return;
      if (echoed < ECHO_LIMIT) console.error(`${label} ${line}`);
      else if (echoed === ECHO_LIMIT) console.error(`${label} (more lines in the server log)`);
      echoed++;
    };
    try {
      const spawned = await spawnServer(dir, {
        args: [
          ...["--ip", host, "--port", "0", "--file-name", `${dir}/messages.log`],
          ...["--ack-mode", ackMode, "--log-level", "info", "--auth-token", ""],
          ...options.legacyPort !== undefined ? ["--legacy-port", String(options.legacyPort)] : [],
          ...options.args ?? [],
        ],
        // In the temp dir no ./app.conf is picked up, and an empty MS_HOME skips $MS_HOME/app.conf.
        env: { MS_HOME: "" },
        timeoutMs: START_TIMEOUT_MS,
        onLine: echo,
      });
      return new ChildServer(host, dir, spawned, options.legacyPort ?? null);
    } catch (e) {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      if (!(e instanceof ServerStartError)) throw e;
      const why = e.reason === "timeout"
        ? `no listening line in ${START_TIMEOUT_MS / 1000} s`
        : "exited";
      throw new Error(`Cannot start the server (${why}); its log:\n${e.stderr.trimEnd()}`);
    }
  }

  /** Its process id. */
  get pid(): number {
    return this.#spawned.pid;
  }

  /** The port it listens on. */
  get port(): number {
    return this.#spawned.port;
  }

  /** True once it has exited. */
  get exited(): boolean {
    return this.#spawned.exitStatus() !== null;
  }

  /** Everything it wrote to stderr so far (its log, INFO lines included). */
  log(): string {
    return this.#spawned.stderr();
  }

  /** Its resident memory now (VmRSS), or null when unknown. */
  rss(): Promise<number | null> {
    return readStatusBytes(this.pid, "VmRSS");
  }

  /**
   * Reads its CPU seconds and peak memory, sends SIGTERM, waits up to `limitMs` for the exit
   * (SIGKILL after that), and writes its stderr to `server.log` in the temp dir.
   */
  async stop(limitMs: number): Promise<ServerOutcome> {
    const exitedEarly = this.exited;
    const cpu = await readCpu(this.pid);
    const peakRssBytes = await readStatusBytes(this.pid, "VmHWM");
    const exit = await this.#spawned.shutdown({ signal: "SIGTERM", graceMs: limitMs });
    const log = this.#spawned.stderr();
    await Deno.writeTextFile(`${this.dir}/server.log`, log.endsWith("\n") ? log : log + "\n");
    return { cpu, peakRssBytes, exit, exitedEarly };
  }

  /** Kills it at once and, unless `keep`, removes the temp dir (for Ctrl-C; synchronous). */
  abort(keep: boolean): void {
    try {
      this.#spawned.child.kill("SIGKILL");
    } catch {
      // exited already
    }
    if (keep) return;
    try {
      Deno.removeSync(this.dir, { recursive: true });
    } catch {
      // best effort
    }
  }

  /** Removes the temp dir. */
  removeDir(): Promise<void> {
    return Deno.remove(this.dir, { recursive: true });
  }
}
