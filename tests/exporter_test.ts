// The exporter's core and its output, over a fake source: order, redeliveries, gaps filled and
// gaps that stop it, the resume point and what opening an output does after a crash. What NATS
// itself does is in export_test.ts.
import { deepStrictEqual, equal, ok, rejects } from "node:assert/strict";
import { exportStream, type ExportSummary } from "../src/export/exporter.ts";
import { SessionMarks } from "../src/export/session_marks.ts";
import {
  ExportOutput,
  formatResumePoint,
  parseResumePoint,
  resumePathOf,
} from "../src/export/output.ts";
import { ExportError, type SourceMessage } from "../src/export/source.ts";
import { Logger } from "../src/log.ts";
import { FakeSource } from "./support/fake_source.ts";
import { withTempDir } from "./support/server.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const STREAM = { stream: "MSGS", created: "2026-12-01T00:00:00Z", startAfter: 0 };

/** Message `seq`: two lines of client 1, session 7, published after message `seq - 1`. */
function message(seq: number): SourceMessage {
  const text = `1 ${2 * seq - 1} client_1 m${seq}a\n1 ${2 * seq} client_1 m${seq}b\n`;
  return {
    seq,
    subject: "msgs.1.7",
    data: enc.encode(text),
    last: 2 * seq,
    records: 2,
    expected: seq - 1,
  };
}

function stream(n: number): SourceMessage[] {
  return Array.from({ length: n }, (_, i) => message(i + 1));
}

/** The output holding exactly messages `seqs`, in that order. */
function linesOf(seqs: number[]): string {
  return seqs.map((s) => dec.decode(message(s).data)).join("");
}

function quietLog(lines: string[] = []): Logger {
  return new Logger("debug", (line) => lines.push(line));
}

async function run(
  path: string,
  source: FakeSource,
  options: { until: number; follow?: boolean; signal?: AbortSignal; log?: Logger },
): Promise<ExportSummary> {
  const output = await ExportOutput.open(path, STREAM);
  try {
    return await exportStream(output, source, {
      follow: options.follow ?? false,
      until: options.until,
      log: options.log ?? quietLog(),
      progressMs: 0,
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
  } finally {
    output.close();
  }
}

/** `promise`, or a failure when it has not settled within 5 s of `what`. */
async function within<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) =>
    timer = setTimeout(() => reject(new Error(`not done within 5 s of ${what}`)), 5000)
  );
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

async function resumePoint(path: string) {
  return parseResumePoint(await Deno.readTextFile(resumePathOf(path)), path);
}

Deno.test("exportStream() writes messages in stream order, once, skipping redeliveries", async () => {
  await withTempDir("msgserver_exporter_test_", async (dir) => {
    const path = `${dir}/out.log`;
    const source = new FakeSource(stream(5), [[1, 2], [2, 3], [1, 4, 5]]);
    const summary = await run(path, source, { until: 5 });
    equal(await Deno.readTextFile(path), linesOf([1, 2, 3, 4, 5]));
    equal(summary.redelivered, 2);
    equal(summary.records, 10);
    equal(summary.messages, 5);
    equal(summary.endSeq, 5);
    deepStrictEqual(source.commits, [2, 3, 5]);
    deepStrictEqual(source.gets, []);
    deepStrictEqual(await resumePoint(path), {
      stream: "MSGS",
      created: STREAM.created,
      seq: 5,
      bytes: linesOf([1, 2, 3, 4, 5]).length,
    });
  });
});

/** A message of session `subject` holding msg_ids `ids`, published expecting `expected`. */
function sessionMessage(
  seq: number,
  subject: string,
  ids: number[],
  expected: number | null,
  tag = "",
): SourceMessage {
  const client = subject.split(".")[1];
  const text = ids.map((id) => `${client} ${id} n p${id}${tag}\n`).join("");
  return { seq, subject, data: enc.encode(text), last: ids.at(-1)!, records: ids.length, expected };
}

