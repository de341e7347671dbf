/**
 * The session journal's records and its recovery; the journal file itself is `journal.ts`.
 *
 * The session journal says where each session stands in the data file, kept beside it
 * (`<FILE_NAME>.sessions`) so that WELCOME's `last_msg_id` stays exact across a crash or a
 * restart, and a resend is never written twice.
 *
 * Before a batch's lines are appended at `offset` of the data file, a BATCH record is appended
 * here naming the batch (`offset`, `length`) and, for each session in it, its last msg_id. So
 * every record but the last describes a batch that is wholly in the data file, and the last is
 * checked against the file at start: whole, it counts; torn (a crash mid-write), its lines are
 * moved aside to `<FILE_NAME>.torn` (none was acked) and it does not count; the clients then
 * resend those records, once.
 *
 * Records: `u32 body_length | u32 crc32(body) | body`, integers big-endian; the body starts with
 * its kind:
 * - SNAPSHOT `1 | u64 data_size | u32 tail | u32 n | n × entry`: the whole table, for the data
 *   file when it held `data_size` bytes, the last (up to) 64 of which hash to `tail`. Always the
 *   first record; compaction rewrites the journal as one SNAPSHOT (aside, then renamed over it).
 * - BATCH `2 | u64 offset | u32 length | u32 head | u32 tail | u32 n | n × entry`: a batch about
 *   to be appended; `head` and `tail` hash its first and last (up to) 64 bytes, so that the file
 *   can be checked to hold it, whatever copy of the file it is.
 * - SEAL `3`: every batch before it is wholly in its file (written before a rotation or a reopen
 *   moves to another file).
 * - FILE `4 | u64 data_size | u32 tail`: the batches after it go to another data file, which
 *   then held `data_size` bytes ending as `tail` says.
 * - entry: `u32 client_id | u64 session | u32 last_msg_id`.
 *
 * A batch that was refused leaves its record behind; the next batch is then appended at the same
 * offset, and a BATCH whose offset is below the end of the one before it undoes that one.
 *
 * @module
 */

/** Where one session stands. */
export interface JournalEntry {
  clientId: number;
  session: bigint;
  /** The last msg_id of the session in the data file. */
  lastId: number;
}

/** The data file as the journal sees it: its size, and the hash of its last (up to) 64 bytes. */
export interface DataFileState {
  size: number;
  tail: number;
}

/** The data file at recovery: its size, and a way to read parts of it. */
export interface DataFileReader {
  size: number;
  /** Reads `length` bytes at `offset` (within the file). */
  read(offset: number, length: number): Uint8Array;
}

/** Bytes hashed at each end of a batch, and at the end of the file. */
export const FINGERPRINT_BYTES = 64;

/**
 * The hash the journal keeps of up to 64 bytes: CRC-32 of them.
 *
 * @example
 * ```ts
 * import { fingerprint } from "./journal_format.ts";
 * fingerprint(new TextEncoder().encode("1 1 a b\n"));
 * ```
 */
export function fingerprint(bytes: Uint8Array): number {
  return crc32(bytes);
}

/** What {@linkcode recoverJournal} found. */
export interface Recovered {
  /** Sessions and where they stand, by `client_id/session`. */
  table: Map<string, JournalEntry>;
  /** If set, the data file ends in a torn batch from here: cut it back to this size. */
  cutBackTo: number | null;
  /** Bytes of the journal that are sound (a torn or damaged tail follows). */
  soundBytes: number;
  /** What was not as expected, for the log; empty when the journal was whole and matched. */
  problems: string[];
  /** False when the journal could not be trusted at all: the table is empty. */
  trusted: boolean;
}

const SNAPSHOT = 1;
const BATCH = 2;
const SEAL = 3;
const FILE = 4;
const ENTRY_BYTES = 16;
/** A BATCH record without its entries: frame header, kind, offset, length, head, tail, n. */
const BATCH_RECORD_BYTES = 8 + 21 + 4;
/** A record longer than this is damage, not a record. */
const MAX_RECORD_BYTES = 256 * 1024 * 1024;

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/**
 * CRC-32 (IEEE) of `bytes`.
 *
 * @example
 * ```ts
 * import { crc32 } from "./journal_format.ts";
 * crc32(new TextEncoder().encode("123456789")); // 0xcbf43926
 * ```
 */
