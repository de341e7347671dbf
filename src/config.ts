/**
 * Configuration for msgserver and msgclient: one `app.conf` (KEY=VALUE lines) for both programs,
 * overridden by the environment (MS_AUTH_TOKEN) and then by command-line flags (`--port 9001`,
 * one flag per key, in lower case with dashes). Every value is checked; a bad one stops the program
 * with a message naming the key, the value, where it came from and what is allowed.
 *
 * @module
 */

import { parseArgs } from "node:util";

/** The acknowledgement modes; see the README for the guarantee of each. */
export type AckMode = "received" | "written" | "durable";
/** Log levels, least to most severe. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** Every setting, under the name it has in app.conf. */
export interface Config {
  IP: string;
  PORT: number;
  LEGACY_PORT: number;
  FILE_NAME: string;
  FILE_MAX_BYTES: number;
  MSG_PER_WRITE: number;
  TIME_INTERVAL_BTN_MSG: number;
  ACK_MODE: AckMode;
  FLUSH_INTERVAL_MS: number;
  QUEUE_CAPACITY: number;
  QUEUE_MAX_BYTES: number;
  MAX_MESSAGE_BYTES: number;
  MAX_CONNECTIONS: number;
  MAX_SESSIONS: number;
  AUTH_TOKEN: string;
  TLS_CERT: string;
  TLS_KEY: string;
  TLS_CA: string;
  LOG_LEVEL: LogLevel;
  TCP_BACKLOG: number;
  HANDSHAKE_TIMEOUT_MS: number;
  IDLE_TIMEOUT_MS: number;
  SHUTDOWN_TIMEOUT_MS: number;
  METRICS_PORT: number;
  STATS_INTERVAL_S: number;
}

type Spec =
  | { kind: "int"; min: number; max: number; help: string }
  | { kind: "number"; min: number; max: number; help: string }
  | { kind: "enum"; values: readonly string[]; help: string }
  | { kind: "string"; allowEmpty: boolean; help: string };

const MIB = 1024 * 1024;

/** The shipped defaults; `app.conf` in the repository spells out the same values. */
export const DEFAULTS: Readonly<Config> = Object.freeze({
  IP: "127.0.0.1",
  PORT: 9000,
  LEGACY_PORT: 0,
  FILE_NAME: "messages.log",
  FILE_MAX_BYTES: 0,
  MSG_PER_WRITE: 4096,
  TIME_INTERVAL_BTN_MSG: 0,
  ACK_MODE: "written",
  FLUSH_INTERVAL_MS: 0,
  QUEUE_CAPACITY: 65536,
  QUEUE_MAX_BYTES: 64 * MIB,
  MAX_MESSAGE_BYTES: MIB,
  MAX_CONNECTIONS: 16000,
  MAX_SESSIONS: 100000,
  AUTH_TOKEN: "",
  TLS_CERT: "",
  TLS_KEY: "",
  TLS_CA: "",
  LOG_LEVEL: "info",
  TCP_BACKLOG: 4096,
  HANDSHAKE_TIMEOUT_MS: 10000,
  IDLE_TIMEOUT_MS: 0,
  SHUTDOWN_TIMEOUT_MS: 10000,
  METRICS_PORT: 0,
  STATS_INTERVAL_S: 60,
});

