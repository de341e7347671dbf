/**
 * The file check after a run: the server's data file must hold exactly one line per acked
 * message, client by client, end with a line feed, and pass the verifier (`src/verify.ts`: every
 * line well formed, each client's msg_ids rising).
 *
 * Given each client's ledger (what it sent, what was refused), the check goes down to msg_ids:
 * every acked msg_id once, none twice, none that was not sent; a refused (NACKed) one may be
 * there or not, since a store that timed out may have kept it all the same. The cluster preset
 * checks each stream's export this way, failover and all.
 *
 * @module
 */

import { readWholeLines } from "../../src/io/whole_lines.ts";
import { LineScan, verifyFile } from "../../src/verify.ts";

/** Clients named in {@linkcode FileCheck.clientMismatches}, and defects kept as samples. */
const SAMPLES = 3;

const LF = 0x0a;

/** What one client sent and what was refused, for the check of each msg_id. */
export interface ClientLedger {
  /** WELCOME's last_msg_id: the client sent the msg_ids above it. */
  firstId: number;
  /** Every msg_id up to this one was acked or refused; those above it were left unsettled. */
  settledThrough: number;
  /** The highest msg_id sent. */
  lastSent: number;
  /** The msg_ids refused with NACK, in any order. */
  refused: readonly number[];
  /**
   * The msg_ids given up when the session was resumed (in flight, above WELCOME's last_msg_id),
   * as ranges; absent: none.
   */
  abandoned?: readonly { first: number; last: number }[];
}

/** The check of each msg_id against the ledgers (see {@linkcode checkFile}). */
export interface IdCheck {
  /** Acked msg_ids not in the file. */
  lost: number;
  /** Lines whose msg_id came before in the file (a record stored twice, or out of order). */
  doubled: number;
  /** Lines with a msg_id the client never sent, or of a client not in the ledgers. */
  unexpected: number;
  /**
   * Refused or abandoned msg_ids in the file all the same (allowed: a store that timed out may
   * have kept them).
   */
  unackedKept: number;
  /** Refused msg_ids in all. */
  refused: number;
  /** Abandoned msg_ids in all. */
  abandoned: number;
  /** The first 3 of the above, as text. */
  samples: string[];
}

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
  /** The check of each msg_id, when ledgers were given. */
  ids?: IdCheck;
  /** True when the file holds exactly one good line per acked message, client by client. */
  ok: boolean;
}

/** Options of {@linkcode checkFile}. */
export interface CheckFileOptions {
  /**
   * client_id to its ledger: check each msg_id, and let refused ones be in the file or not (the
   * count of lines may then be above the acks).
   */
  ledgers?: ReadonlyMap<number, ClientLedger>;
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
  options: CheckFileOptions = {},
): Promise<FileCheck> {
  const report = await verifyFile(path, { maxDefects: SAMPLES + 1 });
  const ledgers = options.ledgers;
  const ids = ledgers === undefined ? undefined : await checkIds(path, ledgers);
  const mismatches: FileCheck["clientMismatches"] = [];
  let mismatchCount = 0;
  const clients = new Set([...report.clients.keys(), ...ackedByClient.keys()]);
  for (const client of [...clients].sort((a, b) => a - b)) {
    const got = report.clients.get(client)?.lines ?? 0;
    const want = ackedByClient.get(client) ?? 0;
    // With a ledger, the msg_id check says what is wrong; the count may differ by refused ones.
    if (ledgers?.has(client) === true) continue;
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
    ...(ids !== undefined ? { ids } : {}),
    ok:
      (ids === undefined
        ? report.lines === expected
        : ids.lost === 0 && ids.doubled === 0 && ids.unexpected === 0) &&
      mismatchCount === 0 && !tornTail && lineDefects === 0,
  };
}

/** One client's walk through its msg_ids, in file order. */
interface IdWalk {
  ledger: ClientLedger;
  refused: Set<number>;
  abandoned: readonly { first: number; last: number }[];
  /** The lowest msg_id not yet seen or passed. */
  next: number;
}

/**
 * Reads the file's lines (those the verifier accepts; it reports the others) and checks each
 * client's msg_ids against its ledger: each acked one once, in order, none unsent.
 */
async function checkIds(
  path: string,
  ledgers: ReadonlyMap<number, ClientLedger>,
): Promise<IdCheck> {
  const check: IdCheck = {
    lost: 0,
    doubled: 0,
    unexpected: 0,
    unackedKept: 0,
    refused: 0,
    abandoned: 0,
    samples: [],
  };
  const sample = (text: string) => {
    if (check.samples.length < SAMPLES) check.samples.push(text);
  };
  const walks = new Map<number, IdWalk>();
  for (const [client, ledger] of ledgers) {
    const abandoned = ledger.abandoned ?? [];
    walks.set(client, {
      ledger,
      refused: new Set(ledger.refused),
      abandoned,
      next: ledger.firstId + 1,
    });
    check.refused += ledger.refused.length;
    for (const r of abandoned) check.abandoned += r.last - r.first + 1;
  }
  const unacked = (walk: IdWalk, id: number) =>
    walk.refused.has(id) || walk.abandoned.some((r) => r.first <= id && id <= r.last);
  /** The msg_ids from `walk.next` up to `below` are not in the file: acked ones are lost. */
  const skip = (client: number, walk: IdWalk, below: number) => {
    const last = Math.min(below - 1, walk.ledger.settledThrough);
    for (let id = walk.next; id <= last; id++) {
      if (unacked(walk, id)) continue;
      check.lost++;
      sample(`client ${client} msg_id ${id} acked, not in the file`);
    }
  };
  await scanIds(path, (client, id) => {
    const walk = walks.get(client);
    if (walk === undefined || id <= walk.ledger.firstId || id > walk.ledger.lastSent) {
      check.unexpected++;
      sample(`client ${client} msg_id ${id} was not sent`);
      return;
    }
    if (id < walk.next) {
      check.doubled++;
      sample(`client ${client} msg_id ${id} again after ${walk.next - 1}`);
      return;
    }
    skip(client, walk, id);
    if (unacked(walk, id)) check.unackedKept++;
    walk.next = id + 1;
  });
  for (const [client, walk] of walks) skip(client, walk, Infinity);
  return check;
}

/** Calls `visit` with the client_id and msg_id of each well-formed line of the file. */
async function scanIds(path: string, visit: (client: number, id: number) => void): Promise<void> {
  const scan = new LineScan();
  await readWholeLines(path, (chunk) => {
    const end = chunk.length;
    let start = 0;
    while (start < end) {
      let nl = scan.scan(chunk, start, end);
      // A malformed line is skipped here: the verifier reports it.
      if (nl < 0) nl = chunk.indexOf(LF, start);
      else visit(scan.clientId, scan.msgId);
      start = nl + 1;
    }
  });
}