export function crc32(bytes: Uint8Array, start = 0, end = bytes.length): number {
  let c = 0xffffffff;
  for (let i = start; i < end; i++) c = CRC_TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** The table key of a session. */
export function sessionKey(clientId: number, session: bigint): string {
  return `${clientId}/${session}`;
}

function frame(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + body.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, body.length);
  view.setUint32(4, crc32(body));
  out.set(body, 8);
  return out;
}

function entriesFrame(head: Uint8Array, entries: Iterable<JournalEntry>, n: number) {
  const body = new Uint8Array(head.length + 4 + n * ENTRY_BYTES);
  body.set(head);
  const view = new DataView(body.buffer);
  let at = head.length;
  view.setUint32(at, n);
  at += 4;
  for (const e of entries) {
    view.setUint32(at, e.clientId);
    view.setBigUint64(at + 4, e.session);
    view.setUint32(at + 12, e.lastId);
    at += ENTRY_BYTES;
  }
  return frame(body);
}

function stateHead(kind: number, file: DataFileState): Uint8Array {
  const head = new Uint8Array(13);
  const view = new DataView(head.buffer);
  head[0] = kind;
  view.setBigUint64(1, BigInt(file.size));
  view.setUint32(9, file.tail);
  return head;
}

/**
 * Encodes a SNAPSHOT record of `table` for the data file as `file` says it is.
 *
 * @example
 * ```ts
 * import { encodeSnapshot } from "./journal_format.ts";
 * encodeSnapshot(new Map(), { size: 0, tail: 0 }).length; // 8 + 17
 * ```
 */
export function encodeSnapshot(
  table: ReadonlyMap<string, JournalEntry>,
  file: DataFileState,
): Uint8Array {
  return entriesFrame(stateHead(SNAPSHOT, file), table.values(), table.size);
}

/**
 * Encodes a BATCH record: `bytes` about to be appended at `offset`, and the sessions in them
 * with their last msg_ids.
 *
 * @example
 * ```ts
 * import { encodeBatch } from "./journal_format.ts";
 * const lines = new TextEncoder().encode("1 1 a b\n");
 * encodeBatch(0, lines, [{ clientId: 1, session: 7n, lastId: 1 }]);
 * ```
 */
export function encodeBatch(
  offset: number,
  bytes: Uint8Array,
  entries: readonly JournalEntry[],
): Uint8Array {
  return new BatchRecordEncoder(entries.length).encode(offset, bytes, entries);
}

/**
 * Encodes BATCH records (as {@linkcode encodeBatch} does) into one buffer it reuses, growing it
 * when a record needs more: the writer's path allocates nothing per batch for its record (a typed
 * array costs about a microsecond to allocate here, several times the rest of the encoding).
 *
 * @example
 * ```ts
 * import { BatchRecordEncoder } from "./journal_format.ts";
 * const encoder = new BatchRecordEncoder();
 * const lines = new TextEncoder().encode("1 1 a b\n");
 * const record = encoder.encode(0, lines, [{ clientId: 1, session: 7n, lastId: 1 }]);
 * // `record` is valid until the next encode()
 * ```
 */
export class BatchRecordEncoder {
  #buf: Uint8Array;
  #view: DataView;

  /** Starts with room for a record of `entries` sessions. */
  constructor(entries = 4) {
    this.#buf = new Uint8Array(BATCH_RECORD_BYTES + entries * ENTRY_BYTES);
    this.#view = new DataView(this.#buf.buffer);
  }

