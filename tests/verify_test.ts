import { deepStrictEqual, equal, match } from "node:assert/strict";
import { verifyFile } from "../src/verify.ts";

async function verifyText(text: string) {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/m.log`, text);
    return await verifyFile(`${dir}/m.log`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("verifyFile passes a clean file and counts lines and runs per client", async () => {
  const report = await verifyText(
    "1 1 a x\n2 1 b y\n1 2 a \\\\ \\n \\r\n1 1 a next run\n1 2 a z\n",
  );
  equal(report.defectCount, 0);
  equal(report.lines, 5);
  equal(report.tornBytes, 0);
  deepStrictEqual(report.clients.get(1), { lines: 4, runs: 2, resent: 0 });
  deepStrictEqual(report.clients.get(2), { lines: 1, runs: 1, resent: 0 });
});

Deno.test("verifyFile allows an exact resend but reports ids going backwards", async () => {
  const report = await verifyText("7 1 a x\n7 2 a y\n7 2 a y\n7 3 a z\n7 2 a other\n7 1 a x\n");
  deepStrictEqual(report.defects, ["line 5: client 7 msg_id 2 repeated with other content"]);
  deepStrictEqual(report.clients.get(7), { lines: 6, runs: 1, resent: 2 });
  const back = await verifyText("7 5 a x\n7 4 a y\n");
  deepStrictEqual(back.defects, ["line 2: client 7 msg_id 4 goes backwards after 5"]);
});

Deno.test("verifyFile reports malformed lines, bad escapes and a torn tail", async () => {
  const report = await verifyText("1 1 a ok\nnot a record\n1 x a y\n1 2 a \\t\n1 3 a torn");
  deepStrictEqual(report.defects, [
    "line 2: fewer than 4 fields",
    "line 3: msg_id is not a u32 in decimal",
    "line 4: bad escape at byte 6",
    "end of file: torn last line (10 bytes without a line feed)",
  ]);
  equal(report.tornBytes, 10);
  equal(report.defectCount, 4);
});

Deno.test("verifyFile handles lines longer than its read chunk", async () => {
  const long = "p".repeat(3 * 1024 * 1024);
  const report = await verifyText(`1 1 a ${long}\n1 2 a short\n`);
  equal(report.defectCount, 0);
  equal(report.lines, 2);
});

Deno.test("deno task verify exits 0 on a clean file and 1 with the defects listed", async () => {
  const dir = await Deno.makeTempDir();
  const root = new URL("..", import.meta.url).pathname;
  try {
    await Deno.writeTextFile(`${dir}/good.log`, "1 1 a x\n");
    await Deno.writeTextFile(`${dir}/bad.log`, "1 2 a x\n1 1 a");
    const run = (file: string) =>
      new Deno.Command(Deno.execPath(), {
        args: ["task", "-q", "verify", file],
        cwd: root,
        stdout: "piped",
        stderr: "piped",
      }).output();
    const good = await run(`${dir}/good.log`);
    equal(good.code, 0);
    match(new TextDecoder().decode(good.stdout), /defects: 0\nOK\n$/);
    const bad = await run(`${dir}/bad.log`);
    equal(bad.code, 1);
    match(new TextDecoder().decode(bad.stdout), /torn last line \(5 bytes/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
