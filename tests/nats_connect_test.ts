import { deepStrictEqual, equal, ok, rejects } from "node:assert/strict";
import { DEFAULTS } from "../src/config.ts";
import {
  connectNats,
  natsConnectOptions,
  natsServers,
  redactUrl,
} from "../src/store/nats_connect.ts";
import { withNats } from "./support/nats_local.ts";
import { requireTool } from "./support/tools.ts";

const present = requireTool("nats-server");

Deno.test("natsConnectOptions() maps the NATS settings to nats.js options", () => {
  const plain = natsConnectOptions(DEFAULTS);
  deepStrictEqual(plain.servers, ["nats://127.0.0.1:4222"]);
  equal(plain.timeout, 5000);
  equal(plain.user, undefined);
  equal(plain.token, undefined);
  equal(plain.tls, undefined);
  const full = natsConnectOptions({
    ...DEFAULTS,
    NATS_URLS: " nats://a:4222, ,tls://b:4223 ",
    NATS_USER: "u",
    NATS_PASSWORD: "p",
    NATS_TOKEN: "t",
    NATS_CA: "/etc/ca.pem",
    NATS_TIMEOUT_MS: 750,
  });
  deepStrictEqual(full.servers, ["nats://a:4222", "tls://b:4223"]);
  equal(full.user, "u");
  equal(full.pass, "p");
  equal(full.token, "t");
  deepStrictEqual(full.tls, { caFile: "/etc/ca.pem" });
  equal(full.timeout, 750);
});

Deno.test("natsServers() and redactUrl() split the list and hide credentials", () => {
  deepStrictEqual(natsServers("a:1,,b:2 "), ["a:1", "b:2"]);
  equal(redactUrl("nats://me:secret@host:4222"), "nats://***@host:4222");
  equal(redactUrl("token@host:4222"), "***@host:4222");
  equal(redactUrl("nats://host:4222"), "nats://host:4222");
});

Deno.test("connectNats() names NATS_URLS and hides credentials when it cannot connect", async () => {
  await rejects(
    connectNats({ ...DEFAULTS, NATS_URLS: "nats://me:secret@127.0.0.1:1", NATS_TIMEOUT_MS: 500 }),
    (e: unknown) => {
      const message = (e as Error).message;
      ok(
        /^Cannot connect to NATS at NATS_URLS "nats:\/\/\*\*\*@127\.0\.0\.1:1": /.test(message),
        message,
      );
      ok(!message.includes("secret"), message);
      return true;
    },
  );
});

Deno.test(
  { name: "connectNats() with NATS_CA refuses a server without TLS", ignore: !present },
  async () => {
    await withNats(async (nats) => {
      await rejects(
        connectNats({ ...DEFAULTS, NATS_URLS: nats.url, NATS_CA: "/nonexistent/ca.pem" }),
        /Cannot connect to NATS at NATS_URLS .*\(TLS, trusting NATS_CA "\/nonexistent\/ca\.pem"\)/,
      );
      const nc = await connectNats({ ...DEFAULTS, NATS_URLS: nats.url });
      await nc.close();
    });
  },
);
