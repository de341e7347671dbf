/**
 * What follows from the settings table for one value: its check and conversion from text, how it
 * is shown (secrets never are), its flag name, and the `--help` text.
 *
 * @module
 */

import { HOST_PORTS_ALLOWED, parseHostPorts } from "./host_ports.ts";
import { type Config, CONFIG_KEYS, DEFAULTS, type Setting, settingOf } from "./settings.ts";

/**
 * A configuration that cannot be used; the message says what and where.
 *
 * @example
 * ```ts
 * import { loadConfig } from "../config.ts";
 *
 * try {
 *   await loadConfig(["--port", "99999"]);
 * } catch (e) {
 *   if (!(e instanceof ConfigError)) throw e;
 *   console.error(e.message); // Cannot load config: PORT is "99999" (flag --port); allowed: ...
 * }
 * ```
 */
export class ConfigError extends Error {
  /**
   * Makes the error; the message follows the style "Cannot load config: PORT is ...".
   *
   * @param message what cannot be used, and where it came from
   *
   * @example
   * ```ts
   * throw new ConfigError('Cannot read config file "x.conf": not found');
   * ```
   */
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** What a secret is shown as wherever a value would be. */
const HIDDEN = "(hidden)";

/**
 * A URL as it may be shown: any `user:password@` (or `token@`) in it replaced by `***@`.
 *
 * @example
 * ```ts
 * redactUrl("nats://me:secret@host:4222"); // "nats://***@host:4222"
 * ```
 */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)?[^@/]*@/i, "$1***@");
}

/** `shown` for an ordinary setting; `(hidden)` for a secret; a list of URLs without credentials. */
function unlessSecret(key: keyof Config, shown: string): string {
  const setting = settingOf(key);
  if (setting.secret === true) return HIDDEN;
  if (setting.urls === true) return shown.split(",").map((u) => redactUrl(u.trim())).join(",");
  return shown;
}

/**
 * A value as it may be shown: itself, or `(hidden)` for a secret that is set (an empty secret
 * stays "", so that "not set" remains visible).
 *
 * @example
 * ```ts
 * redactValue("PORT", 9000); // 9000
 * redactValue("AUTH_TOKEN", "hunter2"); // "(hidden)"
 * redactValue("NATS_URLS", "nats://me:pw@a:4222,nats://b:4222"); // "nats://***@a:4222,nats://b:4222"
 * ```
 */
export function redactValue(key: keyof Config, value: string | number): string | number {
  if (value === "" || typeof value === "number") return value;
  return unlessSecret(key, value);
}

/**
 * The configuration as it may be shown on a status page or in a log: every key, with each secret
 * shown as `(hidden)` when set and as "" when empty.
 *
 * @example
 * ```ts
 * import { DEFAULTS } from "../config.ts";
 *
 * const shown = redactConfig({ ...DEFAULTS, AUTH_TOKEN: "hunter2" });
 * shown.AUTH_TOKEN; // "(hidden)"
 * shown.PORT; // 9000
 * ```
 */
export function redactConfig(config: Config): Record<string, string | number> {
  const shown: Record<string, string | number> = {};
  for (const key of CONFIG_KEYS) shown[key] = redactValue(key, config[key]);
  return shown;
}

function describe(setting: Setting): string {
  switch (setting.kind) {
    case "int":
      return `an integer from ${setting.min} to ${setting.max}`;
    case "number":
      return `a number from ${setting.min} to ${setting.max}`;
    case "enum":
      return `one of ${setting.values.map((v) => `"${v}"`).join(", ")}`;
    case "string":
      if (setting.pattern !== undefined) return setting.pattern.allowed;
      return setting.allowEmpty ? "any text" : "non-empty text";
    case "hostPorts":
      return HOST_PORTS_ALLOWED;
  }
}

function check(key: keyof Config, raw: string, where: string): string | number {
  const setting = settingOf(key);
  const fail = (shown: string, extra = ""): never => {
    throw new ConfigError(
      `Cannot load config: ${key} is ${unlessSecret(key, shown)} (${where}); ` +
        `allowed: ${describe(setting)}${extra}`,
    );
  };
  switch (setting.kind) {
    case "int": {
      if (!/^-?\d+$/.test(raw)) fail(`"${raw}"`);
      const n = Number(raw) + 0; // + 0 turns -0 into 0
      if (n < setting.min || n > setting.max) fail(`"${raw}"`);
      return n;
    }
    case "number": {
      if (!/^\d+(\.\d+)?$/.test(raw)) fail(`"${raw}"`);
      const n = Number(raw);
      if (n < setting.min || n > setting.max) fail(`"${raw}"`);
      return n;
    }
    case "enum":
      if (!setting.values.includes(raw)) fail(`"${raw}"`);
      return raw;
    case "string":
      if (!setting.allowEmpty && raw === "") fail(`"${raw}"`);
      // deno-lint-ignore no-control-regex
      if (/[\x00-\x1f\x7f]/.test(raw)) fail(JSON.stringify(raw), " without control characters");
      if (setting.pattern !== undefined && raw !== "" && !setting.pattern.test.test(raw)) {
        fail(JSON.stringify(raw));
      }
      return raw;
    case "hostPorts":
      try {
        parseHostPorts(raw);
      } catch (e) {
        if (!(e instanceof SyntaxError)) throw e;
        fail(JSON.stringify(raw), `; ${e.message}`);
      }
      return raw;
  }
}

/**
 * Checks the text `raw` against the setting of `key` and converts it to that setting's type.
 * Throws {@linkcode ConfigError} naming the key, the value (unless secret), `where` it came from
 * and what is allowed.
 *
 * @example
 * ```ts
 * convert("PORT", "9001", "flag --port"); // 9001
 * convert("ACK_MODE", "durable", "app.conf line 3"); // "durable"
 * ```
 */
export function convert<K extends keyof Config>(key: K, raw: string, where: string): Config[K] {
  // check() converts by the kind of SETTINGS[key], from which Config[K] is derived.
  return check(key, raw, where) as Config[K];
}

/**
 * The command-line flag of `key`, without the dashes: lower case, `_` turned into `-`.
 *
 * @example
 * ```ts
 * flagName("ACK_MODE"); // "ack-mode"
 * ```
 */
export function flagName(key: keyof Config): string {
  return key.toLowerCase().replaceAll("_", "-");
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
    const def = JSON.stringify(redactValue(key, DEFAULTS[key]));
    return `  --${flagName(key)} VALUE`.padEnd(32) +
      `${key}: ${settingOf(key).help} (default ${def})`;
  }).join("\n");
}
