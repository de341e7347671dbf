/**
 * Small I/O helpers shared by the server, the client, the load tool and the tests.
 *
 * @example
 * ```ts
 * import { closeQuietly, writeAll } from "./mod.ts";
 * const conn = await Deno.connect({ port: 9000 });
 * await writeAll(conn, new Uint8Array([0, 0, 0, 1, 0x02]));
 * closeQuietly(conn);
 * ```
 *
 * @module
 */
export { closeQuietly } from "./close_quietly.ts";
export { concat } from "./concat.ts";
export { deadline, delay, within } from "./within.ts";
export { exists } from "./exists.ts";
export { syncDirectoryOf } from "./sync_directory.ts";
export { readWholeLines, type WholeLinesResult } from "./whole_lines.ts";
export { writeAll, type Writer } from "./write_all.ts";