Deno.test("exportStream() writes once the records of a session the stream holds twice", async () => {
  await withTempDir("msgserver_exporter_test_", async (dir) => {
    const path = `${dir}/out.log`;
    const logs: string[] = [];
    const messages = [
      sessionMessage(1, "msgs.1.7", [1, 2], 0),
      sessionMessage(2, "msgs.2.7", [1], 0),
      sessionMessage(3, "msgs.1.7", [3, 4], 1),
      // Two publishes that both expected sequence 3 (the 2.9.10 race): a whole repeat of 3 and
      // 4, then one that repeats 4 and goes on.
      sessionMessage(4, "msgs.1.7", [3, 4], 1),
      sessionMessage(5, "msgs.1.7", [4, 5, 6], 3),
      sessionMessage(6, "msgs.2.7", [2], 2),
      // Expecting nothing: the session starts again (its messages were removed by the stream's
      // limits), numbering from 1.
      sessionMessage(7, "msgs.1.7", [1, 2], 0),
      // No expectation (not a session's message): written as it is.
      sessionMessage(8, "msgs.1.7", [2], null),
      // msg_id 2 again with another record (a client numbering afresh from a stale WELCOME): it is
      // written; and a line that is not msgserver's stops the leaving out.
      { ...sessionMessage(9, "msgs.1.7", [2, 3], 7), data: enc.encode("1 2 n x\nnot lines\n") },
      sessionMessage(10, "msgs.1.7", [2], 9),
    ];
    const source = new FakeSource(messages, [[1, 2, 3, 4], [5, 6, 7, 8, 9, 10]]);
    const summary = await run(path, source, { until: 10, log: quietLog(logs) });
    equal(
      await Deno.readTextFile(path),
      "1 1 n p1\n1 2 n p2\n2 1 n p1\n1 3 n p3\n1 4 n p4\n1 5 n p5\n1 6 n p6\n2 2 n p2\n" +
        "1 1 n p1\n1 2 n p2\n1 2 n p2\n1 2 n x\nnot lines\n",
    );
    equal(summary.doubled, 4);
    // The doubles of 4 and 5 break their session's chain: their batch is read again from the
    // leader, whose messages are the same, and the leader is asked for the one both expected.
    equal(summary.reread, 2);
    equal(summary.records, 13);
    equal(summary.messages, 8);
    equal(summary.endSeq, 10);
    deepStrictEqual(source.commits, [4, 10]);
    const warned = (re: RegExp) => ok(logs.some((l) => re.test(l)), `${re}\n${logs.join("")}`);
    warned(
      /WARN records the stream holds twice: written once seq=4 subject=msgs\.1\.7 lines_left_out=2/,
    );
    warned(
      /WARN msg_ids written before, with other records: written too seq=9 subject=msgs\.1\.7 lines=1/,
    );
  });
});

/** Sessions 1 and 2 in turn, as the leader holds them; at 3, 2's message that the leader never took. */
function divergedStream(): { leader: SourceMessage[]; replica: Map<number, SourceMessage> } {
  return {
    leader: [
      sessionMessage(1, "msgs.1.7", [1, 2], 0),
      sessionMessage(2, "msgs.2.7", [1], 0),
      sessionMessage(3, "msgs.1.7", [3], 1),
      sessionMessage(4, "msgs.2.7", [2], 2),
      sessionMessage(5, "msgs.1.7", [4], 3),
    ],
    replica: new Map([[3, sessionMessage(3, "msgs.2.7", [2], 2)]]),
  };
}

