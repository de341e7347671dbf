// The config module's cases, one test each: every key, source and refusal (over 400 lines as a
// catalogue of cases, not of logic).
import { deepStrictEqual, equal, ok, rejects, throws } from "node:assert/strict";
import {
  type Config,
  CONFIG_KEYS,
  ConfigError,
  configHelp,
  DEFAULTS,
  loadConfig,
  type LoadOptions,
  parseConfigText,
  redactConfig,
} from "../src/config.ts";
import { withTempDir } from "./support/server.ts";

const SHIPPED = new URL("../app.conf", import.meta.url).pathname;

/** An environment with nothing set, so the real one never leaks into a test. */
const NO_ENV = (_name: string): string | undefined => undefined;

function envOf(vars: Record<string, string>): (name: string) => string | undefined {
  return (name) => vars[name];
}

/** Runs `fn` with a fresh temporary folder, removed afterwards. */
function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  return withTempDir("msgserver_config_test_", fn);
}

/** Writes `text` as `dir/app.conf` and loads it with `args` after `--config`. */
async function loadText(
  dir: string,
  text: string,
  args: string[] = [],
  options: LoadOptions = { env: NO_ENV },
): Promise<Config> {
  const file = `${dir}/app.conf`;
  await Deno.writeTextFile(file, text);
  const loaded = await loadConfig(["--config", file, ...args], options);
  equal(loaded.file, file);
  return loaded.config;
}

/** Asserts `fn` rejects with a ConfigError whose message is exactly `message`. */
async function rejectsWith(fn: () => Promise<unknown>, message: string): Promise<void> {
  await rejects(fn, (e: unknown) => {
    ok(e instanceof ConfigError, `not a ConfigError: ${e}`);
    equal(e.name, "ConfigError");
    equal(e.message, message);
    return true;
  });
}

function throwsWith(fn: () => unknown, message: string): void {
  throws(fn, (e: unknown) => {
    ok(e instanceof ConfigError, `not a ConfigError: ${e}`);
    equal(e.message, message);
    return true;
  });
}

Deno.test("the shipped app.conf parses to exactly the DEFAULTS", async () => {
  const text = await Deno.readTextFile(SHIPPED);
  const values = parseConfigText(text, "app.conf");
  ok(values.size >= 18, `only ${values.size} keys in app.conf`);
  for (const [key, { value }] of values) {
    ok(CONFIG_KEYS.includes(key));
    equal(value, String(DEFAULTS[key]), `${key} in app.conf`);
  }
  const loaded = await loadConfig(["--config", SHIPPED], { env: NO_ENV });
  equal(loaded.file, SHIPPED);
  deepStrictEqual(loaded.config, { ...DEFAULTS });
  deepStrictEqual(loaded.positionals, []);
  deepStrictEqual(loaded.flags, {});
  equal(loaded.help, false);
});

Deno.test("parseConfigText skips comments and blank lines and records line numbers", () => {
  const text = "# comment\n\n; also a comment\n  PORT = 9001  \n\t\nIP=10.0.0.1\n   # indented\n";
  const values = parseConfigText(text, "x.conf");
  deepStrictEqual([...values.entries()], [
    ["PORT", { value: "9001", line: 4 }],
    ["IP", { value: "10.0.0.1", line: 6 }],
  ]);
});

Deno.test("parseConfigText strips one pair of matching quotes from a value", () => {
  const text = [
    `FILE_NAME="my messages.log"`,
    `AUTH_TOKEN='se cret'`,
    `IP="unbalanced'`,
    `LOG_LEVEL="`,
    `ACK_MODE=""`,
    `MSG_PER_WRITE="'12'"`,
  ].join("\n");
  const values = parseConfigText(text, "q.conf");
  deepStrictEqual(Object.fromEntries([...values].map(([k, v]) => [k, v.value])), {
    FILE_NAME: "my messages.log",
    AUTH_TOKEN: "se cret",
    IP: `"unbalanced'`,
    LOG_LEVEL: `"`,
    ACK_MODE: "",
    MSG_PER_WRITE: "'12'",
  });
});

