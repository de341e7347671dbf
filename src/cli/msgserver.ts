/**
 * `msgserver`: runs the server with app.conf and flags until SIGINT or SIGTERM.
 *
 * @module
 */

import { ConfigError, configHelp, loadConfig } from "../config.ts";
import { Logger } from "../log.ts";
import { startServer } from "../server/server.ts";

const USAGE = `Usage: msgserver [--config PATH] [--KEY VALUE ...]

Runs the message server. Settings come from --config PATH, else $MS_HOME/app.conf, else
./app.conf, else the defaults; MS_AUTH_TOKEN in the environment sets AUTH_TOKEN; flags win.

Flags:
  --config PATH                 the config file
  --help                        this text
${configHelp()}
`;

async function main(args: string[]): Promise<number> {
  let loaded;
  try {
    loaded = await loadConfig(args);
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
  const log = new Logger(config.LOG_LEVEL);
  log.info("starting msgserver", {
    config: loaded.file ?? "(none: defaults)",
    pid: Deno.pid,
    deno: Deno.version.deno,
  });
  let server;
  try {
    server = await startServer(config, { log });
  } catch (e) {
    log.error("cannot start", { error: (e as Error).message });
    return 1;
  }
  const stop = (signal: string) => () => {
    log.info("signal received", { signal });
    server.shutdown();
  };
  const onInt = stop("SIGINT");
  const onTerm = stop("SIGTERM");
  const onHup = () => server.reopen();
  Deno.addSignalListener("SIGINT", onInt);
  Deno.addSignalListener("SIGTERM", onTerm);
  Deno.addSignalListener("SIGHUP", onHup);
  await server.finished;
  Deno.removeSignalListener("SIGINT", onInt);
  Deno.removeSignalListener("SIGTERM", onTerm);
  Deno.removeSignalListener("SIGHUP", onHup);
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
