// The SERVERS value's text form; config_test.ts checks how loadConfig reports a bad one.
import { deepStrictEqual, throws } from "node:assert/strict";
import { parseHostPorts } from "../src/config/host_ports.ts";

Deno.test("parseHostPorts() reads host:port entries, IPv6 in brackets, spaces trimmed", () => {
  deepStrictEqual(parseHostPorts(""), []);
  deepStrictEqual(parseHostPorts("  "), []);
  deepStrictEqual(parseHostPorts("127.0.0.1:9000"), [{ hostname: "127.0.0.1", port: 9000 }]);
  deepStrictEqual(
    parseHostPorts("node-1.example:1, [::1]:65535 ,[fe80::1%eth0]:9000,my_host:9001"),
    [
      { hostname: "node-1.example", port: 1 },
      { hostname: "::1", port: 65535 },
      { hostname: "fe80::1%eth0", port: 9000 },
      { hostname: "my_host", port: 9001 },
    ],
  );
});

Deno.test("parseHostPorts() names the first bad entry and what is wrong with it", () => {
  const cases: [string, string][] = [
    ["a:1,b", '"b" has no :port'],
    ["a:1,,b:2", "entry 2 is empty"],
    ["a:1,", "entry 2 is empty"],
    [":9000", '":9000" has no host'],
    ["::1:9000", '"::1:9000": an IPv6 address goes in brackets, as in [::1]:9000'],
    ["[a.b]:9000", '"[a.b]:9000": "a.b" is not an IPv6 address'],
    ["[]:9000", '"[]:9000": "" is not an IPv6 address'],
    ["a b:9000", '"a b:9000": "a b" is not a host name or IP address'],
    ["nats://a:4222", '"nats://a:4222": "nats://a" is not a host name or IP address'],
    ["a:0", '"a:0": port "0" is not from 1 to 65535'],
    ["a:65536", '"a:65536": port "65536" is not from 1 to 65535'],
    ["a:", '"a:": port "" is not from 1 to 65535'],
    ["a:+1", '"a:+1": port "+1" is not from 1 to 65535'],
    ["a:900000", '"a:900000": port "900000" is not from 1 to 65535'],
  ];
  for (const [text, message] of cases) {
    throws(
      () => parseHostPorts(text),
      (e) => e instanceof SyntaxError && e.message === message,
      text,
    );
  }
});