Deno.test("parseConfigText reads CRLF line ends and skips a leading BOM", () => {
  const values = parseConfigText("\uFEFFPORT=9002\r\n# c\r\nLOG_LEVEL=warn\r\n", "w.conf");
  deepStrictEqual([...values.entries()], [
    ["PORT", { value: "9002", line: 1 }],
    ["LOG_LEVEL", { value: "warn", line: 3 }],
  ]);
});

Deno.test("parseConfigText names an unknown key, the file and the line", () => {
  throwsWith(
    () => parseConfigText("PORT=1\nPORTT=9001\n", "/etc/ms/app.conf"),
    'Cannot parse /etc/ms/app.conf line 2: unknown key "PORTT" (did you mean "PORT"?)',
  );
  throwsWith(
    () => parseConfigText("port=9001", "a.conf"),
    'Cannot parse a.conf line 1: unknown key "port" (did you mean "PORT"?)',
  );
  throwsWith(
    () => parseConfigText("\n\nZZZ=1", "a.conf"),
    'Cannot parse a.conf line 3: unknown key "ZZZ"',
  );
});

Deno.test("parseConfigText refuses a key set twice and names both lines", () => {
  throwsWith(
    () => parseConfigText("PORT=1\n# x\nPORT=2\n", "d.conf"),
    "Cannot parse d.conf line 3: PORT is already set on line 1",
  );
});

Deno.test("parseConfigText refuses a line without '=' or without a key", () => {
  throwsWith(
    () => parseConfigText("PORT=1\nLOG_LEVEL info\n", "e.conf"),
    'Cannot parse e.conf line 2: expected KEY=VALUE, got "LOG_LEVEL info"',
  );
  throwsWith(
    () => parseConfigText("=9000", "e.conf"),
    'Cannot parse e.conf line 1: expected KEY=VALUE, got "=9000"',
  );
});

Deno.test("parseConfigText refuses a section header", () => {
  throwsWith(
    () => parseConfigText("PORT=1\n[server]\nIP=x\n", "s.conf"),
    'Cannot parse s.conf line 2: sections are not supported: "[server]"',
  );
});

Deno.test("loadConfig applies file values on top of the defaults", async () => {
  await withDir(async (dir) => {
    const config = await loadText(
      dir,
      "PORT=9001\nACK_MODE=durable\nTIME_INTERVAL_BTN_MSG=0.25\nFILE_NAME='/var/x y.log'\n",
    );
    deepStrictEqual(config, {
      ...DEFAULTS,
      PORT: 9001,
      ACK_MODE: "durable",
      TIME_INTERVAL_BTN_MSG: 0.25,
      FILE_NAME: "/var/x y.log",
    });
  });
});

Deno.test("loadConfig takes the lowest and highest allowed int values", async () => {
  await withDir(async (dir) => {
    deepStrictEqual(
      await loadText(dir, "PORT=0\nQUEUE_MAX_BYTES=1024\nMAX_MESSAGE_BYTES=67108864\n"),
      { ...DEFAULTS, PORT: 0, QUEUE_MAX_BYTES: 1024, MAX_MESSAGE_BYTES: 64 * 1024 * 1024 },
    );
    equal((await loadText(dir, "PORT=65535")).PORT, 65535);
  });
});

Deno.test("loadConfig refuses a bad int, naming the key, the value, where and the range", async () => {
  await withDir(async (dir) => {
    const file = `${dir}/app.conf`;
    for (const value of ["abc", "90.5", "", "9000x", "0x10", "1e3"]) {
      await rejectsWith(
        () => loadText(dir, `# c\nPORT=${value}\n`),
        `Cannot load config: PORT is "${value}" (${file} line 2); allowed: an integer from 0 to 65535`,
      );
    }
  });
});

