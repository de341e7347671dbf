/**
 * Peers that never read: each says HELLO, then writes MSG frames the server must refuse (a
 * name with a space: NACK 2) as fast as its socket takes them, and never reads a reply, so the
 * server's NACKs pile up until it stops reading from it. They run beside a phase's honest
 * connections, whose latency is what the scenario measures.
 *
 * @module
 */

import { closeQuietly } from "../../src/io/close_quietly.ts";
import { concat } from "../../src/io/concat.ts";
import { writeAll } from "../../src/io/write_all.ts";
import { encodeHello, encodeMsg } from "../../src/protocol/frames.ts";

/** Stallers running; `stop()` closes them. */
export interface Stallers {
  /** Connections that said HELLO. */
  readonly opened: number;
  /** Those whose writes have stopped being taken (the server stopped reading from them). */
  readonly stalled: number;
  /** Bytes of refusable frames the server took from them. */
  readonly bytes: number;
  stop(): void;
}

/** A write not taken within this long counts as stalled. */
const STALLED_AFTER_MS = 1000;

/**
 * Opens `n` stallers to `host:port` with client ids from `firstClient`.
 *
 * @example
 * ```ts
 * import { startStallers } from "./stallers.ts";
 * const stallers = await startStallers({ host: "127.0.0.1", port: 9000, token: "" }, 10, 1);
 * stallers.stop();
 * ```
 */
export async function startStallers(
  target: { host: string; port: number; token: string },
  n: number,
  firstClient: number,
): Promise<Stallers> {
  const frames: Uint8Array[] = [];
  for (let id = 1, bytes = 0; bytes < 64 * 1024; id++) {
    frames.push(encodeMsg(id, "bad name", "x"));
    bytes += frames.at(-1)!.length;
  }
  const chunk = concat(frames);
  const conns: Deno.Conn[] = [];
  const state = { opened: 0, stalled: 0, bytes: 0, stopped: false };
  for (let i = 0; i < n; i++) {
    const conn = await Deno.connect({ hostname: target.host, port: target.port });
    conns.push(conn);
    await writeAll(
      conn,
      // Version 1: any server takes it, old or new.
      encodeHello({ clientId: firstClient + i, session: 0n, token: target.token, version: 1 }),
    );
    state.opened++;
    (async () => {
      let stalled = false;
      try {
        while (!state.stopped) {
          let timer: ReturnType<typeof setTimeout> | undefined;
          const slow = new Promise<void>((r) =>
            timer = setTimeout(() => {
              if (!stalled) {
                stalled = true;
                state.stalled++;
              }
              r();
            }, STALLED_AFTER_MS)
          );
          const write = writeAll(conn, chunk);
          await Promise.race([write, slow]);
          await write; // a stalled write waits here until the socket takes it, or closes
          clearTimeout(timer);
          state.bytes += chunk.length;
        }
      } catch {
        // closed: by stop(), or by the server
      }
    })();
  }
  return {
    get opened() {
      return state.opened;
    },
    get stalled() {
      return state.stalled;
    },
    get bytes() {
      return state.bytes;
    },
    stop() {
      state.stopped = true;
      for (const c of conns) closeQuietly(c);
    },
  };
}
