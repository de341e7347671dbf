/**
 * Bounded waits, for the places that wait on a peer, the writer or a child process but must not
 * wait forever.
 *
 * @module
 */

/**
 * Waits until `promise` settles or `ms` pass, whichever is first; `null` counts as settled.
 * Never rejects (a rejection counts as settled). Resolves true if it settled in time.
 *
 * @example
 * ```ts
 * import { within } from "./within.ts";
 * const flushed = new Promise<void>((r) => setTimeout(r, 10));
 * if (!await within(flushed, 1000)) console.log("gave up after a second");
 * ```
 */
export async function within(promise: Promise<unknown> | null, ms: number): Promise<boolean> {
  if (promise === null) return true;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const settled = await Promise.race([
    promise.then(() => true, () => true),
    new Promise<false>((r) => timer = setTimeout(() => r(false), ms)),
  ]);
  clearTimeout(timer);
  return settled;
}

/**
 * Resolves like `promise`, or rejects with `Deno.errors.TimedOut` ("`what`: nothing within
 * `ms` ms") if it has not settled by then.
 *
 * @example
 * ```ts
 * import { deadline } from "./within.ts";
 * const conn = await deadline(Deno.connect({ port: 9000 }), 5000, "Cannot connect");
 * conn.close();
 * ```
 */
export async function deadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) =>
        timer = setTimeout(
          () => reject(new Deno.errors.TimedOut(`${what}: nothing within ${ms} ms`)),
          ms,
        )
      ),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Resolves after `ms` milliseconds.
 *
 * @example
 * ```ts
 * import { delay } from "./within.ts";
 * await delay(10);
 * ```
 */
export function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
