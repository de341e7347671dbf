/**
 * The export's output file and its resume point, kept with the data.
 *
 * Beside the output `<output>` lies `<output>.export`, one line of JSON: the stream it comes from
 * (name and creation time, so a stream deleted and made again under the same name is not taken
 * for the old one), the last stream sequence in the output, and the output's size just after that
 * message. Each batch is appended in one write and synced (`fdatasync`); only then is the resume
 * point replaced (written to `<output>.export.tmp`, synced, renamed over the old one); only then
 * does the source acknowledge the batch. So after a kill at any moment:
 *
 * - the output is as long as the resume point says: nothing to do;
 * - it is longer: the tail is a batch whose resume point was never written. It is moved aside to
 *   `<output>.torn` (like the server's torn tail: nothing is destroyed) and cut off, and the
 *   export goes on after the resume point's sequence, so that batch is fetched again;
 * - it is shorter: someone cut the output. The export stops and says so; it never guesses.
 *
 * (A power loss can also undo the last rename, since the directory is not synced after each
 * one: the resume point is then an older one, which is still true of a longer output.)
 *
 * The output is locked (`flock`) while an export writes it, so two exports cannot interleave.
 *
 * @module
 */

import { syncDirectoryOf } from "../io/sync_directory.ts";
import { writeAll } from "../io/write_all.ts";
import { closeQuietly } from "../io/close_quietly.ts";
import { moveTailAside, type OpenFile } from "../store/data_file.ts";
import { ExportError } from "./source.ts";

/** What `<output>.export` holds. */
export interface ResumePoint {
  /** The stream's name. */
  stream: string;
  /** The stream's creation time, as JetStream reports it. */
  created: string;
  /** The last stream sequence in the output (the one before the first, for a fresh output). */
  seq: number;
  /** The output's size in bytes just after that message. */
  bytes: number;
}

/** The stream an output is exported from. */
export interface StreamIdentity {
  stream: string;
  created: string;
  /** For a new output: the sequence to start after (the stream's first sequence, less one). */
  startAfter: number;
}

/** What {@linkcode ExportOutput.open} did to the output it found. */
export interface OpenReport {
  /** True when there was no resume point (and no data): the export starts afresh. */
  fresh: boolean;
  /** Bytes past the resume point moved to `<output>.torn` (0 when none). */
  tornBytes: number;
}

/**
 * The path of the resume point of `output`.
 *
 * @example
 * ```ts
 * import { resumePathOf } from "./output.ts";
 * resumePathOf("/var/export/messages.log"); // "/var/export/messages.log.export"
 * ```
 */
export function resumePathOf(output: string): string {
  return `${output}.export`;
}

function isCount(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

/**
 * Parses the text of a resume point; throws an {@linkcode ExportError} naming `path` when it is
 * not one.
 *
 * @example
 * ```ts
 * import { parseResumePoint } from "./output.ts";
 * parseResumePoint('{"stream":"MSGS","created":"t","seq":7,"bytes":64}\n', "out.export").seq; // 7
 * ```
 */
export function parseResumePoint(text: string, path: string): ResumePoint {
  let value: Record<string, unknown>;
  try {
    value = JSON.parse(text);
  } catch {
    value = {};
  }
  const { stream, created, seq, bytes } = value ?? {};
  if (
    typeof stream !== "string" || typeof created !== "string" || !isCount(seq) || !isCount(bytes)
  ) {
    throw new ExportError(
      "output",
      `Cannot read the resume point "${path}": not a resume point: ${
        JSON.stringify(text.slice(0, 200))
      }`,
    );
  }
  return { stream, created, seq, bytes };
}

/**
 * Formats a resume point as its file holds it: one line of JSON.
 *
 * @example
 * ```ts
 * import { formatResumePoint } from "./output.ts";
 * formatResumePoint({ stream: "MSGS", created: "t", seq: 7, bytes: 64 });
 * // '{"stream":"MSGS","created":"t","seq":7,"bytes":64}\n'
 * ```
 */
export function formatResumePoint(point: ResumePoint): string {
  const { stream, created, seq, bytes } = point;
  return JSON.stringify({ stream, created, seq, bytes }) + "\n";
}

async function readResumePoint(path: string): Promise<ResumePoint | null> {
  let text;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw new ExportError(
      "output",
      `Cannot read the resume point "${path}": ${(e as Error).message}`,
    );
  }
  return parseResumePoint(text, path);
}

const encoder = new TextEncoder();