const SPECS: Readonly<Record<keyof Config, Spec>> = {
  IP: { kind: "string", allowEmpty: false, help: "address to listen on / connect to" },
  PORT: { kind: "int", min: 0, max: 65535, help: "TCP port (0: any free port, server only)" },
  LEGACY_PORT: {
    kind: "int",
    min: 0,
    max: 65535,
    help: "port for the original C++ server's fixed-frame protocol (0: off)",
  },
  FILE_NAME: { kind: "string", allowEmpty: false, help: "file the records are appended to" },
  FILE_MAX_BYTES: {
    kind: "int",
    min: 0,
    max: Number.MAX_SAFE_INTEGER,
    help: "rotate the file before it would pass this size (0: never)",
  },
  MSG_PER_WRITE: { kind: "int", min: 1, max: 1_000_000, help: "most records per file write" },
  TIME_INTERVAL_BTN_MSG: {
    kind: "number",
    min: 0,
    max: 3600,
    help: "client: seconds to sleep between messages (0: pipeline)",
  },
  ACK_MODE: {
    kind: "enum",
    values: ["received", "written", "durable"],
    help: "when a message is acknowledged",
  },
  FLUSH_INTERVAL_MS: {
    kind: "int",
    min: 0,
    max: 60_000,
    help: "longest wait to fill a batch (0: write as soon as the queue runs dry)",
  },
  QUEUE_CAPACITY: { kind: "int", min: 1, max: 10_000_000, help: "records the queue holds" },
  QUEUE_MAX_BYTES: { kind: "int", min: 1024, max: 16 * 1024 * MIB, help: "bytes the queue holds" },
  MAX_MESSAGE_BYTES: { kind: "int", min: 1, max: 64 * MIB, help: "largest payload accepted" },
  MAX_CONNECTIONS: { kind: "int", min: 1, max: 1_000_000, help: "connections open at once" },
  MAX_SESSIONS: { kind: "int", min: 1, max: 10_000_000, help: "sessions remembered for resume" },
  AUTH_TOKEN: { kind: "string", allowEmpty: true, help: "token HELLO must carry (empty: none)" },
  TLS_CERT: {
    kind: "string",
    allowEmpty: true,
    help: "server: PEM certificate chain file; with TLS_KEY, serve TLS only",
  },
  TLS_KEY: { kind: "string", allowEmpty: true, help: "server: PEM private key file" },
  TLS_CA: {
    kind: "string",
    allowEmpty: true,
    help: "client: PEM CA file to trust; setting it turns TLS on",
  },
  LOG_LEVEL: { kind: "enum", values: ["debug", "info", "warn", "error"], help: "log detail" },
  TCP_BACKLOG: { kind: "int", min: 1, max: 65535, help: "listen backlog" },
  HANDSHAKE_TIMEOUT_MS: {
    kind: "int",
    min: 1,
    max: 3_600_000,
    help: "time a new connection has to send HELLO",
  },
  IDLE_TIMEOUT_MS: {
    kind: "int",
    min: 0,
    max: 86_400_000,
    help: "close a connection that sends no whole frame this long (0: never)",
  },
  SHUTDOWN_TIMEOUT_MS: {
    kind: "int",
    min: 1,
    max: 3_600_000,
    help: "longest graceful shutdown",
  },
  METRICS_PORT: {
    kind: "int",
    min: 0,
    max: 65535,
    help: "HTTP port for /metrics (Prometheus) and /healthz on IP (0: off)",
  },
  STATS_INTERVAL_S: {
    kind: "int",
    min: 0,
    max: 86_400,
    help: "seconds between one-line stats summaries at LOG_LEVEL=info (0: never)",
  },
};

/** All keys, in the order of SPECS (which `--help` lists). */
export const CONFIG_KEYS = Object.keys(SPECS) as (keyof Config)[];

/** A configuration that cannot be used; the message says what and where. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

function describe(spec: Spec): string {
  switch (spec.kind) {
    case "int":
      return `an integer from ${spec.min} to ${spec.max}`;
    case "number":
      return `a number from ${spec.min} to ${spec.max}`;
    case "enum":
      return `one of ${spec.values.map((v) => `"${v}"`).join(", ")}`;
    case "string":
      return spec.allowEmpty ? "any text" : "non-empty text";
  }
}

function convert(key: keyof Config, raw: string, where: string): string | number {
  const spec = SPECS[key];
  // The token is a secret: an error names the key but never echoes the value.
  const shown = key === "AUTH_TOKEN" ? "(hidden)" : `"${raw}"`;
  const fail = (): never => {
    throw new ConfigError(
      `Cannot load config: ${key} is ${shown} (${where}); allowed: ${describe(spec)}`,
    );
  };
  switch (spec.kind) {
    case "int": {
      if (!/^-?\d+$/.test(raw)) fail();
      const n = Number(raw) + 0; // + 0 turns -0 into 0
      if (n < spec.min || n > spec.max) fail();
      return n;
    }
    case "number": {
      if (!/^\d+(\.\d+)?$/.test(raw)) fail();
      const n = Number(raw);
      if (n < spec.min || n > spec.max) fail();
      return n;
    }
    case "enum":
      if (!spec.values.includes(raw)) fail();
      return raw;
    case "string":
      if (!spec.allowEmpty && raw === "") fail();
      // deno-lint-ignore no-control-regex
      if (/[\x00-\x1f\x7f]/.test(raw)) {
        throw new ConfigError(
          `Cannot load config: ${key} is ${
            key === "AUTH_TOKEN" ? "(hidden)" : JSON.stringify(raw)
          } (${where}); allowed: ${describe(spec)} without control characters`,
        );
      }
      return raw;
  }
}

function isKey(key: string): key is keyof Config {
  return Object.hasOwn(SPECS, key);
}

function editDistance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min(
        row[j]! + 1,
        next[j - 1]! + 1,
        row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
    row = next;
  }
  return row[b.length]!;
}

/** A "did you mean" hint for a mistyped key: the nearest key within a few edits, if any. */
function closest(key: string): string {
  const upper = key.toUpperCase().replaceAll("-", "_");
  let best = "";
  let bestDistance = Math.max(2, Math.floor(upper.length / 4)) + 1;
  for (const k of CONFIG_KEYS) {
    const d = editDistance(upper, k);
    if (d < bestDistance) {
      best = k;
      bestDistance = d;
    }
  }
  return best === "" ? "" : ` (did you mean "${best}"?)`;
}

