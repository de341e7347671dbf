/**
 * The server addresses of a `ReliableClient` and the order and pace of its connection
 * attempts across them.
 *
 * Attempts go round robin: after a failed attempt, or a lost connection, the next one goes to the
 * next address. The backoff sleep comes once per round, after every address has failed once, so a
 * dead node costs one failed attempt rather than a backoff: with nodes A and B, A dying moves the
 * client to B at once, and only when B fails too does the client wait. With one address every
 * attempt is a round, which is exactly the backoff of a client of one server.
 *
 * @example
 * ```ts
 * import { Rotation, serverList } from "./servers.ts";
 * const servers = serverList({ servers: [{ port: 9000 }, { hostname: "10.0.0.2", port: 9000 }] });
 * const rotation = new Rotation(servers, { initialDelayMs: 50, maxDelayMs: 2000 });
 * rotation.current; // { hostname: "127.0.0.1", port: 9000 }
 * rotation.failed(); // null: try 10.0.0.2:9000 at once
 * rotation.failed(); // about 25 to 50: both failed, so wait before the next round
 * ```
 *
 * @module
 */

/**
 * One server address as a caller gives it; the hostname defaults to 127.0.0.1.
 *
 * @example
 * ```ts
 * const nodes: ServerAddress[] = [{ hostname: "10.0.0.1", port: 9000 }, { port: 9001 }];
 * ```
 */
export interface ServerAddress {
  /** Host name or IP address (an IPv6 address without brackets); default 127.0.0.1. */
  hostname?: string;
  /** TCP port, 1 to 65535. */
  port: number;
}

/**
 * A checked server address, hostname filled in.
 *
 * @example
 * ```ts
 * const server: Server = { hostname: "::1", port: 9000 };
 * ```
 */
export interface Server {
  /** Host name or IP address (an IPv6 address without brackets). */
  readonly hostname: string;
  /** TCP port, 1 to 65535. */
  readonly port: number;
}

/**
 * How a `ReliableClient` is told where its servers are: `hostname` and `port` for one,
 * or `servers` for several, never both.
 *
 * @example
 * ```ts
 * const one: ServerChoice = { port: 9000 };
 * const several: ServerChoice = { servers: [{ port: 9000 }, { port: 9001 }] };
 * ```
 */
export interface ServerChoice {
  /** The one server's address; default 127.0.0.1. Not with `servers`. */
  hostname?: string;
  /** The one server's port. Not with `servers`. */
  port?: number;
  /** Several servers, tried in this order, round robin. Not with `hostname` and `port`. */
  servers?: ReadonlyArray<ServerAddress>;
}

function checked(hostname: unknown, port: unknown, what: string): Server {
  if (hostname !== undefined && (typeof hostname !== "string" || hostname === "")) {
    throw new TypeError(
      `Cannot use ${what}: hostname is ${JSON.stringify(hostname) ?? String(hostname)}; ` +
        "allowed: a non-empty host name or IP address",
    );
  }
  if (typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new RangeError(
      `Cannot use ${what}: port is ${String(port)}; allowed: an integer from 1 to 65535`,
    );
  }
  return { hostname: hostname ?? "127.0.0.1", port };
}

/**
 * The addresses `choice` names, checked: throws `TypeError` when it gives both `servers` and
 * `hostname`/`port`, or neither, or a hostname that is not a non-empty string; `RangeError` for
 * an empty `servers` or a port that is not an integer from 1 to 65535.
 *
 * @example
 * ```ts
 * serverList({ port: 9000 }); // [{ hostname: "127.0.0.1", port: 9000 }]
 * serverList({ servers: [] }); // throws RangeError
 * ```
 */
export function serverList(choice: ServerChoice): Server[] {
  const { hostname, port, servers } = choice;
  if (servers !== undefined) {
    if (hostname !== undefined || port !== undefined) {
      throw new TypeError(
        "Cannot choose the servers: both servers and hostname/port are given; give one",
      );
    }
    if (!Array.isArray(servers)) {
      throw new TypeError("Cannot choose the servers: servers is not an array");
    }
    if (servers.length === 0) {
      throw new RangeError("Cannot choose the servers: servers is empty; give at least one");
    }
    return servers.map((s: ServerAddress, i) => checked(s?.hostname, s?.port, `servers[${i}]`));
  }
  if (port === undefined) {
    throw new TypeError("Cannot choose the servers: give port (and hostname) or servers");
  }
  return [checked(hostname, port, "the server")];
}

