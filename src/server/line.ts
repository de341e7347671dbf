/**
 * The file format: one record per line, `<client_id> <msg_id> <name> <payload>\n`, ids in
 * decimal. In the payload `\` is written as `\\`, line feed as `\n` and carriage return as `\r`;
 * every other byte is written as it is, so a line can be read back to the original bytes.
 *
 * {@linkcode LineBuffer} formats straight into one growing buffer per batch, with no object or
 * string per record; {@linkcode parseLine} reads a line back (for tests and the verifier).
 *
 * @module
 */

const SPACE = 0x20;
const LF = 0x0a;
const CR = 0x0d;
const BACKSLASH = 0x5c;
const LETTER_N = 0x6e;
const LETTER_R = 0x72;
const DIGIT_0 = 0x30;
/** Payloads at least this long are scanned for escapes before the byte loop. */
const SCAN_MIN = 16;

/**
 * A growable byte buffer that records are formatted into.
 *
 * @example
 * ```ts
 * const out = new LineBuffer(1024);
 * const name = new TextEncoder().encode("client_1");
 * const payload = new TextEncoder().encode("a\nb");
 * out.writeRecord(1, 7, name, 0, name.length, payload, 0, payload.length);
 * new TextDecoder().decode(out.bytes.subarray(0, out.length)); // "1 7 client_1 a\\nb\n"
 * ```
 */
export class LineBuffer {
  /** The bytes; valid up to `length`. Replaced when the buffer grows. */
  bytes: Uint8Array;
  /** Bytes written so far. */
  length = 0;

  constructor(initialBytes = 64 * 1024) {
    this.bytes = new Uint8Array(initialBytes);
  }

  #view: DataView | null = null;
  #viewOf: Uint8Array | null = null;

  /**
   * Whether `src[start, end)` has no byte to escape, checked four bytes at a time. The DataView
   * is made once per source array (one per queue entry), not per record.
   */
  #isClean(src: Uint8Array, start: number, end: number): boolean {
    if (this.#viewOf !== src) {
      this.#view = new DataView(src.buffer, src.byteOffset, src.byteLength);
      this.#viewOf = src;
    }
    const view = this.#view!;
    let i = start;
    for (; i + 4 <= end; i += 4) {
      const v = view.getUint32(i);
      // Per byte, "equals c" is "v ^ c has a zero byte": the classic has-zero-byte bit trick.
      const a = v ^ 0x5c5c5c5c, b = v ^ 0x0a0a0a0a, c = v ^ 0x0d0d0d0d;
      if (
        (((a - 0x01010101) & ~a) | ((b - 0x01010101) & ~b) | ((c - 0x01010101) & ~c)) &
        0x80808080
      ) return false;
    }
    for (; i < end; i++) {
      const c = src[i]!;
      if (c === BACKSLASH || c === LF || c === CR) return false;
    }
    return true;
  }

  /** Forgets the content, keeping the memory. */
  clear(): void {
    this.length = 0;
  }

  /** Makes room for `n` more bytes. */
  reserve(n: number): void {
    const need = this.length + n;
    if (need <= this.bytes.length) return;
    let size = Math.max(this.bytes.length * 2, 1);
    while (size < need) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.bytes.subarray(0, this.length));
    this.bytes = grown;
  }

  /** Shrinks back to `bytes` of capacity if it grew past it and is empty. */
  shrinkTo(bytes: number): void {
    if (this.length === 0 && this.bytes.length > bytes) this.bytes = new Uint8Array(bytes);
  }

  /**
   * Appends one record line. `name` is `src[nameStart, nameEnd)` and the payload
   * `payload[payloadStart, payloadEnd)`; both are copied, the payload escaped.
   */
  writeRecord(
    clientId: number,
    msgId: number,
    name: Uint8Array,
    nameStart: number,
    nameEnd: number,
    payload: Uint8Array,
    payloadStart: number,
    payloadEnd: number,
  ): void {
    // 10 digits per id, 3 spaces, a line feed, and every payload byte possibly escaped.
    this.reserve(24 + (nameEnd - nameStart) + 2 * (payloadEnd - payloadStart));
    const out = this.bytes;
    let p = writeDecimal(out, this.length, clientId);
    out[p++] = SPACE;
    p = writeDecimal(out, p, msgId);
    out[p++] = SPACE;
    for (let i = nameStart; i < nameEnd; i++) out[p++] = name[i]!;
    out[p++] = SPACE;
    const n = payloadEnd - payloadStart;
    if (n >= SCAN_MIN && this.#isClean(payload, payloadStart, payloadEnd)) {
      // Nothing to escape: scan four bytes at a time, then one native copy (1.1x the byte loop
      // for 100 B payloads, old and new writeRecord benched side by side in one process).
      out.set(payload.subarray(payloadStart, payloadEnd), p);
      p += n;
    } else {
      for (let i = payloadStart; i < payloadEnd; i++) {
        const c = payload[i]!;
        if (c === BACKSLASH) {
          out[p++] = BACKSLASH;
          out[p++] = BACKSLASH;
        } else if (c === LF) {
          out[p++] = BACKSLASH;
          out[p++] = LETTER_N;
        } else if (c === CR) {
          out[p++] = BACKSLASH;
          out[p++] = LETTER_R;
        } else {
          out[p++] = c;
        }
      }
    }
    out[p++] = LF;
    this.length = p;
  }
}

