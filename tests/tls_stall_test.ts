/**
 * Peers that open a TLS connection and never finish the handshake: HANDSHAKE_TIMEOUT_MS cuts
 * them (their sockets really close and the server's descriptors come back), they count toward
 * MAX_CONNECTIONS from the accept, and honest TLS clients are served meanwhile.
 */

import { equal, ok } from "node:assert/strict";
import { MsgClient } from "../src/client/client.ts";
import { closeQuietly } from "../src/io/close_quietly.ts";
import { delay } from "../src/io/within.ts";
import { writeAll } from "../src/io/write_all.ts";
import { readRecords, withTempDir } from "./support/server.ts";
import { makeCertificate } from "./support/certificate.ts";
import { spawnServer } from "./support/spawn.ts";

/** The first bytes a real TLS client sends: its ClientHello, caught by a plain TCP listener. */
async function realClientHello(): Promise<Uint8Array> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = Deno.connectTls({ hostname: "127.0.0.1", port: listener.addr.port })
    .then((c) => c.handshake().finally(() => c.close()))
    .catch(() => {});
  const conn = await listener.accept();
  const buf = new Uint8Array(4096);
  const n = (await conn.read(buf))!;
  conn.close();
  listener.close();
  await client;
  ok(buf[0] === 0x16, "a TLS handshake record");
  return buf.slice(0, n);
}

/** Open sockets of process `pid`. */
async function sockets(pid: number): Promise<number> {
  let n = 0;
  for await (const e of Deno.readDir(`/proc/${pid}/fd`)) {
    const target = await Deno.readLink(`/proc/${pid}/fd/${e.name}`).catch(() => "");
    if (target.startsWith("socket:")) n++;
  }
  return n;
}

/** Resolves with how the peer's socket ended: "closed" (EOF or reset) or "open" after `ms`. */
async function fate(conn: Deno.Conn, ms: number): Promise<"closed" | "open"> {
  const buf = new Uint8Array(256);
  const deadline = performance.now() + ms;
  while (performance.now() < deadline) {
    const n = await Promise.race([
      conn.read(buf).catch(() => null),
      delay(deadline - performance.now()).then(() => -1),
    ]);
    if (n === null) return "closed";
    if (n === -1) return "open";
  }
  return "open";
}

Deno.test("stalled TLS handshakes are cut by HANDSHAKE_TIMEOUT_MS and give their descriptors back", async () => {
  await withTempDir("msgserver_tls_stall_", async (dir) => {
    const { ca, cert, key } = await makeCertificate(dir);
    const caPem = await Deno.readTextFile(ca);
    const hello = await realClientHello();
    const server = await spawnServer(dir, {
      args: ["--port", "0", "--tls-cert", cert, "--tls-key", key, "--handshake-timeout-ms", "800"],
      env: { MS_HOME: "" },
    });
    const stallers: Deno.Conn[] = [];
    try {
      const before = await sockets(server.pid);
      for (let i = 0; i < 60; i++) {
        const c = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
        if (i % 2 === 1) await writeAll(c, hello.subarray(0, hello.length >> 1)); // half a ClientHello
        stallers.push(c);
      }
      await delay(200);
      const during = await sockets(server.pid);
      ok(during >= before + 60, `the stallers hold sockets: ${before} -> ${during}`);
      // An honest TLS client is served while they stall.
      const honest = await MsgClient.connect({
        port: server.port,
        clientId: 1,
        tls: { caCerts: [caPem] },
      });
      await honest.send("tls", "served meanwhile");
      const fates = await Promise.all(stallers.map((c) => fate(c, 5000)));
      equal(fates.filter((f) => f === "open").length, 0, "every staller's socket was closed");
      await delay(300);
      const after = await sockets(server.pid);
      // The honest client's three sockets (outside, bridge, inside) are all that remain.
      ok(after <= before + 3, `descriptors came back: ${before} -> ${during} -> ${after}`);
      await honest.send("tls", "still served");
      await honest.close();
      equal(await server.stop(), 0, server.stderr());
      equal((await readRecords(`${dir}/messages.log`)).length, 2);
    } finally {
      for (const c of stallers) closeQuietly(c);
      await server.stop("SIGKILL");
    }
  });
});

Deno.test("a TLS connection in its handshake counts toward MAX_CONNECTIONS from its accept", async () => {
  await withTempDir("msgserver_tls_stall_", async (dir) => {
    const { ca, cert, key } = await makeCertificate(dir);
    const caPem = await Deno.readTextFile(ca);
    const server = await spawnServer(dir, {
      args: [
        "--port",
        "0",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--max-connections",
        "3",
        "--handshake-timeout-ms",
        "60000",
      ],
      env: { MS_HOME: "" },
    });
    const stallers: Deno.Conn[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        stallers.push(await Deno.connect({ hostname: "127.0.0.1", port: server.port }));
      }
      await delay(200);
      let refused = false;
      try {
        const c = await MsgClient.connect({
          port: server.port,
          clientId: 1,
          tls: { caCerts: [caPem] },
        });
        await c.close();
      } catch {
        refused = true;
      }
      ok(refused, "a fourth connection was let in while three were in their handshake");
      ok(server.stderr().includes("too many connections"), server.stderr());
      for (const c of stallers.splice(0)) c.close();
      await delay(300);
      const c = await MsgClient.connect({
        port: server.port,
        clientId: 2,
        tls: { caCerts: [caPem] },
      });
      await c.send("tls", "room again");
      await c.close();
    } finally {
      for (const c of stallers) closeQuietly(c);
      await server.stop("SIGKILL");
    }
  });
});
