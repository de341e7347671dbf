/**
 * Whether a path exists.
 *
 * @module
 */

/**
 * True when `path` exists (a dangling symlink counts: it is not followed), false when it does
 * not; any other error (no permission, say) is thrown.
 *
 * @example
 * ```ts
 * import { exists } from "./exists.ts";
 * if (!await exists("app.conf")) console.log("no app.conf here");
 * ```
 */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}
