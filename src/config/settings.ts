/**
 * The settings table: every key of app.conf with its kind, default, allowed range and help text.
 * The {@linkcode Config} type, the {@linkcode DEFAULTS}, the order of {@linkcode CONFIG_KEYS}, the
 * value checks, the flags, the environment variables, the hiding of secrets and the `--help` text
 * all follow from it.
 *
 * Adding a key means adding ONE entry to {@linkcode SETTINGS}, plus its line in README.md's
 * configuration table and in app.conf (tests/config_docs_test.ts fails until both list it).
 *
 * (Over 400 lines: it is the table of every setting, one entry each; the code around it is short.)
 *
 * @module
 */

/**
 * One row of {@linkcode SETTINGS}: the kind of value, its default and what is allowed, its help
 * line, and whether it is a secret or can be set from the environment.
 *
 * @example
 * ```ts
 * const port: Setting = { kind: "int", default: 9000, min: 0, max: 65535, help: "TCP port" };
 * ```
 */
export type Setting =
  & {
    /** One line for `--help`: what the value means. */
    readonly help: string;
    /** A secret is never shown: not in errors, not in `--help`, not by `redactConfig`. */
    readonly secret?: true;
    /**
     * A comma-separated list of URLs that may carry credentials (`nats://user:password@host`):
     * shown without them, wherever it is shown.
     */
    readonly urls?: true;
    /** An environment variable that sets it, above the file and below the flags. */
    readonly env?: string;
  }
  & (
    | Readonly<{ kind: "int"; default: number; min: number; max: number }>
    | Readonly<{ kind: "number"; default: number; min: number; max: number }>
    | Readonly<{ kind: "enum"; default: string; values: readonly string[] }>
    | Readonly<{
      kind: "string";
      default: string;
      allowEmpty: boolean;
      /** What a non-empty value must match, and how to say so in an error. */
      pattern?: { test: RegExp; allowed: string };
    }>
    // A `host:port,...` list (config/host_ports.ts), checked but kept as its text.
    | Readonly<{ kind: "hostPorts"; default: string }>
  );

const MIB = 1024 * 1024;

/**
 * Every setting, under the name it has in app.conf, in the order `--help` lists them.
 *
 * @example
 * ```ts
 * SETTINGS.PORT.max; // 65535
 * ```
 */
