import { deepStrictEqual } from "node:assert/strict";
import { LINE_WASM } from "../src/server/line_wasm.ts";
import { assembleLineWasm } from "../tools/build_line_wasm.ts";

Deno.test("line_wasm.ts holds exactly what line.wat assembles to (run `deno task build:wasm`)", async () => {
  deepStrictEqual(await assembleLineWasm(), LINE_WASM);
});
