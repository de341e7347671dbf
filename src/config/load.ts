/**
 * Loading the configuration: the app.conf text format, and the sources in rising precedence
 * (defaults, file, environment, flags).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type Config, CONFIG_KEYS, DEFAULTS, isConfigKey, settingOf } from "./settings.ts";
import { ConfigError, convert, flagName } from "./values.ts";

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

/** The key nearest to a mistyped key or flag within a few edits, for a "did you mean" hint. */
function closest(key: string): keyof Config | undefined {
  const upper = key.toUpperCase().replaceAll("-", "_");
  let best: keyof Config | undefined;
  let bestDistance = Math.max(2, Math.floor(upper.length / 4)) + 1;
  for (const k of CONFIG_KEYS) {
    const d = editDistance(upper, k);
    if (d < bestDistance) {
      best = k;
      bestDistance = d;
    }
  }
  return best;
}

/** The secret key a line starts with, in any case (`auth_token: x`), if any: then the line holds it. */
function secretKeyOf(line: string): keyof Config | undefined {
  const word = /^\w+/.exec(line)?.[0].toUpperCase();
  if (word === undefined || !isConfigKey(word)) return undefined;
  return settingOf(word).secret === true ? word : undefined;
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
    // A mistyped line of a secret holds the secret: name the line, never echo it.
    const secret = secretKeyOf(line);
    const article = secret !== undefined && /^[AEIOU]/.test(secret) ? "an" : "a";
    const shown = secret === undefined ? `"${line}"` : `${article} ${secret} line (value hidden)`;
    const eq = line.indexOf("=");
    if (line.startsWith("[")) {
      throw new ConfigError(`Cannot parse ${at}: sections are not supported: ${shown}`);
    }
    if (eq <= 0) throw new ConfigError(`Cannot parse ${at}: expected KEY=VALUE, got ${shown}`);
    const key = line.slice(0, eq).trim();
    let value = line.slice(eq + 1).trim();
    if (!isConfigKey(key)) {
      const hint = closest(key);
      throw new ConfigError(
        `Cannot parse ${at}: unknown key "${key}"` +
          (hint === undefined ? "" : ` (did you mean "${hint}"?)`),
      );
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

/**
 * Options of {@linkcode loadConfig}.
 *
 * @example
 * ```ts
 * const options: LoadOptions = { booleanFlags: ["stdin"], aliases: { ca: "TLS_CA" } };
 * ```
 */
export interface LoadOptions {
  /** Environment lookup; defaults to `Deno.env.get`. */
  env?: (name: string) => string | undefined;
  /** Extra boolean flags the program takes besides the config keys (e.g. `stdin`). */
  booleanFlags?: string[];
  /** Extra flags with a value the program takes besides the config keys (e.g. `session`). */
  stringFlags?: string[];
  /** Extra flags with a value that stand for a config key (`{ ca: "TLS_CA" }`). */
  aliases?: Record<string, keyof Config>;
  /** Whether positional arguments are allowed (the client's); default false. */
  allowPositionals?: boolean;
}

/**
 * The outcome of {@linkcode loadConfig}.
 *
 * @example
 * ```ts
 * import { configHelp } from "../config.ts";
 *
 * const loaded: LoadedConfig = await loadConfig(["--config", "app.conf"]);
 * if (loaded.help) console.log(configHelp());
 * ```
 */
export interface LoadedConfig {
  /** The settings, checked and converted. */
  config: Config;
  /** The file read, or null when none was found and the defaults apply. */
  file: string | null;
  /** The arguments that are not flags (allowed only with `allowPositionals`). */
  positionals: string[];
  /** The extra boolean flags given. */
  flags: Record<string, boolean>;
  /** The extra string flags given (absent when not given). */
  values: Record<string, string>;
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

/** The config file to read and its text: `--config`, else `$MS_HOME/app.conf`, else `app.conf`. */
async function findFile(
  explicit: string | undefined,
  home: string | undefined,
): Promise<{ file: string | null; text: string | null }> {
  if (explicit !== undefined) {
    const text = await readIfExists(explicit);
    if (text === null) throw new ConfigError(`Cannot read config file "${explicit}": not found`);
    return { file: explicit, text };
  }
  if (home !== undefined && home !== "") {
    const file = `${home.replace(/\/+$/, "")}/app.conf`;
    const text = await readIfExists(file);
    if (text === null) {
      throw new ConfigError(`Cannot read config file "${file}" (from MS_HOME): not found`);
    }
    return { file, text };
  }
  const text = await readIfExists("app.conf");
  return { file: text === null ? null : "app.conf", text };
}

/**
 * Builds the configuration from, in rising precedence: the defaults, the config file
 * (`--config PATH`, else `$MS_HOME/app.conf`, else `./app.conf` if present), the environment
 * variables of the settings that have one (MS_AUTH_TOKEN), and the flags. Throws
 * {@linkcode ConfigError} on any bad input.
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
  for (const flag of options.stringFlags ?? []) flagOptions[flag] = { type: "string" };
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
    const hint = flag !== undefined && /^Unknown option/.test(message) ? closest(flag) : undefined;
    throw new ConfigError(
      `Cannot parse command line: ${message}` +
        (hint === undefined ? "" : ` (did you mean "--${flagName(hint)}"?)`),
    );
  }
  const flags = parsed.values as Record<string, string | boolean | undefined>;

  const explicit = flags.config;
  const { file, text } = await findFile(
    typeof explicit === "string" ? explicit : undefined,
    env("MS_HOME"),
  );

  const config: Config = { ...DEFAULTS };
  const set = <K extends keyof Config>(key: K, raw: string, where: string) => {
    config[key] = convert(key, raw, where);
  };
  if (text !== null && file !== null) {
    for (const [key, { value, line }] of parseConfigText(text, file)) {
      set(key, value, `${file} line ${line}`);
    }
  }
  for (const key of CONFIG_KEYS) {
    const name = settingOf(key).env;
    const value = name === undefined ? undefined : env(name);
    if (value !== undefined) set(key, value, `environment ${name}`);
  }
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
  const values: Record<string, string> = {};
  for (const flag of options.stringFlags ?? []) {
    const value = flags[flag];
    if (typeof value === "string") values[flag] = value;
  }
  return {
    config,
    file,
    positionals: parsed.positionals,
    flags: extra,
    values,
    help: flags.help === true,
  };
}