export const SETTINGS = {
  IP: {
    kind: "string",
    default: "127.0.0.1",
    allowEmpty: false,
    help: "address to listen on / connect to",
  },
  PORT: {
    kind: "int",
    default: 9000,
    min: 0,
    max: 65535,
    help: "TCP port (0: any free port, server only)",
  },
  SERVERS: {
    kind: "hostPorts",
    default: "",
    help: "client: host:port list, comma-separated, to fail over between (empty: IP and PORT)",
  },
  LEGACY_PORT: {
    kind: "int",
    default: 0,
    min: 0,
    max: 65535,
    help: "port for the original C++ server's fixed-frame protocol (0: off)",
  },
  FILE_NAME: {
    kind: "string",
    default: "messages.log",
    allowEmpty: false,
    help: "file the records are appended to",
  },
  FILE_MAX_BYTES: {
    kind: "int",
    default: 0,
    min: 0,
    max: Number.MAX_SAFE_INTEGER,
    help: "rotate the file before it would pass this size (0: never)",
  },
  MSG_PER_WRITE: {
    kind: "int",
    default: 4096,
    min: 1,
    max: 1_000_000,
    help: "most records per file write",
  },
  TIME_INTERVAL_BTN_MSG: {
    kind: "number",
    default: 0,
    min: 0,
    max: 3600,
    help: "client: seconds to sleep between messages (0: pipeline)",
  },
  ACK_MODE: {
    kind: "enum",
    default: "written",
    values: ["received", "written", "durable"],
    help: "when a message is acknowledged",
  },
  FLUSH_INTERVAL_MS: {
    kind: "int",
    default: 0,
    min: 0,
    max: 60_000,
    help: "longest wait to fill a batch (0: write as soon as the queue runs dry)",
  },
  QUEUE_CAPACITY: {
    kind: "int",
    default: 65536,
    min: 1,
    max: 10_000_000,
    help: "records the queue holds",
  },
  QUEUE_MAX_BYTES: {
    kind: "int",
    default: 64 * MIB,
    min: 1024,
    max: 16 * 1024 * MIB,
    help: "bytes the queue holds",
  },
  MAX_MESSAGE_BYTES: {
    kind: "int",
    default: MIB,
    min: 1,
    max: 64 * MIB,
    help: "largest payload accepted",
  },
  MAX_CONNECTIONS: {
    kind: "int",
    default: 16000,
    min: 1,
    max: 1_000_000,
    help: "connections open at once",
  },
  MAX_SESSIONS: {
    kind: "int",
    default: 100000,
    min: 1,
    max: 10_000_000,
    help: "sessions remembered for resume",
  },
  AUTH_TOKEN: {
    kind: "string",
    default: "",
    allowEmpty: true,
    secret: true,
    env: "MS_AUTH_TOKEN",
    help: "token HELLO must carry (empty: none)",
  },
  TLS_CERT: {
    kind: "string",
    default: "",
    allowEmpty: true,
    help: "server: PEM certificate chain file; with TLS_KEY, serve TLS only",
  },
  TLS_KEY: {
    kind: "string",
    default: "",
    allowEmpty: true,
    help: "server: PEM private key file",
  },
  TLS_CA: {
    kind: "string",
    default: "",
    allowEmpty: true,
    help: "client: PEM CA file to trust; setting it turns TLS on",
  },
  LOG_LEVEL: {
    kind: "enum",
    default: "info",
    values: ["debug", "info", "warn", "error"],
    help: "log detail",
  },
  TCP_BACKLOG: {
    kind: "int",
    default: 4096,
    min: 1,
    max: 65535,
    help: "listen backlog",
  },
  HANDSHAKE_TIMEOUT_MS: {
    kind: "int",
    default: 10000,
    min: 1,
    max: 3_600_000,
    help: "time a new connection has to send HELLO",
  },
  IDLE_TIMEOUT_MS: {
    kind: "int",
    default: 0,
    min: 0,
    max: 86_400_000,
    help: "close a connection that sends no whole frame this long (0: never)",
  },
  SHUTDOWN_TIMEOUT_MS: {
    kind: "int",
    default: 10000,
    min: 1,
    max: 3_600_000,
    help: "longest graceful shutdown",
  },
  METRICS_PORT: {
    kind: "int",
    default: 0,
    min: 0,
    max: 65535,
    help: "HTTP port for /metrics (Prometheus) and /healthz on IP (0: off)",
  },
  STATS_INTERVAL_S: {
    kind: "int",
    default: 60,
    min: 0,
    max: 86_400,
    help: "seconds between one-line stats summaries at LOG_LEVEL=info (0: never)",
  },
  STORE: {
    kind: "enum",
    default: "file",
    values: ["file", "jetstream"],
    help: "where records are kept: FILE_NAME, or the NATS JetStream stream NATS_STREAM",
  },
  NATS_URLS: {
    kind: "string",
    default: "nats://127.0.0.1:4222",
    allowEmpty: false,
    urls: true,
    help: "NATS servers, comma-separated (JetStream store and export)",
  },
  NATS_STREAM: {
    kind: "string",
    default: "MSGS",
    allowEmpty: false,
    // JetStream's own rule for stream names.
    pattern: {
      test: /^[^\s.*>/\\]+$/,
      allowed: 'a stream name: no spaces, ".", "*", ">", "/" or "\\"',
    },
    help: "JetStream stream holding the records",
  },
  NATS_SUBJECT: {
    kind: "string",
    default: "msgs",
    allowEmpty: false,
    // Sessions are published under <prefix>.<client_id>.<session>: no wildcards in the prefix.
    pattern: {
      test: /^[^\s.*>]+(\.[^\s.*>]+)*$/,
      allowed: 'subject tokens joined by ".", without spaces, "*" or ">"',
    },
    help: "subject prefix of the stream's messages",
  },
  NATS_REPLICAS: {
    kind: "int",
    default: 3,
    min: 1,
    max: 5,
    help: "replicas of NATS_STREAM when msgserver creates it (STORE=jetstream)",
  },
  NATS_USER: {
    kind: "string",
    default: "",
    allowEmpty: true,
    help: "NATS user name (empty: none)",
  },
  NATS_PASSWORD: {
    kind: "string",
    default: "",
    allowEmpty: true,
    secret: true,
    help: "NATS password",
  },
  NATS_TOKEN: {
    kind: "string",
    default: "",
    allowEmpty: true,
    secret: true,
    help: "NATS token (empty: none)",
  },
  NATS_CA: {
    kind: "string",
    default: "",
    allowEmpty: true,
    help: "PEM CA file to trust for NATS; setting it turns TLS on",
  },
  NATS_TIMEOUT_MS: {
    kind: "int",
    default: 5000,
    min: 1,
    max: 3_600_000,
    help: "longest wait for NATS (connect, requests, a lost connection) before giving up",
  },
} as const satisfies Record<string, Setting>;

