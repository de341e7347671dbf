/**
 * `msgclient <client_id> <msg1,msg2,...>`: sends the messages with the name `client_<id>` and
 * msg_ids 1..n in a fresh session, prints each ack, the total time and the average latency, and
 * exits 1 if any message was not acked. `--stdin` sends one message per input line. With SERVERS
 * set it sends through {@linkcode ReliableClient}, which reconnects and fails over between them.
 *
 * @module
 */

import {
  type Config,
  ConfigError,
  configHelp,
  type HostPort,
  loadConfig,
  parseHostPorts,
} from "../config.ts";
import { ConnectionError, MsgClient, NackError } from "../client/client.ts";
import { GiveUpError, ReliableClient } from "../client/reliable.ts";
import { formatServer } from "../client/servers.ts";

const USAGE = `Usage: msgclient [--config PATH] [--KEY VALUE ...] <client_id> <msg1,msg2,...>
       msgclient [--config PATH] [--KEY VALUE ...] --stdin <client_id>

Sends messages named client_<client_id> with msg_ids 1..n to the server at IP:PORT, pipelined
unless TIME_INTERVAL_BTN_MSG is above 0 (then one at a time, sleeping that many seconds between
them). Prints each ack, then the total time and the average latency. Exit status: 0 if every
message was acked, 1 if any was not, 2 for bad usage or config.

With --session ID the messages go on an existing session: numbered on from the last msg_id the
server holds for it (first line: "session ID resumed after msg_id N"). If the server holds no
record of that session (new, or forgotten) it says so on stderr and numbers from 1.

With SERVERS set (--servers host1:port1,host2:port2) IP and PORT are not used: the messages go to
the first of those servers that answers, and when a connection is lost or refused, to the next,
round robin, resuming the session there (the servers must share their store for exactly-once).
A message the server already held on reconnect counts as acked, once. Unacked messages sent to a
server that is lost, when the next one does not know the session, are reported "lost" (they may
or may not be stored). It gives up after 30 s without any connection.

Flags:
  --config PATH                 the config file
  --stdin                       read messages from standard input, one per line
  --session ID                  use session ID (1 to 2^64-1) instead of a fresh random one
  --tls                         connect with TLS (trusting the system's roots)
  --ca FILE                     trust this PEM CA file too (same as --tls-ca; turns TLS on)
  --help                        this text
${configHelp()}
`;

/** Most messages in flight at once when reading from stdin, so memory stays bounded. */
const STDIN_WINDOW = 4096;

interface Tally {
  acked: number;
  refused: number;
  latencyUs: number;
}

function fail(message: string): number {
  console.error(`msgclient: ${message}`);
  return 2;
}

async function* linesOf(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let rest = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    rest += chunk;
    let nl: number;
    while ((nl = rest.indexOf("\n")) >= 0) {
      yield rest.slice(0, nl).replace(/\r$/, "");
      rest = rest.slice(nl + 1);
    }
  }
  if (rest !== "") yield rest.replace(/\r$/, "");
}

/** What sending needs of a {@linkcode MsgClient} or a {@linkcode ReliableClient}. */
interface Sender {
  readonly nextMsgId: number;
  send(name: string, payload: string): Promise<unknown>;
  close(): Promise<void>;
}

interface Opened {
  sender: Sender;
  /** The first WELCOME's last_msg_id and session_state. */
  lastMsgId: number;
  sessionKnown: boolean | null;
  /** Called after the summary line. */
  report(): void;
}

interface ConnectOptions {
  tls: { caCerts?: string[] } | null;
  session: bigint | null;
}

async function connectDirect(
  config: Config,
  clientId: number,
  options: ConnectOptions,
): Promise<Opened> {
  const { tls, session } = options;
  const client = await MsgClient.connect({
    hostname: config.IP,
    port: config.PORT,
    clientId,
    token: config.AUTH_TOKEN,
    ...(tls === null ? {} : { tls }),
    ...(session === null ? {} : { session }),
  });
  const { lastMsgId, sessionKnown } = client;
  return { sender: client, lastMsgId, sessionKnown, report: () => {} };
}

async function connectReliable(
  config: Config,
  servers: HostPort[],
  clientId: number,
  options: ConnectOptions,
): Promise<Opened> {
  const { tls, session } = options;
  const client = await ReliableClient.connect({
    servers,
    clientId,
    token: config.AUTH_TOKEN,
    ...(tls === null ? {} : { tls }),
    ...(session === null ? {} : { session, resume: true }),
  });
  // connect() resolves once the first WELCOME is in.
  const { lastMsgId, sessionKnown } = client.welcome!;
  const report = () => {
    const { connects, failovers } = client.stats;
    if (connects > 1) {
      console.error(
        `msgclient: reconnected ${connects - 1} times, ${failovers} of them to another server`,
      );
    }
  };
  return { sender: client, lastMsgId, sessionKnown, report };
}