/** Replaces the file at `path` with `text`: a synced temporary file renamed over it. */
async function replaceFile(path: string, text: string): Promise<void> {
  const temp = `${path}.tmp`;
  const file = await Deno.open(temp, { write: true, create: true, truncate: true, mode: 0o640 });
  try {
    await writeAll(file, encoder.encode(text));
    await file.syncData();
  } finally {
    file.close();
  }
  await Deno.rename(temp, path);
}

/**
 * The output of an export, open for appending, with its resume point.
 *
 * @example
 * ```ts
 * const output = await ExportOutput.open("export.log", { stream: "MSGS", created: "t", startAfter: 0 });
 * await output.append(new TextEncoder().encode("1 1 client_1 hi\n"), 1);
 * output.close();
 * ```
 */
export class ExportOutput {
  /** The output's path. */
  readonly path: string;
  /** The last stream sequence the output holds. */
  seq: number;
  /** The output's size. */
  bytes: number;
  /** What opening found and did. */
  readonly report: OpenReport;
  readonly #file: Deno.FsFile;
  readonly #resumePath: string;
  readonly #identity: { stream: string; created: string };

  private constructor(
    path: string,
    file: Deno.FsFile,
    point: ResumePoint,
    report: OpenReport,
  ) {
    this.path = path;
    this.#file = file;
    this.#resumePath = resumePathOf(path);
    this.#identity = { stream: point.stream, created: point.created };
    this.seq = point.seq;
    this.bytes = point.bytes;
    this.report = report;
  }

  /**
   * Opens `path` (created with mode 0640 if missing) for an export of `stream`, locked, and makes
   * it agree with its resume point: a fresh output (no resume point, no data) starts after
   * `stream.startAfter`; a longer one has its tail moved to `<path>.torn`. Throws an
   * {@linkcode ExportError} when another export holds it, when it has data but no resume point,
   * when it is shorter than its resume point says, or when its resume point names another stream.
   * `options.open` opens the output (tests pass one that fails on demand).
   */
  static async open(
    path: string,
    stream: StreamIdentity,
    options: { open?: OpenFile } = {},
  ): Promise<ExportOutput> {
    const open = options.open ?? Deno.open;
    const file = await open(path, { read: true, append: true, create: true, mode: 0o640 });
    try {
      if (!await file.tryLock(true)) {
        throw new ExportError("busy", `Cannot export to "${path}": another export is writing it`);
      }
      const resumePath = resumePathOf(path);
      const size = (await file.stat()).size;
      let point = await readResumePoint(resumePath);
      let report: OpenReport = { fresh: false, tornBytes: 0 };
      if (point === null) {
        if (size > 0) {
          throw new ExportError(
            "output",
            `Cannot export to "${path}": it holds ${size} bytes but has no resume point ` +
              `"${resumePath}", so where it stands in the stream is unknown; ` +
              "export to a new file, or move this one away",
          );
        }
        point = {
          stream: stream.stream,
          created: stream.created,
          seq: stream.startAfter,
          bytes: 0,
        };
        await replaceFile(resumePath, formatResumePoint(point));
        await syncDirectoryOf(resumePath);
        report = { fresh: true, tornBytes: 0 };
      } else {
        if (point.stream !== stream.stream || point.created !== stream.created) {
          throw new ExportError(
            "output",
            `Cannot export to "${path}": it was exported from stream "${point.stream}" created ` +
              `${point.created}, not "${stream.stream}" created ${stream.created}`,
          );
        }
        if (size < point.bytes) {
          throw new ExportError(
            "output",
            `Cannot export to "${path}": it holds ${size} bytes, but ${point.bytes} were written ` +
              `up to stream sequence ${point.seq} ("${resumePath}"); it was cut, so the export ` +
              "stops rather than guess",
          );
        }
        if (size > point.bytes) {
          const moved = await moveTailAside(path, point.bytes, Deno.open);
          report = { fresh: false, tornBytes: moved };
        }
      }
      return new ExportOutput(path, file, point, report);
    } catch (e) {
      closeQuietly(file);
      throw e;
    }
  }

  /**
   * Appends `data` (the lines of the messages up to stream sequence `seq`; may be empty) in one
   * write, syncs it, then records the new resume point.
   */
  async append(data: Uint8Array, seq: number): Promise<void> {
    if (data.length > 0) {
      await writeAll(this.#file, data);
      await this.#file.syncData();
    }
    const bytes = this.bytes + data.length;
    await replaceFile(this.#resumePath, formatResumePoint({ ...this.#identity, seq, bytes }));
    this.seq = seq;
    this.bytes = bytes;
  }

  /** Closes the output (and so releases its lock). */
  close(): void {
    closeQuietly(this.#file);
  }
}