Deno.test("loadConfig refuses an int out of range", async () => {
  await withDir(async (dir) => {
    const file = `${dir}/app.conf`;
    const cases: [string, string, string][] = [
      ["PORT", "65536", "an integer from 0 to 65535"],
      ["PORT", "-1", "an integer from 0 to 65535"],
      ["MSG_PER_WRITE", "0", "an integer from 1 to 1000000"],
      ["QUEUE_MAX_BYTES", "1023", "an integer from 1024 to 17179869184"],
      ["MAX_MESSAGE_BYTES", "67108865", "an integer from 1 to 67108864"],
      ["TCP_BACKLOG", "99999999999999999999", "an integer from 1 to 65535"],
      ["TIME_INTERVAL_BTN_MSG", "3600.5", "a number from 0 to 3600"],
      ["TIME_INTERVAL_BTN_MSG", "-1", "a number from 0 to 3600"],
    ];
    for (const [key, value, allowed] of cases) {
      await rejectsWith(
        () => loadText(dir, `${key}=${value}\n`),
        `Cannot load config: ${key} is "${value}" (${file} line 1); allowed: ${allowed}`,
      );
    }
  });
});

Deno.test("loadConfig refuses a bad enum value and lists the allowed ones", async () => {
  await withDir(async (dir) => {
    const file = `${dir}/app.conf`;
    await rejectsWith(
      () => loadText(dir, "ACK_MODE=fast\n"),
      `Cannot load config: ACK_MODE is "fast" (${file} line 1); ` +
        `allowed: one of "received", "written", "durable"`,
    );
    await rejectsWith(
      () => loadText(dir, "LOG_LEVEL=INFO\n"),
      `Cannot load config: LOG_LEVEL is "INFO" (${file} line 1); ` +
        `allowed: one of "debug", "info", "warn", "error"`,
    );
  });
});

Deno.test("loadConfig refuses an empty IP and a control character in a string", async () => {
  await withDir(async (dir) => {
    const file = `${dir}/app.conf`;
    await rejectsWith(
      () => loadText(dir, "IP=\n"),
      `Cannot load config: IP is "" (${file} line 1); allowed: non-empty text`,
    );
    await rejectsWith(
      () => loadText(dir, "FILE_NAME=a\x01b\n"),
      `Cannot load config: FILE_NAME is "a\\u0001b" (${file} line 1); ` +
        "allowed: non-empty text without control characters",
    );
  });
});

Deno.test("loadConfig takes a SERVERS list as it is, and names a bad entry and what is allowed", async () => {
  await withDir(async (dir) => {
    const file = `${dir}/app.conf`;
    const list = "10.0.0.1:9000, [::1]:9001,node-3:9002";
    equal((await loadText(dir, `SERVERS=${list}\n`)).SERVERS, list);
    equal((await loadText(dir, "SERVERS=\n")).SERVERS, "");
    const allowed = "allowed: host:port entries separated by commas (IPv6 in brackets: " +
      "[::1]:9000), each port from 1 to 65535, or empty";
    await rejectsWith(
      () => loadText(dir, "SERVERS=10.0.0.1:9000,10.0.0.2\n"),
      `Cannot load config: SERVERS is "10.0.0.1:9000,10.0.0.2" (${file} line 1); ${allowed}; ` +
        '"10.0.0.2" has no :port',
    );
    await rejectsWith(
      () => loadText(dir, "PORT=9000\n", ["--servers", "::1:9000"]),
      `Cannot load config: SERVERS is "::1:9000" (flag --servers); ${allowed}; ` +
        '"::1:9000": an IPv6 address goes in brackets, as in [::1]:9000',
    );
    await rejectsWith(
      () => loadText(dir, "SERVERS=a:70000\n"),
      `Cannot load config: SERVERS is "a:70000" (${file} line 1); ${allowed}; ` +
        '"a:70000": port "70000" is not from 1 to 65535',
    );
  });
});

Deno.test("loadConfig lets flags override the file", async () => {
  await withDir(async (dir) => {
    const config = await loadText(dir, "PORT=9001\nLOG_LEVEL=warn\n", [
      "--port",
      "9002",
      "--ack-mode=received",
      "--time-interval-btn-msg",
      "1.5",
    ]);
    deepStrictEqual(config, {
      ...DEFAULTS,
      PORT: 9002,
      LOG_LEVEL: "warn",
      ACK_MODE: "received",
      TIME_INTERVAL_BTN_MSG: 1.5,
    });
  });
});