function track(client: Sender, name: string, message: string, tally: Tally): Promise<void> {
  const msgId = client.nextMsgId;
  const sentAt = performance.now();
  return client.send(name, message).then(() => {
    const us = Math.round((performance.now() - sentAt) * 1000);
    tally.acked++;
    tally.latencyUs += us;
    console.log(`ack msg_id=${msgId} latency_us=${us}`);
  }, (e: Error) => {
    tally.refused++;
    if (e instanceof NackError) {
      console.log(`nack msg_id=${msgId} code=${e.code} ${e.message}`);
    } else {
      console.log(`lost msg_id=${msgId} ${e.message}`);
    }
  });
}

async function run(
  config: Config,
  servers: HostPort[],
  clientId: number,
  messages: AsyncIterable<string> | string[],
  options: ConnectOptions,
) {
  const tally: Tally = { acked: 0, refused: 0, latencyUs: 0 };
  const started = performance.now();
  const { session } = options;
  const opened = servers.length === 0
    ? await connectDirect(config, clientId, options)
    : await connectReliable(config, servers, clientId, options);
  const client = opened.sender;
  if (session !== null) {
    if (opened.sessionKnown === false) {
      console.error(
        `msgclient: session ${session} is unknown to the server (new, or forgotten past ` +
          "MAX_SESSIONS or in a restart it could not recover): numbering from msg_id 1",
      );
    } else {
      console.log(`session ${session} resumed after msg_id ${opened.lastMsgId}`);
    }
  }
  const name = `client_${clientId}`;
  const pause = config.TIME_INTERVAL_BTN_MSG * 1000;
  const inFlight: Promise<void>[] = [];
  let sent = 0;
  for await (const message of messages) {
    if (pause > 0 && sent > 0) await new Promise((r) => setTimeout(r, pause));
    const settled = track(client, name, message, tally);
    sent++;
    if (pause > 0) {
      await settled;
    } else {
      inFlight.push(settled);
      if (inFlight.length >= STDIN_WINDOW) await inFlight.shift();
    }
  }
  await Promise.all(inFlight);
  await client.close();
  const totalMs = performance.now() - started;
  const average = tally.acked === 0 ? 0 : Math.round(tally.latencyUs / tally.acked);
  console.log(
    `sent ${sent} messages in ${totalMs.toFixed(3)} ms: ${tally.acked} acked, ` +
      `${tally.refused} not acked; average latency ${average} us`,
  );
  opened.report();
  return tally.refused === 0 && tally.acked === sent ? 0 : 1;
}

async function main(args: string[]): Promise<number> {
  let loaded;
  try {
    loaded = await loadConfig(args, {
      booleanFlags: ["stdin", "tls"],
      stringFlags: ["session"],
      aliases: { ca: "TLS_CA" },
      allowPositionals: true,
    });
  } catch (e) {
    if (e instanceof ConfigError) return fail(e.message);
    throw e;
  }
  if (loaded.help) {
    console.log(USAGE);
    return 0;
  }
  const { config, positionals, flags, values } = loaded;
  let session: bigint | null = null;
  if (values.session !== undefined) {
    const text = values.session;
    if (!/^\d{1,20}$/.test(text) || BigInt(text) < 1n || BigInt(text) > 0xffffffffffffffffn) {
      return fail(`--session is "${text}"; allowed: an integer from 1 to 18446744073709551615`);
    }
    session = BigInt(text);
  }
  const wanted = flags.stdin ? 1 : 2;
  if (positionals.length !== wanted) {
    return fail(
      flags.stdin
        ? `expected <client_id> with --stdin, got ${positionals.length} arguments\n\n${USAGE}`
        : `expected <client_id> <msg1,msg2,...>, got ${positionals.length} arguments\n\n${USAGE}`,
    );
  }
  const idText = positionals[0]!;
  if (!/^\d{1,10}$/.test(idText) || Number(idText) > 0xffffffff) {
    return fail(`client_id is "${idText}"; allowed: an integer from 0 to 4294967295`);
  }
  const messages = flags.stdin ? linesOf(Deno.stdin.readable) : positionals[1]!.split(",");
  // Checked when the config was loaded.
  const servers = parseHostPorts(config.SERVERS);
  try {
    let tls: { caCerts?: string[] } | null = null;
    if (config.TLS_CA !== "") {
      try {
        tls = { caCerts: [await Deno.readTextFile(config.TLS_CA)] };
      } catch (e) {
        return fail(`Cannot read TLS_CA "${config.TLS_CA}": ${(e as Error).message}`);
      }
    } else if (flags.tls === true) {
      tls = {};
    }
    return await run(config, servers, Number(idText), messages, { tls, session });
  } catch (e) {
    if (
      e instanceof ConnectionError || e instanceof Deno.errors.ConnectionRefused ||
      e instanceof Deno.errors.NotFound || e instanceof Deno.errors.InvalidData ||
      e instanceof Deno.errors.ConnectionReset || e instanceof Deno.errors.TimedOut ||
      e instanceof GiveUpError
    ) {
      const where = servers.length === 0
        ? `${config.IP}:${config.PORT}`
        : servers.map(formatServer).join(",");
      console.error(`msgclient: cannot send to ${where}: ${e.message}`);
      return 1;
    }
    throw e;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