/**
 * `host:port`, with an IPv6 address in brackets (`[::1]:9000`), as SERVERS spells it.
 *
 * @example
 * ```ts
 * formatServer({ hostname: "::1", port: 9000 }); // "[::1]:9000"
 * ```
 */
export function formatServer(server: Server): string {
  const host = server.hostname.includes(":") ? `[${server.hostname}]` : server.hostname;
  return `${host}:${server.port}`;
}

/**
 * Options of {@linkcode Rotation}: the backoff of `ReliableClient`.
 *
 * @example
 * ```ts
 * const options: RotationOptions = { initialDelayMs: 50, maxDelayMs: 2000, random: () => 0.5 };
 * ```
 */
export interface RotationOptions {
  /** Sleep after the first round that all failed, before jitter. */
  initialDelayMs: number;
  /** Longest sleep, before jitter. */
  maxDelayMs: number;
  /** Source of randomness in [0, 1) for the jitter; default `Math.random`. */
  random?: () => number;
  /** Clock in ms; default `performance.now`. */
  now?: () => number;
}

/**
 * Where the next connection attempt goes, and how long to wait before it: see the module
 * documentation. The caller reports each outcome: {@linkcode Rotation.failed},
 * {@linkcode Rotation.connected}, {@linkcode Rotation.lost}.
 *
 * @example
 * ```ts
 * const rotation = new Rotation([{ hostname: "127.0.0.1", port: 9000 }], {
 *   initialDelayMs: 50,
 *   maxDelayMs: 2000,
 * });
 * rotation.connected();
 * rotation.lost(); // 25 to 50 ms to wait: with one server every attempt is a round
 * ```
 */
export class Rotation {
  /** The addresses, in the order they are tried. */
  readonly servers: readonly Server[];
  readonly #initialDelay: number;
  readonly #maxDelay: number;
  readonly #random: () => number;
  readonly #now: () => number;
  #index = 0;
  /** Failures since the current round began. */
  #failedInRound = 0;
  /** Rounds that all failed since the last connection: the backoff's exponent. */
  #rounds = 0;
  #connectedAt = -Infinity;

  /** `servers` must not be empty (see {@linkcode serverList}). */
  constructor(servers: readonly Server[], options: RotationOptions) {
    if (servers.length === 0) throw new RangeError("Cannot rotate over no servers");
    this.servers = servers;
    this.#initialDelay = options.initialDelayMs;
    this.#maxDelay = options.maxDelayMs;
    this.#random = options.random ?? Math.random;
    this.#now = options.now ?? (() => performance.now());
  }

  /** The address of the connection that is up, or of the next attempt. */
  get current(): Server {
    return this.servers[this.#index]!;
  }

  /** The position of {@linkcode Rotation.current} in `servers`. */
  get index(): number {
    return this.#index;
  }

  /**
   * The attempt at `current` failed: moves on to the next address. Returns null to try it at
   * once (the round goes on), or the ms to sleep first (every address failed this round).
   */
  failed(): number | null {
    this.#index = (this.#index + 1) % this.servers.length;
    if (++this.#failedInRound < this.servers.length) return null;
    this.#failedInRound = 0;
    this.#rounds++;
    const base = Math.min(this.#maxDelay, this.#initialDelay * 2 ** (this.#rounds - 1));
    return base / 2 + this.#random() * (base / 2);
  }

  /** A connection to `current` is up (WELCOME came): the backoff starts over. */
  connected(): void {
    this.#rounds = 0;
    this.#connectedAt = this.#now();
  }

  /**
   * The connection to `current` was lost: counts as a failed attempt there, so the next attempt
   * goes to the next address, at once unless that completes a round; returns as
   * {@linkcode Rotation.failed} does.
   */
  lost(): number | null {
    // Only a connection that lasted starts a fresh round. One that ends at once (a node that
    // accepts and drops, two producers taking one session from each other) counts in the round
    // it ended, so hopping between nodes still meets a backoff sleep once per round.
    if (this.#now() - this.#connectedAt >= this.#initialDelay) this.#failedInRound = 0;
    return this.failed();
  }
}
