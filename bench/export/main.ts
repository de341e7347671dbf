/**
 * The export benchmark behind `deno task bench:export`: starts its own nats-server (JetStream, a
 * temporary store, a free loopback port), fills the stream MSGS with packed messages laid out as
 * the JetStream store lays them (`--per-message` records each), runs `msgserver export` on it as
 * a child process, `--runs` times into fresh files, and reports records/s: the exporter's own
 * figure (first fetch to last write, from its `export done` line) and the wall time of the whole
 * process (start-up and connecting included). Each output is checked: exactly the stream's bytes,
 * and clean by the verifier. The server is stopped by its PID at the end, whatever happened.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { connect, headers } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { Header, sessionMsgId, sessionSubject } from "../../src/store/jetstream_layout.ts";
import { verifyFile } from "../../src/verify.ts";
import { startNats } from "../../tests/support/nats_local.ts";
import { exportCommand } from "../../tests/support/spawn.ts";

const USAGE =
  `Usage: deno task bench:export [--records N] [--per-message R] [--payload-bytes B] [--runs K]

  --records N         records in the stream (default 4000000)
  --per-message R     records per message, as one session's batch (default 64)
  --payload-bytes B   payload bytes per record (default 32)
  --runs K            exports to run, each into a fresh file (default 3)`;

const encoder = new TextEncoder();

function count(value: string | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer`);
  return n;
}

/** Fills the stream with `records` records, `perMessage` per message; returns its bytes. */
async function fill(
  url: string,
  records: number,
  perMessage: number,
  payloadBytes: number,
  sink: (data: Uint8Array) => void,
): Promise<{ messages: number; bytes: number }> {
  const nc = await connect({ servers: url });
  try {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "MSGS", subjects: ["msgs.>"] });
    const pad = "x".repeat(payloadBytes);
    let id = 0;
    let messages = 0;
    // Each session's message names the sequence of the one before, as msgserver's do (the
    // stream checks it, and the exporter reads it).
    const lastSeqOf = new Map<number, number>();
    let bytes = 0;
    while (id < records) {
      const clientId = 1 + (messages % 16);
      const first = id + 1;
      const n = Math.min(perMessage, records - id);
      let text = "";
      for (let r = 0; r < n; r++) {
        id++;
        const payload = `${id}:${pad}`.slice(0, payloadBytes);
        text += `${clientId} ${id} client_${clientId} ${payload}\n`;
      }
      const data = encoder.encode(text);
      const h = headers();
      h.set(Header.FIRST, `${first}`);
      h.set(Header.LAST, `${id}`);
      h.set(Header.RECORDS, `${n}`);
      h.set(Header.MSG_ID, sessionMsgId(clientId, 1n, first, id));
      h.set(Header.EXPECTED_LAST_SUBJECT_SEQUENCE, `${lastSeqOf.get(clientId) ?? 0}`);
      lastSeqOf.set(clientId, messages + 1); // one publisher, a fresh stream: seqs in order
      nc.publish(sessionSubject("msgs", clientId, 1n), data, { headers: h });
      sink(data);
      messages++;
      bytes += data.length;
      if (messages % 500 === 0) await nc.flush();
    }
    await nc.flush();
    const state = (await jsm.streams.info("MSGS")).state;
    if (state.messages !== messages || state.bytes === 0) {
      throw new Error(`the stream holds ${state.messages} messages, not the ${messages} published`);
    }
    return { messages, bytes };
  } finally {
    await nc.close();
  }
}

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      records: { type: "string" },
      "per-message": { type: "string" },
      "payload-bytes": { type: "string" },
      runs: { type: "string" },
      help: { type: "boolean" },
    },
  });
  if (values.help === true) {
    console.log(USAGE);
    return 0;
  }
  const records = count(values.records, 4_000_000, "records");
  const perMessage = count(values["per-message"], 64, "per-message");
  const payloadBytes = count(values["payload-bytes"], 32, "payload-bytes");
  const runs = count(values.runs, 3, "runs");

  const nats = await startNats();
  const dir = await Deno.makeTempDir({ prefix: "msgserver_bench_export_" });
  try {
    console.log(`nats-server pid ${nats.pid} at ${nats.url}; outputs in ${dir}`);
    // What every output must be: the messages' data, in order.
    const parts: Uint8Array[] = [];
    const t0 = performance.now();
    const filled = await fill(nats.url, records, perMessage, payloadBytes, (d) => parts.push(d));
    console.log(
      `stream: ${records} records in ${filled.messages} messages (${perMessage} per message), ` +
        `${(filled.bytes / 1e6).toFixed(1)} MB of lines, filled in ${
          ((performance.now() - t0) / 1000).toFixed(1)
        } s`,
    );
    const expected = new Uint8Array(filled.bytes);
    let at = 0;
    for (const p of parts) {
      expected.set(p, at);
      at += p.length;
    }
    parts.length = 0;
    let failed = false;
    for (let run = 1; run <= runs; run++) {
      const output = `${dir}/out${run}.log`;
      const started = performance.now();
      const result = await exportCommand(["--nats-urls", nats.url, output], dir).output();
      const wall = (performance.now() - started) / 1000;
      const stderr = new TextDecoder().decode(result.stderr);
      const done = /export done records=(\d+) .* ms=(\d+) records_per_s=(\d+)/.exec(stderr);
      if (result.code !== 0 || done === null) {
        console.log(`run ${run}: FAILED (exit ${result.code})\n${stderr}`);
        failed = true;
        continue;
      }
      const got = await Deno.readFile(output);
      const same = got.length === expected.length && got.every((b, i) => b === expected[i]);
      const report = await verifyFile(output);
      const check = same && report.defectCount === 0 && report.lines === records
        ? "output OK (exact bytes, verify clean)"
        : `OUTPUT WRONG (same bytes: ${same}, verify defects: ${report.defectCount})`;
      if (check.startsWith("OUTPUT WRONG")) failed = true;
      console.log(
        `run ${run}: ${Number(done[3]).toLocaleString("en-US")} records/s in the exporter ` +
          `(${done[1]} records in ${done[2]} ms); ` +
          `${Math.round(records / wall).toLocaleString("en-US")} records/s wall ` +
          `(${wall.toFixed(2)} s with start-up); ${check}`,
      );
      await Deno.remove(output);
    }
    return failed ? 1 : 0;
  } finally {
    await nats.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