/**
 * The type of a value of the setting `S`: the union of an enum's values, a number, or text.
 *
 * @example
 * ```ts
 * const mode: SettingValue<typeof SETTINGS.ACK_MODE> = "durable";
 * ```
 */
export type SettingValue<S extends Setting> = S extends
  { kind: "enum"; values: readonly (infer V)[] } ? V
  : S extends { kind: "int" | "number" } ? number
  : string;

/**
 * Every setting, under the name it has in app.conf; derived from {@linkcode SETTINGS}.
 *
 * @example
 * ```ts
 * const config: Config = { ...DEFAULTS, PORT: 9001, ACK_MODE: "durable" };
 * ```
 */
export type Config = {
  -readonly [K in keyof typeof SETTINGS]: SettingValue<(typeof SETTINGS)[K]>;
};

/**
 * The acknowledgement modes; see the README for the guarantee of each.
 *
 * @example
 * ```ts
 * const mode: AckMode = "durable";
 * ```
 */
export type AckMode = Config["ACK_MODE"];

/**
 * Log levels, least to most severe.
 *
 * @example
 * ```ts
 * const level: LogLevel = "warn";
 * ```
 */
export type LogLevel = Config["LOG_LEVEL"];

/**
 * All keys, in the order of {@linkcode SETTINGS} (which `--help` lists).
 *
 * @example
 * ```ts
 * CONFIG_KEYS[0]; // "IP"
 * ```
 */
export const CONFIG_KEYS = Object.keys(SETTINGS) as (keyof Config)[];

/**
 * The setting of `key`, as the general {@linkcode Setting} (so `secret` and `env` can be read for
 * any key).
 *
 * @example
 * ```ts
 * settingOf("AUTH_TOKEN").secret; // true
 * ```
 */
export function settingOf(key: keyof Config): Setting {
  return SETTINGS[key];
}

/**
 * Whether `key` names a setting (exactly, in upper case).
 *
 * @example
 * ```ts
 * isConfigKey("PORT"); // true
 * isConfigKey("port"); // false
 * ```
 */
export function isConfigKey(key: string): key is keyof Config {
  return Object.hasOwn(SETTINGS, key);
}

/** The default of every setting, typed as the table spells it. */
function defaultsOf(): { [K in keyof typeof SETTINGS]: (typeof SETTINGS)[K]["default"] } {
  const defaults: Record<string, string | number> = {};
  for (const key of CONFIG_KEYS) defaults[key] = SETTINGS[key].default;
  // The loop above sets exactly these keys to exactly these values.
  return defaults as { [K in keyof typeof SETTINGS]: (typeof SETTINGS)[K]["default"] };
}

/**
 * The shipped defaults; `app.conf` in the repository spells out the same values. (Typing it as
 * `Config` also makes the compiler check that each enum's default is one of its values.)
 *
 * @example
 * ```ts
 * DEFAULTS.PORT; // 9000
 * ```
 */
export const DEFAULTS: Readonly<Config> = Object.freeze(defaultsOf());
