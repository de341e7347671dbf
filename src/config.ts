/**
 * Configuration for msgserver and msgclient: one `app.conf` (KEY=VALUE lines) for both programs,
 * overridden by the environment (MS_AUTH_TOKEN) and then by command-line flags (`--port 9001`,
 * one flag per key, in lower case with dashes). Every value is checked; a bad one stops the program
 * with a message naming the key, the value (unless it is a secret), where it came from and what is
 * allowed.
 *
 * Everything follows from one table, `SETTINGS` in `config/settings.ts`: the {@linkcode Config}
 * type, the {@linkcode DEFAULTS}, the checks, the flags, the environment variables, which values are
 * secret and the `--help` text. Adding a key means adding ONE entry to that table, plus its line in
 * README.md's configuration table and in app.conf (tests/config_docs_test.ts fails until both list
 * it).
 *
 * This file is the entry point; `config/values.ts` checks, converts and shows single values and
 * `config/load.ts` reads the file, the environment and the flags.
 *
 * @example
 * ```ts
 * const { config } = await loadConfig(["--port", "9001"], { env: () => undefined });
 * console.log(config.PORT, redactConfig(config).AUTH_TOKEN); // 9001 ""
 * ```
 *
 * @module
 */

export {
  type AckMode,
  type Config,
  CONFIG_KEYS,
  DEFAULTS,
  type LogLevel,
  type Setting,
  SETTINGS,
  type SettingValue,
} from "./config/settings.ts";
export { ConfigError, configHelp, redactConfig } from "./config/values.ts";
export { loadConfig, type LoadedConfig, type LoadOptions, parseConfigText } from "./config/load.ts";
export { type HostPort, parseHostPorts } from "./config/host_ports.ts";
