/**
 * README.md's configuration table and the shipped app.conf repeat the keys of the settings table
 * in `src/config/settings.ts`; these tests keep them in step. Each reads the file as text with its
 * own small parser (not the one under test), and a failure names the keys missing or extra.
 * (That app.conf's values equal DEFAULTS is checked in config_test.ts.)
 */

import { equal, ok } from "node:assert/strict";
import { CONFIG_KEYS, DEFAULTS } from "../src/config.ts";

const README = new URL("../README.md", import.meta.url).pathname;
const APP_CONF = new URL("../app.conf", import.meta.url).pathname;

/** One row of README's configuration table: its keys (one row may list two) and default cell. */
interface Row {
  keys: string[];
  defaultCell: string;
  line: number;
}

function cells(line: string): string[] {
  return line.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((c) => c.trim());
}

/** The rows of the table under "## Configuration" whose first column is `key`. */
function readmeRows(text: string): Row[] {
  const lines = text.split(/\r?\n/);
  const section = lines.indexOf("## Configuration");
  ok(section >= 0, `${README} has no "## Configuration" heading`);
  let i = section + 1;
  while (i < lines.length && !lines[i]!.startsWith("## ")) {
    if (lines[i]!.startsWith("|") && cells(lines[i]!)[0] === "key") break;
    i++;
  }
  ok(
    i < lines.length && lines[i]!.startsWith("|"),
    `${README} has no table whose first column is "key" under "## Configuration"`,
  );
  const rows: Row[] = [];
  for (i += 2; i < lines.length && lines[i]!.startsWith("|"); i++) {
    const [first = "", defaultCell = ""] = cells(lines[i]!);
    const keys = [...first.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);
    ok(keys.length > 0, `${README} line ${i + 1}: no \`KEY\` in the first column: ${lines[i]}`);
    rows.push({ keys, defaultCell, line: i + 1 });
  }
  return rows;
}

/** The keys of app.conf's `KEY=VALUE` lines, in order; comments and blank lines skipped. */
function appConfKeys(text: string): string[] {
  return text.split(/\r?\n/).map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#") && !line.startsWith(";"))
    .map((line) => line.split("=")[0]!.trim());
}

/** What is wrong with `listed` as a list of exactly the settings' keys; empty when nothing. */
function keyProblems(listed: string[], where: string): string[] {
  const quote = (keys: string[]) => keys.map((k) => `"${k}"`).join(", ");
  const known: readonly string[] = CONFIG_KEYS;
  const missing = known.filter((k) => !listed.includes(k));
  const extra = listed.filter((k) => !known.includes(k));
  const twice = listed.filter((k, i) => listed.indexOf(k) !== i);
  const problems: string[] = [];
  if (missing.length > 0) problems.push(`${where} lacks ${quote(missing)}`);
  if (extra.length > 0) problems.push(`${where} lists ${quote(extra)}, not in SETTINGS`);
  if (twice.length > 0) problems.push(`${where} lists ${quote(twice)} more than once`);
  return problems;
}

Deno.test("README's configuration table lists exactly the keys of the settings table", async () => {
  const rows = readmeRows(await Deno.readTextFile(README));
  const problems = keyProblems(rows.flatMap((row) => row.keys), "README.md's configuration table");
  ok(problems.length === 0, problems.join("\n"));
});

Deno.test("README's configuration table gives each key's default", async () => {
  const defaults: Readonly<Record<string, string | number>> = DEFAULTS;
  for (const row of readmeRows(await Deno.readTextFile(README))) {
    for (const key of row.keys) {
      const value = defaults[key];
      if (value === undefined) continue; // an unknown key: the test above names it
      const expected = value === "" ? "empty" : `\`${value}\``;
      equal(
        row.defaultCell,
        expected,
        `README.md line ${row.line}: the default of ${key} is ${row.defaultCell}, not ${expected}`,
      );
    }
  }
});

Deno.test("app.conf lists exactly the keys of the settings table", async () => {
  const problems = keyProblems(appConfKeys(await Deno.readTextFile(APP_CONF)), "app.conf");
  ok(problems.length === 0, problems.join("\n"));
});
