/**
 * The text form of a list of server addresses, as the SERVERS setting spells it:
 * `host:port` entries separated by commas, an IPv6 address in brackets (`[::1]:9000`).
 *
 * @module
 */

/**
 * One address of a SERVERS list.
 *
 * @example
 * ```ts
 * const node: HostPort = { hostname: "::1", port: 9000 };
 * ```
 */
export interface HostPort {
  /** Host name or IP address; an IPv6 address without its brackets. */
  readonly hostname: string;
  /** TCP port, 1 to 65535. */
  readonly port: number;
}

/**
 * What a SERVERS value may be, for error messages.
 *
 * @example
 * ```ts
 * console.log(`allowed: ${HOST_PORTS_ALLOWED}`);
 * ```
 */
export const HOST_PORTS_ALLOWED =
  "host:port entries separated by commas (IPv6 in brackets: [::1]:9000), each port from 1 to " +
  "65535, or empty";

/** A host name or IPv4 address: letters, digits, dots, dashes and underscores. */
const NAME = /^[A-Za-z0-9._-]+$/;
/** An IPv6 address (with an optional zone, `fe80::1%eth0`), as it stands inside brackets. */
const IPV6 = /^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(%[A-Za-z0-9._-]+)?$/;

function entry(text: string): HostPort {
  const colon = text.lastIndexOf(":");
  if (colon < 0) throw new SyntaxError(`"${text}" has no :port`);
  let host = text.slice(0, colon);
  const portText = text.slice(colon + 1);
  if (host.startsWith("[") && host.endsWith("]")) {
    host = host.slice(1, -1);
    if (!IPV6.test(host)) throw new SyntaxError(`"${text}": "${host}" is not an IPv6 address`);
  } else if (host.includes(":") && IPV6.test(host)) {
    throw new SyntaxError(`"${text}": an IPv6 address goes in brackets, as in [::1]:9000`);
  } else if (host === "") {
    throw new SyntaxError(`"${text}" has no host`);
  } else if (!NAME.test(host)) {
    throw new SyntaxError(`"${text}": "${host}" is not a host name or IP address`);
  }
  if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
    throw new SyntaxError(`"${text}": port "${portText}" is not from 1 to 65535`);
  }
  return { hostname: host, port: Number(portText) };
}

/**
 * Parses a SERVERS value: an empty (or blank) text is no servers; otherwise each comma-separated
 * entry, trimmed, must be `host:port` or `[ipv6]:port`. Throws `SyntaxError` naming the first
 * entry that is not.
 *
 * @example
 * ```ts
 * parseHostPorts("10.0.0.1:9000, [::1]:9001");
 * // [{ hostname: "10.0.0.1", port: 9000 }, { hostname: "::1", port: 9001 }]
 * parseHostPorts(""); // []
 * ```
 */
export function parseHostPorts(text: string): HostPort[] {
  if (text.trim() === "") return [];
  return text.split(",").map((part, i) => {
    const trimmed = part.trim();
    if (trimmed === "") throw new SyntaxError(`entry ${i + 1} is empty`);
    return entry(trimmed);
  });
}
