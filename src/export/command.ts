/**
 * `msgserver export [--config PATH] [--follow] [--consumer NAME] [--KEY VALUE ...] <output_file>`:
 * appends the records of the JetStream stream NATS_STREAM to a file in the data file's format,
 * each once, in stream order; see `exporter.ts`, `output.ts` and `nats_source.ts`.
 *
 * Exit status: 0 when everything the stream held at start is in the file (with `--follow`: when
 * stopped by SIGINT or SIGTERM); 1 when the export cannot go on (a gap the stream cannot fill,
 * NATS failing for NATS_TIMEOUT_MS, an output cut short or held by another export, a signal
 * before the end without `--follow`); 2 for bad usage or config.
 *
 * @module
 */

import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { type Config, ConfigError, configHelp, loadConfig } from "../config.ts";
import { Logger } from "../log.ts";
import { connectNats, natsServers, redactUrl } from "../store/nats_connect.ts";
import { exportStream, type ExportSummary } from "./exporter.ts";
import { NatsSource, streamFacts } from "./nats_source.ts";
import { ExportOutput } from "./output.ts";
import { ExportError } from "./source.ts";

/** The usage text of `msgserver export`. */
export const EXPORT_USAGE =
  `Usage: msgserver export [--config PATH] [--follow] [--consumer NAME] [--KEY VALUE ...] <output_file>

Appends the records of the JetStream stream NATS_STREAM to output_file in the data file's format
(the lines FILE_NAME would hold), each once, in stream order. Run again, it goes on where it
stopped; a kill at any moment loses and doubles nothing. Its resume point is
<output_file>.export; a tail written after the last resume point is moved to <output_file>.torn.

  --follow          keep exporting new messages until SIGINT or SIGTERM (without it: stop, exit 0,
                    once everything the stream held at start is in the file)
  --consumer NAME   the durable consumer to read with (default: msgserver-export-<hash of the
                    output's absolute path>)
  --config PATH     the config file (NATS_* settings)

Exit status: 0 done; 1 a gap the stream cannot fill, NATS failing past NATS_TIMEOUT_MS, the output
cut or in use, or a signal before the end (without --follow); 2 bad usage or config.

Settings:
${configHelp()}
`;

const CONSUMER_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * The default consumer name for `output`: `msgserver-export-` and 16 hex digits of the SHA-256
 * of its absolute path (its folder's real path, then its name).
 *
 * @example
 * ```ts
 * import { defaultConsumerName } from "./command.ts";
 * await defaultConsumerName("/tmp/export.log"); // "msgserver-export-" + 16 hex digits
 * ```
 */
export async function defaultConsumerName(output: string): Promise<string> {
  const slash = output.lastIndexOf("/");
  const dir = slash < 0 ? "." : slash === 0 ? "/" : output.slice(0, slash);
  const real = `${await Deno.realPath(dir)}/${output.slice(slash + 1)}`;
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(real));
  const hex = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `msgserver-export-${hex.slice(0, 16)}`;
}

function summaryFields(s: ExportSummary): Record<string, unknown> {
  return {
    records: s.records,
    messages: s.messages,
    bytes: s.bytes,
    from_seq: s.startSeq + 1,
    to_seq: s.endSeq,
    redelivered: s.redelivered,
    doubled: s.doubled,
    reread: s.reread,
    filled: s.filled,
    ms: Math.round(s.ms),
    records_per_s: s.ms > 0 ? Math.round(s.records / (s.ms / 1000)) : 0,
  };
}

