import { equal, match, ok, rejects } from "node:assert/strict";
import { MsgClient } from "../src/client/client.ts";
import { encodeHello } from "../src/protocol/frames.ts";
import { readText, withServer } from "./support/server.ts";
import { makeCertificate } from "./support/certificate.ts";

Deno.test("TLS: a client trusting the certificate round-trips; a plain TCP client fails cleanly", async () => {
  const certDir = await Deno.makeTempDir();
  try {
    const { ca: caFile, cert, key } = await makeCertificate(certDir);
    const ca = await Deno.readTextFile(caFile);
    await withServer({ TLS_CERT: cert, TLS_KEY: key }, async ({ port, file }) => {
      const client = await MsgClient.connect({ port, clientId: 1, tls: { caCerts: [ca] } });
      await client.send("tls", "over TLS");

      const plain = await Deno.connect({ hostname: "127.0.0.1", port });
      await plain.write(encodeHello({ clientId: 2, session: 0n })).catch(() => 0);
      const buf = new Uint8Array(64);
      const got = await plain.read(buf).catch(() => null);
      ok(got === null || buf[0] === 0x15 || buf[0] === 0x16, "no msgserver frame over plain TCP");
      plain.close();

      await rejects(
        MsgClient.connect({ port, clientId: 3, tls: {} }),
        (e) => e instanceof Deno.errors.InvalidData && /UnknownIssuer/.test(e.message),
        "an untrusted certificate",
      );
      await client.send("tls", "still served");
      await client.close();
      equal(await readText(file), "1 1 tls over TLS\n1 2 tls still served\n");
    });
  } finally {
    await Deno.remove(certDir, { recursive: true });
  }
});

Deno.test("TLS: msgclient --ca FILE sends over TLS", async () => {
  const certDir = await Deno.makeTempDir();
  try {
    const { ca, cert, key } = await makeCertificate(certDir);
    await withServer({ TLS_CERT: cert, TLS_KEY: key }, async ({ port, file }) => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("../src/cli/msgclient.ts", import.meta.url).pathname,
          "--port",
          `${port}`,
          "--ca",
          ca,
          "4",
          "secure",
        ],
        cwd: certDir,
        stdout: "piped",
        stderr: "piped",
      }).output();
      equal(out.code, 0, new TextDecoder().decode(out.stderr));
      match(new TextDecoder().decode(out.stdout), /^ack msg_id=1 /);
      equal(await readText(file), "4 1 client_4 secure\n");
    });
  } finally {
    await Deno.remove(certDir, { recursive: true });
  }
});

Deno.test("TLS: msgclient --ca FILE with SERVERS sends over TLS through ReliableClient", async () => {
  const certDir = await Deno.makeTempDir();
  try {
    const { ca, cert, key } = await makeCertificate(certDir);
    await withServer({ TLS_CERT: cert, TLS_KEY: key }, async ({ port, file }) => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("../src/cli/msgclient.ts", import.meta.url).pathname,
          "--servers",
          `127.0.0.1:${port}`,
          "--ca",
          ca,
          "4",
          "secure,twice",
        ],
        cwd: certDir,
        stdout: "piped",
        stderr: "piped",
      }).output();
      equal(out.code, 0, new TextDecoder().decode(out.stderr));
      match(new TextDecoder().decode(out.stdout), /^ack msg_id=1 .*\nack msg_id=2 /);
      equal(await readText(file), "4 1 client_4 secure\n4 2 client_4 twice\n");
    });
  } finally {
    await Deno.remove(certDir, { recursive: true });
  }
});
