import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { checkFile, type FileCheck } from "../../bench/load/file_check.ts";
import { formatFileCheck } from "../../bench/load/report.ts";

/** Lines `client msg_id bench payload` for msg_ids `from`..`to`. */
function lines(client: number, from: number, to: number): string {
  let text = "";
  for (let id = from; id <= to; id++) text += `${client} ${id} bench abc${id}\n`;
  return text;
}

async function check(text: string, acked: [number, number][]): Promise<FileCheck> {
  const dir = await Deno.makeTempDir({ prefix: "msgserver_file_check_test_" });
  try {
    await Deno.writeTextFile(`${dir}/messages.log`, text);
    return await checkFile(`${dir}/messages.log`, new Map(acked));
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