/** Runs the export with `config`; returns the exit status. */
async function run(
  config: Config,
  output: string,
  options: { follow: boolean; consumer: string; log: Logger },
): Promise<number> {
  const { follow, consumer, log } = options;
  const timeoutMs = config.NATS_TIMEOUT_MS;
  // Signal listeners go in first, so that a signal at any moment is a clean stop, not a kill.
  const controller = new AbortController();
  const onSignal = (signal: string) => () => {
    log.info("signal received", { signal });
    controller.abort();
  };
  const onInt = onSignal("SIGINT");
  const onTerm = onSignal("SIGTERM");
  Deno.addSignalListener("SIGINT", onInt);
  Deno.addSignalListener("SIGTERM", onTerm);
  let nc: NatsConnection | null = null;
  let out: ExportOutput | null = null;
  let source: NatsSource | null = null;
  try {
    nc = await connectNats(config);
    const jsm = await jetstreamManager(nc, { timeout: timeoutMs, checkAPI: false });
    const stream = await streamFacts(jsm, config.NATS_STREAM, { timeoutMs, log });
    out = await ExportOutput.open(output, {
      stream: stream.name,
      created: stream.created,
      startAfter: stream.firstSeq - 1,
    });
    if (out.report.tornBytes > 0) {
      log.warn("output longer than its resume point: tail moved aside, to be fetched again", {
        torn: `${output}.torn`,
        bytes: out.report.tornBytes,
        after_seq: out.seq,
      });
    }
    source = await NatsSource.open(nc, {
      stream: stream.name,
      consumer,
      after: out.seq,
      until: follow ? null : stream.lastSeq,
      timeoutMs,
      log,
      averageBytes: stream.averageBytes,
    });
    log.info("export starting", {
      output,
      stream: stream.name,
      consumer,
      nats: natsServers(config.NATS_URLS).map(redactUrl).join(","),
      fresh: out.report.fresh,
      after_seq: out.seq,
      ...(follow ? { follow: true } : { until_seq: stream.lastSeq }),
    });
    const summary = await exportStream(out, source, {
      follow,
      until: stream.lastSeq,
      log,
      signal: controller.signal,
    });
    if (summary.interrupted) {
      log.error("export stopped before the end", {
        ...summaryFields(summary),
        until_seq: stream.lastSeq,
      });
      return 1;
    }
    log.info("export done", summaryFields(summary));
    return 0;
  } catch (e) {
    const message = e instanceof ExportError || nc === null
      ? (e as Error).message
      : `Cannot export to "${output}": ${(e as Error).message}`;
    // The reason as a plain line, the last one a person sees; the log line for the record.
    log.error(
      "export failed",
      out === null ? {} : { output_seq: out.seq, output_bytes: out.bytes },
    );
    console.error(`msgserver export: ${message}`);
    return 1;
  } finally {
    Deno.removeSignalListener("SIGINT", onInt);
    Deno.removeSignalListener("SIGTERM", onTerm);
    await source?.close();
    out?.close();
    await nc?.close().catch(() => {});
  }
}

/**
 * The `export` command; `args` are those after `export`. Returns the exit status.
 *
 * @example
 * ```ts
 * import { exportCommand } from "./command.ts";
 * Deno.exit(await exportCommand(["--follow", "export.log"]));
 * ```
 */
export async function exportCommand(args: string[]): Promise<number> {
  let loaded;
  try {
    loaded = await loadConfig(args, {
      booleanFlags: ["follow"],
      stringFlags: ["consumer"],
      allowPositionals: true,
    });
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(`msgserver export: ${e.message}`);
      return 2;
    }
    throw e;
  }
  if (loaded.help) {
    console.log(EXPORT_USAGE);
    return 0;
  }
  if (loaded.positionals.length !== 1) {
    console.error(
      `msgserver export: expected one output_file, got ${loaded.positionals.length}\n` +
        "Usage: msgserver export [--config PATH] [--follow] [--consumer NAME] [--KEY VALUE ...] <output_file>",
    );
    return 2;
  }
  const output = loaded.positionals[0]!;
  const explicit = loaded.values.consumer;
  if (explicit !== undefined && !CONSUMER_NAME.test(explicit)) {
    console.error(
      `msgserver export: Cannot use consumer name "${explicit}": allowed: 1 to 64 letters, ` +
        "digits, _ and -",
    );
    return 2;
  }
  let consumer;
  try {
    consumer = explicit ?? await defaultConsumerName(output);
  } catch (e) {
    console.error(`msgserver export: Cannot export to "${output}": ${(e as Error).message}`);
    return 2;
  }
  const log = new Logger(loaded.config.LOG_LEVEL);
  return await run(loaded.config, output, { follow: loaded.flags.follow === true, consumer, log });
}
