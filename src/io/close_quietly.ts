/**
 * Closing a resource that the peer or another task may have closed already.
 *
 * @module
 */

/**
 * Closes `resource`, ignoring that it may be closed already (by the peer, or by another task of
 * ours): closing is how every path out of a connection ends, and only the first close matters.
 *
 * @example
 * ```ts
 * import { closeQuietly } from "./close_quietly.ts";
 * const conn = await Deno.connect({ port: 9000 });
 * closeQuietly(conn);
 * closeQuietly(conn); // no BadResource error
 * ```
 */
export function closeQuietly(resource: { close(): void } | null | undefined): void {
  try {
    resource?.close();
  } catch {
    // closed already
  }
}
