import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { HttpServer, type HttpServerOptions, type HttpStream } from "../src/http/http_server.ts";
import { closeQuietly } from "../src/io/close_quietly.ts";
import { delay } from "../src/io/within.ts";
import { writeAll } from "../src/io/write_all.ts";
import { Logger } from "../src/log.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

async function withHttp(
  options: Partial<HttpServerOptions>,
  fn: (server: HttpServer, port: number) => Promise<void>,
): Promise<void> {
  const server = HttpServer.listen(
    {
      hostname: "127.0.0.1",
      port: 0,
      name: "METRICS_PORT",
      log: new Logger("error", () => {}),
      ...options,
    },
    (req) => {
      if (req.path === "/hello") {
        return { status: 200, body: `hello ${req.query.get("who") ?? "you"}\n` };
      }
      if (req.path === "/stream") {
        const stream: HttpStream = {
          status: 200,
          headers: { "content-type": "text/event-stream" },
          async run(send) {
            for (let i = 0; i < 100_000; i++) {
              if (!await send(`data: ${i} ${"x".repeat(1000)}\n\n`)) return;
            }
          },
        };
        return stream;
      }
      if (req.path === "/boom") throw new Error("handler failed");
      return { status: 404, body: "not found\n" };
    },
  );
  try {
    await fn(server, server.addr.port);
  } finally {
    await server.close();
  }
}

/** Sends raw bytes and reads until the server closes; returns the text. */
async function raw(port: number, request: string, timeoutMs = 5000): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await writeAll(conn, enc.encode(request));
    let text = "";
    const buf = new Uint8Array(4096);
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      if (performance.now() > deadline) throw new Error(`still open: ${text}`);
      const n = await conn.read(buf).catch(() => null);
      if (n === null) return text;
      text += dec.decode(buf.subarray(0, n));
    }
  } finally {
    closeQuietly(conn);
  }
}

Deno.test("HttpServer answers GET with a whole response and closes; HEAD without the body", async () => {
  await withHttp({}, async (_server, port) => {
    const r = await fetch(`http://127.0.0.1:${port}/hello?who=ops`);
    equal(r.status, 200);
    equal(await r.text(), "hello ops\n");
    equal(r.headers.get("cache-control"), "no-store");
    const head = await raw(port, "HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    ok(head.startsWith("HTTP/1.1 200 OK\r\n"), head);
    ok(head.includes("content-length: 10\r\n"), head);
    ok(head.endsWith("\r\n\r\n"), "no body after HEAD");
    equal(await fetch(`http://127.0.0.1:${port}/nothing`).then((r) => r.status), 404);
  });
});

Deno.test("HttpServer refuses other methods, malformed heads, oversized heads, and survives a throwing handler", async () => {
  await withHttp({ maxHeaderBytes: 256 }, async (server, port) => {
    const post = await raw(port, "POST /hello HTTP/1.1\r\n\r\n");
    ok(post.startsWith("HTTP/1.1 405 "), post);
    ok(/\r\nallow: GET, HEAD\r\n/i.test(post), post);
    ok((await raw(port, "GARBAGE\r\n\r\n")).startsWith("HTTP/1.1 400 "));
    ok((await raw(port, `GET /hello HTTP/1.1\r\nX: ${"y".repeat(300)}\r\n\r\n`)).startsWith(
      "HTTP/1.1 431 ",
    ));
    ok((await raw(port, "GET /boom HTTP/1.1\r\n\r\n")).startsWith("HTTP/1.1 500 "));
    equal((await fetch(`http://127.0.0.1:${port}/hello`)).status, 200);
    ok(server.stats.requests >= 2);
  });
});

Deno.test("HttpServer cuts a slow request head after its header timeout (slowloris)", async () => {
  await withHttp({ headerTimeoutMs: 200 }, async (server, port) => {
    const conns = await Promise.all(
      Array.from({ length: 20 }, () => Deno.connect({ hostname: "127.0.0.1", port })),
    );
    for (const c of conns) await writeAll(c, enc.encode("GET /hello HTTP/1.1\r\nX-Slow: "));
    const started = performance.now();
    for (const c of conns) equal(await c.read(new Uint8Array(64)).catch(() => null), null);
    const took = performance.now() - started;
    ok(took < 2000, `cut after ${took.toFixed(0)} ms`);
    equal(server.stats.timedOut, 20);
    for (const c of conns) closeQuietly(c);
    equal((await fetch(`http://127.0.0.1:${port}/hello`)).status, 200);
  });
});

Deno.test("HttpServer caps its connections: past the cap a connection gets 503 at once", async () => {
  await withHttp({ maxConnections: 5, headerTimeoutMs: 5000 }, async (server, port) => {
    const idle = await Promise.all(
      Array.from({ length: 5 }, () => Deno.connect({ hostname: "127.0.0.1", port })),
    );
    await delay(50);
    const refused = await raw(port, "GET /hello HTTP/1.1\r\n\r\n");
    ok(refused.startsWith("HTTP/1.1 503 "), refused);
    equal(server.stats.refused, 1);
    for (const c of idle) closeQuietly(c);
    await delay(50);
    equal((await fetch(`http://127.0.0.1:${port}/hello`)).status, 200);
  });
});

Deno.test("HttpServer streams until the reader leaves, and drops a reader that stops taking writes", async () => {
  await withHttp({ writeTimeoutMs: 300 }, async (server, port) => {
    const r = await fetch(`http://127.0.0.1:${port}/stream`);
    equal(r.headers.get("content-type"), "text/event-stream");
    const reader = r.body!.getReader();
    const first = dec.decode((await reader.read()).value);
    ok(first.startsWith("data: 0 "), first);
    await reader.cancel();
    // A reader that never reads: the stream is dropped once a write waits past the timeout.
    const stalled = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(stalled, enc.encode("GET /stream HTTP/1.1\r\n\r\n"));
    const deadline = performance.now() + 10_000;
    while (server.stats.open > 0 && performance.now() < deadline) await delay(50);
    equal(server.stats.open, 0, "the stalled stream is still open");
    closeQuietly(stalled);
    deepStrictEqual((await fetch(`http://127.0.0.1:${port}/hello`)).status, 200);
  });
});

Deno.test("HttpServer sends shared bytes to a stream, and close() resolves once every stream's run has returned", async () => {
  const chunk = enc.encode("data: shared\n\n");
  let ended = 0;
  const server = HttpServer.listen(
    { hostname: "127.0.0.1", port: 0, name: "METRICS_PORT", log: new Logger("error", () => {}) },
    () => ({
      status: 200,
      headers: { "content-type": "text/event-stream" },
      async run(send, closed) {
        await send(chunk);
        await closed;
        await delay(50); // a run that takes a moment to finish after its peer is gone
        ended++;
      },
    }),
  );
  const readers = await Promise.all(
    [1, 2].map(async () => {
      const r = await fetch(`http://127.0.0.1:${server.addr.port}/events`);
      const reader = r.body!.getReader();
      equal(dec.decode((await reader.read()).value), "data: shared\n\n");
      return reader;
    }),
  );
  await server.close();
  equal(ended, 2, "close() resolved before the streams ended");
  for (const reader of readers) await reader.cancel().catch(() => {});
});
