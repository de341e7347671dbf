import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { checkFile, type ClientLedger, type FileCheck } from "../../bench/load/file_check.ts";
import { formatFileCheck } from "../../bench/load/report.ts";

/** Lines `client msg_id bench payload` for msg_ids `from`..`to`. */
function lines(client: number, from: number, to: number): string {
  let text = "";
  for (let id = from; id <= to; id++) text += `${client} ${id} bench abc${id}\n`;
  return text;
}

async function check(
  text: string,
  acked: [number, number][],
  ledgers?: Map<number, ClientLedger>,
): Promise<FileCheck> {
  const dir = await Deno.makeTempDir({ prefix: "msgserver_file_check_test_" });
  try {
    await Deno.writeTextFile(`${dir}/messages.log`, text);
    return await checkFile(
      `${dir}/messages.log`,
      new Map(acked),
      ledgers === undefined ? {} : { ledgers },
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const ACKED: [number, number][] = [[1, 3], [2, 3]];

Deno.test("checkFile() passes one good line per acked message, client by client", async () => {
  const result = await check(lines(1, 1, 3) + lines(2, 1, 3), ACKED);
  deepStrictEqual(result, {
    lines: 6,
    expected: 6,
    clientMismatches: [],
    clientMismatchCount: 0,
    tornTail: false,
    ok: true,
  });
  equal(formatFileCheck(result), "file check: 6 lines, 6 acked: OK");
  ok((await check("", [])).ok, "no acks, empty file");
});

Deno.test("checkFile() fails on a missing line and names the client", async () => {
  const result = await check(lines(1, 1, 3) + lines(2, 1, 2), ACKED);
  equal(result.ok, false);
  equal(result.lines, 5);
  deepStrictEqual(result.clientMismatches, [{ client: 2, lines: 2, acked: 3 }]);
  equal(
    formatFileCheck(result),
    "file check: 5 lines, 6 acked: MISMATCH (1 clients differ, e.g. client 2: 2 lines/3 acked)",
  );
});

Deno.test("checkFile() fails on an extra line, even an exact repeat the verifier allows", async () => {
  const extra = await check(lines(1, 1, 4) + lines(2, 1, 3), ACKED);
  equal(extra.ok, false);
  deepStrictEqual(extra.clientMismatches, [{ client: 1, lines: 4, acked: 3 }]);
  const repeat = await check(lines(1, 1, 3) + lines(2, 1, 3) + lines(2, 3, 3), ACKED);
  equal(repeat.ok, false);
  equal(repeat.defects, undefined, "a resend is no defect to the verifier");
  equal(
    formatFileCheck(repeat),
    "file check: 7 lines, 6 acked: MISMATCH (1 clients differ, e.g. client 2: 4 lines/3 acked)",
  );
  const unknown = await check(lines(1, 1, 3) + lines(2, 1, 3) + lines(9, 1, 1), ACKED);
  deepStrictEqual(unknown.clientMismatches, [{ client: 9, lines: 1, acked: 0 }]);
});

Deno.test("checkFile() fails on a torn last line", async () => {
  const result = await check(lines(1, 1, 3) + lines(2, 1, 3) + "2 4 bench ab", ACKED);
  equal(result.ok, false);
  equal(result.tornTail, true);
  equal(result.lines, 6);
  equal(result.defects, undefined, "the torn tail is reported apart");
  equal(formatFileCheck(result), "file check: 6 lines, 6 acked: MISMATCH (last line torn)");
});

Deno.test("checkFile() fails on defects even when every count is right", async () => {
  const backwards = await check(
    "1 1 bench a\n1 3 bench c\n1 2 bench b\n" + lines(2, 1, 3),
    ACKED,
  );
  equal(backwards.ok, false);
  equal(backwards.clientMismatchCount, 0);
  deepStrictEqual(backwards.defects, {
    count: 1,
    samples: ["line 3: client 1 msg_id 2 goes backwards after 3"],
  });
  equal(
    formatFileCheck(backwards),
    "file check: 6 lines, 6 acked: MISMATCH (1 defect, e.g. line 3: client 1 msg_id 2 goes " +
      "backwards after 3)",
  );
  const malformed = await check(lines(1, 1, 3) + lines(2, 1, 2) + "2 x bench c\n", ACKED);
  equal(malformed.ok, false);
  equal(malformed.defects?.count, 1);
  deepStrictEqual(malformed.clientMismatches, [{ client: 2, lines: 2, acked: 3 }]);
  const many = await check(
    "1 1 bench a\n" + "1 x bench b\n".repeat(5) + "1 2 bench c\n2 x bench d\n" + lines(2, 1, 3),
    ACKED,
  );
  equal(many.defects?.count, 6);
  equal(many.defects?.samples.length, 3);
  equal(many.tornTail, false);
});

Deno.test("formatFileCheck() says when the check was skipped", () => {
  equal(formatFileCheck(null), "file check: skipped (server not started by the bench)");
});

/** Client 1 sent 1..10; 4 and 5 were NACKed, 8..10 abandoned at a resume; 1..3, 6, 7 acked. */
function ledger(overrides: Partial<ClientLedger> = {}): Map<number, ClientLedger> {
  return new Map([[1, {
    firstId: 0,
    settledThrough: 10,
    lastSent: 10,
    refused: [5, 4],
    abandoned: [{ first: 8, last: 10 }],
    ...overrides,
  }]]);
}
const ACKED_1: [number, number][] = [[1, 5]];

Deno.test("checkFile() with ledgers: refused and abandoned msg_ids may be missing or there", async () => {
  const without = await check(lines(1, 1, 3) + lines(1, 6, 7), ACKED_1, ledger());
  equal(without.ok, true, JSON.stringify(without));
  deepStrictEqual(without.ids, {
    lost: 0,
    doubled: 0,
    unexpected: 0,
    unackedKept: 0,
    refused: 2,
    abandoned: 3,
    samples: [],
  });
  equal(
    formatFileCheck(without, "export check [R3]"),
    "export check [R3]: 5 lines, 5 acked: OK (0 lost, 0 doubled; not acked: 2 NACKed, " +
      "3 abandoned at a resume, 0 of them stored all the same)",
  );
  // A store that timed out may have kept what it refused: more lines than acks is no mismatch.
  const kept = await check(lines(1, 1, 8), ACKED_1, ledger());
  equal(kept.ok, true, JSON.stringify(kept));
  equal(kept.ids?.unackedKept, 3);
  equal(kept.clientMismatchCount, 0);
});

Deno.test("checkFile() with ledgers: an acked msg_id missing is lost, even when the count is right", async () => {
  // 4 (refused) stands in for 3 (acked): five lines for five acks, and still one lost.
  const swapped = await check(lines(1, 1, 2) + lines(1, 4, 4) + lines(1, 6, 7), ACKED_1, ledger());
  equal(swapped.ok, false);
  equal(swapped.ids?.lost, 1);
  equal(swapped.ids?.unackedKept, 1);
  deepStrictEqual(swapped.ids?.samples, ["client 1 msg_id 3 acked, not in the file"]);
  const tail = await check(lines(1, 1, 3) + lines(1, 6, 6), ACKED_1, ledger());
  deepStrictEqual([tail.ok, tail.ids?.lost], [false, 1], "7 is acked and missing at the end");
  const none = await check("", ACKED_1, ledger());
  deepStrictEqual([none.ok, none.ids?.lost], [false, 5], "a client with no line at all");
});

Deno.test("checkFile() with ledgers: a msg_id twice is doubled, one never sent is unexpected", async () => {
  const doubled = await check(lines(1, 1, 3) + lines(1, 3, 3) + lines(1, 6, 7), ACKED_1, ledger());
  equal(doubled.ok, false);
  deepStrictEqual([doubled.ids?.doubled, doubled.ids?.lost], [1, 0]);
  deepStrictEqual(doubled.ids?.samples, ["client 1 msg_id 3 again after 3"]);
  const back = await check(lines(1, 1, 3) + lines(1, 6, 7) + lines(1, 2, 2), ACKED_1, ledger());
  deepStrictEqual([back.ok, back.ids?.doubled], [false, 1], "an earlier msg_id after a later one");
  const unsent = await check(lines(1, 1, 3) + lines(1, 6, 7) + lines(1, 11, 11), ACKED_1, ledger());
  deepStrictEqual([unsent.ok, unsent.ids?.unexpected], [false, 1]);
  const stranger = await check(lines(1, 1, 3) + lines(1, 6, 7) + lines(9, 1, 1), ACKED_1, ledger());
  deepStrictEqual([stranger.ok, stranger.ids?.unexpected], [false, 1], "a client never seen");
});

Deno.test("checkFile() with ledgers: msg_ids above what was settled may be missing or there", async () => {
  const open = ledger({ settledThrough: 7, lastSent: 9, abandoned: [] });
  deepStrictEqual(
    [(await check(lines(1, 1, 3) + lines(1, 6, 7), ACKED_1, open)).ok],
    [true],
  );
  const stored = await check(lines(1, 1, 3) + lines(1, 6, 9), ACKED_1, open);
  deepStrictEqual([stored.ok, stored.ids?.lost, stored.ids?.unexpected], [true, 0, 0]);
  const resumed = ledger({ firstId: 100, settledThrough: 103, lastSent: 103, refused: [] });
  const after = await check(lines(1, 101, 103), [[1, 3]], resumed);
  equal(after.ok, true, "a session that started above 0 (WELCOME's last_msg_id)");
});