  /** The record of `bytes` at `offset` with `entries`: a view valid until the next call. */
  encode(offset: number, bytes: Uint8Array, entries: readonly JournalEntry[]): Uint8Array {
    const n = entries.length;
    const length = BATCH_RECORD_BYTES + n * ENTRY_BYTES;
    if (length > this.#buf.length) {
      this.#buf = new Uint8Array(Math.max(length, 2 * this.#buf.length));
      this.#view = new DataView(this.#buf.buffer);
    }
    const buf = this.#buf;
    const view = this.#view;
    const end = bytes.length;
    // The frame header (8 bytes), then the body: the head (21 bytes), n, the entries.
    buf[8] = BATCH;
    view.setBigUint64(9, BigInt(offset));
    view.setUint32(17, end);
    view.setUint32(21, crc32(bytes, 0, Math.min(FINGERPRINT_BYTES, end)));
    view.setUint32(25, crc32(bytes, Math.max(0, end - FINGERPRINT_BYTES), end));
    view.setUint32(29, n);
    let at = 33;
    for (let i = 0; i < n; i++, at += ENTRY_BYTES) {
      const e = entries[i]!;
      view.setUint32(at, e.clientId);
      view.setBigUint64(at + 4, e.session);
      view.setUint32(at + 12, e.lastId);
    }
    view.setUint32(0, length - 8);
    view.setUint32(4, crc32(buf, 8, length));
    return buf.subarray(0, length);
  }
}

/**
 * Encodes a SEAL record: every batch recorded so far is wholly in its file.
 *
 * @example
 * ```ts
 * import { encodeSeal } from "./journal_format.ts";
 * encodeSeal().length; // 9
 * ```
 */
export function encodeSeal(): Uint8Array {
  return frame(new Uint8Array([SEAL]));
}

/**
 * Encodes a FILE record: the batches after it go to another data file, now as `file` says.
 *
 * @example
 * ```ts
 * import { encodeFile } from "./journal_format.ts";
 * encodeFile({ size: 0, tail: 0 }).length; // 21
 * ```
 */
export function encodeFile(file: DataFileState): Uint8Array {
  return frame(stateHead(FILE, file));
}

interface Pending {
  offset: number;
  length: number;
  head: number;
  tail: number;
  entries: JournalEntry[];
}

function readEntries(view: DataView, at: number, end: number): JournalEntry[] | null {
  if (at + 4 > end) return null;
  const n = view.getUint32(at);
  at += 4;
  if (at + n * ENTRY_BYTES !== end) return null;
  const out: JournalEntry[] = [];
  for (let i = 0; i < n; i++, at += ENTRY_BYTES) {
    out.push({
      clientId: view.getUint32(at),
      session: view.getBigUint64(at + 4),
      lastId: view.getUint32(at + 12),
    });
  }
  return out;
}

/** The hash of the data file's (up to) 64 bytes before `end`. */
function tailOf(file: DataFileReader, end: number): number {
  const from = Math.max(0, end - FINGERPRINT_BYTES);
  return fingerprint(file.read(from, end - from));
}

/** Whether `file` holds the batch's last (up to) 64 bytes where the batch ends. */
function tailMatches(file: DataFileReader, p: Pending): boolean {
  const n = Math.min(FINGERPRINT_BYTES, p.length);
  const end = p.offset + p.length;
  return end <= file.size && fingerprint(file.read(end - n, n)) === p.tail;
}

/** Whether `file` holds, from `p.offset`, bytes that hash as the batch's head. */
function headMatches(file: DataFileReader, p: Pending): boolean {
  const n = Math.min(FINGERPRINT_BYTES, p.length);
  return p.offset + n <= file.size && fingerprint(file.read(p.offset, n)) === p.head;
}

/**
 * Rebuilds the session table from the journal's bytes, checking its last batch against the data
 * file as it is now (after its torn last line, if any, was moved aside). Reads the file only
 * where it checks it.
 *
 * @example
 * ```ts
 * import { encodeBatch, encodeSnapshot, recoverJournal } from "./journal_format.ts";
 * const lines = new TextEncoder().encode("1 1 a b\n");
 * const bytes = new Uint8Array([
 *   ...encodeSnapshot(new Map(), { size: 0, tail: 0 }),
 *   ...encodeBatch(0, lines, [{ clientId: 1, session: 7n, lastId: 1 }]),
 * ]);
 * const file = { size: lines.length, read: (o: number, n: number) => lines.subarray(o, o + n) };
 * recoverJournal(bytes, file).table.get("1/7")?.lastId; // 1
 * ```
 */
