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

import { readU32 } from "../protocol/frames.ts";
import { LINE_WASM } from "./line_wasm.ts";

const SPACE = 0x20;
const LF = 0x0a;
const CR = 0x0d;
const BACKSLASH = 0x5c;
const LETTER_N = 0x6e;
const LETTER_R = 0x72;
const DIGIT_0 = 0x30;
const PAGE_BYTES = 64 * 1024;
/** Spare bytes after the output and after the staged source: line.wat copies 16 at a time. */
const SPARE = 32;
/** A line's bytes beyond its name and payload: two u32 ids in decimal, three spaces, a LF. */
const LINE_OVERHEAD = 24;
/** Room kept for staged sources at first; it grows for bigger ones. */
const INITIAL_STAGE_BYTES = 64 * 1024;

/** No limit, for {@linkcode LineBuffer.writeFrames}: the largest offset line.wat takes. */
const NO_LIMIT = 0x7fffffff;

/** `n` as line.wat takes it: within [`least`, NO_LIMIT], Infinity as NO_LIMIT, NaN as `least`. */
function limit(n: number, least: number): number {
  return n >= NO_LIMIT ? NO_LIMIT : n > least ? Math.floor(n) : least;
}

/** Why {@linkcode LineBuffer.writeFrames} stopped. */
export const Stopped = {
  /** The staged frames ran out. */
  END: 0,
  /** `maxRecords` lines, or `fullAt` bytes: the batch is full. */
  FULL: 1,
  /** The next line might take the lines past `fileRoom` (never reported for an empty buffer). */
  FILE_ROOM: 3,
} as const;
/** Internal to writeFrames: the output needs room first. */
const NO_ROOM = 2;
/** Internal to writeFrames: a frame does not fit in the staged bytes. */
const MALFORMED = 4;

// Compiled once; each LineBuffer instantiates it with a memory of its own.
const lineModule = compileLineModule();

function compileLineModule(): WebAssembly.Module {
  try {
    return new WebAssembly.Module(LINE_WASM);
  } catch (e) {
    throw new Error(
      "Cannot load the line formatter (src/server/line.wat): it needs WebAssembly SIMD, which " +
        `this CPU or runtime lacks (on x86-64 it needs SSE4.1): ${(e as Error).message}`,
    );
  }
}

interface LineExports {
  memory: WebAssembly.Memory;
  frames(
    at: number,
    clientId: number,
    src: number,
    srcEnd: number,
    maxRecords: number,
    fullAt: number,
    room: number,
    fileRoom: number,
  ): number;
  at: WebAssembly.Global;
  length: WebAssembly.Global;
  records: WebAssembly.Global;
  firstId: WebAssembly.Global;
  lastId: WebAssembly.Global;
  line(
    at: number,
    clientId: number,
    msgId: number,
    nameStart: number,
    nameEnd: number,
    payloadEnd: number,
  ): number;
}

