/**
 * Making a file's name durable: a file created or renamed survives a power loss only once its
 * directory is synced too.
 *
 * @module
 */

/**
 * Syncs the directory holding `path`, so that a file created or renamed there survives a power
 * loss (durable mode does this after creating, rotating or reopening the data file).
 *
 * @example
 * ```ts
 * import { syncDirectoryOf } from "./sync_directory.ts";
 * await syncDirectoryOf("/tmp/messages.log");
 * ```
 */
export async function syncDirectoryOf(path: string): Promise<void> {
  const slash = path.lastIndexOf("/");
  const dir = slash < 0 ? "." : slash === 0 ? "/" : path.slice(0, slash);
  const handle = await Deno.open(dir, { read: true });
  try {
    await handle.sync();
  } finally {
    handle.close();
  }
}