Deno.test("loadConfig names the flag when a flag value is bad", async () => {
  await withDir(async (dir) => {
    await rejectsWith(
      () => loadText(dir, "", ["--port", "99999"]),
      'Cannot load config: PORT is "99999" (flag --port); allowed: an integer from 0 to 65535',
    );
  });
});

Deno.test("loadConfig refuses an unknown flag, a missing flag value and stray arguments", async () => {
  await rejects(
    () => loadConfig(["--portt", "9001"], { env: NO_ENV }),
    (e: unknown) => {
      ok(e instanceof ConfigError);
      ok(e.message.startsWith("Cannot parse command line: "), e.message);
      ok(e.message.includes("--portt"), e.message);
      return true;
    },
  );
  await rejects(() => loadConfig(["--port"], { env: NO_ENV }), ConfigError);
  await rejects(() => loadConfig(["stray"], { env: NO_ENV }), ConfigError);
});

Deno.test("loadConfig returns positionals, extra boolean flags and --help when allowed", async () => {
  const loaded = await loadConfig(
    ["--config", SHIPPED, "--stdin", "--help", "a", "b"],
    { env: NO_ENV, booleanFlags: ["stdin", "quiet"], allowPositionals: true },
  );
  deepStrictEqual(loaded.positionals, ["a", "b"]);
  deepStrictEqual(loaded.flags, { stdin: true, quiet: false });
  equal(loaded.help, true);
  deepStrictEqual(loaded.config, { ...DEFAULTS });
});

Deno.test("loadConfig with --config naming a missing file throws ConfigError", async () => {
  await withDir(async (dir) => {
    const file = `${dir}/nope.conf`;
    await rejectsWith(
      () => loadConfig(["--config", file], { env: NO_ENV }),
      `Cannot read config file "${file}": not found`,
    );
  });
});

Deno.test("loadConfig reports the file and line of a bad line in a --config file", async () => {
  await withDir(async (dir) => {
    const file = `${dir}/app.conf`;
    await rejectsWith(
      () => loadText(dir, "# header\nPORTT=9001\n"),
      `Cannot parse ${file} line 2: unknown key "PORTT" (did you mean "PORT"?)`,
    );
  });
});

Deno.test("loadConfig reads $MS_HOME/app.conf when no --config is given", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/app.conf`, "PORT=9100\n");
    for (const home of [dir, `${dir}/`, `${dir}//`]) {
      const loaded = await loadConfig([], { env: envOf({ MS_HOME: home }) });
      equal(loaded.file, `${dir}/app.conf`);
      deepStrictEqual(loaded.config, { ...DEFAULTS, PORT: 9100 });
    }
    // --config wins over MS_HOME.
    const loaded = await loadConfig(["--config", SHIPPED], { env: envOf({ MS_HOME: dir }) });
    equal(loaded.file, SHIPPED);
    equal(loaded.config.PORT, 9000);
  });
});

Deno.test("loadConfig throws when MS_HOME has no app.conf", async () => {
  await withDir(async (dir) => {
    await rejectsWith(
      () => loadConfig([], { env: envOf({ MS_HOME: dir }) }),
      `Cannot read config file "${dir}/app.conf" (from MS_HOME): not found`,
    );
  });
});

Deno.test("loadConfig lets MS_AUTH_TOKEN override the file and flags override both", async () => {
  await withDir(async (dir) => {
    const env = envOf({ MS_AUTH_TOKEN: "from-env" });
    equal((await loadText(dir, "AUTH_TOKEN=from-file\n", [], { env })).AUTH_TOKEN, "from-env");
    equal((await loadText(dir, "AUTH_TOKEN=from-file\n")).AUTH_TOKEN, "from-file");
    equal(
      (await loadText(dir, "AUTH_TOKEN=from-file\n", ["--auth-token", "from-flag"], { env }))
        .AUTH_TOKEN,
      "from-flag",
    );
    // An empty MS_AUTH_TOKEN is a value too: it clears the file's token.
    equal(
      (await loadText(dir, "AUTH_TOKEN=from-file\n", [], { env: envOf({ MS_AUTH_TOKEN: "" }) }))
        .AUTH_TOKEN,
      "",
    );
  });
});

