/**
 * The msgserver server, to embed it in another program or a test.
 *
 * @example
 * ```ts
 * import { startServer } from "./mod.ts";
 * import { DEFAULTS } from "../config.ts";
 * const server = await startServer({ ...DEFAULTS, PORT: 0 });
 * await server.shutdown();
 * ```
 *
 * @module
 */
export { MsgServer, type ServerOptions, type ServerStats, startServer } from "./server.ts";
export {
  type Config,
  DEFAULTS,
  loadConfig,
  type LoadedConfig,
  type LoadOptions,
  type Setting,
  SETTINGS,
  type SettingValue,
} from "../config.ts";
export { type ParsedLine, parseFile, parseLine } from "./line.ts";
export { Logger } from "../log.ts";
export type { AckMode, LogLevel } from "../config.ts";
export type { ConnectionStats } from "./served.ts";
export type { WriterStats } from "./writer.ts";
export type { Batch, BatchRun, Store, StoreStats } from "../store/store.ts";
export type { RecordSource } from "./entry.ts";
export { BucketHistogram, type LabelledValue, type Metric } from "./metrics.ts";
export type { HttpStats } from "../http/http_server.ts";
export type { AcceptStats } from "./listener.ts";
