/**
 * The program's version, from `deno.json`, so that it is written in one place.
 *
 * @module
 */

import meta from "../deno.json" with { type: "json" };

/**
 * msgserver's version (`deno.json` `version`).
 *
 * @example
 * ```ts
 * import { VERSION } from "./version.ts";
 * console.log(`msgserver ${VERSION}`);
 * ```
 */
export const VERSION: string = meta.version;
