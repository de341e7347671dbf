// Tests for tcp_tuning_params.sh. The script is only ever run with --dry-run, --help or a bad
// flag here, and always with MSGSERVER_SYSCTL_FILE pointing into a temporary directory, so
// nothing on the host is changed.
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { withTempDir } from "./helpers.ts";

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

async function runScript(sysctlFile: string, ...args: string[]): Promise<Run> {
  const out = await new Deno.Command("bash", {
    args: [SCRIPT, ...args],
    cwd: REPO_ROOT,
    env: { MSGSERVER_SYSCTL_FILE: sysctlFile },
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

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
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
    const run = await runScript(file, "--dry-run");

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

    const run = await runScript(file, "--revert", "--dry-run");

    assert.equal(run.code, 0, describe(run));
    assert.ok(run.stdout.includes(file), `the file to remove is named\n${describe(run)}`);
    assert.match(run.stdout, /sysctl --system/, "it says how the values return to defaults");
    assert.equal(await Deno.readTextFile(file), content, "the file is still there, unchanged");
  });
});

Deno.test("an unknown flag exits with status 2 and names the flag on stderr", async () => {
  await withTempDir("msgserver-sysctl-", async (dir) => {
    const file = `${dir}/60-msgserver.conf`;
    const run = await runScript(file, "--no-such-flag");

    assert.equal(run.code, 2, describe(run));
    assert.ok(run.stderr.includes("--no-such-flag"), describe(run));
    assert.equal(await exists(file), false, "a usage error changes nothing");
  });
});

Deno.test("the help flag exits with status 0 and describes the options", async () => {
  await withTempDir("msgserver-sysctl-", async (dir) => {
    const file = `${dir}/60-msgserver.conf`;
    const run = await runScript(file, "--help");

    assert.equal(run.code, 0, describe(run));
    for (const flag of ["--dry-run", "--revert", "--help", "MSGSERVER_SYSCTL_FILE"]) {
      assert.ok(run.stdout.includes(flag), `help mentions ${flag}\n${describe(run)}`);
    }
    assert.equal(await exists(file), false, "help changes nothing");
  });
});
