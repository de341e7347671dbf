/**
 * What `deploy/` ships for running msgserver on a host: the systemd unit and the logrotate
 * snippet (the alerting rules are prometheus_test.ts's).
 *
 * What can be tested here, and how: the unit's syntax with `systemd-analyze verify` (which exits
 * 0 on unknown keys and bad values, printing a warning, so these tests insist on silence), and its
 * settings against the server's own defaults; the snippet with the real `logrotate`, rotating the
 * data file of a running server. This container has no systemd running as PID 1, so the unit is
 * never started, and `systemctl reload` is played by a stand-in that runs the unit's own
 * ExecReload line with the server's PID as $MAINPID, as systemd would.
 */

import { deepEqual, equal, match, ok } from "node:assert/strict";
import { MsgClient } from "../src/client/client.ts";
import { DEFAULTS } from "../src/config.ts";
import { parseFile } from "../src/server/line.ts";
import { withTempDir } from "./support/server.ts";
import { spawnServer } from "./support/spawn.ts";
import { requireTool } from "./support/tools.ts";

const root = new URL("..", import.meta.url).pathname;
const UNIT = `${root}deploy/systemd/msgserver.service`;
const LOGROTATE = `${root}deploy/logrotate/msgserver`;
const EXECUTABLE = "/usr/local/bin/msgserver";
const DATA_DIR = "/var/lib/msgserver";

/** The unit's `Key=Value` lines, by section then key; a key given twice keeps every value. */
async function readUnit(): Promise<Map<string, Map<string, string[]>>> {
  const sections = new Map<string, Map<string, string[]>>();
  let section: Map<string, string[]> | undefined;
  for (const raw of (await Deno.readTextFile(UNIT)).split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[(\w+)\]$/.exec(line);
    if (header !== null) {
      section = new Map();
      sections.set(header[1]!, section);
      continue;
    }
    const eq = line.indexOf("=");
    ok(section !== undefined && eq > 0, `${UNIT}: not a Key=Value line in a section: ${line}`);
    const key = line.slice(0, eq);
    section.set(key, [...(section.get(key) ?? []), line.slice(eq + 1)]);
  }
  return sections;
}

async function service(): Promise<(key: string) => string | undefined> {
  const s = (await readUnit()).get("Service");
  ok(s !== undefined, `${UNIT} has no [Service]`);
  return (key) => s.get(key)?.at(-1);
}

async function run(
  command: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; out: string }> {
  const { code, stdout, stderr } = await new Deno.Command(command, { args, env, stdin: "null" })
    .output();
  const text = new TextDecoder();
  return { code, out: (text.decode(stdout) + text.decode(stderr)).trim() };
}

/** `systemd-analyze verify` of `unitText`, saved as msgserver.service in a temp folder. */
async function verify(unitText: string): Promise<{ code: number; out: string }> {
  let result = { code: -1, out: "" };
  await withTempDir("msgserver_deploy_test_", async (dir) => {
    await Deno.writeTextFile(`${dir}/msgserver.service`, unitText);
    result = await run("systemd-analyze", ["verify", `${dir}/msgserver.service`]);
  });
  return result;
}

/** The unit with ExecStart's executable replaced by a stand-in that exists (and nothing else). */
async function unitWithStandIn(dir: string): Promise<string> {
  const standIn = `${dir}/msgserver`;
  await Deno.writeTextFile(standIn, "#!/bin/sh\n");
  await Deno.chmod(standIn, 0o755);
  const text = await Deno.readTextFile(UNIT);
  ok(text.includes(`ExecStart=${EXECUTABLE} `), `${UNIT}: ExecStart is not ${EXECUTABLE}`);
  return text.replace(`ExecStart=${EXECUTABLE} `, `ExecStart=${standIn} `);
}

const hasSystemd = requireTool("systemd");

Deno.test({
  name: "systemd-analyze verify accepts the unit, without a word but the absent executable",
  ignore: !hasSystemd,
  async fn() {
    const shipped = await verify(await Deno.readTextFile(UNIT));
    let installed = false;
    try {
      installed = Deno.statSync(EXECUTABLE).isFile;
    } catch {
      // not installed on this machine
    }
    if (installed) {
      deepEqual(shipped, { code: 0, out: "" });
    } else {
      // The one thing verify can say of the file as shipped here: it also checks that ExecStart
      // can run, and /usr/local/bin/msgserver is what `deno task compile` builds, not installed.
      deepEqual(shipped, {
        code: 1,
        out:
          `msgserver.service: Command ${EXECUTABLE} is not executable: No such file or directory`,
      });
    }
    await withTempDir("msgserver_deploy_test_", async (dir) => {
      deepEqual(await verify(await unitWithStandIn(dir)), { code: 0, out: "" });
    });
  },
});

