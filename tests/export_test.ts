/**
 * `msgserver export` against a real nats-server (one per test, `support/nats_local.ts`): the exact
 * output and the verifier, resuming after a crash, gaps (one the stream leader fills, one it
 * cannot), the end without --follow, --follow and SIGTERM, NATS going away, and a kill -9 loop
 * during a large export after which every record is in the output exactly once.
 *
 * What may be asserted: the output's bytes, since the records' lines are known (the stream's
 * messages are made here, with the server's own formatter); the exit status; and that the
 * stderr names what went wrong. Kill times are drawn from a seeded PRNG and triggered by the
 * output growing, so each kill lands in the middle of an export.
 *
 * (Over 400 lines: each case needs its own nats-server, stream and child process, and they share
 * the helpers at the top.)
 */

import { equal, match, ok } from "node:assert/strict";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { headers, type NatsConnection } from "@nats-io/transport-node";
import { exportStream } from "../src/export/exporter.ts";
import { NatsSource, streamFacts } from "../src/export/nats_source.ts";
import { ExportOutput, parseResumePoint, resumePathOf } from "../src/export/output.ts";
import type { SourceMessage, StreamSource } from "../src/export/source.ts";
import { concat } from "../src/io/concat.ts";
import { Logger } from "../src/log.ts";
import { verifyFile } from "../src/verify.ts";
import { type LocalNats, withNats } from "./support/nats_local.ts";
import { mulberry32 } from "./support/prng.ts";
import { withTempDir } from "./support/server.ts";
import { Header } from "../src/store/jetstream_layout.ts";
import {
  createStream,
  formatLines,
  publishBatches,
  type Rec,
  sequentialBatches,
  type SessionBatch,
} from "./support/stream_records.ts";
import { requireTool } from "./support/tools.ts";
import { exportCommand } from "./support/spawn.ts";

const present = requireTool("nats-server");

const dec = new TextDecoder();

/** `msgserver export` as a process, in `dir` (no app.conf there), with NATS at `nats`. */
function spawnExport(dir: string, nats: LocalNats, args: string[]): Deno.ChildProcess {
  return exportCommand(["--nats-urls", nats.url, ...args], dir, "piped").spawn();
}

async function runExport(
  dir: string,
  nats: LocalNats,
  args: string[],
): Promise<{ code: number; stderr: string }> {
  const out = await spawnExport(dir, nats, args).output();
  return { code: out.code, stderr: dec.decode(out.stderr) };
}

/** Collects a child's stderr as it comes. */
function collect(child: Deno.ChildProcess): { text: () => string; done: Promise<void> } {
  let text = "";
  const done = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) text += chunk;
  })();
  child.stdout.cancel().catch(() => {});
  return { text: () => text, done };
}

/**
 * Runs `fn` with `msgserver export ARGS` running and its stderr collected; the process is killed
 * (SIGKILL) and reaped afterwards if it is still there, whatever `fn` did.
 */
async function withExport(
  dir: string,
  nats: LocalNats,
  args: string[],
  fn: (child: Deno.ChildProcess, stderr: ReturnType<typeof collect>) => Promise<void>,
): Promise<void> {
  const child = spawnExport(dir, nats, args);
  const stderr = collect(child);
  try {
    await fn(child, stderr);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // exited
    }
    await child.status;
  }
}

