/**
 * Loopback ports for tests.
 *
 * @module
 */

/**
 * A loopback port that was free a moment ago: binds 127.0.0.1 port 0, notes the port, closes.
 * Nothing listens on it afterwards (unless something else takes it meanwhile).
 */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}
