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
 * - The session journal survives the kill: after a restart WELCOME.last_msg_id is exactly the
 *   last id of the session in the file, so the client resends only what is not there. So (b)
 *   every message is in the file exactly once, whatever was in flight at the kills.
 * - (c) Every line parses; the part of the file written before each kill is left as it was, up
 *   to where the restart cut it back: a torn last line, and the whole lines of a batch the kill
 *   tore, are moved to `<FILE_NAME>.torn` (none of them was acked).
 * - (d) Each client's ids rise strictly through the whole file.
 * - (e) `<FILE_NAME>.torn` holds exactly what the restarts moved aside, in order, and all of it
 *   belongs to messages in flight at that kill: whole lines of them, then maybe a proper prefix
 *   of one (never an acked one: an ACK comes only after its batch's write returned).
 *
 * @module
 */

import { equal, ok } from "node:assert/strict";
import { type Delivery, ReliableClient } from "../src/client/reliable.ts";
import { parseFile } from "../src/server/line.ts";
import { formatReport, verifyFile } from "../src/verify.ts";
import { delay } from "../src/io/within.ts";
import { freePort } from "./support/net.ts";
import { mulberry32 } from "./support/prng.ts";
import { ServerStartError, type SpawnedServer, spawnServer } from "./support/spawn.ts";

const SEED = Number(Deno.env.get("CRASH_SEED") ?? "20261129");
const CLIENTS = 16;
const PER_CLIENT = 2000;
const KILLS = 20;
const NAME = "crash";

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
  /** Where the next life starts writing: what the restart did not move aside. */
  kept: number;
  /** Expected lines of the messages in flight at this kill, by key `client/msg`. */
  inFlightLines: string[];
}

