/**
 * External tools in tests: a test file that needs one declares its tests with `ignore: !present`,
 * so where the tool is missing they are reported as ignored (and `.ci/run` fails on that).
 * `deno task test` installs the tools first where it can (`tools/ensure_tools.ts`).
 *
 * @module
 */

import { findBinary, installCommand, type ToolName, TOOLS } from "../../tools/ensure_tools.ts";

export type { ToolName } from "../../tools/ensure_tools.ts";

const announced = new Set<ToolName>();

/**
 * Whether the tool's binary is present; when it is not, prints (once per process) a line starting
 * with `SKIPPED:` that names the tool and the command that installs it.
 *
 * @example
 * ```ts
 * import { requireTool } from "./tools.ts";
 * const present = requireTool("nats-server");
 * Deno.test({ name: "a real cluster elects a leader", ignore: !present, fn: () => {} });
 * ```
 */
export function requireTool(name: ToolName): boolean {
  const tool = TOOLS[name];
  const present = findBinary(tool.binary) !== null;
  if (!present && !announced.has(name)) {
    announced.add(name);
    console.log(
      `SKIPPED: ${name} (${tool.binary}) is missing, so its tests are ignored; ` +
        `install it with: ${installCommand(tool)}`,
    );
  }
  return present;
}