/**
 * Parses the text of an app.conf file: `KEY=VALUE` lines; blank lines and lines starting with
 * `#` or `;` are ignored; a value may be wrapped in double or single quotes. Returns the raw
 * values with the line each came from.
 *
 * @example
 * ```ts
 * parseConfigText("PORT=9001\n# comment\n", "app.conf").get("PORT"); // { value: "9001", line: 1 }
 * ```
 */
export function parseConfigText(
  text: string,
  fileName: string,
): Map<keyof Config, { value: string; line: number }> {
  const values = new Map<keyof Config, { value: string; line: number }>();
  const lines = text.replace(/^\uFEFF/, "").split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    const line = lines[i]!.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const at = `${fileName} line ${lineNo}`;
    // A mistyped AUTH_TOKEN line holds the secret: name the line, never echo it.
    const shown = /^AUTH_TOKEN\b/i.test(line) ? "an AUTH_TOKEN line (value hidden)" : `"${line}"`;
    const eq = line.indexOf("=");
    if (line.startsWith("[")) {
      throw new ConfigError(`Cannot parse ${at}: sections are not supported: ${shown}`);
    }
    if (eq <= 0) throw new ConfigError(`Cannot parse ${at}: expected KEY=VALUE, got ${shown}`);
    const key = line.slice(0, eq).trim();
    let value = line.slice(eq + 1).trim();
    if (!isKey(key)) {
      throw new ConfigError(`Cannot parse ${at}: unknown key "${key}"${closest(key)}`);
    }
    const previous = values.get(key);
    if (previous !== undefined) {
      throw new ConfigError(`Cannot parse ${at}: ${key} is already set on line ${previous.line}`);
    }
    if (value.length >= 2 && (value[0] === '"' || value[0] === "'") && value.at(-1) === value[0]) {
      value = value.slice(1, -1);
    }
    values.set(key, { value, line: lineNo });
  }
  return values;
}

function flagName(key: keyof Config): string {
  return key.toLowerCase().replaceAll("_", "-");
}

/** Options of {@linkcode loadConfig}. */
export interface LoadOptions {
  /** Environment lookup; defaults to `Deno.env.get`. */
  env?: (name: string) => string | undefined;
  /** Extra boolean flags the program takes besides the config keys (e.g. `stdin`). */
  booleanFlags?: string[];
  /** Extra flags with a value that stand for a config key (`{ ca: "TLS_CA" }`). */
  aliases?: Record<string, keyof Config>;
  /** Whether positional arguments are allowed (the client's); default false. */
  allowPositionals?: boolean;
}

/** The outcome of {@linkcode loadConfig}. */
export interface LoadedConfig {
  config: Config;
  /** The file read, or null when none was found and the defaults apply. */
  file: string | null;
  positionals: string[];
  /** The extra boolean flags given. */
  flags: Record<string, boolean>;
  /** True when `--help` was given. */
  help: boolean;
}

async function readIfExists(path: string): Promise<string | null> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw new ConfigError(`Cannot read config file "${path}": ${(e as Error).message}`);
  }
}