async function waitFor(what: string, test: () => Promise<boolean> | boolean, ms = 20_000) {
  const until = performance.now() + ms;
  while (!await test()) {
    if (performance.now() > until) throw new Error(`Gave up waiting for ${what} after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The child's exit status; SIGKILLs it and throws if it has not exited within `ms`. */
async function exitOf(child: Deno.ChildProcess, what: string, ms = 20_000) {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<null>((r) => timer = setTimeout(() => r(null), ms));
  const status = await Promise.race([child.status, late]);
  clearTimeout(timer);
  if (status === null) {
    child.kill("SIGKILL");
    await child.status;
    throw new Error(`msgserver export did not exit within ${ms} ms of ${what}`);
  }
  return status;
}

async function sizeOf(path: string): Promise<number> {
  try {
    return (await Deno.stat(path)).size;
  } catch {
    return 0;
  }
}

function quietLog(lines: string[] = []): Logger {
  return new Logger("debug", (line) => lines.push(line));
}

const ESCAPES: SessionBatch[] = [
  {
    clientId: 1,
    session: 42n,
    records: [
      { msgId: 1, name: "client_1", payload: "plain" },
      { msgId: 2, name: "client_1", payload: "back\\slash" },
      { msgId: 3, name: "client_1", payload: "line\nfeed and car\rriage" },
    ],
  },
  { clientId: 2, session: 0n, records: [{ msgId: 7, name: "ünï", payload: "" }] },
  {
    clientId: 1,
    session: 42n,
    records: [
      { msgId: 4, name: "client_1", payload: new Uint8Array([0x00, 0xff, 0x09, 0x5c, 0x6e]) },
    ],
  },
  { clientId: 9, session: null, records: [{ msgId: 1, name: "-", payload: "legacy \\r" }] },
];

const ESCAPES_TEXT = "1 1 client_1 plain\n" +
  "1 2 client_1 back\\\\slash\n" +
  "1 3 client_1 line\\nfeed and car\\rriage\n" +
  "2 7 ünï \n";
// Message 3's payload is the bytes 00 ff 09 5c 6e: the backslash is doubled, the rest kept.
const ESCAPES_BYTES = concat([
  new TextEncoder().encode(ESCAPES_TEXT + "1 4 client_1 "),
  new Uint8Array([0x00, 0xff, 0x09, 0x5c, 0x5c, 0x6e, 0x0a]),
  new TextEncoder().encode("9 1 - legacy \\\\r\n"),
]);

Deno.test({
  name: "msgserver export writes the stream's lines exactly, escapes and all, and verify passes",
  ignore: !present,
}, async () => {
  await withNats(async (nats, nc) => {
    await withTempDir("msgserver_export_test_", async (dir) => {
      await createStream(nc);
      await publishBatches(nc, ESCAPES);
      const first = await runExport(dir, nats, ["out.log"]);
      equal(first.code, 0, first.stderr);
      match(first.stderr, /INFO export done records=6 messages=4 bytes=\d+ from_seq=1 to_seq=4 /);
      const bytes = await Deno.readFile(`${dir}/out.log`);
      equal(dec.decode(bytes), dec.decode(ESCAPES_BYTES));
      ok(bytes.every((b, i) => b === ESCAPES_BYTES[i]) && bytes.length === ESCAPES_BYTES.length);
      const report = await verifyFile(`${dir}/out.log`);
      equal(report.defectCount, 0, report.defects.join("\n"));
      equal(report.lines, 6);
      // Run again: nothing new, nothing written twice, the consumer kept as it was.
      const again = await runExport(dir, nats, ["out.log"]);
      equal(again.code, 0, again.stderr);
      match(again.stderr, /export done records=0 /);
      ok(!/made again/.test(again.stderr), again.stderr);
      equal((await Deno.readFile(`${dir}/out.log`)).length, ESCAPES_BYTES.length);
    });
  });
});

Deno.test({
  name: "msgserver export resumes after a crash that wrote the data but not the resume point",
  ignore: !present,
}, async () => {
  await withNats(async (nats, nc) => {
    await withTempDir("msgserver_export_test_", async (dir) => {
      await createStream(nc);
      const batches = sequentialBatches(3, 5n, 6, 4);
      const published = await publishBatches(nc, batches.slice(0, 3));
      equal((await runExport(dir, nats, ["out.log"])).code, 0);
      published.push(...await publishBatches(nc, batches.slice(3)));
      // The crashed run had appended message 4 whole and message 5 in part.
      const tail = concat([published[3]!.data, published[4]!.data.subarray(0, 11)]);
      await Deno.writeFile(`${dir}/out.log`, tail, { append: true });
      const result = await runExport(dir, nats, ["out.log"]);
      equal(result.code, 0, result.stderr);
      match(
        result.stderr,
        /WARN output longer than its resume point: tail moved aside.* bytes=\d+ after_seq=3/,
      );
      const all = concat(published.map((p) => p.data));
      equal(dec.decode(await Deno.readFile(`${dir}/out.log`)), dec.decode(all));
      equal(dec.decode(await Deno.readFile(`${dir}/out.log.torn`)), dec.decode(tail));
      equal((await verifyFile(`${dir}/out.log`)).defectCount, 0);
      // An output cut shorter than its resume point stops the export loudly.
      await Deno.truncate(`${dir}/out.log`, all.length - 3);
      const cut = await runExport(dir, nats, ["out.log"]);
      equal(cut.code, 1, cut.stderr);
      match(cut.stderr, /msgserver export: .*it was cut, so the export stops rather than guess/);
    });
  });
});

/** A source that loses the sequences `drop` in delivery, as a consumer that skipped them would. */
class DroppingSource implements StreamSource {
  readonly inner: StreamSource;
  readonly drop: Set<number>;
  readonly gets: number[] = [];
  constructor(inner: StreamSource, drop: number[]) {
    this.inner = inner;
    this.drop = new Set(drop);
  }
  async next(): Promise<SourceMessage[]> {
    return (await this.inner.next()).filter((m) => !this.drop.has(m.seq));
  }
  get(seq: number): Promise<SourceMessage | null> {
    this.gets.push(seq);
    return this.inner.get(seq);
  }
  commit(seq: number): void {
    this.inner.commit(seq);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

async function openSource(
  nc: NatsConnection,
  output: ExportOutput,
  until: number | null,
  consumer = "test-export",
): Promise<NatsSource> {
  return await NatsSource.open(nc, {
    stream: "MSGS",
    consumer,
    after: output.seq,
    until,
    timeoutMs: 5000,
    log: quietLog(),
  });
}

Deno.test({
  name: "a gap in delivery is filled from the stream leader, in place",
  ignore: !present,
}, async () => {
  await withNats(async (_nats, nc) => {
    await withTempDir("msgserver_export_test_", async (dir) => {
      await createStream(nc);
      const published = await publishBatches(nc, sequentialBatches(4, 1n, 12, 3));
      const jsm = await jetstreamManager(nc);
      const facts = await streamFacts(jsm, "MSGS", { timeoutMs: 5000, log: quietLog() });
      const output = await ExportOutput.open(`${dir}/out.log`, {
        stream: "MSGS",
        created: facts.created,
        startAfter: 0,
      });
      const source = new DroppingSource(await openSource(nc, output, facts.lastSeq), [3, 7, 8, 9]);
      try {
        const summary = await exportStream(output, source, {
          follow: false,
          until: facts.lastSeq,
          log: quietLog(),
          progressMs: 0,
        });
        equal(summary.filled, 4);
        equal(summary.endSeq, 12);
      } finally {
        await source.close();
        output.close();
      }
      equal(source.gets.join(","), "3,7,8,9");
      const all = concat(published.map((p) => p.data));
      equal(dec.decode(await Deno.readFile(`${dir}/out.log`)), dec.decode(all));
    });
  });
});

Deno.test({
  name: "msgserver export writes once a session's records the stream holds twice",
  ignore: !present,
}, async () => {
  await withNats(async (nats, nc) => {
    await withTempDir("msgserver_export_test_", async (dir) => {
      await createStream(nc);
      // What nats-server 2.9.10's race leaves (README, "Two nodes never both append"): a second
      // publish for the session that repeats records of the first. Made here with expectations
      // the server checks and keeps with the messages, as msgserver's are.
      const js = jetstream(nc);
      const rec = (msgId: number): Rec => ({ msgId, name: "n", payload: `p${msgId}` });
      let expected = 0;
      for (const ids of [[1, 2], [2, 3], [2, 3], [3, 4]]) {
        const h = headers();
        h.set(Header.FIRST, `${ids[0]}`);
        h.set(Header.LAST, `${ids.at(-1)}`);
        h.set(Header.RECORDS, `${ids.length}`);
        h.set(Header.EXPECTED_LAST_SUBJECT_SEQUENCE, `${expected}`);
        const ack = await js.publish("msgs.4.9", formatLines(4, ids.map(rec)), { headers: h });
        expected = ack.seq;
      }
      const result = await runExport(dir, nats, ["out.log"]);
      equal(result.code, 0, result.stderr);
      match(result.stderr, /WARN records the stream holds twice: written once seq=2 /);
      match(result.stderr, /INFO export done records=4 messages=3 .* doubled=4 /);
      equal(
        await Deno.readTextFile(`${dir}/out.log`),
        dec.decode(formatLines(4, [1, 2, 3, 4].map(rec))),
      );
    });
  });
});

Deno.test({
  name: "msgserver export stops loudly at a gap the stream cannot fill, nothing after it written",
  ignore: !present,
}, async () => {
  await withNats(async (nats, nc) => {
    await withTempDir("msgserver_export_test_", async (dir) => {
      await createStream(nc);
      const published = await publishBatches(nc, sequentialBatches(5, 2n, 6, 2));
      const jsm = await jetstreamManager(nc);
      ok(await jsm.streams.deleteMessage("MSGS", 3));
      const result = await runExport(dir, nats, ["out.log"]);
      equal(result.code, 1, result.stderr);
      match(result.stderr, /ERROR export failed output_seq=2 output_bytes=\d+\n/);
      match(
        result.stderr,
        /msgserver export: Cannot export stream sequence 3: the stream no longer/,
      );
      match(result.stderr, /output ends at sequence 2/);
      const expected = concat([published[0]!.data, published[1]!.data]);
      equal(dec.decode(await Deno.readFile(`${dir}/out.log`)), dec.decode(expected));
      const point = parseResumePoint(await Deno.readTextFile(resumePathOf(`${dir}/out.log`)), "");
      equal(point.seq, 2);
      equal(point.bytes, expected.length);
    });
  });
});

Deno.test({
  name: "without --follow the export ends at the stream's last sequence when it began",
  ignore: !present,
}, async () => {
  await withNats(async (_nats, nc) => {
    await withTempDir("msgserver_export_test_", async (dir) => {
      await createStream(nc);
      const batches = sequentialBatches(6, 3n, 8, 5);
      const published = await publishBatches(nc, batches.slice(0, 5));
      const jsm = await jetstreamManager(nc);
      const facts = await streamFacts(jsm, "MSGS", { timeoutMs: 5000, log: quietLog() });
      equal(facts.lastSeq, 5);
      // More arrives after the export began: it is not waited for, nor taken.
      await publishBatches(nc, batches.slice(5));
      const output = await ExportOutput.open(`${dir}/out.log`, {
        stream: "MSGS",
        created: facts.created,
        startAfter: 0,
      });
      const source = await openSource(nc, output, facts.lastSeq);
      try {
        const summary = await exportStream(output, source, {
          follow: false,
          until: facts.lastSeq,
          log: quietLog(),
          progressMs: 0,
        });
        equal(summary.endSeq, 5);
        equal(summary.records, 25);
      } finally {
        await source.close();
        output.close();
      }
      const all = concat(published.map((p) => p.data));
      equal(dec.decode(await Deno.readFile(`${dir}/out.log`)), dec.decode(all));
      // The consumer was left exactly at the output's end: nothing unacknowledged.
      const info = await jsm.consumers.info("MSGS", "test-export");
      equal(info.delivered.stream_seq, 5);
      equal(info.num_ack_pending, 0);
    });
  });
});

Deno.test({
  name: "msgserver export --follow takes what is published after it started and stops on SIGTERM",
  ignore: !present,
}, async () => {
  await withNats(async (nats, nc) => {
    await withTempDir("msgserver_export_test_", async (dir) => {
      await createStream(nc);
      const batches = sequentialBatches(7, 4n, 9, 3);
      const published = await publishBatches(nc, batches.slice(0, 2));
      await withExport(dir, nats, ["--follow", "out.log"], async (child, stderr) => {
        await waitFor("export starting", () => /export starting/.test(stderr.text()));
        const first = concat(published.map((p) => p.data)).length;
        await waitFor(
          "the first two messages",
          async () => await sizeOf(`${dir}/out.log`) >= first,
        );
        for (const b of batches.slice(2)) {
          published.push(...await publishBatches(nc, [b]));
          await new Promise((r) => setTimeout(r, 30));
        }
        const all = concat(published.map((p) => p.data));
        await waitFor(
          "all nine messages",
          async () => await sizeOf(`${dir}/out.log`) >= all.length,
        );
        child.kill("SIGTERM");
        const status = await exitOf(child, "SIGTERM");
        await stderr.done;
        equal(status.code, 0, stderr.text());
        match(stderr.text(), /signal received signal=SIGTERM/);
        match(stderr.text(), /INFO export done records=27 messages=9 /);
        equal(dec.decode(await Deno.readFile(`${dir}/out.log`)), dec.decode(all));
      });
    });
  });
});

Deno.test({
  name: "msgserver export exits 1 when NATS is gone for longer than NATS_TIMEOUT_MS",
  ignore: !present,
}, async () => {
  await withNats(async (nats, nc) => {
    await withTempDir("msgserver_export_test_", async (dir) => {
      await createStream(nc);
      await publishBatches(nc, sequentialBatches(8, 5n, 2, 2));
      const args = ["--follow", "--nats-timeout-ms", "1000", "out.log"];
      await withExport(dir, nats, args, async (child, stderr) => {
        await waitFor("export starting", () => /export starting/.test(stderr.text()));
        await nats.stop();
        const t0 = performance.now();
        const status = await exitOf(child, "nats-server's end");
        await stderr.done;
        equal(status.code, 1, stderr.text());
        match(
          stderr.text(),
          /msgserver export: .*NATS has failed for \d+ ms \(NATS_TIMEOUT_MS is 1000\)/,
        );
        ok(performance.now() - t0 < 15_000, `took ${performance.now() - t0} ms`);
      });
    });
  });
});

Deno.test({
  name: "msgserver export: kill -9 again and again during a large export, each record once",
  ignore: !present,
}, async () => {
  await withNats(async (nats, nc) => {
    await withTempDir("msgserver_export_test_", async (dir) => {
      await createStream(nc);
      // 16,000 messages of 64 records: 1,024,000 records, about 40 MB.
      const published = await publishBatches(
        nc,
        sequentialBatches(11, 6n, 16_000, 64, { payloadBytes: 20 }),
      );
      const all = concat(published.map((p) => p.data));
      const path = `${dir}/out.log`;
      const random = mulberry32(20261203);
      let kills = 0;
      let before = 0;
      for (let round = 0; round < 6; round++) {
        const child = spawnExport(dir, nats, ["out.log"]);
        const stderr = collect(child);
        // Kill once the output has grown, a random moment later.
        let exited = false;
        child.status.then(() => exited = true);
        await waitFor("the output to grow", async () => exited || await sizeOf(path) > before);
        await new Promise((r) => setTimeout(r, Math.floor(random() * 40)));
        if (!exited) {
          child.kill("SIGKILL");
          kills++;
        }
        const status = await child.status;
        await stderr.done;
        ok(status.signal === "SIGKILL" || status.code === 0, stderr.text());
        before = await sizeOf(path);
        if (status.code === 0) break;
      }
      ok(kills >= 3, `only ${kills} kills landed during the export`);
      const last = await runExport(dir, nats, ["out.log"]);
      equal(last.code, 0, last.stderr);
      const got = await Deno.readFile(path);
      equal(got.length, all.length, "the output's size");
      ok(got.every((b, i) => b === all[i]), "the output differs from the stream's lines");
      const report = await verifyFile(path);
      equal(report.defectCount, 0, report.defects.join("\n"));
      equal(report.lines, 1_024_000);
    });
  });
});

Deno.test("msgserver export refuses bad usage with exit 2", async () => {
  await withTempDir("msgserver_export_test_", async (dir) => {
    const nats = { url: "nats://127.0.0.1:1" } as LocalNats;
    const none = await runExport(dir, nats, []);
    equal(none.code, 2);
    match(none.stderr, /expected one output_file, got 0/);
    const bad = await runExport(dir, nats, ["--consumer", "a.b", "out.log"]);
    equal(bad.code, 2);
    match(bad.stderr, /Cannot use consumer name "a\.b"/);
    const timeout = await runExport(dir, nats, ["--nats-timeout-ms", "0", "out.log"]);
    equal(timeout.code, 2);
    match(timeout.stderr, /NATS_TIMEOUT_MS is "0"/);
  });
});

Deno.test("msgserver export exits 1 naming NATS_URLS when it cannot connect", async () => {
  await withTempDir("msgserver_export_test_", async (dir) => {
    const nats = { url: "nats://me:secret@127.0.0.1:1" } as LocalNats;
    const result = await runExport(dir, nats, ["--nats-timeout-ms", "500", "out.log"]);
    equal(result.code, 1, result.stderr);
    match(result.stderr, /Cannot connect to NATS at NATS_URLS "nats:\/\/\*\*\*@127\.0\.0\.1:1"/);
    ok(!result.stderr.includes("secret"), result.stderr);
  });
});

Deno.test({
  name: "streamFacts() reads the first and last sequences with the leader's message get",
  ignore: !present,
}, async () => {
  await withNats(async (_nats, nc) => {
    await createStream(nc);
    await publishBatches(nc, sequentialBatches(8, 5n, 6, 2));
    const jsm = await jetstreamManager(nc);
    for (const seq of [1, 2]) ok(await jsm.streams.deleteMessage("MSGS", seq));
    const facts = await streamFacts(jsm, "MSGS", { timeoutMs: 5000, log: quietLog() });
    equal(facts.firstSeq, 3);
    equal(facts.lastSeq, 6);
    await jsm.streams.purge("MSGS");
    const empty = await streamFacts(jsm, "MSGS", { timeoutMs: 5000, log: quietLog() });
    equal(empty.lastSeq, 6);
    equal(empty.firstSeq, 7, "nothing to export");
  });
});

Deno.test({
  name:
    "a batch the stream's leader holds otherwise is read from the leader, the consumer made again",
  ignore: !present,
}, async () => {
  // A replica disagreeing with the leader comes from nats-server itself (a leader killed under
  // load and restarted; see checkAgainstLeader), at no moment a test can choose. Here the leader's
  // answer for one sequence is altered instead, on the one server: the consumer then delivers what
  // the leader does not hold there, as from such a replica.
  await withNats(async (_nats, nc) => {
    await withTempDir("msgserver_export_test_", async (dir) => {
      await createStream(nc);
      const published = await publishBatches(nc, sequentialBatches(9, 6n, 8, 3));
      const jsm = await jetstreamManager(nc);
      const leaderSays = new TextEncoder().encode("9 1000 client_9 the leader's copy\n");
      const api = Object.getPrototypeOf(jsm.streams) as {
        getMessage: (stream: string, query: { seq?: number }) => Promise<unknown>;
      };
      const original = api.getMessage;
      api.getMessage = async function (this: unknown, stream, query) {
        const m = await original.call(this, stream, query);
        if (query.seq !== 8 || m === null) return m;
        return Object.create(m as object, { data: { value: leaderSays } });
      };
      const logs: string[] = [];
      const facts = await streamFacts(jsm, "MSGS", { timeoutMs: 5000, log: quietLog() });
      const output = await ExportOutput.open(`${dir}/out.log`, {
        stream: "MSGS",
        created: facts.created,
        startAfter: 0,
      });
      const source = await NatsSource.open(nc, {
        stream: "MSGS",
        consumer: "test-export",
        after: 0,
        until: facts.lastSeq,
        timeoutMs: 5000,
        log: quietLog(logs),
      });
      try {
        const summary = await exportStream(output, source, {
          follow: false,
          until: facts.lastSeq,
          log: quietLog(),
          progressMs: 0,
        });
        equal(summary.endSeq, 8);
      } finally {
        api.getMessage = original;
        await source.close();
        output.close();
      }
      const expected = concat([...published.slice(0, 7).map((p) => p.data), leaderSays]);
      equal(dec.decode(await Deno.readFile(`${dir}/out.log`)), dec.decode(expected));
      ok(
        logs.some((l) =>
          /WARN the consumer's replica disagrees with the stream leader: read from the leader instead consumer=test-export from=1 to=8 read=8 start=9/
            .test(l)
        ),
        logs.join(""),
      );
      // Made again to start after what was handed out, and owing nothing.
      const info = await jsm.consumers.info("MSGS", "test-export");
      equal(info.config.opt_start_seq, 9);
      equal(info.num_ack_pending, 0);
    });
  });
});
