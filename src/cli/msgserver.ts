/**
 * `msgserver`: runs the server with app.conf and flags until SIGINT or SIGTERM; `msgserver verify`
 * audits a data file; `msgserver export` copies a JetStream stream's records to one; `msgserver
 * status` shows a running server's health and figures.
 *
 * @module
 */

import { ConfigError, configHelp, loadConfig } from "../config.ts";
import { Logger } from "../log.ts";
import { type MsgServer, startServer } from "../server/server.ts";
import { StoreStartError } from "../store/store.ts";
import { verifyCommand } from "../verify.ts";

const USAGE = `Usage: msgserver [--config PATH] [--KEY VALUE ...]
       msgserver verify [FILE] [--config PATH]   (default FILE: FILE_NAME from the config)
       msgserver export [--config PATH] [--follow] [--consumer NAME] [--KEY VALUE ...] <output_file>
                                                (msgserver export --help says more)
       msgserver status [--config PATH] [--url URL] [--interval SECONDS] [--KEY VALUE ...]
                                                (msgserver status --help says more)

Runs the message server. Settings come from --config PATH, else $MS_HOME/app.conf, else
./app.conf, else the defaults; MS_AUTH_TOKEN in the environment sets AUTH_TOKEN; flags win.

Flags:
  --config PATH                 the config file
  --help                        this text
${configHelp()}
`;

async function main(args: string[]): Promise<number> {
  if (args[0] === "export") {
    // Loaded only here, so that the server and the verifier never load the NATS client.
    const { exportCommand } = await import("../export/command.ts");
    return await exportCommand(args.slice(1));
  }
  if (args[0] === "status") {
    const { statusCommand } = await import("../status/command.ts");
    return await statusCommand(args.slice(1));
  }
  const verify = args[0] === "verify";
  let loaded;
  try {
    loaded = await loadConfig(verify ? args.slice(1) : args, { allowPositionals: verify });
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(`msgserver: ${e.message}`);
      return 2;
    }
    throw e;
  }
  if (loaded.help) {
    console.log(USAGE);
    return 0;
  }
  const { config } = loaded;
  if (verify) {
    if (loaded.positionals.length > 1) {
      console.error(`msgserver: verify takes one FILE, got ${loaded.positionals.length}`);
      return 2;
    }
    return await verifyCommand(loaded.positionals[0] ?? config.FILE_NAME);
  }
  const log = new Logger(config.LOG_LEVEL);
  log.info("starting msgserver", {
    config: loaded.file ?? "(none: defaults)",
    pid: Deno.pid,
    deno: Deno.version.deno,
  });
  // Signal listeners go in before the server says it is listening, so that a SIGTERM sent as
  // soon as that line appears (as supervisors and tests do) is a clean shutdown, not a kill.
  let server: MsgServer | null = null;
  let stopSignal: string | null = null;
  const stop = (signal: string) => () => {
    log.info("signal received", { signal });
    stopSignal = signal;
    server?.shutdown();
  };
  const onInt = stop("SIGINT");
  const onTerm = stop("SIGTERM");
  const onHup = () => server?.reopen();
  Deno.addSignalListener("SIGINT", onInt);
  Deno.addSignalListener("SIGTERM", onTerm);
  Deno.addSignalListener("SIGHUP", onHup);
  try {
    try {
      server = await startServer(config, { log });
    } catch (e) {
      log.error("cannot start", { error: (e as Error).message });
      // Settings the store cannot start with are bad usage, like a bad config value.
      return e instanceof StoreStartError ? 2 : 1;
    }
    if (stopSignal !== null) server.shutdown();
    return await server.finished ? 0 : 1;
  } finally {
    Deno.removeSignalListener("SIGINT", onInt);
    Deno.removeSignalListener("SIGTERM", onTerm);
    Deno.removeSignalListener("SIGHUP", onHup);
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