Deno.test({
  name:
    "systemd-analyze verify warns, exiting 0, on a misspelled key or a bad value: silence is the check",
  ignore: !hasSystemd,
  async fn() {
    await withTempDir("msgserver_deploy_test_", async (dir) => {
      const good = await unitWithStandIn(dir);
      for (
        const [from, to, said] of [
          ["Restart=on-failure", "Restrat=on-failure", /Unknown key 'Restrat'/],
          ["ProtectSystem=strict", "ProtectSystem=stricter", /Failed to parse protect system/],
          ["TimeoutStopSec=30", "TimeoutStopSec=half a minute", /Failed to parse/],
        ] as const
      ) {
        ok(good.includes(from), `${UNIT} has no ${from}`);
        const { code, out } = await verify(good.replace(from, to));
        equal(code, 0, "verify itself lets it pass");
        match(out, said);
      }
    });
  },
});

Deno.test("the unit: its own user, hardened, a descriptor limit and a stop timeout that fit the server", async () => {
  const get = await service();
  const user = get("User");
  ok(user !== undefined && user !== "root" && user !== "0", `User=${user}`);
  equal(get("DynamicUser"), undefined, "its own user, which keeps the data directory's files");
  equal(get("ProtectSystem"), "strict");
  equal(get("ProtectHome"), "yes");
  equal(get("NoNewPrivileges"), "yes");
  equal(get("PrivateTmp"), "yes");
  equal(get("CapabilityBoundingSet"), "");
  // V8 writes executable code: MemoryDenyWriteExecute=yes would kill the server at start.
  equal(get("MemoryDenyWriteExecute"), undefined);
  equal(get("StateDirectory"), "msgserver");
  ok(get("ReadWritePaths")?.split(/\s+/).includes(DATA_DIR), "the data directory is writable");
  equal(get("Restart"), "on-failure");
  ok(get("RestartPreventExitStatus")?.split(/\s+/).includes("2"), "no restarts on a bad setting");
  equal(get("KillSignal"), "SIGTERM");
  equal(get("ExecReload"), "/bin/kill -HUP $MAINPID");
  match(get("ExecStart") ?? "", new RegExp(`^${EXECUTABLE} --config /etc/msgserver/app.conf$`));

  // Past TimeoutStopSec systemd kills: the graceful shutdown (SHUTDOWN_TIMEOUT_MS), then the
  // store's close (a NATS drain, NATS_TIMEOUT_MS), must fit with room to spare.
  const stop = /^(\d+)(s?)$/.exec(get("TimeoutStopSec") ?? "");
  ok(stop !== null, `TimeoutStopSec=${get("TimeoutStopSec")}: seconds expected`);
  const needed = DEFAULTS.SHUTDOWN_TIMEOUT_MS + DEFAULTS.NATS_TIMEOUT_MS + 5000;
  ok(Number(stop[1]) * 1000 >= needed, `TimeoutStopSec=${stop[1]} s, under ${needed} ms`);

  // Three descriptors per TLS connection, and room for the files and listeners; at most what
  // tcp_tuning_params.sh lets a process have (fs.nr_open) and advises.
  const limit = Number(get("LimitNOFILE"));
  ok(limit >= 3 * DEFAULTS.MAX_CONNECTIONS + 1024, `LimitNOFILE=${limit}`);
  const advice = /^readonly NOFILE_ADVICE=(\d+)$/m.exec(
    await Deno.readTextFile(`${root}tcp_tuning_params.sh`),
  );
  ok(advice !== null && limit <= Number(advice[1]), `LimitNOFILE=${limit} above ${advice?.[1]}`);
});

