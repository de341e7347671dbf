// Tests for tcp_tuning_params.sh. The script is only ever run with --dry-run, --help or a bad
// flag here, and always with MSGSERVER_SYSCTL_FILE pointing into a temporary directory, so
// nothing on the host is changed.
import { exists } from "../src/io/exists.ts";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { withTempDir } from "./support/server.ts";

const REPO_ROOT = fileURLToPath(new URL("..", import.meta.url));
const SCRIPT = "tcp_tuning_params.sh";

/** Every key the script must cover, with the value it must plan. */
const PLANNED: ReadonlyArray<readonly [string, string]> = [
  ["net.core.somaxconn", "4096"],
  ["net.ipv4.tcp_max_syn_backlog", "8192"],
  ["net.ipv4.ip_local_port_range", "10240 65535"],
  ["net.core.rmem_max", "16777216"],
  ["net.core.wmem_max", "16777216"],
  ["net.ipv4.tcp_rmem", "4096 131072 16777216"],
  ["net.ipv4.tcp_wmem", "4096 65536 16777216"],
  ["net.ipv4.tcp_tw_reuse", "1"],
  ["fs.file-max", "2097152"],
  ["fs.nr_open", "2097152"],
];

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs the script with its drop-in file at `sysctlFile` and the "current" kernel values read from
 * `procSys` (a fake /proc/sys tree; an empty or missing one makes every value unavailable).
 */
