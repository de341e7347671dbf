import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { Logger } from "../src/log.ts";
import { delay } from "../src/io/within.ts";

function logger(level: "debug" | "info" | "warn" | "error" = "debug") {
  const lines: string[] = [];
  return { log: new Logger(level, (l) => lines.push(l)), lines };
}

Deno.test("Logger writes one line per event with key=value fields, quoting where needed", () => {
  const { log, lines } = logger();
  log.info("listening", { addr: "127.0.0.1:9000", note: "two words", empty: "", n: 3 });
  equal(lines.length, 1);
  ok(/^\d{4}-\d\d-\d\dT[\d:.]+Z INFO listening /.test(lines[0]!), lines[0]);
  ok(lines[0]!.endsWith(' addr=127.0.0.1:9000 note="two words" empty="" n=3\n'), lines[0]);
});

Deno.test("Logger drops lines below its level", () => {
  const { log, lines } = logger("warn");
  log.debug("a");
  log.info("b");
  log.warn("c");
  log.error("d");
  deepStrictEqual(lines.map((l) => l.split(" ").slice(1, 3).join(" ").trim()), [
    "WARN c",
    "ERROR d",
  ]);
  equal(log.enabled("info"), false);
  equal(log.enabled("error"), true);
});

Deno.test("Logger counts lines past 1,000 a second instead of writing them, errors excepted", () => {
  const { log, lines } = logger();
  for (let i = 0; i < 1500; i++) log.warn("flood");
  log.error("still written");
  // (A second boundary during the loop lets another 1,000 through, never all 1,500.)
  ok(lines.length >= 1000 && lines.length < 1500, `${lines.length}`);
  ok(lines.at(-1)!.includes("ERROR still written"));
});

Deno.test("Logger.throttled() writes one line per interval per key and counts the rest", async () => {
  const { log, lines } = logger();
  for (let i = 0; i < 5; i++) log.throttled("a", 40, "warn", "accept failed", { error: "EMFILE" });
  log.throttled("b", 40, "error", "other key");
  equal(lines.length, 2);
  await delay(60);
  log.throttled("a", 40, "warn", "accept failed", { error: "EMFILE" });
  equal(lines.length, 3);
  ok(lines[2]!.endsWith("WARN accept failed error=EMFILE suppressed=4\n"), lines[2]);
});