Deno.test("the logrotate snippet rotates FILE_NAME under the unit's data directory and reloads the unit", async () => {
  const text = await Deno.readTextFile(LOGROTATE);
  const paths = [...text.matchAll(/^(\/\S+)\s*\{$/gm)].map((m) => m[1]);
  deepEqual(paths, [`${DATA_DIR}/messages.log`]);
  match(text, /^\s+postrotate\n\s+systemctl reload msgserver\.service\n\s+endscript$/m);
  match(text, /^\s+nocreate$/m);
  match(text, /^\s+rotate -1$/m);
});

const hasLogrotate = requireTool("logrotate");

Deno.test({
  name: "logrotate -d reads the snippet without an error",
  ignore: !hasLogrotate,
  async fn() {
    await withTempDir("msgserver_deploy_test_", async (dir) => {
      const { code, out } = await run("logrotate", ["-d", "-s", `${dir}/state`, LOGROTATE]);
      equal(code, 0, out);
      ok(!/error/i.test(out), out);
      match(out, new RegExp(`rotating pattern: ${DATA_DIR}/messages.log`));
    });
  },
});

Deno.test({
  name: "logrotate with the snippet, under load: the server moves to a new file, the old one whole",
  ignore: !hasLogrotate,
  async fn() {
    await withTempDir("msgserver_deploy_test_", async (dir) => {
      const file = `${dir}/messages.log`;
      const server = await spawnServer(dir, {
        args: ["--port", "0", "--file-name", file],
        env: { MS_HOME: "" },
      });
      let stopLoad = async () => {};
      try {
        // An earlier rotation that must survive this one (rotate -1: never removed).
        await Deno.writeTextFile(`${file}.20000101-000000`, "9 1 old x\n");
        // systemctl, as systemd would do `reload msgserver.service`: the unit's ExecReload with
        // $MAINPID set; it also notes that it ran.
        const reload = (await service())("ExecReload")!.replaceAll("$MAINPID", `${server.pid}`);
        await Deno.mkdir(`${dir}/bin`);
        await Deno.writeTextFile(
          `${dir}/bin/systemctl`,
          `#!/bin/sh\necho "$*" >> ${dir}/systemctl.calls\n` +
            `[ "$*" = "reload msgserver.service" ] || exit 1\nexec ${reload}\n`,
        );
        await Deno.chmod(`${dir}/bin/systemctl`, 0o755);
        const conf = (await Deno.readTextFile(LOGROTATE))
          .replace(`${DATA_DIR}/messages.log`, file);
        await Deno.writeTextFile(`${dir}/logrotate.conf`, conf);

        const clients = await Promise.all(
          [1, 2, 3].map((id) => MsgClient.connect({ port: server.port, clientId: id })),
        );
        const acked: string[] = [];
        const failures: string[] = [];
        let sending = true;
        // A send that fails ends its loop (and is reported below) instead of escaping the test.
        const load = clients.map(async (c, i) => {
          while (sending) {
            const id = c.nextMsgId;
            try {
              await c.send("load", `payload ${id}`);
            } catch (e) {
              failures.push(`${i + 1} ${id}: ${(e as Error).message}`);
              return;
            }
            acked.push(`${i + 1} ${id}`);
          }
        });
        stopLoad = async () => {
          sending = false;
          await Promise.all(load);
          await Promise.all(clients.map((c) => c.close().catch(() => {})));
        };
        await new Promise((r) => setTimeout(r, 200));
        const before = acked.length;
        const rotated = await run(
          "logrotate",
          ["-f", "-s", `${dir}/state`, `${dir}/logrotate.conf`],
          { PATH: `${dir}/bin:${Deno.env.get("PATH") ?? ""}` },
        );
        equal(rotated.code, 0, rotated.out);
        equal(await Deno.readTextFile(`${dir}/systemctl.calls`), "reload msgserver.service\n");
        const deadline = Date.now() + 5000;
        while (!server.stderr().includes("reopened the data file") && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 20));
        }
        const reopenedAt = acked.length;
        await new Promise((r) => setTimeout(r, 200));
        await stopLoad();
        deepEqual(failures, []);
        equal(await server.stop(), 0, server.stderr());
        match(server.stderr(), /reopened the data file/);

        const names = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) =>
          /^messages\.log\.\d{8}-\d{6}$/.test(n)
        ).sort();
        equal(names.length, 2, `rotated files: ${names.join(", ")}`);
        equal(names[0], "messages.log.20000101-000000");
        const old = await Deno.readFile(`${dir}/${names[1]}`);
        const fresh = await Deno.readFile(file);
        // Each file whole: every line parses, the last ends with its line feed.
        for (const bytes of [old, fresh]) {
          ok(bytes.length > 0 && bytes.at(-1) === 0x0a, "ends with a whole line");
        }
        const key = (r: { clientId: number; msgId: number }) => `${r.clientId} ${r.msgId}`;
        const inOld = parseFile(old).map(key);
        const inNew = parseFile(fresh).map(key);
        // Acked before logrotate ran: written before the rename, so in the old file.
        const oldSet = new Set(inOld);
        deepEqual(acked.slice(0, before).filter((a) => !oldSet.has(a)), []);
        ok(inNew.length > 0 && acked.length > reopenedAt, "records written after the reopen");
        // Every acked message once, in one file or the other; none in both.
        const all = [...inOld, ...inNew];
        equal(new Set(all).size, all.length, "no record twice");
        const stored = new Set(all);
        equal(acked.filter((a) => !stored.has(a)).length, 0, "every acked record is in a file");
      } finally {
        await stopLoad();
        await server.stop();
      }
    });
  },
});