Deno.test("exportStream() reads a batch again from the leader when a session's messages do not follow on", async () => {
  await withTempDir("msgserver_exporter_test_", async (dir) => {
    const path = `${dir}/out.log`;
    const logs: string[] = [];
    const { leader, replica } = divergedStream();
    const source = new FakeSource(leader, [[1, 2], [3, 4, 5]], { replica });
    const summary = await run(path, source, { until: 5, log: quietLog(logs) });
    equal(
      await Deno.readTextFile(path),
      "1 1 n p1\n1 2 n p2\n2 1 n p1\n1 3 n p3\n2 2 n p2\n1 4 n p4\n",
    );
    equal(summary.reread, 1);
    equal(summary.doubled, 0);
    deepStrictEqual(source.gets, [3, 4, 5]);
    ok(
      logs.some((l) =>
        /WARN a session's messages do not follow on: reading them from the stream's leader seq=4 subject=msgs\.2\.7 expected=2 seen=3/
          .test(l)
      ),
      logs.join(""),
    );
  });
});

Deno.test("exportStream() keeps what was delivered where the leader no longer holds a sequence", async () => {
  await withTempDir("msgserver_exporter_test_", async (dir) => {
    const path = `${dir}/out.log`;
    // 1 was delivered, then removed from the stream (its limits) before the batch is read again
    // for the race's double at 4.
    const leader = [
      sessionMessage(2, "msgs.2.7", [1], 0),
      sessionMessage(3, "msgs.1.7", [2], 1),
      sessionMessage(4, "msgs.1.7", [2], 1),
      sessionMessage(5, "msgs.2.7", [2], 2),
    ];
    const replica = new Map([[1, sessionMessage(1, "msgs.1.7", [1], 0)]]);
    const source = new FakeSource(leader, [[1, 2, 3, 4], [5]], { replica });
    const summary = await run(path, source, { until: 5 });
    equal(await Deno.readTextFile(path), "1 1 n p1\n2 1 n p1\n1 2 n p2\n2 2 n p2\n");
    equal(summary.reread, 1);
    equal(summary.doubled, 1);
    equal(summary.endSeq, 5);
  });
});