/**
 * Builds the configuration from, in rising precedence: the defaults, the config file
 * (`--config PATH`, else `$MS_HOME/app.conf`, else `./app.conf` if present), the MS_AUTH_TOKEN
 * environment variable, and the flags. Throws {@linkcode ConfigError} on any bad input.
 *
 * @example
 * ```ts
 * const { config } = await loadConfig(["--port", "9001"]);
 * config.PORT; // 9001
 * ```
 */
export async function loadConfig(args: string[], options: LoadOptions = {}): Promise<LoadedConfig> {
  const env = options.env ?? ((name: string) => Deno.env.get(name));
  const flagOptions: Record<string, { type: "string" | "boolean" }> = {
    config: { type: "string" },
    help: { type: "boolean" },
  };
  for (const key of CONFIG_KEYS) flagOptions[flagName(key)] = { type: "string" };
  for (const flag of options.booleanFlags ?? []) flagOptions[flag] = { type: "boolean" };
  for (const flag of Object.keys(options.aliases ?? {})) flagOptions[flag] = { type: "string" };

  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: flagOptions,
      allowPositionals: options.allowPositionals ?? false,
      strict: true,
    });
  } catch (e) {
    const message = (e as Error).message;
    const flag = /'--([\w-]+)'/.exec(message)?.[1];
    const hint = flag !== undefined && /^Unknown option/.test(message) ? closest(flag) : "";
    throw new ConfigError(
      `Cannot parse command line: ${message}${
        hint.replace(/"([A-Z_]+)"/, (_, k: string) => `"--${flagName(k as keyof Config)}"`)
      }`,
    );
  }
  const flags = parsed.values as Record<string, string | boolean | undefined>;

  let file: string | null = null;
  let text: string | null = null;
  const explicit = flags.config;
  const home = env("MS_HOME");
  if (typeof explicit === "string") {
    file = explicit;
    text = await readIfExists(file);
    if (text === null) throw new ConfigError(`Cannot read config file "${file}": not found`);
  } else if (home !== undefined && home !== "") {
    file = `${home.replace(/\/+$/, "")}/app.conf`;
    text = await readIfExists(file);
    if (text === null) {
      throw new ConfigError(`Cannot read config file "${file}" (from MS_HOME): not found`);
    }
  } else {
    text = await readIfExists("app.conf");
    if (text !== null) file = "app.conf";
  }

  const config: Config = { ...DEFAULTS };
  const set = (key: keyof Config, raw: string, where: string) => {
    (config as unknown as Record<string, string | number>)[key] = convert(key, raw, where);
  };
  if (text !== null && file !== null) {
    for (const [key, { value, line }] of parseConfigText(text, file)) {
      set(key, value, `${file} line ${line}`);
    }
  }
  const envToken = env("MS_AUTH_TOKEN");
  if (envToken !== undefined) set("AUTH_TOKEN", envToken, "environment MS_AUTH_TOKEN");
  for (const key of CONFIG_KEYS) {
    const value = flags[flagName(key)];
    if (typeof value === "string") set(key, value, `flag --${flagName(key)}`);
  }
  for (const [flag, key] of Object.entries(options.aliases ?? {})) {
    const value = flags[flag];
    if (typeof value === "string") set(key, value, `flag --${flag}`);
  }
  if ((config.TLS_CERT === "") !== (config.TLS_KEY === "")) {
    throw new ConfigError(
      "Cannot load config: TLS_CERT and TLS_KEY go together; set both (TLS) or neither (plain TCP)",
    );
  }

  const extra: Record<string, boolean> = {};
  for (const flag of options.booleanFlags ?? []) extra[flag] = flags[flag] === true;
  return { config, file, positionals: parsed.positionals, flags: extra, help: flags.help === true };
}

/**
 * The flag help text: one line per key with its default and meaning.
 *
 * @example
 * ```ts
 * console.log(configHelp());
 * ```
 */
export function configHelp(): string {
  return CONFIG_KEYS.map((key) => {
    const spec = SPECS[key];
    const def = key === "AUTH_TOKEN" ? '""' : JSON.stringify(DEFAULTS[key]);
    return `  --${flagName(key)} VALUE`.padEnd(32) + `${key}: ${spec.help} (default ${def})`;
  }).join("\n");
}
