import { deepStrictEqual, equal, match, ok } from "node:assert/strict";
import { MsgClient } from "../src/client/client.ts";
import { freePort } from "./support/net.ts";
import { passThroughProxy } from "./support/proxy.ts";
import {
  assertExactlyOnce,
  readRecords,
  readText,
  waitForRecords,
  withServer,
  withTempDir,
} from "./support/server.ts";
import { spawnServer } from "./support/spawn.ts";

const root = new URL("..", import.meta.url).pathname;
const deno = Deno.execPath();

async function writeConf(dir: string, extra = ""): Promise<void> {
  await Deno.writeTextFile(
    `${dir}/app.conf`,
    `# test config\nPORT=0\nFILE_NAME=${dir}/messages.log\nLOG_LEVEL=info\n${extra}`,
  );
}

async function run(
  args: string[],
  options: { env?: Record<string, string>; stdin?: string; cwd?: string } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command(deno, {
    args,
    cwd: options.cwd ?? root,
    ...(options.env === undefined ? {} : { env: options.env }),
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  const out = await child.output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("deno task client 1 hi,hello prints two acks and leaves both lines in the file", async () => {
  await withTempDir("msgserver_cli_test_", async (dir) => {
    await writeConf(dir);
    const server = await spawnServer(dir);
    await Deno.writeTextFile(`${dir}/app.conf`, `PORT=${server.port}\n`);
    const result = await run(["task", "-q", "client", "1", "hi,hello"], {
      env: { MS_HOME: dir },
    });
    equal(result.code, 0, result.stderr);
    const lines = result.stdout.trim().split("\n");
    match(lines[0]!, /^ack msg_id=1 latency_us=\d+$/);
    match(lines[1]!, /^ack msg_id=2 latency_us=\d+$/);
    match(
      lines[2]!,
      /^sent 2 messages in [\d.]+ ms: 2 acked, 0 not acked; average latency \d+ us$/,
    );
    equal(await server.stop("SIGTERM"), 0);
    equal(await readText(`${dir}/messages.log`), "1 1 client_1 hi\n1 2 client_1 hello\n");
    match(server.stderr(), /INFO stopped records=2/);
  });
});

Deno.test("msgclient --stdin sends one message per line and exits 1 when one is refused", async () => {
  await withTempDir("msgserver_cli_test_", async (dir) => {
    await writeConf(dir, "MAX_MESSAGE_BYTES=10\n");
    const server = await spawnServer(dir);
    const client = `${root}src/cli/msgclient.ts`;
    const ok1 = await run(["run", "-A", client, "--port", `${server.port}`, "--stdin", "5"], {
      stdin: "first line\r\nsecond\n\nlast",
      cwd: dir,
    });
    equal(ok1.code, 0, ok1.stdout + ok1.stderr);
    match(ok1.stdout, /sent 4 messages in .*: 4 acked, 0 not acked/);
    const refused = await run(
      ["run", "-A", client, "--port", `${server.port}`, "6", "short,this one is too long"],
      { cwd: dir },
    );
    equal(refused.code, 1);
    match(refused.stdout, /nack msg_id=2 code=1 /);
    match(refused.stdout, /1 acked, 1 not acked/);
    equal(await server.stop("SIGINT"), 0);
    equal(
      await readText(`${dir}/messages.log`),
      "5 1 client_5 first line\n5 2 client_5 second\n5 3 client_5 \n5 4 client_5 last\n" +
        "6 1 client_6 short\n",
    );
  });
});

Deno.test("msgclient exits 1 with a clear message when no server listens", async () => {
  const port = freePort();
  const result = await run([
    "run",
    "-A",
    `${root}src/cli/msgclient.ts`,
    "--port",
    `${port}`,
    "1",
    "x",
  ]);
  equal(result.code, 1);
  match(result.stderr, new RegExp(`msgclient: cannot send to 127.0.0.1:${port}: `));
});

Deno.test("bad config stops both programs with the key, the value and what is allowed", async () => {
  await withTempDir("msgserver_cli_test_", async (dir) => {
    await Deno.writeTextFile(`${dir}/app.conf`, "PORT=9000\nPORTT=1\n");
    const server = await run(["run", "-A", `${root}src/cli/msgserver.ts`], {
      env: { MS_HOME: dir },
    });
    equal(server.code, 2);
    equal(
      server.stderr.trim(),
      `msgserver: Cannot parse ${dir}/app.conf line 2: unknown key "PORTT" (did you mean "PORT"?)`,
    );
    await Deno.writeTextFile(`${dir}/app.conf`, "ACK_MODE=sometimes\n");
    const client = await run(["run", "-A", `${root}src/cli/msgclient.ts`, "1", "x"], {
      env: { MS_HOME: dir },
    });
    equal(client.code, 2);
    equal(
      client.stderr.trim(),
      `msgclient: Cannot load config: ACK_MODE is "sometimes" (${dir}/app.conf line 1); ` +
        `allowed: one of "received", "written", "durable"`,
    );
    await Deno.writeTextFile(`${dir}/app.conf`, "PORT=9000\n");
    const flag = await run(["run", "-A", `${root}src/cli/msgserver.ts`, "--port", "70000"], {
      env: { MS_HOME: dir },
    });
    equal(flag.code, 2);
    match(flag.stderr, /PORT is "70000" \(flag --port\); allowed: an integer from 0 to 65535/);
    const usage = await run(["run", "-A", `${root}src/cli/msgclient.ts`, "1"], { cwd: dir });
    equal(usage.code, 2);
    match(usage.stderr, /expected <client_id> <msg1,msg2,...>, got 1 arguments/);
  });
});

Deno.test("SIGTERM under load: exit 0 and every acked message is in the file", async () => {
  await withTempDir("msgserver_cli_test_", async (dir) => {
    await writeConf(dir, "MSG_PER_WRITE=64\n");
    const server = await spawnServer(dir);
    const clients = await Promise.all(
      Array.from({ length: 8 }, (_, i) => MsgClient.connect({ port: server.port, clientId: i })),
    );
    const acked = new Set<string>();
    const work = clients.map(async (c, i) => {
      const sends = [];
      for (let m = 0; m < 5000; m++) {
        const id = c.nextMsgId;
        sends.push(c.send("load", `payload ${m}`).then(() => acked.add(`${i}/${id}`)));
      }
      await Promise.allSettled(sends);
    });
    await new Promise((r) => setTimeout(r, 30));
    const code = await server.stop("SIGTERM");
    equal(code, 0, server.stderr());
    await Promise.all(work);
    const records = await readRecords(`${dir}/messages.log`);
    const inFile = new Set(records.map((r) => `${r.clientId}/${r.msgId}`));
    equal(inFile.size, records.length, "no line twice");
    for (const key of acked) ok(inFile.has(key), `acked ${key} is in the file`);
    ok(acked.size > 0);
    match(server.stderr(), /INFO shutting down/);
  });
});

Deno.test("SIGHUP makes msgserver reopen FILE_NAME after logrotate moved it", async () => {
  await withTempDir("msgserver_cli_test_", async (dir) => {
    await writeConf(dir);
    const server = await spawnServer(dir);
    const client = await MsgClient.connect({ port: server.port, clientId: 1 });
    await client.send("hup", "before");
    await Deno.rename(`${dir}/messages.log`, `${dir}/messages.log.1`);
    server.child.kill("SIGHUP");
    const deadline = Date.now() + 5000;
    while (!server.stderr().includes("reopened the data file") && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    await client.send("hup", "after");
    await client.close();
    equal(await server.stop("SIGTERM"), 0);
    equal(await readText(`${dir}/messages.log.1`), "1 1 hup before\n");
    equal(await readText(`${dir}/messages.log`), "1 2 hup after\n");
  });
});

Deno.test("msgclient --session goes on where the server holds the session, and says when it holds none", async () => {
  await withTempDir("msgserver_cli_test_", async (dir) => {
    await writeConf(dir);
    const server = await spawnServer(dir);
    const client = `${root}src/cli/msgclient.ts`;
    const args = ["run", "-A", client, "--port", `${server.port}`, "--session", "77"];
    const first = await run([...args, "1", "a,b"], { cwd: dir });
    equal(first.code, 0, first.stderr);
    match(first.stderr, /session 77 is unknown to the server .*: numbering from msg_id 1/);
    match(first.stdout, /^ack msg_id=1 /);
    const again = await run([...args, "1", "c"], { cwd: dir });
    equal(again.code, 0, again.stderr);
    const lines = again.stdout.trim().split("\n");
    equal(lines[0], "session 77 resumed after msg_id 2");
    match(lines[1]!, /^ack msg_id=3 /);
    const bad = await run([...args.slice(0, -1), "0", "1", "x"], { cwd: dir });
    equal(bad.code, 2);
    match(bad.stderr, /--session is "0"; allowed: an integer from 1 to 18446744073709551615/);
    equal(await server.stop("SIGTERM"), 0);
    equal(
      await readText(`${dir}/messages.log`),
      "1 1 client_1 a\n1 2 client_1 b\n1 3 client_1 c\n",
    );
  });
});

/** The msg_ids of msgclient's `ack msg_id=N latency_us=U` lines, in order; other lines must not be acks. */
function ackedIds(stdout: string): number[] {
  return stdout.trim().split("\n").flatMap((line) => {
    const m = /^ack msg_id=(\d+) latency_us=\d+$/.exec(line);
    return m === null ? [] : [Number(m[1])];
  });
}

Deno.test("msgclient with SERVERS whose first server is down sends to the second; --session resumes there", async () => {
  await withTempDir("msgserver_cli_test_", async (dir) => {
    await writeConf(dir);
    const server = await spawnServer(dir);
    const client = `${root}src/cli/msgclient.ts`;
    const servers = `127.0.0.1:${freePort()}, 127.0.0.1:${server.port}`;
    const args = ["run", "-A", client, "--servers", servers, "--session", "91"];
    const first = await run([...args, "1", "a,b,c"], { cwd: dir });
    equal(first.code, 0, first.stderr);
    deepStrictEqual(ackedIds(first.stdout), [1, 2, 3]);
    match(
      first.stdout,
      /\nsent 3 messages in [\d.]+ ms: 3 acked, 0 not acked; average latency \d+ us\n$/,
    );
    match(first.stderr, /session 91 is unknown to the server .*: numbering from msg_id 1/);
    const again = await run([...args, "1", "d,e"], { cwd: dir });
    equal(again.code, 0, again.stderr);
    equal(again.stdout.split("\n")[0], "session 91 resumed after msg_id 3");
    deepStrictEqual(ackedIds(again.stdout), [4, 5]);
    equal(await server.stop("SIGTERM"), 0);
    equal(
      await readText(`${dir}/messages.log`),
      "1 1 client_1 a\n1 2 client_1 b\n1 3 client_1 c\n1 4 client_1 d\n1 5 client_1 e\n",
    );
  });
});

Deno.test("msgclient with SERVERS fails over mid-stream and reports each message acked exactly once", async () => {
  await withServer({}, async ({ port, file }) => {
    const a = passThroughProxy(port);
    const b = passThroughProxy(port);
    try {
      const child = new Deno.Command(deno, {
        args: [
          "run",
          "-A",
          `${root}src/cli/msgclient.ts`,
          "--servers",
          `127.0.0.1:${a.port},127.0.0.1:${b.port}`,
          "--stdin",
          "7",
        ],
        cwd: root,
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const lines = (from: number, to: number) =>
        new TextEncoder().encode(
          Array.from({ length: to - from + 1 }, (_, i) => `m${from + i}\n`).join(""),
        );
      const writer = child.stdin.getWriter();
      await writer.write(lines(1, 100));
      await waitForRecords(file, 100);
      await a.close(); // the server stays up; only the address msgclient uses dies
      await writer.write(lines(101, 200));
      await writer.close();
      const out = await child.output();
      const dec = new TextDecoder();
      const stdout = dec.decode(out.stdout);
      const stderr = dec.decode(out.stderr);
      equal(out.code, 0, stdout + stderr);
      deepStrictEqual(ackedIds(stdout), Array.from({ length: 200 }, (_, i) => i + 1));
      match(stdout, /\nsent 200 messages in [\d.]+ ms: 200 acked, 0 not acked; /);
      equal(stderr, "msgclient: reconnected 1 times, 1 of them to another server\n");
      equal(b.links.length, 1);
      await assertExactlyOnce(file, 7, 200);
    } finally {
      await a.close();
      await b.close();
    }
  });
});

Deno.test("msgclient refuses a bad SERVERS entry with the key, the value and what is allowed", async () => {
  const result = await run([
    "run",
    "-A",
    `${root}src/cli/msgclient.ts`,
    "--servers",
    "127.0.0.1:9000,nohost",
    "1",
    "x",
  ]);
  equal(result.code, 2);
  equal(
    result.stderr,
    'msgclient: Cannot load config: SERVERS is "127.0.0.1:9000,nohost" (flag --servers); ' +
      "allowed: host:port entries separated by commas (IPv6 in brackets: [::1]:9000), each port " +
      'from 1 to 65535, or empty; "nohost" has no :port\n',
  );
});
