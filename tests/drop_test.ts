/**
 * "Connection drops": 8 {@linkcode ReliableClient}s send through an in-test loopback TCP proxy
 * that cuts their connections at random points (seeded): in the client-to-server or the
 * server-to-client stream, mid-frame or between frames, closing the client side first, the
 * server side first, or both at once. The server stays up, so sessions make the guarantee
 * exactly-once: every message is in the file once, none is missing, and each client's ids
 * strictly increase in the file. Set DROP_SEED to replay a run.
 *
 * @module
 */

import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { type Delivery, ReliableClient } from "../src/client/reliable.ts";
import type { Config } from "../src/config.ts";
import { closeQuietly } from "../src/io/close_quietly.ts";
import { writeAll } from "../src/io/write_all.ts";
import { mulberry32 } from "./support/prng.ts";
import { readRecords, withServer } from "./support/server.ts";
import { type Link, TcpProxy } from "./support/proxy.ts";

const SEED = Number(Deno.env.get("DROP_SEED") ?? "7041");
const CLIENTS = 8;
const PER_CLIENT = 3000;
const DEADLINE_MS = 25000;

function payloadOf(clientId: number, msgId: number): string {
  return `d${clientId}-m${msgId}-${"y".repeat((msgId * 31) % 97)}`;
}

/** Finds frame boundaries (stream offsets where a frame starts) in one direction of a stream. */
class FrameTracker {
  /** Known frame starts not yet passed, ascending; 0 is the first. */
  readonly boundaries: number[] = [0];
  #frameStart = 0;
  #got = 0;
  #length = 0;

  /** Reads the length prefixes in `chunk`, which starts at stream offset `at`. */
  feed(chunk: Uint8Array, at: number): void {
    for (;;) {
      const p = this.#frameStart + this.#got - at;
      if (p >= chunk.length) return;
      this.#length = this.#length * 256 + chunk[p]!;
      if (++this.#got === 4) {
        this.#frameStart += 4 + this.#length;
        this.boundaries.push(this.#frameStart);
        this.#got = 0;
        this.#length = 0;
      }
    }
  }
}

type Direction = "c2s" | "s2c";
type CloseOrder = "both" | "client-first" | "server-first";

/** Where and how one proxied connection is cut (if its stream gets that far). */
interface CutPlan {
  direction: Direction;
  /** Stream offset of the cut in that direction. */
  at: number;
  /** Cut at the first frame boundary at or after `at` instead of at `at` itself. */
  betweenFrames: boolean;
  order: CloseOrder;
  /** Pause between the two closes, when not both at once. */
  gapMs: number;
}

/** What actually happened, for the report and the coverage assertions. */
interface CutDone {
  plan: CutPlan;
  /** Whether the cut fell on a frame boundary. */
  onBoundary: boolean;
}

/** A loopback proxy that cuts each connection according to a seeded plan. */
class CuttingProxy {
  readonly cuts: CutDone[] = [];
  readonly #proxy: TcpProxy;

  constructor(target: number, random: () => number) {
    this.#proxy = new TcpProxy(target, (link) => this.#serve(link, this.#plan(random)));
  }

  get port(): number {
    return this.#proxy.port;
  }

  /** How many connections went through. */
  get links(): number {
    return this.#proxy.links.length;
  }

  #plan(random: () => number): CutPlan {
    const direction: Direction = random() < 0.55 ? "c2s" : "s2c";
    // Skewed towards early cuts: some land in HELLO or WELCOME, most after ~100 MSGs or ~20 ACKs.
    const span = direction === "c2s" ? 20000 : 250;
    const o = random();
    return {
      direction,
      at: Math.floor(random() ** 2 * span),
      betweenFrames: random() < 0.5,
      order: o < 0.34 ? "both" : o < 0.67 ? "client-first" : "server-first",
      gapMs: Math.floor(random() * 15),
    };
  }

  #serve(link: Link, plan: CutPlan): Promise<void>[] {
    const { client, upstream } = link;
    let cut = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    link.onCut(() => clearTimeout(timer));
    const doCut = (onBoundary: boolean) => {
      if (cut) return;
      cut = true;
      this.cuts.push({ plan, onBoundary });
      if (plan.order === "both") return link.cut();
      closeQuietly(plan.order === "client-first" ? client : upstream);
      if (!link.isCut) timer = setTimeout(() => link.cut(), plan.gapMs);
    };
    const pump = async (from: Deno.Conn, to: Deno.Conn, direction: Direction) => {
      const tracker = new FrameTracker();
      const buf = new Uint8Array(64 * 1024);
      let offset = 0;
      try {
        for (;;) {
          const n = await from.read(buf);
          if (n === null) break;
          if (cut) continue; // after the cut nothing more goes through
          const chunk = buf.slice(0, n);
          const at = offset;
          offset += n;
          if (plan.direction !== direction) {
            await writeAll(to, chunk);
            continue;
          }
          tracker.feed(chunk, at);
          let cutAt = plan.at;
          if (plan.betweenFrames) {
            const next = tracker.boundaries.find((b) => b >= plan.at);
            if (next === undefined) cutAt = Infinity;
            else cutAt = next;
          }
          if (cutAt > offset || (cutAt === offset && !plan.betweenFrames)) {
            await writeAll(to, chunk);
            continue;
          }
          if (cutAt > at) await writeAll(to, chunk.subarray(0, cutAt - at));
          doCut(tracker.boundaries.includes(cutAt));
        }
      } catch {
        // the connection was cut or reset
      } finally {
        // The other end closed or failed: pass that on like a real network would.
        if (!cut) link.cut();
      }
    };
    return [pump(client, upstream, "c2s"), pump(upstream, client, "s2c")];
  }

  /** Closes the listener and every connection, and waits for every task. */
  close(): Promise<void> {
    return this.#proxy.close();
  }
}

