/**
 * Connecting to NATS with the settings of app.conf (NATS_URLS, NATS_USER, NATS_PASSWORD,
 * NATS_TOKEN, NATS_CA, NATS_TIMEOUT_MS): one place for the JetStream store and the exporter.
 *
 * @module
 */

import { connect, type ConnectionOptions, type NatsConnection } from "@nats-io/transport-node";
import type { Config } from "../config.ts";
import { redactUrl } from "../config/values.ts";

export { redactUrl };

/** The settings a NATS connection is made from. */
export type NatsSettings = Pick<
  Config,
  "NATS_URLS" | "NATS_USER" | "NATS_PASSWORD" | "NATS_TOKEN" | "NATS_CA" | "NATS_TIMEOUT_MS"
>;

/**
 * The servers of NATS_URLS: split at commas, trimmed, empty entries dropped.
 *
 * @example
 * ```ts
 * import { natsServers } from "./nats_connect.ts";
 * natsServers("nats://a:4222, nats://b:4222"); // ["nats://a:4222", "nats://b:4222"]
 * ```
 */
export function natsServers(urls: string): string[] {
  return urls.split(",").map((u) => u.trim()).filter((u) => u !== "");
}

/**
 * The nats.js connection options for `config`: its servers, its credentials (user and password,
 * or token), TLS trusting NATS_CA when that is set (a server without TLS is then refused), and
 * NATS_TIMEOUT_MS as the connect timeout. The client reconnects without a limit of attempts:
 * its users bound how long they wait for a lost connection by NATS_TIMEOUT_MS themselves.
 *
 * @example
 * ```ts
 * import { DEFAULTS } from "../config.ts";
 * import { natsConnectOptions } from "./nats_connect.ts";
 * natsConnectOptions({ ...DEFAULTS, NATS_TOKEN: "t" }).token; // "t"
 * ```
 */
export function natsConnectOptions(config: NatsSettings): ConnectionOptions {
  const options: ConnectionOptions = {
    servers: natsServers(config.NATS_URLS),
    name: "msgserver",
    timeout: config.NATS_TIMEOUT_MS,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
  };
  if (config.NATS_USER !== "") {
    options.user = config.NATS_USER;
    options.pass = config.NATS_PASSWORD;
  }
  if (config.NATS_TOKEN !== "") options.token = config.NATS_TOKEN;
  if (config.NATS_CA !== "") options.tls = { caFile: config.NATS_CA };
  return options;
}

/**
 * Connects to the servers of NATS_URLS. Throws an `Error` whose message names NATS_URLS and the
 * URLs tried (with any credentials in them hidden) when it cannot.
 *
 * @example
 * ```ts
 * import { DEFAULTS } from "../config.ts";
 * import { connectNats } from "./nats_connect.ts";
 * const nc = await connectNats({ ...DEFAULTS, NATS_URLS: "nats://127.0.0.1:4222" });
 * await nc.close();
 * ```
 */
export async function connectNats(
  config: NatsSettings,
  extra: Partial<ConnectionOptions> = {},
): Promise<NatsConnection> {
  const options = { ...natsConnectOptions(config), ...extra };
  const shown = natsServers(config.NATS_URLS).map(redactUrl).join(",");
  if (shown === "") throw new Error("Cannot connect to NATS: NATS_URLS names no server");
  try {
    return await connect(options);
  } catch (e) {
    const reason = (e as Error).message;
    throw new Error(
      `Cannot connect to NATS at NATS_URLS "${shown}": ${reason}` +
        (config.NATS_CA === "" ? "" : ` (TLS, trusting NATS_CA "${config.NATS_CA}")`),
    );
  }
}
