/**
 * "Kill -9 loop": the server runs as its own process and is killed with SIGKILL at random
 * moments while 16 pipelining {@linkcode ReliableClient}s send 2,000 messages each; it is restarted
 * on the same port each time and the clients reconnect and go on. A kill fires when the clients'
 * deliveries reach the next of 20 seeded random thresholds, after a seeded random 0-7 ms more.
 * Then the file is checked against what every client saw. Set CRASH_SEED to replay a schedule.
 *
 * What may be asserted, and why (see README "Acknowledgements and guarantees"):
 *
 * - An ACK in `written` or `durable` mode means the line is in the file and survives kill -9. So
 *   (a) every message a client saw ACKed is in the file, in the part written by the server life
 *   it was acked in or an earlier one (the ACK may be read just after the kill).
 * - The session table lives in memory: after a restart WELCOME.last_msg_id is 0, and the client
 *   resends everything not yet acked. A message that was written but whose ACK had not reached
 *   the client at the kill is therefore written again: at-least-once. Within one server life the
 *   session makes it exactly-once, and acked messages are never resent. So (b) a message appears
 *   at most 1 + K times, where K is the number of kills at which it was in flight (admitted by its
 *   client and not yet delivered); messages never in flight at a kill appear at most once.
 * - (c) Every line parses; the part of the file written before each kill is left exactly as it
 *   was (only a torn last line is moved aside at restart).
 * - (d) Within the part written by one server life, each client's ids strictly increase (one
 *   connection per client per life, written in arrival order). Over the whole file, the ids of
 *   each client's first occurrences strictly increase: a resend repeats only ids above the last
 *   acked one, in order, and ids are never skipped. Ids may go down across a restart, so the
 *   file as a whole is NOT non-decreasing per client.
 * - (e) `<FILE_NAME>.torn` holds exactly the torn tails seen after the kills, in order, and each
 *   is a proper prefix of the line of a message that was in flight at that kill (never an acked
 *   one: an ACK comes only after its batch's write returned).
 *
 * @module
 */

import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { type Delivery, ReliableClient } from "../src/client/reliable.ts";
import { parseFile } from "../src/server/line.ts";
import { formatReport, verifyFile } from "../src/verify.ts";
import {
  delay,
  freePort,
  mulberry32,
  ServerStartError,
  type SpawnedServer,
  spawnServer,
} from "./helpers.ts";

const SEED = Number(Deno.env.get("CRASH_SEED") ?? "20261129");
const CLIENTS = 16;
const PER_CLIENT = 2000;
const KILLS = 20;
const NAME = "crash";
const LF = 0x0a;

function payloadOf(clientId: number, session: bigint, msgId: number): string {
  // Mostly short, every 16th large (multi-page batch writes, so a kill can tear one).
  const fill = msgId % 16 === 0 ? 4000 + (msgId * 7919) % 12000 : msgId % 37;
  return `c${clientId}-s${session}-m${msgId}-${"x".repeat(fill)}`;
}

/** Starts the server on `port`, retrying a few times if the port is briefly unavailable. */
async function startServer(dir: string, port: number, logs: string[]): Promise<SpawnedServer> {
  for (let attempt = 1; attempt <= 20; attempt++) {
    try {
      return await spawnServer(dir, { port });
    } catch (e) {
      if (!(e instanceof ServerStartError)) throw e;
      logs.push(e.stderr);
    }
    await delay(50);
  }
  throw new Error(`The server would not start on port ${port}:\n${logs.join("\n---\n")}`);
}

/** What one client did. */
interface ClientLog {
  client: ReliableClient;
  /** Admitted-or-waiting ids not yet settled, in order. */
  pending: Set<number>;
  /** msg_id -> how it was delivered and in which server life the client learnt it. */
  delivered: Map<number, { how: Delivery["how"]; life: number }>;
  sends: Promise<void>[];
}

/** One kill: the file as it was just after the process died. */
interface Kill {
  content: Uint8Array;
  /** Bytes up to the end of the last whole line: where the next life starts writing. */
  whole: number;
  /** Expected lines of the messages in flight at this kill, by key `client/msg`. */
  inFlightLines: string[];
}