async function dropRun(config: Partial<Config>, seed: number): Promise<void> {
  const random = mulberry32(seed); // the cut plans
  const jitter = mulberry32(seed + 1000003); // the clients' backoff
  await withServer({ LOG_LEVEL: "info", ...config }, async ({ port, file, server }) => {
    const proxy = new CuttingProxy(port, random);
    const clients: ReliableClient[] = [];
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const sends: Promise<Delivery>[][] = [];
      for (let i = 0; i < CLIENTS; i++) {
        const client = new ReliableClient({
          port: proxy.port,
          clientId: 200 + i,
          initialDelayMs: 2,
          maxDelayMs: 30,
          giveUpAfterMs: 10000,
          maxInFlight: [32, 256, 10000][i % 3]!,
          random: jitter,
        });
        clients.push(client);
        const mine: Promise<Delivery>[] = [];
        for (let m = 1; m <= PER_CLIENT; m++) mine.push(client.send("drop", payloadOf(200 + i, m)));
        sends.push(mine);
      }
      const work = Promise.all(sends.map((s) => Promise.all(s)));
      const outcome = await Promise.race([
        work,
        new Promise<"late">((r) => timer = setTimeout(() => r("late"), DEADLINE_MS)),
      ]);
      ok(outcome !== "late", `not done within ${DEADLINE_MS} ms (seed ${seed})`);
      outcome.forEach((deliveries, i) =>
        deepStrictEqual(
          deliveries.map((d) => d.msgId),
          Array.from({ length: PER_CLIENT }, (_, m) => m + 1),
          `client ${200 + i}`,
        )
      );
      await Promise.all(clients.map((c) => c.close()));
      // Every ACK (written/durable) means the line is in the file already.
      if (config.ACK_MODE !== "received") {
        const inFile = new Set((await readRecords(file)).map((r) => `${r.clientId}/${r.msgId}`));
        outcome.forEach((deliveries, i) => {
          for (const d of deliveries) {
            if (d.how === "acked") ok(inFile.has(`${200 + i}/${d.msgId}`), `acked ${d.msgId}`);
          }
        });
      }
      // Messages delivered by WELCOME.last_msg_id may still be queued (the server reports them
      // before they are written): let the server drain before reading the file.
      await server.shutdown();

      const records = await readRecords(file);
      const last = new Map<number, number>();
      for (const r of records) {
        ok(r.clientId >= 200 && r.clientId < 200 + CLIENTS, `client_id ${r.clientId}`);
        const expected = (last.get(r.clientId) ?? 0) + 1;
        // Strictly increasing, none missing and none twice: each id is the previous one plus 1.
        equal(r.msgId, expected, `client ${r.clientId}: ${r.msgId} after ${expected - 1}`);
        last.set(r.clientId, r.msgId);
        equal(r.name, "drop");
        equal(new TextDecoder().decode(r.payload), payloadOf(r.clientId, r.msgId));
      }
      for (let i = 0; i < CLIENTS; i++) equal(last.get(200 + i), PER_CLIENT, `client ${200 + i}`);
      equal(records.length, CLIENTS * PER_CLIENT);

      // The drops really happened, of every kind.
      const kinds = new Map<string, number>();
      for (const cut of proxy.cuts) {
        const kind = `${cut.plan.direction} ${cut.onBoundary ? "between frames" : "mid-frame"}`;
        kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
      }
      const stats = clients.map((c) => c.stats);
      const sum = (k: keyof ReliableClient["stats"]) => stats.reduce((n, s) => n + s[k], 0);
      console.log(
        `seed ${seed}: ${proxy.links} connections, ${proxy.cuts.length} cuts ` +
          `(${[...kinds].map(([k, n]) => `${k}: ${n}`).join(", ")}); ` +
          `${sum("resent")} resent, ${sum("resumed")} resumed, ${sum("duplicates")} NACK 3`,
      );
      ok(proxy.cuts.length >= 50, `${proxy.cuts.length} cuts`);
      for (const kind of ["c2s", "s2c"].flatMap((d) => [`${d} mid-frame`, `${d} between frames`])) {
        ok((kinds.get(kind) ?? 0) > 0, `no ${kind} cut (seed ${seed})`);
      }
      equal(sum("refused"), 0);
    } finally {
      clearTimeout(timer);
      await Promise.all(clients.map((c) => c.abort()));
      await proxy.close();
    }
  });
}

const configs: [string, Partial<Config>][] = [
  ["default config", {}],
  ["a 64-record queue and 16-record batches (backpressure)", {
    QUEUE_CAPACITY: 64,
    MSG_PER_WRITE: 16,
  }],
  ["ACK_MODE=durable", { ACK_MODE: "durable" }],
];
configs.forEach(([label, config], i) => {
  Deno.test(`connection drops at random points, ${label}: every message in the file once`, () =>
    dropRun(config, SEED + i));
});