/** Writes `n` (a u32) in decimal at `offset`; returns the offset after the last digit. */
function writeDecimal(out: Uint8Array, offset: number, n: number): number {
  if (n < 10) {
    out[offset] = DIGIT_0 + n;
    return offset + 1;
  }
  const digits = n < 100
    ? 2
    : n < 1e3
    ? 3
    : n < 1e4
    ? 4
    : n < 1e5
    ? 5
    : n < 1e6
    ? 6
    : n < 1e7
    ? 7
    : n < 1e8
    ? 8
    : n < 1e9
    ? 9
    : 10;
  let p = offset + digits;
  // `>>> 0` truncates like Math.floor for any u32, without a call.
  for (let m = n; m > 0;) {
    const q = (m / 10) >>> 0;
    out[--p] = DIGIT_0 + m - q * 10;
    m = q;
  }
  return offset + digits;
}

/** One record read back from a line of the file. */
export interface ParsedLine {
  clientId: number;
  msgId: number;
  /** The name as written (UTF-8). */
  name: string;
  /** The payload with the escapes undone: the bytes the client sent. */
  payload: Uint8Array;
}

const decoder = new TextDecoder();
const MAX_U32 = 0xffffffff;

function parseId(bytes: Uint8Array, start: number, end: number): number {
  if (end === start || end - start > 10) return -1;
  if (end - start > 1 && bytes[start] === DIGIT_0) return -1;
  let n = 0;
  for (let i = start; i < end; i++) {
    const d = bytes[i]! - DIGIT_0;
    if (d < 0 || d > 9) return -1;
    n = n * 10 + d;
  }
  return n > MAX_U32 ? -1 : n;
}

/**
 * Parses one line of the file, without its line feed. Throws a `SyntaxError` naming the defect
 * if the line is not a well-formed record.
 *
 * @example
 * ```ts
 * const rec = parseLine(new TextEncoder().encode("1 2 client_1 hello"));
 * rec.msgId; // 2
 * ```
 */
export function parseLine(line: Uint8Array): ParsedLine {
  const s1 = line.indexOf(SPACE);
  const s2 = s1 < 0 ? -1 : line.indexOf(SPACE, s1 + 1);
  const s3 = s2 < 0 ? -1 : line.indexOf(SPACE, s2 + 1);
  if (s3 < 0) throw new SyntaxError("Cannot parse line: fewer than 4 fields");
  const clientId = parseId(line, 0, s1);
  if (clientId < 0) throw new SyntaxError("Cannot parse line: client_id is not a u32 in decimal");
  const msgId = parseId(line, s1 + 1, s2);
  if (msgId < 0) throw new SyntaxError("Cannot parse line: msg_id is not a u32 in decimal");
  if (s3 === s2 + 1) throw new SyntaxError("Cannot parse line: the name is empty");
  for (let i = s2 + 1; i < s3; i++) {
    if (line[i]! < 0x21 || line[i] === 0x7f) {
      throw new SyntaxError("Cannot parse line: the name has a control character");
    }
  }
  const payload = new Uint8Array(line.length - s3 - 1);
  let p = 0;
  for (let i = s3 + 1; i < line.length; i++) {
    const c = line[i]!;
    if (c === LF || c === CR) throw new SyntaxError("Cannot parse line: raw line break in payload");
    if (c !== BACKSLASH) {
      payload[p++] = c;
      continue;
    }
    const e = line[++i];
    if (e === BACKSLASH) payload[p++] = BACKSLASH;
    else if (e === LETTER_N) payload[p++] = LF;
    else if (e === LETTER_R) payload[p++] = CR;
    else throw new SyntaxError(`Cannot parse line: bad escape at byte ${i - 1}`);
  }
  return {
    clientId,
    msgId,
    name: decoder.decode(line.subarray(s2 + 1, s3)),
    payload: payload.subarray(0, p),
  };
}

/**
 * Splits file content into lines and parses each; throws if the content does not end with a
 * line feed (a torn last line) or any line is malformed.
 *
 * @example
 * ```ts
 * const records = parseFile(await Deno.readFile("messages.log"));
 * ```
 */
export function parseFile(content: Uint8Array): ParsedLine[] {
  const records: ParsedLine[] = [];
  let start = 0;
  while (start < content.length) {
    const end = content.indexOf(LF, start);
    if (end < 0) throw new SyntaxError(`Cannot parse file: torn last line at byte ${start}`);
    try {
      records.push(parseLine(content.subarray(start, end)));
    } catch (e) {
      throw new SyntaxError(`${(e as Error).message} (line ${records.length + 1})`);
    }
    start = end + 1;
  }
  return records;
}
