/**
 * msgserver as its own process, for the tests and the load tool (`bench/load/`): starts
 * `src/cli/msgserver.ts` with `deno run -A`, waits for its `listening addr=HOST:PORT` line, keeps
 * its stderr, and stops it with a signal (and, if asked, SIGKILL after a grace period); and
 * `msgserver export` as a command.
 *
 * @module
 */

const MSGSERVER = decodeURIComponent(
  new URL("../../src/cli/msgserver.ts", import.meta.url).pathname,
);

/**
 * `msgserver export ARGS` as a command to run in `cwd`, where no app.conf is picked up (nor
 * `$MS_HOME/app.conf`): stdin closed, stderr piped, stdout piped only when asked.
 *
 * @example
 * ```ts
 * const out = await exportCommand(["--nats-urls", "nats://127.0.0.1:4222", "out.log"], "/tmp")
 *   .output();
 * console.log(out.code, new TextDecoder().decode(out.stderr));
 * ```
 */
export function exportCommand(
  args: string[],
  cwd: string,
  stdout: "null" | "piped" = "null",
): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MSGSERVER, "export", ...args],
    cwd,
    env: { MS_HOME: "" },
    stdin: "null",
    stdout,
    stderr: "piped",
  });
}

/** How a server stopped by {@linkcode SpawnedServer.shutdown} ended. */
export interface StopResult {
  /** Exit code (non-zero when a signal ended it). */
  code: number;
  /** The signal that ended it, or null when it exited by itself. */
  signal: Deno.Signal | null;
  /** True when it outlived the grace period and was killed with SIGKILL. */
  timedOut: boolean;
  /** Milliseconds from the shutdown call to the exit (and the end of its stderr). */
  ms: number;
}

/** Options of {@linkcode SpawnedServer.shutdown}. */
export interface ShutdownOptions {
  /** The signal sent first; SIGTERM by default. */
  signal?: Deno.Signal;
  /** How long to wait for the exit before SIGKILL; no limit by default. */
  graceMs?: number;
}

/** msgserver running as its own process (see {@linkcode spawnServer}). */
export interface SpawnedServer {
  child: Deno.ChildProcess;
  /** Its process id (for /proc/PID readings). */
  pid: number;
  /** The port of its `listening addr=HOST:PORT` line. */
  port: number;
  /** Everything it wrote to stderr so far. */
  stderr(): string;
  /** Resolves when its stderr is drained (after the process ended). */
  drained: Promise<void>;
  /** Its exit status once it has exited, else null. */
  exitStatus(): Deno.CommandStatus | null;
  /**
   * Sends `signal` (SIGTERM by default) unless it has exited, waits for the exit and the drained
   * stderr, and returns the exit code. Later calls, and calls of `shutdown`, share the first
   * call's outcome.
   */
  stop(signal?: Deno.Signal): Promise<number>;
  /**
   * Like `stop`, but after `graceMs` sends SIGKILL, and reports the signal, whether the grace
   * period ran out, and how long it took. Later calls, and calls of `stop`, share the first call's
   * outcome.
   */
  shutdown(options?: ShutdownOptions): Promise<StopResult>;
}

/** Options of {@linkcode spawnServer}. */
export interface SpawnOptions {
  /** Arguments after the script, e.g. flags. */
  args?: string[];
  /** Deno's permission flags; `["-A"]` by default. */
  permissions?: string[];
  /** Environment variables set for it, over the default `MS_HOME=dir`. */
  env?: Record<string, string>;
  /** Only a listen line on this port counts (the server must be configured with it). */
  port?: number;
  /** How long to wait for the listen line; 15 s by default. */
  timeoutMs?: number;
  /** Called with each complete line it writes to stderr, as it comes. */
  onLine?: (line: string) => void;
  /**
   * Its limit of open files (soft and hard), set with util-linux `prlimit`, which then runs Deno
   * in its own place (so `pid` and signals are Deno's).
   */
  maxOpenFiles?: number;
}

/** {@linkcode spawnServer} gave up: the process exited or stayed silent before it listened. */
export class ServerStartError extends Error {
  /** Everything the process wrote to stderr. */
  readonly stderr: string;
  /** Why: it exited, or no listen line came within the time allowed. */
  readonly reason: "exited" | "timeout";