export function recoverJournal(bytes: Uint8Array, current: DataFileReader): Recovered {
  const problems: string[] = [];
  const table = new Map<string, JournalEntry>();
  const apply = (entries: JournalEntry[]) => {
    for (const e of entries) {
      const key = sessionKey(e.clientId, e.session);
      table.delete(key); // re-inserted last: the table is kept in order of last write
      table.set(key, e);
    }
  };
  const untrusted = (why: string, soundBytes: number): Recovered => ({
    table: new Map(),
    cutBackTo: null,
    soundBytes,
    problems: [...problems, why],
    trusted: false,
  });
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  let first = true;
  /** The data file as the last SNAPSHOT or FILE found it, or null after a SEAL. */
  let reference: DataFileState | null = null;
  const pending: Pending[] = [];
  while (at + 8 <= bytes.length) {
    const length = view.getUint32(at);
    if (length < 1 || length > MAX_RECORD_BYTES || at + 8 + length > bytes.length) break;
    const body = bytes.subarray(at + 8, at + 8 + length);
    if (crc32(body) !== view.getUint32(at + 4)) break;
    const b = new DataView(body.buffer, body.byteOffset, body.length);
    const kind = body[0];
    if (first !== (kind === SNAPSHOT)) break; // a SNAPSHOT first, and only first
    if (kind === SNAPSHOT) {
      if (length < 17) break;
      const entries = readEntries(b, 13, length);
      if (entries === null) break;
      apply(entries);
      reference = { size: Number(b.getBigUint64(1)), tail: b.getUint32(9) };
    } else if (kind === BATCH) {
      if (length < 25) break;
      const entries = readEntries(b, 21, length);
      if (entries === null) break;
      const offset = Number(b.getBigUint64(1));
      // A batch at or below the end of the one before undoes it: that one was refused.
      while (pending.length > 0 && pending.at(-1)!.offset + pending.at(-1)!.length > offset) {
        pending.pop();
      }
      pending.push({
        offset,
        length: b.getUint32(9),
        head: b.getUint32(13),
        tail: b.getUint32(17),
        entries,
      });
    } else if (kind === SEAL || kind === FILE) {
      if (length !== (kind === SEAL ? 1 : 13)) break;
      for (const p of pending) apply(p.entries);
      pending.length = 0;
      reference = kind === FILE ? { size: Number(b.getBigUint64(1)), tail: b.getUint32(9) } : null;
    } else {
      break;
    }
    first = false;
    at += 8 + length;
  }
  if (first) {
    return untrusted(
      bytes.length === 0 ? "the journal is empty" : "the journal has no snapshot",
      0,
    );
  }
  if (at < bytes.length) problems.push(`${bytes.length - at} bytes of a torn or damaged tail`);
  // Is the data file the one the journal last wrote to (or a copy of it)? A file shorter than
  // the journal knew would make it claim records that are not there: resends would be refused.
  if (reference !== null) {
    if (current.size < reference.size) {
      return untrusted(
        `the data file has ${current.size} bytes, fewer than the ${reference.size} the journal knew`,
        at,
      );
    }
    if (tailOf(current, reference.size) !== reference.tail) {
      problems.push("the data file is not the one the journal last wrote to");
      reference = null; // nothing below can be checked against it
    }
  }
  let cutBackTo: number | null = null;
  const last = pending.pop();
  for (const p of pending) apply(p.entries);
  if (last !== undefined) {
    const end = last.offset + last.length;
    if (end <= current.size && headMatches(current, last) && tailMatches(current, last)) {
      apply(last.entries);
    } else if (last.offset === current.size && reference !== null) {
      // Recorded, but not one byte of it reached the data file: as if never begun.
    } else if (
      reference !== null && last.offset < current.size && current.size < end &&
      (current.size - last.offset < Math.min(FINGERPRINT_BYTES, last.length) ||
        headMatches(current, last))
    ) {
      cutBackTo = last.offset; // torn: its lines were never acked
      problems.push(
        `the last batch (${last.length} bytes at ${last.offset}) is torn: ${
          current.size - last.offset
        } bytes of it are moved aside`,
      );
    } else {
      problems.push("the data file does not hold the journal's last batch: it is not counted");
    }
  }
  return { table, cutBackTo, soundBytes: at, problems, trusted: true };
}
