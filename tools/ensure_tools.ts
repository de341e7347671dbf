/**
 * Brings in the external programs some tests need, so that `deno task test` (which runs this
 * first) gives a newcomer the whole suite from one command. For each tool whose binary is missing
 * it runs, as root, `apt-get update` (once) and `apt-get install -y --no-install-recommends PKG`.
 * Where it cannot (not root, no apt-get, apt failed, offline) it prints one line per missing tool
 * naming the tests that will skip, and still exits 0: those tests are then ignored, each file
 * printing a `SKIPPED:` line (`tests/support/tools.ts`), and `.ci/run` fails on any skip. With
 * every binary present it only looks at the file system.
 *
 * `deno run -A tools/ensure_tools.ts`
 *
 * @module
 */

/** An external program some tests need, and the Debian package that brings it. */
export interface Tool {
  /** The Debian package. */
  package: string;
  /** The binary that shows the package is there: a name looked up on PATH, or an absolute path. */
  binary: string;
}

/** The external tools, by the name tests pass to `requireTool`. */
export const TOOLS = {
  "nats-server": { package: "nats-server", binary: "nats-server" },
  chromium: { package: "chromium", binary: "/usr/bin/chromium" },
  prometheus: { package: "prometheus", binary: "promtool" },
  systemd: { package: "systemd", binary: "systemd-analyze" },
  logrotate: { package: "logrotate", binary: "logrotate" },
} as const satisfies Record<string, Tool>;

/** The name of an external tool. */
export type ToolName = keyof typeof TOOLS;

/** What an apt-get run returned. */
export interface AptResult {
  /** True when it exited 0. */
  ok: boolean;
  /** Its stdout and stderr. */
  output: string;
}

/** Options of {@linkcode ensureTools}; the defaults are the real machine. */
export interface EnsureOptions {
  /** The tools to check; {@linkcode TOOLS} by default. */
  tools?: Record<string, Tool>;
  /** Whether installing is allowed; by default, whether this process runs as root. */
  root?: boolean;
  /** Runs apt-get with these arguments; the real apt-get by default. */
  apt?: (args: string[]) => Promise<AptResult>;
  /** Receives each line for the user; stderr by default. */
  log?: (line: string) => void;
}

const REPO = new URL("../", import.meta.url);
/** Where tests that call `requireTool` live. */
const TEST_DIRS = ["tests", "src", "bench"];
const SBIN = ["/usr/local/sbin", "/usr/sbin", "/sbin"];
const APT_OPTIONS = [
  "-q",
  "-o",
  "Acquire::Retries=1",
  "-o",
  "Acquire::http::Timeout=30",
  "-o",
  "DPkg::Lock::Timeout=300",
];

/**
 * The path of `binary`: itself when absolute and present, else the first executable of that name
 * on PATH or in the sbin directories (Debian puts `nats-server` in /usr/sbin, which is not on a
 * user's PATH); null when there is none.
 *
 * @example
 * ```ts
 * import { findBinary } from "./ensure_tools.ts";
 * findBinary("sh"); // "/usr/bin/sh" or "/bin/sh"
 * ```
 */
export function findBinary(binary: string): string | null {
  const candidates = binary.includes("/")
    ? [binary]
    : [...(Deno.env.get("PATH") ?? "").split(":"), ...SBIN].filter((d) => d !== "")
      .map((d) => `${d}/${binary}`);
  for (const path of candidates) {
    try {
      const info = Deno.statSync(path);
      if (info.isFile && ((info.mode ?? 0o111) & 0o111) !== 0) return path;
    } catch {
      // not there
    }
  }
  return null;
}

/**
 * The command that installs `tool` on Debian, as root.
 *
 * @example
 * ```ts
 * import { installCommand, TOOLS } from "./ensure_tools.ts";
 * installCommand(TOOLS.chromium);
 * // "apt-get update && apt-get install -y --no-install-recommends chromium"
 * ```
 */
export function installCommand(tool: Tool): string {
  return `apt-get update && apt-get install -y --no-install-recommends ${tool.package}`;
}