Deno.test("exportStream() stops when the output already holds a message the leader does not", async () => {
  await withTempDir("msgserver_exporter_test_", async (dir) => {
    const path = `${dir}/out.log`;
    const { leader, replica } = divergedStream();
    // The wrong message ends a batch, so it is written before anything shows it wrong.
    const source = new FakeSource(leader, [[1, 2, 3], [4, 5]], { replica });
    await rejects(run(path, source, { until: 5 }), (e: unknown) => {
      ok(e instanceof ExportError, String(e));
      equal(e.reason, "replica");
      ok(/output holds at sequence 3 a message other than the stream leader's/.test(e.message));
      ok(/output ends at sequence 3: export again into a new file/.test(e.message), e.message);
      return true;
    });
    equal(await Deno.readTextFile(path), "1 1 n p1\n1 2 n p2\n2 1 n p1\n2 2 n p2\n");
    equal((await resumePoint(path)).seq, 3);
  });
});

Deno.test("exportStream() stops when a session's previous message at the leader is not the one written there", async () => {
  await withTempDir("msgserver_exporter_test_", async (dir) => {
    const path = `${dir}/out.log`;
    const { leader } = divergedStream();
    // At 3 the replica holds a third session's first message in place of session 1's: nothing
    // shows it until session 1's next message expects its previous one at 3.
    const replica = new Map([[3, sessionMessage(3, "msgs.3.7", [1], 0)]]);
    const source = new FakeSource(leader, [[1, 2, 3], [4, 5]], { replica });
    await rejects(run(path, source, { until: 5 }), (e: unknown) => {
      ok(e instanceof ExportError, String(e));
      equal(e.reason, "replica");
      ok(/sequence 5 \(subject "msgs\.1\.7"\): the output holds at sequence 3/.test(e.message));
      return true;
    });
    deepStrictEqual(source.gets, [4, 5, 3]);
  });
});

Deno.test("SessionMarks forgets the least recently written session past its bound", () => {
  const marks = new SessionMarks(2);
  equal(marks.cut(sessionMessage(1, "msgs.1.7", [1, 2], 0)), 0);
  equal(marks.cut(sessionMessage(2, "msgs.2.7", [1, 2], 0)), 0);
  equal(marks.cut(sessionMessage(3, "msgs.1.7", [2], 1)), 9); // 1's mark is kept: "1 2 n p2\n" at or below it
  equal(marks.cut(sessionMessage(4, "msgs.3.7", [1], 0)), 0); // 2 is now the oldest: forgotten
  equal(marks.size, 2);
  equal(marks.cut(sessionMessage(5, "msgs.2.7", [2], 2)), 0); // no mark: written
  equal(marks.cut(sessionMessage(6, "msgs.3.7", [1, 2], 4)), 9); // 3 kept: "3 1 n p1\n" at or below it
  equal(marks.cut(sessionMessage(7, "msgs.1.7", [2, 3], 3)), 0); // 1 went when 2 came back
});

Deno.test("exportStream() reads missing sequences from the stream and writes them in place", async () => {
  await withTempDir("msgserver_exporter_test_", async (dir) => {
    const path = `${dir}/out.log`;
    const logs: string[] = [];
    const source = new FakeSource(stream(7), [[1, 2, 5], [6, 7]]);
    const summary = await run(path, source, { until: 7, log: quietLog(logs) });
    equal(await Deno.readTextFile(path), linesOf([1, 2, 3, 4, 5, 6, 7]));
    deepStrictEqual(source.gets, [3, 4]);
    equal(summary.filled, 2);
    ok(logs.some((l) => /WARN gap filled from the stream seq=3 next=5/.test(l)), logs.join(""));
  });
});

Deno.test("exportStream() stops at a gap the stream cannot fill, with nothing after it written", async () => {
  await withTempDir("msgserver_exporter_test_", async (dir) => {
    const path = `${dir}/out.log`;
    const all = stream(6).filter((m) => m.seq !== 3);
    const source = new FakeSource(all, [[1, 2, 4, 5], [6]]);
    await rejects(run(path, source, { until: 6 }), (e: unknown) => {
      ok(e instanceof ExportError, String(e));
      equal(e.reason, "gap");
      ok(/stream sequence 3: the stream no longer holds it/.test(e.message), e.message);
      ok(/next message delivered was 4/.test(e.message), e.message);
      ok(/output ends at sequence 2/.test(e.message), e.message);
      return true;
    });
    equal(await Deno.readTextFile(path), linesOf([1, 2]));
    equal((await resumePoint(path)).seq, 2);
    deepStrictEqual(source.commits, [2]);
    // Run again, it stops at the same place and writes nothing more.
    const again = new FakeSource(all, [[4, 5, 6]]);
    await rejects(run(path, again, { until: 6 }), /stream sequence 3/);
    equal(await Deno.readTextFile(path), linesOf([1, 2]));
  });
});

Deno.test("exportStream() without follow asks the stream for what the source never delivers", async () => {
  await withTempDir("msgserver_exporter_test_", async (dir) => {
    const path = `${dir}/out.log`;
    const source = new FakeSource(stream(3), [[1]]);
    const summary = await run(path, source, { until: 3 });
    equal(await Deno.readTextFile(path), linesOf([1, 2, 3]));
    deepStrictEqual(source.gets, [2, 3]);
    equal(summary.filled, 2);
    // And when the stream no longer holds it: a gap, loudly.
    const path2 = `${dir}/out2.log`;
    const short = new FakeSource(stream(2), [[1]]);
    await rejects(run(path2, short, { until: 3 }), /stream sequence 3: the stream no longer/);
    equal(await Deno.readTextFile(path2), linesOf([1, 2]));
  });
});

Deno.test("exportStream() stops at a message that is not lines, after writing those before", async () => {
  await withTempDir("msgserver_exporter_test_", async (dir) => {
    const path = `${dir}/out.log`;
    const bad = { ...message(3), data: enc.encode("1 5 client_1 no line feed") };
    const source = new FakeSource([...stream(2), bad, message(4)], [[1, 2, 3, 4]]);
    await rejects(run(path, source, { until: 4 }), (e: unknown) => {
      ok(e instanceof ExportError && e.reason === "format", String(e));
      ok(/sequence 3 .*does not end with a line feed/.test(e.message), e.message);
      return true;
    });
    equal(await Deno.readTextFile(path), linesOf([1, 2]));
  });
});

Deno.test("exportStream() passes NATS failing on, after writing what came before", async () => {
  await withTempDir("msgserver_exporter_test_", async (dir) => {
    const path = `${dir}/out.log`;
    const source = new FakeSource(stream(5), [[1, 2, 4]], { failGet: [3] });
    await rejects(run(path, source, { until: 5 }), (e: unknown) => {
      ok(e instanceof ExportError && e.reason === "nats", String(e));
      return true;
    });
    equal(await Deno.readTextFile(path), linesOf([1, 2]));
    equal((await resumePoint(path)).seq, 2);
  });
});

Deno.test("exportStream() with follow goes on past the end and stops cleanly when aborted", async () => {
  await withTempDir("msgserver_exporter_test_", async (dir) => {
    const path = `${dir}/out.log`;
    const source = new FakeSource(stream(4), [[1, 2], [3], [4]], { idleMs: 5 });
    const controller = new AbortController();
    const finished = run(path, source, { until: 1, follow: true, signal: controller.signal });
    for (let i = 0; i < 200 && source.commits.at(-1) !== 4; i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
    controller.abort();
    const summary = await within(finished, "the abort");
    equal(summary.interrupted, false);
    equal(summary.endSeq, 4);
    equal(await Deno.readTextFile(path), linesOf([1, 2, 3, 4]));
  });
});

Deno.test("exportStream() without follow, aborted before the end, says it was interrupted", async () => {
  await withTempDir("msgserver_exporter_test_", async (dir) => {
    const path = `${dir}/out.log`;
    const source = new FakeSource(stream(4), [[1, 2]], { idleMs: 20 });
    const controller = new AbortController();
    const finished = run(path, source, { until: 4, signal: controller.signal });
    // The script ends at 2; the source then idles, and the exporter asks the stream for 3 and 4.
    controller.abort();
    const summary = await within(finished, "the abort");
    equal(summary.interrupted, true);
    ok(summary.endSeq < 4);
  });
});

Deno.test("ExportOutput.open() cuts back a tail written after the last resume point", async () => {
  await withTempDir("msgserver_exporter_test_", async (dir) => {
    const path = `${dir}/out.log`;
    await run(path, new FakeSource(stream(2), [[1, 2]]), { until: 2 });
    // A crash after the data of 3 and half of 4 were written, before their resume point was.
    const tail = linesOf([3]) + linesOf([4]).slice(0, 9);
    await Deno.writeTextFile(path, tail, { append: true });
    const output = await ExportOutput.open(path, STREAM);
    equal(output.report.tornBytes, tail.length);
    equal(output.seq, 2);
    output.close();
    equal(await Deno.readTextFile(path), linesOf([1, 2]));
    equal(await Deno.readTextFile(`${path}.torn`), tail);
    // The export goes on after 2: 3 is fetched again, so no line is lost or doubled.
    const source = new FakeSource(stream(5), [[3, 4, 5]]);
    await run(path, source, { until: 5 });
    equal(await Deno.readTextFile(path), linesOf([1, 2, 3, 4, 5]));
  });
});

Deno.test("ExportOutput.open() refuses an output shorter than its resume point says", async () => {
  await withTempDir("msgserver_exporter_test_", async (dir) => {
    const path = `${dir}/out.log`;
    await run(path, new FakeSource(stream(3), [[1, 2, 3]]), { until: 3 });
    const full = await Deno.readTextFile(path);
    await Deno.writeTextFile(path, full.slice(0, full.length - 5));
    await rejects(ExportOutput.open(path, STREAM), (e: unknown) => {
      ok(e instanceof ExportError && e.reason === "output", String(e));
      ok(
        /holds \d+ bytes, but \d+ were written up to stream sequence 3/.test(e.message),
        e.message,
      );
      return true;
    });
    equal(await Deno.readTextFile(path), full.slice(0, full.length - 5));
  });
});

Deno.test("ExportOutput.open() refuses data without a resume point, or from another stream", async () => {
  await withTempDir("msgserver_exporter_test_", async (dir) => {
    const path = `${dir}/out.log`;
    await Deno.writeTextFile(path, "1 1 client_1 x\n");
    await rejects(ExportOutput.open(path, STREAM), /holds 15 bytes but has no resume point/);
    await Deno.remove(path);
    await run(path, new FakeSource(stream(1), [[1]]), { until: 1 });
    await rejects(
      ExportOutput.open(path, { ...STREAM, created: "2026-12-02T00:00:00Z" }),
      /exported from stream "MSGS" created 2026-12-01T00:00:00Z, not "MSGS" created 2026-12-02/,
    );
    await Deno.writeTextFile(resumePathOf(path), "garbage");
    await rejects(ExportOutput.open(path, STREAM), /not a resume point/);
  });
});

Deno.test("ExportOutput.open() refuses an output another export holds", async () => {
  await withTempDir("msgserver_exporter_test_", async (dir) => {
    const path = `${dir}/out.log`;
    const first = await ExportOutput.open(path, STREAM);
    try {
      await rejects(ExportOutput.open(path, STREAM), (e: unknown) => {
        ok(e instanceof ExportError && e.reason === "busy", String(e));
        return true;
      });
    } finally {
      first.close();
    }
    (await ExportOutput.open(path, STREAM)).close();
  });
});

Deno.test("ExportOutput starts a fresh output after the stream's first sequence, less one", async () => {
  await withTempDir("msgserver_exporter_test_", async (dir) => {
    const path = `${dir}/out.log`;
    const output = await ExportOutput.open(path, { ...STREAM, startAfter: 41 });
    equal(output.report.fresh, true);
    equal(output.seq, 41);
    output.close();
    equal(
      await Deno.readTextFile(resumePathOf(path)),
      formatResumePoint({ stream: "MSGS", created: STREAM.created, seq: 41, bytes: 0 }),
    );
  });
});

Deno.test("ExportOutput.append() records the resume point only after the data is written and synced", async () => {
  await withTempDir("msgserver_exporter_test_", async (dir) => {
    const path = `${dir}/out.log`;
    await run(path, new FakeSource(stream(2), [[1, 2]]), { until: 2 });
    const before = await resumePoint(path);
    for (const fault of ["write", "syncData"] as const) {
      const output = await ExportOutput.open(path, STREAM, {
        open: async (p, options) => {
          const file = await Deno.open(p, options);
          if (fault === "write") {
            // Half the bytes reach the file, then the disk fails.
            const write = file.write.bind(file);
            file.write = (bytes) =>
              write(bytes.subarray(0, bytes.length >> 1)).then(() => {
                throw new Deno.errors.WriteZero("No space left on device (os error 28)");
              });
          } else {
            file.syncData = () => Promise.reject(new Error("Input/output error (os error 5)"));
          }
          return file;
        },
      });
      try {
        await rejects(output.append(message(3).data, 3), /os error/);
      } finally {
        output.close();
      }
      deepStrictEqual(await resumePoint(path), before, `after a failed ${fault}`);
      // Opened again, the output agrees with its resume point: 3 will be fetched again.
      const again = await ExportOutput.open(path, STREAM);
      equal(again.seq, 2);
      again.close();
      equal(await Deno.readTextFile(path), linesOf([1, 2]));
    }
  });
});
