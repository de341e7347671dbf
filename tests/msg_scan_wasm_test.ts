import { deepStrictEqual } from "node:assert/strict";
import { MSG_SCAN_WASM } from "../src/protocol/msg_scan_wasm.ts";
import { assembleWasm, MSG_SCAN_TARGET } from "../tools/build_line_wasm.ts";

Deno.test("msg_scan_wasm.ts holds exactly what msg_scan.wat assembles to (run `deno task build:wasm`)", async () => {
  deepStrictEqual(await assembleWasm(MSG_SCAN_TARGET), MSG_SCAN_WASM);
});