/**
 * The test files (relative to the repository) that call `requireTool(name)`, sorted.
 *
 * @example
 * ```ts
 * import { testsUsing } from "./ensure_tools.ts";
 * await testsUsing("nats-server"); // ["tests/support/nats_cluster_test.ts", ...]
 * ```
 */
export async function testsUsing(name: string): Promise<string[]> {
  const found: string[] = [];
  const pattern = new RegExp(`requireTool\\(\\s*["']${name.replace(/[^\w]/g, "\\$&")}["']`);
  async function walk(relative: string): Promise<void> {
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(new URL(relative, REPO)));
    } catch {
      return;
    }
    for (const entry of entries) {
      const path = `${relative}/${entry.name}`;
      if (entry.isDirectory) await walk(path);
      else if (entry.isFile && entry.name.endsWith("_test.ts")) {
        if (pattern.test(await Deno.readTextFile(new URL(path, REPO)))) found.push(path);
      }
    }
  }
  for (const dir of TEST_DIRS) await walk(dir);
  return found.sort();
}

/** Runs the real apt-get, non-interactive, output captured. */
async function runApt(args: string[]): Promise<AptResult> {
  try {
    const { code, stdout, stderr } = await new Deno.Command("apt-get", {
      args: [...APT_OPTIONS, ...args],
      env: { DEBIAN_FRONTEND: "noninteractive" },
      stdin: "null",
    }).output();
    const decoder = new TextDecoder();
    return { ok: code === 0, output: decoder.decode(stdout) + decoder.decode(stderr) };
  } catch (error) {
    return { ok: false, output: `cannot run apt-get: ${(error as Error).message}` };
  }
}

/** The line of apt's output that says why it failed (its last error, else its last line). */
function aptReason(output: string): string {
  const lines = output.split("\n").map((l) => l.trim()).filter((l) => l !== "");
  return lines.findLast((l) => l.startsWith("E:")) ?? lines.at(-1) ?? "no output";
}

/**
 * Installs the missing tools where it can and reports those it cannot, one line each; returns the
 * names of the tools still missing.
 *
 * @example
 * ```ts ignore
 * import { ensureTools } from "./ensure_tools.ts";
 * await ensureTools(); // [] when every tool is there (or was just installed)
 * ```
 */
export async function ensureTools(options: EnsureOptions = {}): Promise<string[]> {
  const tools: Record<string, Tool> = options.tools ?? TOOLS;
  const log = options.log ?? ((line: string) => console.error(line));
  const apt = options.apt ?? runApt;
  const missing = Object.keys(tools).filter((name) => findBinary(tools[name]!.binary) === null);
  if (missing.length === 0) return [];

  const why = new Map<string, string>();
  const root = options.root ?? Deno.uid() === 0;
  if (!root) {
    for (const name of missing) why.set(name, "not root, so apt-get cannot install it");
  } else {
    const packages = missing.map((name) => tools[name]!.package).join(", ");
    log(`ensure_tools: installing ${packages} with apt-get (once; may take a few minutes)`);
    const update = await apt(["update"]);
    for (const name of missing) {
      const tool = tools[name]!;
      const started = Date.now();
      const install = await apt(["install", "-y", "--no-install-recommends", tool.package]);
      if (!install.ok) {
        const updateNote = update.ok
          ? ""
          : ` (apt-get update failed too: ${aptReason(update.output)})`;
        why.set(
          name,
          `apt-get install ${tool.package} failed: ${aptReason(install.output)}${updateNote}`,
        );
      } else if (findBinary(tool.binary) === null) {
        why.set(name, `apt-get installed ${tool.package}, but ${tool.binary} is still missing`);
      } else {
        log(
          `ensure_tools: installed ${tool.package} (${
            Math.round((Date.now() - started) / 1000)
          } s)`,
        );
      }
    }
  }
  for (const [name, reason] of why) {
    const tests = await testsUsing(name);
    const skips = tests.length === 0 ? "no test uses it yet" : `${tests.join(", ")} will skip`;
    log(
      `ensure_tools: ${name} (${tools[name]!.binary}) is missing: ${reason}; ${skips}. ` +
        `Install it with: ${installCommand(tools[name]!)}`,
    );
  }
  return [...why.keys()];
}

if (import.meta.main) {
  await ensureTools();
}