Deno.test("loadConfig never shows a bad AUTH_TOKEN value in its error", async () => {
  await withDir(async (dir) => {
    const file = `${dir}/app.conf`;
    const secret = "hunter2\x01secret";
    await rejects(
      () => loadText(dir, `AUTH_TOKEN=${secret}\n`),
      (e: unknown) => {
        ok(e instanceof ConfigError);
        equal(
          e.message,
          `Cannot load config: AUTH_TOKEN is (hidden) (${file} line 1); ` +
            "allowed: any text without control characters",
        );
        ok(!e.message.includes("hunter2"));
        return true;
      },
    );
    await rejects(
      () => loadText(dir, "", [], { env: envOf({ MS_AUTH_TOKEN: secret }) }),
      (e: unknown) => {
        ok(e instanceof ConfigError);
        equal(
          e.message,
          "Cannot load config: AUTH_TOKEN is (hidden) (environment MS_AUTH_TOKEN); " +
            "allowed: any text without control characters",
        );
        return true;
      },
    );
    await rejects(
      () => loadText(dir, "", ["--auth-token", secret]),
      (e: unknown) => {
        ok(e instanceof ConfigError);
        ok(!e.message.includes("hunter2"), e.message);
        ok(e.message.includes("(flag --auth-token)"), e.message);
        return true;
      },
    );
  });
});

Deno.test("loadConfig never shows the token of a malformed AUTH_TOKEN line", async () => {
  // A typo such as a missing "=" must not print the secret into logs either.
  await withDir(async (dir) => {
    for (const line of ["AUTH_TOKEN hunter2", "AUTH_TOKEN: hunter2"]) {
      await rejects(
        () => loadText(dir, `PORT=9000\n${line}\n`),
        (e: unknown) => {
          ok(e instanceof ConfigError);
          ok(e.message.includes("line 2"), e.message);
          ok(!e.message.includes("hunter2"), `secret in: ${e.message}`);
          return true;
        },
      );
    }
  });
});

Deno.test("redactConfig() shows every key, a set secret as (hidden) and an empty one as empty", () => {
  const config: Config = { ...DEFAULTS, PORT: 9001, ACK_MODE: "durable", AUTH_TOKEN: "hunter2" };
  const shown = redactConfig(config);
  deepStrictEqual(shown, { ...config, AUTH_TOKEN: "(hidden)" });
  deepStrictEqual(Object.keys(shown), CONFIG_KEYS);
  ok(!JSON.stringify(shown).includes("hunter2"));
  equal(config.AUTH_TOKEN, "hunter2", "the config itself is left as it was");
  deepStrictEqual(redactConfig(DEFAULTS), { ...DEFAULTS, AUTH_TOKEN: "" });
});

Deno.test("redactConfig() shows NATS_URLS without the credentials its URLs may carry", () => {
  const urls = "nats://alice:s3cretpw@10.0.0.5:4222, tok3n@10.0.0.6:4222,nats://10.0.0.7:4222";
  const shown = redactConfig({ ...DEFAULTS, NATS_URLS: urls });
  equal(shown.NATS_URLS, "nats://***@10.0.0.5:4222,***@10.0.0.6:4222,nats://10.0.0.7:4222");
  ok(!JSON.stringify(shown).includes("s3cretpw") && !JSON.stringify(shown).includes("tok3n"));
});

Deno.test("configHelp() has one line per key, in order, with its flag, meaning and default", () => {
  const lines = configHelp().split("\n");
  deepStrictEqual(lines.map((line) => /^ {2}--[a-z-]+ VALUE +([A-Z_]+):/.exec(line)?.[1]), [
    ...CONFIG_KEYS,
  ]);
  ok(
    lines.includes(
      "  --port VALUE                  PORT: TCP port (0: any free port, server only) (default 9000)",
    ),
    lines.join("\n"),
  );
  ok(
    lines.includes(
      '  --ack-mode VALUE              ACK_MODE: when a message is acknowledged (default "written")',
    ),
    lines.join("\n"),
  );
  ok(
    lines.includes(
      '  --auth-token VALUE            AUTH_TOKEN: token HELLO must carry (empty: none) (default "")',
    ),
    lines.join("\n"),
  );
});