  constructor(stderr: string, reason: "exited" | "timeout" = "exited") {
    super(`Server did not start:\n${stderr}`);
    this.name = "ServerStartError";
    this.stderr = stderr;
    this.reason = reason;
  }
}

/**
 * Starts `msgserver` as its own process with MS_HOME=dir (unless `options.env` says otherwise),
 * in `dir`, stdin and stdout closed and stderr captured, and waits for its
 * `listening addr=HOST:PORT` line. If the process exits first or the line does not come in time,
 * kills it, waits for it and throws a {@linkcode ServerStartError}.
 *
 * @example
 * ```ts
 * const dir = await Deno.makeTempDir();
 * const server = await spawnServer(dir, {
 *   args: ["--port", "0", "--file-name", `${dir}/messages.log`],
 *   env: { MS_HOME: "" }, // no app.conf: settings by flags only
 * });
 * const { code, ms } = await server.shutdown({ graceMs: 30_000 });
 * console.log(`port ${server.port}: exit ${code} in ${ms.toFixed(0)} ms`);
 * ```
 */
export async function spawnServer(dir: string, options: SpawnOptions = {}): Promise<SpawnedServer> {
  const deno = [
    ...[Deno.execPath(), "run", ...options.permissions ?? ["-A"], MSGSERVER],
    ...options.args ?? [],
  ];
  const argv = options.maxOpenFiles === undefined
    ? deno
    : ["prlimit", `--nofile=${options.maxOpenFiles}:${options.maxOpenFiles}`, "--", ...deno];
  const child = new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    env: { MS_HOME: dir, ...options.env },
    cwd: dir,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let status: Deno.CommandStatus | null = null;
  child.status.then((s) => status = s);
  const wanted = new RegExp(`listening addr=\\S+:(${options.port ?? "\\d+"})\\s`);
  const onLine = options.onLine;
  let text = "";
  let lineStart = 0;
  let seen = false;
  let signal: (port: number | null) => void = () => {};
  const listening = new Promise<number | null>((r) => signal = r);
  const drained = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      text += chunk;
      if (onLine !== undefined) {
        for (let nl = text.indexOf("\n", lineStart); nl >= 0; nl = text.indexOf("\n", lineStart)) {
          onLine(text.slice(lineStart, nl));
          lineStart = nl + 1;
        }
      }
      const m = seen ? null : text.match(wanted);
      if (m !== null) {
        seen = true;
        signal(Number(m[1]));
      }
    }
    if (onLine !== undefined && lineStart < text.length) onLine(text.slice(lineStart));
    signal(null);
  })();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const port = await Promise.race([
    listening,
    new Promise<"timeout">((r) =>
      timer = setTimeout(() => r("timeout"), options.timeoutMs ?? 15000)
    ),
  ]);
  clearTimeout(timer);
  let ending: Promise<StopResult> | null = null;
  const shutdown = (opts: ShutdownOptions = {}): Promise<StopResult> => {
    ending ??= endProcess(child, drained, opts);
    return ending;
  };
  if (typeof port !== "number") {
    await shutdown({ signal: "SIGKILL" });
    throw new ServerStartError(text, port === null ? "exited" : "timeout");
  }
  return {
    child,
    pid: child.pid,
    port,
    stderr: () => text,
    drained,
    exitStatus: () => status,
    stop: async (sig: Deno.Signal = "SIGTERM") => (await shutdown({ signal: sig })).code,
    shutdown,
  };
}

async function endProcess(
  child: Deno.ChildProcess,
  drained: Promise<void>,
  options: ShutdownOptions,
): Promise<StopResult> {
  const t0 = performance.now();
  kill(child, options.signal ?? "SIGTERM");
  let timedOut = false;
  if (options.graceMs !== undefined) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const outcome = await Promise.race([
      child.status,
      new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), options.graceMs)),
    ]);
    clearTimeout(timer);
    if (outcome === "timeout") {
      timedOut = true;
      kill(child, "SIGKILL");
    }
  }
  const status = await child.status;
  await drained;
  return { code: status.code, signal: status.signal, timedOut, ms: performance.now() - t0 };
}

function kill(child: Deno.ChildProcess, signal: Deno.Signal): void {
  try {
    child.kill(signal);
  } catch {
    // exited already
  }
}