async function runScript(
  sysctlFile: string,
  procSys: string,
  ...args: string[]
): Promise<Run> {
  const out = await new Deno.Command("bash", {
    args: [SCRIPT, ...args],
    cwd: REPO_ROOT,
    env: { MSGSERVER_SYSCTL_FILE: sysctlFile, MSGSERVER_PROC_SYS: procSys },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: out.code,
    stdout: decoder.decode(out.stdout),
    stderr: decoder.decode(out.stderr),
  };
}

async function listDir(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  return names;
}

function describe(run: Run): string {
  return `exit ${run.code}\n--- stdout ---\n${run.stdout}\n--- stderr ---\n${run.stderr}`;
}

Deno.test("a dry run prints every key with its planned value and writes no file", async () => {
  await withTempDir("msgserver-sysctl-", async (dir) => {
    const file = `${dir}/60-msgserver.conf`;
    const run = await runScript(file, `${dir}/no-proc-sys`, "--dry-run");

    assert.equal(run.code, 0, describe(run));
    assert.ok(run.stdout.includes(file), `the target path is named\n${describe(run)}`);
    const lines = run.stdout.split("\n");
    for (const [key, value] of PLANNED) {
      assert.ok(
        lines.includes(`${key} = ${value}`),
        `planned line "${key} = ${value}" is printed\n${describe(run)}`,
      );
      // The table of current values names the key again, with the planned value in brackets.
      assert.ok(
        lines.some((line) => line.includes(key) && line.endsWith(`[${value}]`)),
        `current value of ${key} is shown\n${describe(run)}`,
      );
    }
    assert.match(run.stdout, /ulimit -n = \S+/, "the current ulimit -n is shown");
    assert.match(run.stdout, /LimitNOFILE=\d+/, "systemd LimitNOFILE= advice is given");
    assert.match(run.stdout, /nofile/, "limits.conf advice is given");

    assert.equal(await exists(file), false, "the dry run must not create the drop-in file");
    assert.deepEqual(await listDir(dir), [], "the dry run leaves the directory empty");
  });
});

Deno.test("a dry run of a revert leaves the existing drop-in file in place", async () => {
  await withTempDir("msgserver-sysctl-", async (dir) => {
    const file = `${dir}/60-msgserver.conf`;
    const content = "net.core.somaxconn = 4096\n";
    await Deno.writeTextFile(file, content);

    const run = await runScript(file, `${dir}/no-proc-sys`, "--revert", "--dry-run");

    assert.equal(run.code, 0, describe(run));
    assert.ok(run.stdout.includes(file), `the file to remove is named\n${describe(run)}`);
    assert.match(run.stdout, /sysctl --system/, "it says how the values return to defaults");
    assert.equal(await Deno.readTextFile(file), content, "the file is still there, unchanged");
  });
});

Deno.test("an unknown flag exits with status 2 and names the flag on stderr", async () => {
  await withTempDir("msgserver-sysctl-", async (dir) => {
    const file = `${dir}/60-msgserver.conf`;
    const run = await runScript(file, `${dir}/no-proc-sys`, "--no-such-flag");

    assert.equal(run.code, 2, describe(run));
    assert.ok(run.stderr.includes("--no-such-flag"), describe(run));
    assert.equal(await exists(file), false, "a usage error changes nothing");
  });
});

Deno.test("the help flag exits with status 0 and describes the options", async () => {
  await withTempDir("msgserver-sysctl-", async (dir) => {
    const file = `${dir}/60-msgserver.conf`;
    const run = await runScript(file, `${dir}/no-proc-sys`, "--help");

    assert.equal(run.code, 0, describe(run));
    for (const flag of ["--dry-run", "--revert", "--help", "MSGSERVER_SYSCTL_FILE"]) {
      assert.ok(run.stdout.includes(flag), `help mentions ${flag}\n${describe(run)}`);
    }
    assert.equal(await exists(file), false, "help changes nothing");
  });
});

/** Writes a fake /proc/sys tree under `root` with `values` (key -> value as the kernel shows it). */
async function fakeProcSys(root: string, values: Record<string, string>): Promise<void> {
  for (const [key, value] of Object.entries(values)) {
    const path = `${root}/${key.replaceAll(".", "/")}`;
    await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
    await Deno.writeTextFile(path, `${value}\n`);
  }
}

/** The `key = value` lines of the planned file in a dry run's output. */
function plannedLines(stdout: string): Map<string, string> {
  const file = stdout.slice(stdout.indexOf("-----\n"), stdout.lastIndexOf("\n-----"));
  const lines = new Map<string, string>();
  for (const m of file.matchAll(/^([a-z0-9_.-]+) = (.*)$/gm)) lines.set(m[1]!, m[2]!);
  return lines;
}

Deno.test("the plan never lowers a limit the host already has higher, and is stable", async () => {
  await withTempDir("msgserver-sysctl-", async (dir) => {
    const file = `${dir}/60-msgserver.conf`;
    const procSys = `${dir}/proc-sys`;
    await fakeProcSys(procSys, {
      "net.core.somaxconn": "128", // lower: raised
      "net.ipv4.tcp_max_syn_backlog": "65536", // higher: kept
      "net.ipv4.ip_local_port_range": "32768\t60999", // not a limit: set as planned
      "net.core.rmem_max": "16777216", // equal
      "net.core.wmem_max": "212992",
      "net.ipv4.tcp_rmem": "4096\t131072\t33554432", // max higher: kept, per field
      "net.ipv4.tcp_wmem": "8192\t16384\t4194304", // min higher, default and max lower
      "net.ipv4.tcp_tw_reuse": "2", // not a limit
      "fs.file-max": "9223372036854775807", // systemd's value: more digits than bash's 18
      "fs.nr_open": "1073741816",
    });
    const run = await runScript(file, procSys, "--dry-run");
    assert.equal(run.code, 0, describe(run));
    const planned = plannedLines(run.stdout);
    assert.deepEqual(Object.fromEntries(planned), {
      "net.core.somaxconn": "4096",
      "net.ipv4.tcp_max_syn_backlog": "65536",
      "net.ipv4.ip_local_port_range": "10240 65535",
      "net.core.rmem_max": "16777216",
      "net.core.wmem_max": "16777216",
      "net.ipv4.tcp_rmem": "4096 131072 33554432",
      "net.ipv4.tcp_wmem": "8192 65536 16777216",
      "net.ipv4.tcp_tw_reuse": "1",
      "fs.file-max": "9223372036854775807",
      "fs.nr_open": "1073741816",
    }, describe(run));
    assert.match(
      run.stdout,
      /Kept where this host already has more than msgserver plans: net.ipv4.tcp_max_syn_backlog net.ipv4.tcp_rmem net.ipv4.tcp_wmem fs.file-max fs.nr_open/,
    );

    // Once applied, the kernel has exactly those values: the next run plans the same file.
    await Deno.remove(procSys, { recursive: true });
    await fakeProcSys(procSys, Object.fromEntries(planned));
    const again = await runScript(file, procSys, "--dry-run");
    assert.equal(again.code, 0, describe(again));
    const fileOf = (out: string) =>
      out.slice(out.indexOf("----- "), out.indexOf("\n-----\n", out.indexOf("----- ")));
    assert.equal(fileOf(again.stdout), fileOf(run.stdout));
    assert.equal(await exists(file), false, "a dry run writes nothing");
  });
});
