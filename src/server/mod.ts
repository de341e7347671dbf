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
export { type Config, DEFAULTS, loadConfig } from "../config.ts";
export { type ParsedLine, parseFile, parseLine } from "./line.ts";