async function killLoop(mode: "written" | "durable"): Promise<void> {
  // The kill schedule has its own generator, so a seed replays it whatever the timing.
  const random = mulberry32(SEED ^ (mode === "durable" ? 0x9e3779b9 : 0));
  const jitter = mulberry32(SEED + 1);
  const dir = await Deno.makeTempDir({ prefix: "msgserver_crash_" });
  const file = `${dir}/messages.log`;
  const port = freePort();
  await Deno.writeTextFile(
    `${dir}/app.conf`,
    `PORT=${port}\nFILE_NAME=${file}\nACK_MODE=${mode}\nLOG_LEVEL=info\n`,
  );
  const startFailures: string[] = [];
  let server = await startServer(dir, port, startFailures);
  const logs: string[] = [];
  const clients: ClientLog[] = [];
  const kills: Kill[] = [];
  /** Times each `client/msg` was in flight at a kill. */
  const inFlightAtKills = new Map<string, number>();
  let life = 0;
  let deliveredTotal = 0;
  let killing: Promise<void> | null = null;
  const total = CLIENTS * PER_CLIENT;
  const thresholds = Array.from(
    { length: KILLS },
    () => Math.floor((0.03 + 0.89 * random()) * total),
  )
    .sort((a, b) => a - b);
  const windows = [16, 64, 256, 2000];

  const killAndRestart = async (): Promise<void> => {
    await delay(Math.floor(random() * 8));
    // The snapshot and the kill happen in one synchronous step: no ACK is read in between.
    const inFlightLines: string[] = [];
    for (const c of clients) {
      let n = c.client.inFlight; // the lowest `inFlight` pending ids are the admitted ones
      for (const id of c.pending) {
        if (n-- <= 0) break;
        const key = `${c.client.clientId}/${id}`;
        inFlightAtKills.set(key, (inFlightAtKills.get(key) ?? 0) + 1);
        inFlightLines.push(
          `${c.client.clientId} ${id} ${NAME} ${
            payloadOf(c.client.clientId, c.client.session, id)
          }`,
        );
      }
    }
    server.child.kill("SIGKILL");
    const status = await server.child.status;
    equal(status.signal, "SIGKILL");
    await server.drained;
    logs.push(server.stderr());
    life++;
    const content = await Deno.readFile(file);
    kills.push({ content, whole: content.lastIndexOf(LF) + 1, inFlightLines });
    server = await startServer(dir, port, startFailures);
  };

  /** Kills once the deliveries reach the next threshold; one kill at a time. */
  const maybeKill = (): void => {
    if (killing !== null || kills.length >= KILLS) return;
    if (deliveredTotal < thresholds[kills.length]!) return;
    killing = killAndRestart().finally(() => {
      killing = null;
      maybeKill(); // a threshold crossed meanwhile is due at once
    });
  };

  const started = performance.now();
  try {
    for (let i = 0; i < CLIENTS; i++) {
      const client = new ReliableClient({
        port,
        clientId: 100 + i,
        initialDelayMs: 10,
        maxDelayMs: 150,
        giveUpAfterMs: 20000,
        maxInFlight: windows[i % windows.length]!,
        random: jitter,
      });
      const log: ClientLog = { client, pending: new Set(), delivered: new Map(), sends: [] };
      clients.push(log);
    }
    for (let m = 1; m <= PER_CLIENT; m++) {
      for (const c of clients) {
        const id = c.client.nextMsgId;
        c.pending.add(id);
        c.sends.push(
          c.client.send(NAME, payloadOf(c.client.clientId, c.client.session, id)).then((d) => {
            equal(d.msgId, id);
            c.pending.delete(id);
            c.delivered.set(id, { how: d.how, life });
            deliveredTotal++;
            maybeKill();
          }),
        );
      }
    }
    await Promise.all(clients.flatMap((c) => c.sends));
    await Promise.all(clients.map((c) => c.client.close()));
    while (killing !== null) await killing;
    equal(kills.length, KILLS, `kills done (seed ${SEED})`);
    server.child.kill("SIGTERM");
    equal((await server.child.status).code, 0, "the last server stops cleanly");
    await server.drained;
    logs.push(server.stderr());
  } catch (e) {
    await server.stop("SIGKILL");
    await Promise.all(clients.map((c) => c.client.abort()));
    await Deno.remove(dir, { recursive: true });
    throw e;
  }

  try {
    await verify(mode, file, clients, kills, inFlightAtKills);
    // The auditing tool agrees: whole lines, valid escapes, ids rising within each producer's
    // run (a resend after a crash repeats its line exactly and is counted, not a defect).
    const audit = await verifyFile(file);
    equal(audit.defectCount, 0, formatReport(file, audit));
    ok(audit.clients.size === clients.length);
    kills.forEach((kill, k) => {
      const torn = kill.content.length - kill.whole;
      if (torn === 0) return;
      const next = logs[k + 1] ?? "";
      ok(
        next.split("\n").some((l) => /torn/.test(l) && l.includes(` bytes=${torn}`)),
        `the server started after kill ${k} logs the ${torn} torn bytes it moved aside`,
      );
    });
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    const resent = clients.reduce((n, c) => n + c.client.stats.resent, 0);
    const tornBytes = kills.reduce((n, k) => n + k.content.length - k.whole, 0);
    console.log(
      `ACK_MODE=${mode} seed=${SEED}: ${KILLS} kills, ${total} messages, ${resent} resent, ` +
        `${tornBytes} torn bytes, ${startFailures.length} restart retries, ${seconds} s`,
    );
  } catch (e) {
    throw new Error(
      `ACK_MODE=${mode} seed=${SEED}: ${(e as Error).message}\nserver logs:\n` +
        logs.join("").split("\n").filter((l) => !/ INFO (starting|listening) /.test(l)).slice(-30)
          .join("\n"),
      { cause: e },
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function verify(
  mode: string,
  file: string,
  clients: ClientLog[],
  kills: Kill[],
  inFlightAtKills: Map<string, number>,
): Promise<void> {
  const content = await Deno.readFile(file);
  // (c) what each life left is untouched, and the next life starts at its last whole line.
  const bounds = [0];
  for (const kill of kills) {
    deepStrictEqual(
      content.subarray(0, kill.whole),
      kill.content.subarray(0, kill.whole),
      "the file before a kill's last whole line is left as it was",
    );
    bounds.push(kill.whole);
  }
  bounds.push(content.length);
  for (let i = 1; i < bounds.length; i++) ok(bounds[i]! >= bounds[i - 1]!, "lives in order");

  const byId = new Map(clients.map((c) => [c.client.clientId, c]));
  const occurrences = new Map<string, number[]>(); // key -> lives it was written in
  const lastInLife = new Map<number, number>();
  const lastFirst = new Map<number, number>();
  for (let lifeIndex = 0; lifeIndex + 1 < bounds.length; lifeIndex++) {
    // (c) every line parses (parseFile throws on a torn or malformed line).
    const records = parseFile(content.subarray(bounds[lifeIndex]!, bounds[lifeIndex + 1]!));
    lastInLife.clear();
    for (const r of records) {
      const c = byId.get(r.clientId);
      ok(c !== undefined, `unknown client_id ${r.clientId}`);
      ok(r.msgId >= 1 && r.msgId <= PER_CLIENT, `msg_id ${r.msgId} was never sent`);
      equal(r.name, NAME);
      equal(new TextDecoder().decode(r.payload), payloadOf(r.clientId, c.client.session, r.msgId));
      const key = `${r.clientId}/${r.msgId}`;
      // (d) strictly increasing within one life.
      ok(
        (lastInLife.get(r.clientId) ?? 0) < r.msgId,
        `life ${lifeIndex}: client ${r.clientId} wrote ${r.msgId} after ${
          lastInLife.get(r.clientId)
        }`,
      );
      lastInLife.set(r.clientId, r.msgId);
      const seen = occurrences.get(key);
      if (seen === undefined) {
        // (d) first occurrences strictly increase over the whole file.
        ok(
          (lastFirst.get(r.clientId) ?? 0) < r.msgId,
          `client ${r.clientId}: first ${r.msgId} after first ${lastFirst.get(r.clientId)}`,
        );
        lastFirst.set(r.clientId, r.msgId);
        occurrences.set(key, [lifeIndex]);
      } else {
        seen.push(lifeIndex);
      }
    }
  }

  let acked = 0;
  let duplicated = 0;
  for (const c of clients) {
    equal(c.pending.size, 0, "every message was delivered");
    equal(c.delivered.size, PER_CLIENT);
    equal(c.client.stats.resumed, 0, "no resume within a life (each life has one connection)");
    equal(c.client.stats.duplicates, 0);
    for (let id = 1; id <= PER_CLIENT; id++) {
      const key = `${c.client.clientId}/${id}`;
      const lives = occurrences.get(key) ?? [];
      const allowed = 1 + (inFlightAtKills.get(key) ?? 0);
      // (b) at most once per server life it was in flight in.
      ok(
        lives.length <= allowed,
        `${key} is in the file ${lives.length} times, allowed ${allowed}`,
      );
      if (lives.length > 1) duplicated++;
      const d = c.delivered.get(id)!;
      if (d.how === "acked") {
        acked++;
        // (a) acked means written, by the life that acked it or an earlier one.
        ok(lives.length >= 1, `${key} was acked (life ${d.life}) but is not in the file`);
        ok(lives[0]! <= d.life, `${key} acked in life ${d.life}, first written in ${lives[0]}`);
      }
    }
  }
  equal(acked, CLIENTS * PER_CLIENT, "after the last restart everything is acked");

  // (e) the torn tails, and nothing else, went to .torn; each is part of an in-flight message.
  const tails = kills.map((k) => k.content.subarray(k.whole));
  let torn = new Uint8Array(0);
  try {
    torn = await Deno.readFile(`${file}.torn`);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const expectedTorn = new Uint8Array(tails.reduce((n, t) => n + t.length, 0));
  let at = 0;
  for (const t of tails) {
    expectedTorn.set(t, at);
    at += t.length;
  }
  deepStrictEqual(torn, expectedTorn, ".torn holds exactly the torn tails");
  const dec = new TextDecoder();
  kills.forEach((kill, k) => {
    const tail = tails[k]!;
    if (tail.length === 0) return;
    const text = dec.decode(tail);
    ok(
      kill.inFlightLines.some((line) => line.startsWith(text) && line.length > text.length),
      `kill ${k}: torn tail ${JSON.stringify(text)} is not part of a message in flight`,
    );
  });
  console.log(`ACK_MODE=${mode}: ${duplicated} messages written twice or more across kills`);
}

for (const mode of ["written", "durable"] as const) {
  Deno.test({
    name: `kill -9 loop, ACK_MODE=${mode}: acked messages survive, resends only duplicate`,
    fn: () => killLoop(mode),
  });
}
