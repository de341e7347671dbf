/**
 * A bounded wait, for the places that wait on a peer or on the writer but must not wait forever.
 *
 * @module
 */

/**
 * Resolves when `promise` settles or after `ms`, whichever is first; `null` resolves at once.
 * Never rejects: a rejected `promise` counts as settled.
 *
 * @example
 * ```ts
 * await within(connectionFlushed, 1000); // at most a second
 * ```
 */
export async function within(promise: Promise<unknown> | null, ms: number): Promise<void> {
  if (promise === null) return;
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    promise.catch(() => {}),
    new Promise<void>((r) => timer = setTimeout(r, ms)),
  ]);
  clearTimeout(timer);
}