/** Bytes the restart logged it moved aside (a torn last line, a torn batch). */
function movedAside(log: string): number {
  let n = 0;
  for (const m of log.matchAll(/WARN moved a torn (?:last line|batch) aside\b.*? bytes=(\d+)/g)) {
    n += Number(m[1]);
  }
  return n;
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
        inFlightLines.push(
          `${c.client.clientId} ${id} ${NAME} ${
            payloadOf(c.client.clientId, c.client.session, id)
          }`,
        );
      }
    }
    const exited = server.exitStatus();
    if (exited !== null) {
      throw new Error(
        `The server exited by itself (code ${exited.code}) before kill ${kills.length}:\n` +
          server.stderr(),
      );
    }
    server.child.kill("SIGKILL");
    const status = await server.child.status;
    equal(status.signal, "SIGKILL");
    await server.drained;
    logs.push(server.stderr());
    life++;
    const content = await Deno.readFile(file);
    server = await startServer(dir, port, startFailures);
    // The restart has recovered by the time it listens: what it moved aside is in its log.
    kills.push({ content, kept: content.length - movedAside(server.stderr()), inFlightLines });
  };

  /** Kills once the deliveries reach the next threshold; one kill at a time. */
  let broken: Error | null = null;
  const maybeKill = (): void => {
    if (killing !== null || kills.length >= KILLS || broken !== null) return;
    if (deliveredTotal < thresholds[kills.length]!) return;
    // Not before every session has something stored: a kill before a session's first batch
    // reached the journal leaves the restarted server with no record of it, and for messages
    // already sent WELCOME's "unknown" cannot be told from "forgotten", so the client reports
    // them as uncertain (SessionLostError, docs/protocol.md), which is right but not this test.
    if (clients.some((c) => c.delivered.size === 0)) return;
    killing = killAndRestart().then(() => {
      killing = null;
      maybeKill(); // a threshold crossed meanwhile is due at once
    }, (e) => {
      // No retry: a failed kill or restart ends the run (the clients are aborted below).
      broken = e as Error;
      killing = null;
      for (const c of clients) c.client.abort();
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
    await Promise.allSettled(clients.flatMap((c) => c.sends));
    if (broken !== null) throw broken;
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
    await verify(mode, file, clients, kills);
    // The auditing tool agrees: whole lines, valid escapes, ids rising within each producer's
    // run (a resend after a crash repeats its line exactly and is counted, not a defect).
    const audit = await verifyFile(file);
    equal(audit.defectCount, 0, formatReport(file, audit));
    ok(audit.clients.size === clients.length);
    for (const [id, summary] of audit.clients) {
      equal(summary.resent, 0, `client ${id}: a line twice`);
    }
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    const resent = clients.reduce((n, c) => n + c.client.stats.resent, 0);
    const tornBytes = kills.reduce((n, k) => n + k.content.length - k.kept, 0);
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

/**
 * Asserts `a` and `b` are the same bytes, naming the first difference. (`deepStrictEqual` on
 * megabytes of differing bytes builds a diff that can take all the memory there is.)
 */
function sameBytes(a: Uint8Array, b: Uint8Array, what: string): void {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  if (i === n && a.length === b.length) return;
  const around = (x: Uint8Array) =>
    JSON.stringify(new TextDecoder().decode(x.subarray(Math.max(0, i - 40), i + 40)));
  throw new Error(
    `${what}: ${a.length} bytes against ${b.length}, first difference at ${i}: ` +
      `${around(a)} against ${around(b)}`,
  );
}

async function verify(
  mode: string,
  file: string,
  clients: ClientLog[],
  kills: Kill[],
): Promise<void> {
  const content = await Deno.readFile(file);
  // (c) what each life left is untouched, up to where the next life started.
  const bounds = [0];
  for (const kill of kills) {
    ok(kill.kept <= kill.content.length && kill.kept >= 0);
    sameBytes(
      content.subarray(0, kill.kept),
      kill.content.subarray(0, kill.kept),
      "the file before a kill is left as it was, up to what the restart moved aside",
    );
    bounds.push(kill.kept);
  }
  bounds.push(content.length);
  for (let i = 1; i < bounds.length; i++) ok(bounds[i]! >= bounds[i - 1]!, "lives in order");

  const byId = new Map(clients.map((c) => [c.client.clientId, c]));
  const occurrences = new Map<string, number[]>(); // key -> lives it was written in
  const last = new Map<number, number>();
  for (let lifeIndex = 0; lifeIndex + 1 < bounds.length; lifeIndex++) {
    // (c) every line parses (parseFile throws on a torn or malformed line).
    const records = parseFile(content.subarray(bounds[lifeIndex]!, bounds[lifeIndex + 1]!));
    for (const r of records) {
      const c = byId.get(r.clientId);
      ok(c !== undefined, `unknown client_id ${r.clientId}`);
      ok(r.msgId >= 1 && r.msgId <= PER_CLIENT, `msg_id ${r.msgId} was never sent`);
      equal(r.name, NAME);
      equal(new TextDecoder().decode(r.payload), payloadOf(r.clientId, c.client.session, r.msgId));
      const key = `${r.clientId}/${r.msgId}`;
      // (d) strictly increasing through the whole file.
      ok(
        (last.get(r.clientId) ?? 0) < r.msgId,
        `life ${lifeIndex}: client ${r.clientId} wrote ${r.msgId} after ${last.get(r.clientId)}`,
      );
      last.set(r.clientId, r.msgId);
      const seen = occurrences.get(key);
      if (seen === undefined) occurrences.set(key, [lifeIndex]);
      else seen.push(lifeIndex);
    }
  }

  let acked = 0;
  let lost = 0;
  let duplicated = 0;
  for (const c of clients) {
    equal(c.pending.size, 0, "every message was delivered");
    equal(c.delivered.size, PER_CLIENT);
    equal(c.client.stats.duplicates, 0, "no resend of something already stored");
    equal(c.client.stats.sessionsLost, 0, "the server knew every session after every restart");
    for (let id = 1; id <= PER_CLIENT; id++) {
      const key = `${c.client.clientId}/${id}`;
      const lives = occurrences.get(key) ?? [];
      if (lives.length === 0) lost++;
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
  // (b) exactly once.
  equal(lost, 0, "messages lost");
  equal(duplicated, 0, "messages written twice");
  ok(acked > 0);

  // (e) what the restarts moved aside, and nothing else, went to .torn; all of it in flight.
  const tails = kills.map((k) => k.content.subarray(k.kept));
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
  sameBytes(torn, expectedTorn, ".torn holds exactly what the restarts moved aside");
  const dec = new TextDecoder();
  kills.forEach((kill, k) => {
    const text = dec.decode(tails[k]!);
    if (text === "") return;
    const lines = text.split("\n");
    const partial = lines.pop()!; // "" when the tail ends with whole lines
    for (const line of lines) {
      ok(kill.inFlightLines.includes(line), `kill ${k}: moved aside a line not in flight: ${line}`);
    }
    ok(
      partial === "" ||
        kill.inFlightLines.some((line) => line.startsWith(partial) && line.length > partial.length),
      `kill ${k}: torn tail ${JSON.stringify(partial)} is not part of a message in flight`,
    );
  });
  console.log(
    `ACK_MODE=${mode}: ${lost} lost, ${duplicated} written twice, ${
      tails.filter((t) => t.length > 0).length
    } restarts moved bytes aside`,
  );
}

for (const mode of ["written", "durable"] as const) {
  Deno.test({
    name: `kill -9 loop, ACK_MODE=${mode}: every message in the file exactly once`,
    fn: () => killLoop(mode),
  });
}
