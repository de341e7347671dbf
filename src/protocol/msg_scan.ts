/**
 * The MSG run scanner: takes, in one WebAssembly call, the run of whole MSG frames at the front
 * of a read that a greeted connection accepts as they are, so that JavaScript handles reads, not
 * messages. It stops, without judging it, at the first frame that is anything else (another type,
 * a bad size, a duplicate or zero msg_id, a name that is not printable ASCII, a payload over the
 * limit, a frame not whole yet); the caller then decodes and checks that one frame in JavaScript,
 * as every frame was before. The rule it applies is written at the top of `msg_scan.wat`.
 *
 * @module
 */

import { MSG_SCAN_WASM } from "./msg_scan_wasm.ts";

/** Where msg_scan.wat leaves its results (three u32). */
const RESULT_AT = 0;
/** Where the bytes to scan are staged. */
const STAGE_AT = 64;
/** Most bytes staged (and so scanned) in one call. */
export const MSG_SCAN_WINDOW = 64 * 1024;
/** Spare bytes after the staged ones: the name check loads 16 bytes at a time. */
const SPARE = 16;
const LARGEST_I32 = 0x7fffffff;

interface ScanExports {
  memory: WebAssembly.Memory;
  scan(
    out: number,
    p: number,
    end: number,
    lastId: number,
    maxLength: number,
    maxPayload: number,
  ): number;
}

/** The one instance, with views of its memory (its memory never grows). */
interface ScanModule {
  exports: ScanExports;
  memory: Uint8Array;
  results: DataView;
}

// One instance serves every connection: a scan is one synchronous call, and the staged bytes are
// not needed after it. Made on first use, so that importing the decoder (the client does) costs
// nothing and needs no SIMD.
let instance: ScanModule | null = null;

function scanModule(): ScanModule {
  if (instance === null) {
    const exports = instantiate();
    instance = {
      exports,
      memory: new Uint8Array(exports.memory.buffer),
      results: new DataView(exports.memory.buffer, RESULT_AT, 12),
    };
  }
  return instance;
}

function instantiate(): ScanExports {
  let made: WebAssembly.Instance;
  try {
    made = new WebAssembly.Instance(new WebAssembly.Module(MSG_SCAN_WASM));
  } catch (e) {
    throw new Error(
      "Cannot load the MSG scanner (src/protocol/msg_scan.wat): it needs WebAssembly SIMD, " +
        `which this CPU or runtime lacks (on x86-64 it needs SSE4.1): ${(e as Error).message}`,
    );
  }
  const scanExports = made.exports as unknown as ScanExports;
  if (scanExports.memory.buffer.byteLength < STAGE_AT + MSG_SCAN_WINDOW + SPARE) {
    throw new Error("Cannot load the MSG scanner: its memory is too small for a window");
  }
  return scanExports;
}

/**
 * Scans runs of MSG frames for one connection's limits; the results of the last
 * {@linkcode MsgScanner.scan} are in its fields.
 *
 * @example
 * ```ts
 * import { encodeMsg } from "./frames.ts";
 * const scanner = new MsgScanner({ maxFrameLength: 1024, maxPayloadBytes: 512 });
 * const bytes = encodeMsg(1, "client_1", new TextEncoder().encode("hi"));
 * scanner.scan(bytes, 0); // 1: the frame is taken
 * scanner.end; // 20: bytes taken
 * scanner.lastId; // 1
 * ```
 */
export class MsgScanner {
  /** After a scan: the offset just past the last frame taken (0 if none). */
  end = 0;
  /** After a scan: the msg_id of the last frame taken (the `lastId` given if none). */
  lastId = 0;
  /**
   * After a scan: true if it stopped at a frame it does not take, false if it ran out of bytes
   * (the next frame is not whole in what it was given).
   */
  stoppedAtFrame = false;
  readonly #maxLength: number;
  readonly #maxPayload: number;
  readonly #module: ScanModule;

  /**
   * `maxFrameLength`: the longest MSG frame it takes, as counted by the length prefix (longer
   * ones stop it; at most {@linkcode MSG_SCAN_WINDOW} is ever whole in one scan).
   * `maxPayloadBytes`: the largest payload it takes (MAX_MESSAGE_BYTES).
   */
  constructor(limits: { maxFrameLength: number; maxPayloadBytes: number }) {
    this.#maxLength = Math.min(Math.max(limits.maxFrameLength, 0), MSG_SCAN_WINDOW);
    this.#maxPayload = Math.min(Math.max(limits.maxPayloadBytes, 0), LARGEST_I32);
    this.#module = scanModule();
  }

  /**
   * Takes the run of acceptable MSG frames at the start of `bytes` (at most its first
   * {@linkcode MSG_SCAN_WINDOW} bytes), the first msg_id above `lastId`; returns how many.
   */
  scan(bytes: Uint8Array, lastId: number): number {
    const { exports, memory, results } = this.#module;
    const length = Math.min(bytes.length, MSG_SCAN_WINDOW);
    memory.set(length === bytes.length ? bytes : bytes.subarray(0, length), STAGE_AT);
    const count = exports.scan(
      RESULT_AT,
      STAGE_AT,
      STAGE_AT + length,
      lastId,
      this.#maxLength,
      this.#maxPayload,
    );
    this.end = results.getUint32(0, true) - STAGE_AT;
    this.lastId = results.getUint32(4, true);
    this.stoppedAtFrame = results.getUint32(8, true) === 1;
    return count;
  }
}
