/**
 * The file check after a run: the server's data file must hold exactly one line per acked
 * message, client by client, end with a line feed, and pass the verifier (`src/verify.ts`: every
 * line well formed, each client's msg_ids rising).
 *
 * @module
 */

import { verifyFile } from "../../src/verify.ts";

/** Clients named in {@linkcode FileCheck.clientMismatches}, and defects kept as samples. */
const SAMPLES = 3;

/** Result of comparing the data file with the acks. */
export interface FileCheck {
  /** Lines in the data file. */
  lines: number;
  /** Messages acked over all phases. */
  expected: number;
  /** Clients whose line count differs from their acks (the first 3). */
  clientMismatches: { client: number; lines: number; acked: number }[];
  /** Clients whose line count differs from their acks. */
  clientMismatchCount: number;
  /** True when the last byte is not a line feed. */
  tornTail: boolean;
  /**
   * Lines the verifier finds defective (malformed, or an id not above the client's one before),
   * with the first 3 as `line N: what`; present only when there are some.
   */
  defects?: { count: number; samples: string[] };
  /** True when the file holds exactly one good line per acked message, client by client. */
  ok: boolean;
}

/**
 * Checks the data file at `path` against the acks each client got (client_id to acks), with
 * {@linkcode verifyFile}.
 *
 * @example
 * ```ts
 * const check = await checkFile("messages.log", new Map([[1, 100], [2, 100]]));
 * console.log(check.ok ? "OK" : `${check.lines} lines, ${check.expected} acked`);
 * ```
 */
export async function checkFile(
  path: string,
  ackedByClient: ReadonlyMap<number, number>,
): Promise<FileCheck> {
  const report = await verifyFile(path, { maxDefects: SAMPLES + 1 });
  const mismatches: FileCheck["clientMismatches"] = [];
  let mismatchCount = 0;
  const clients = new Set([...report.clients.keys(), ...ackedByClient.keys()]);
  for (const client of [...clients].sort((a, b) => a - b)) {
    const got = report.clients.get(client)?.lines ?? 0;
    const want = ackedByClient.get(client) ?? 0;
    if (got !== want) {
      mismatchCount++;
      if (mismatches.length < SAMPLES) mismatches.push({ client, lines: got, acked: want });
    }
  }
  let expected = 0;
  for (const acked of ackedByClient.values()) expected += acked;
  const tornTail = report.tornBytes > 0;
  // The verifier counts a torn tail as a defect too, after every line's; it is reported apart.
  const lineDefects = report.defectCount - (tornTail ? 1 : 0);
  return {
    lines: report.lines,
    expected,
    clientMismatches: mismatches,
    clientMismatchCount: mismatchCount,
    tornTail,
    ...(lineDefects > 0
      ? {
        defects: {
          count: lineDefects,
          samples: report.defects.slice(0, Math.min(SAMPLES, lineDefects)),
        },
      }
      : {}),
    ok: report.lines === expected && mismatchCount === 0 && !tornTail && lineDefects === 0,
  };
}