/**
 * A growable byte buffer that records are formatted into. It lives in the memory of its own
 * instance of line.wat: a source (the frames of one queue entry) is copied in once with
 * {@linkcode LineBuffer.stage}, then all its records are formatted in one call with
 * {@linkcode LineBuffer.writeFrames} (the writer's way), or one by one with
 * {@linkcode LineBuffer.writeStaged}.
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
  /** Bytes written so far, from offset 0 of `bytes`. */
  length = 0;
  /** Why the last {@linkcode LineBuffer.writeFrames} stopped: a value of {@linkcode Stopped}. */
  stopped: number = Stopped.END;
  /** Lines the last {@linkcode LineBuffer.writeFrames} wrote. */
  records = 0;
  /** The msg_id of its first line (when it wrote any). */
  firstId = 0;
  /** The msg_id of its last line (when it wrote any). */
  lastId = 0;
  #exports!: LineExports;
  #memory!: Uint8Array;
  /** Output room: lines go in [0, capacity), then SPARE bytes, then the staged source. */
  #capacity = 0;
  #stageLength = 0;
  /** The array staged last, while its copy is in place. */
  #staged: Uint8Array | null = null;

  constructor(initialBytes = 64 * 1024) {
    this.#instantiate(Math.max(initialBytes, 0));
  }

  /** The bytes; valid up to `length`. Replaced when the buffer grows. */
  get bytes(): Uint8Array {
    return this.#memory;
  }

  /** Where the staged source starts: after the output room and its spare bytes. */
  get #stageAt(): number {
    return this.#capacity + SPARE;
  }

  /** Bytes of lines it holds before it must grow. */
  get capacity(): number {
    return this.#capacity;
  }

  #instantiate(capacity: number): void {
    const instance = new WebAssembly.Instance(lineModule);
    this.#exports = instance.exports as unknown as LineExports;
    this.#capacity = capacity;
    this.#stageLength = 0;
    this.#staged = null;
    this.#ensureMemory(this.#stageAt + INITIAL_STAGE_BYTES + SPARE);
  }

  #ensureMemory(bytes: number): void {
    const memory = this.#exports.memory;
    const have = memory.buffer.byteLength;
    if (bytes > have) memory.grow(Math.ceil((bytes - have) / PAGE_BYTES));
    // Growing detaches the old view; a fresh view is cheap and made only here.
    if (this.#memory === undefined || this.#memory.buffer !== memory.buffer) {
      this.#memory = new Uint8Array(memory.buffer);
    }
  }

  /** Forgets the lines written, keeping the memory and the staged source. */
  clear(): void {
    this.length = 0;
  }

  /** Makes room for `n` more bytes of lines. */
  reserve(n: number): void {
    const need = this.length + n + SPARE;
    if (need <= this.#capacity) return;
    let capacity = Math.max(this.#capacity * 2, 1);
    while (capacity < need) capacity *= 2;
    const stageAt = capacity + SPARE;
    this.#ensureMemory(stageAt + this.#stageLength + SPARE);
    // The staged source sits after the output room: move it up with it.
    this.#memory.copyWithin(stageAt, this.#stageAt, this.#stageAt + this.#stageLength);
    this.#capacity = capacity;
  }

  /**
   * Starts over in a new memory of `bytes` if this one grew past it and holds no lines; the
   * staged source is forgotten too. (A WebAssembly memory cannot shrink.)
   */
  shrinkTo(bytes: number): void {
    if (this.length === 0 && this.#capacity > bytes) this.#instantiate(bytes);
  }

  /**
   * Copies `src` in as the source that {@linkcode LineBuffer.writeStaged} reads; it replaces
   * the one before. Later changes to `src` are not seen.
   */
  stage(src: Uint8Array): void {
    this.#ensureMemory(this.#stageAt + src.length + SPARE);
    this.#memory.set(src, this.#stageAt);
    this.#stageLength = src.length;
    this.#staged = src;
  }

  /**
   * Whether `src` is the array staged last and its copy is still in place (a new memory, after
   * `shrinkTo`, forgets it). It does not see changes made to `src` since it was staged.
   */
  isStaged(src: Uint8Array): boolean {
    return this.#staged === src;
  }

  /**
   * Appends one record line whose name is `[nameStart, nameEnd)` of the staged source and whose
   * payload follows it up to `payloadEnd`, as in a MSG frame; the payload is escaped.
   */
  writeStaged(
    clientId: number,
    msgId: number,
    nameStart: number,
    nameEnd: number,
    payloadEnd: number,
  ): void {
    if (
      !Number.isInteger(nameStart) || !Number.isInteger(nameEnd) ||
      !Number.isInteger(payloadEnd) || nameStart < 0 || nameStart > nameEnd ||
      nameEnd > payloadEnd
    ) {
      throw new RangeError(
        `Cannot write a record: bad ranges ${nameStart}, ${nameEnd}, ${payloadEnd}`,
      );
    }
    if (payloadEnd > this.#stageLength) {
      throw new RangeError(
        `Cannot write a record: it ends at ${payloadEnd}, past the ${this.#stageLength} bytes staged`,
      );
    }
    // Every payload byte may take two.
    this.reserve(LINE_OVERHEAD + (nameEnd - nameStart) + 2 * (payloadEnd - nameEnd));
    const stageAt = this.#stageAt;
    this.length = this.#exports.line(
      this.length,
      clientId,
      msgId,
      stageAt + nameStart,
      stageAt + nameEnd,
      stageAt + payloadEnd,
    );
  }

  /**
   * Appends a line for each record of the staged source's frames from `from` on (MSG frames with
   * `clientId`, `RECORD_WITH_CLIENT` frames (entry.ts) with their own; frames of other types are
   * passed over), in one call into WebAssembly for all of them, until the frames run out or a
   * limit is reached; grows as needed. Returns where it stopped in the source and sets
   * {@linkcode LineBuffer.stopped}, {@linkcode LineBuffer.records}, and the first and last
   * msg_id written. Limits, Infinity for none: `maxRecords` lines (at least 1), lines reaching
   * `fullAt` bytes (both checked after a frame, so it is taken), and, once the buffer holds
   * lines, none whose worst case (24 bytes and twice its frame) would take them past `fileRoom`
   * bytes.
   */
  writeFrames(
    clientId: number,
    from: number,
    maxRecords: number,
    fullAt: number,
    fileRoom = NO_LIMIT,
  ): number {
    const exports = this.#exports;
    const end = this.#stageLength;
    let records = 0;
    let firstId = 0;
    for (;;) {
      const stageAt = this.#stageAt;
      const stop = exports.frames(
        this.length,
        clientId,
        stageAt + from,
        stageAt + end,
        limit(maxRecords - records, 1),
        limit(fullAt, 0),
        this.#capacity,
        limit(fileRoom, 0),
      );
      this.length = exports.length.value;
      from = exports.at.value - stageAt;
      const written = exports.records.value;
      if (written > 0) {
        if (records === 0) firstId = exports.firstId.value >>> 0;
        this.lastId = exports.lastId.value >>> 0;
        records += written;
      }
      if (stop === NO_ROOM) {
        this.reserve(LINE_OVERHEAD + 2 * (readU32(this.#memory, stageAt + from) + 4));
        continue;
      }
      // What was written stays counted, also when a malformed frame stops it.
      this.records = records;
      this.firstId = firstId;
      if (stop === MALFORMED) {
        throw new RangeError(
          `Cannot format the frame at ${from}: it does not fit in the ${end} bytes staged`,
        );
      }
      this.stopped = stop;
      return from;
    }
  }

  /**
   * Appends one record line from separate arrays: `name[nameStart, nameEnd)` and
   * `payload[payloadStart, payloadEnd)`. Stages both, so it replaces the staged source.
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
    const nameLength = nameEnd - nameStart;
    const length = nameLength + payloadEnd - payloadStart;
    this.#ensureMemory(this.#stageAt + length + SPARE);
    this.#memory.set(name.subarray(nameStart, nameEnd), this.#stageAt);
    this.#memory.set(payload.subarray(payloadStart, payloadEnd), this.#stageAt + nameLength);
    this.#stageLength = length;
    this.#staged = null;
    this.writeStaged(clientId, msgId, 0, nameLength, length);
  }
}

/** One record read back from a line of the file. */
export interface ParsedLine {
  /** The first field. */
  clientId: number;
  /** The second field. */
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
