/**
 * The store STORE names: the data file (FILE_NAME), or the NATS JetStream stream (NATS_*), whose
 * code (and the NATS client) is loaded only when it is asked for.
 *
 * @module
 */

import type { Config } from "../config.ts";
import type { Logger } from "../log.ts";
import { FileStore } from "./file_store.ts";
import type { Store } from "./store.ts";

/**
 * Opens the store of `config.STORE`. Throws what opening it throws: a `StoreStartError` for
 * settings it cannot start with.
 *
 * @example
 * ```ts
 * import { DEFAULTS } from "../config.ts";
 * import { Logger } from "../log.ts";
 * import { openStore } from "./open.ts";
 * const store = await openStore({ ...DEFAULTS, FILE_NAME: "/tmp/m.log" }, new Logger("info"));
 * await store.close();
 * ```
 */
export async function openStore(config: Config, log: Logger): Promise<Store> {
  if (config.STORE === "jetstream") {
    const { openJetStream } = await import("./jetstream_start.ts");
    return await openJetStream(config, log);
  }
  return await FileStore.open(config.FILE_NAME, {
    durable: config.ACK_MODE === "durable",
    log,
    maxSessions: config.MAX_SESSIONS,
  });
}
