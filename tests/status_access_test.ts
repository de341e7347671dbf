import { equal, match, ok } from "node:assert/strict";
import type { HttpRequest } from "../src/http/http_server.ts";
import { Access, COOKIE } from "../src/status/access.ts";
import { freePort } from "./support/net.ts";
import { withServer } from "./support/server.ts";

const TOKEN = "s3cret-t0ken";

function request(path: string, headers: Record<string, string> = {}): HttpRequest {
  const url = new URL(path, "http://localhost");
  return {
    method: "GET",
    path: url.pathname,
    query: url.searchParams,
    headers: new Map(Object.entries(headers)),
  };
}

Deno.test("Access lets a bearer token or the page's cookie through, and nothing else", () => {
  const access = new Access(TOKEN);
  equal(access.check(request("/metrics", { authorization: `Bearer ${TOKEN}` })), null);
  equal(access.check(request("/events", { authorization: `bearer ${TOKEN}` })), null);
  for (
    const headers of [
      {},
      { authorization: "Bearer wrong" },
      { authorization: `Basic ${btoa(`x:${TOKEN}`)}` },
      { authorization: `Bearer ${TOKEN}x` },
      { cookie: `${COOKIE}=${TOKEN}` },
    ]
  ) {
    const refused = access.check(request("/metrics", headers));
    equal(refused?.status, 401, JSON.stringify(headers));
    equal(refused?.headers?.["www-authenticate"], 'Bearer realm="msgserver"');
  }

  // A browser: /?token= sets the cookie and sends it on to / (the token leaves the address bar).
  const login = access.check(request(`/?token=${TOKEN}`))!;
  equal(login.status, 303);
  equal(login.headers!["location"], "./");
  const setCookie = login.headers!["set-cookie"]!;
  match(
    setCookie,
    new RegExp(`^${COOKIE}=[0-9a-f]{64}; Path=/; Max-Age=86400; HttpOnly; SameSite=Strict$`),
  );
  ok(!setCookie.includes(TOKEN), "the cookie holds the token");
  const cookie = setCookie.split(";")[0]!;
  equal(access.check(request("/", { cookie: `theme=dark; ${cookie}` })), null);
  equal(access.check(request("/events", { cookie })), null);
  equal(
    access.check(request("/metrics", { cookie, authorization: "Bearer wrong" }))?.status,
    401,
    "a wrong bearer token is refused, whatever the cookie",
  );
  equal(new Access("another").check(request("/", { cookie }))?.status, 401, "a cookie of a token");
  equal(
    access.check(request("/events", { cookie, authorization: "Basic dXNlcjpwYXNz" })),
    null,
    "a proxy's own Basic password leaves the decision to the cookie",
  );

  // Browsers keep cookies per host, not per port: each port has a cookie of its own.
  const onPort = (port: number, headers: Record<string, string> = {}) =>
    request(`/?token=${TOKEN}`, { host: `127.0.0.1:${port}`, ...headers });
  const cookie9100 = access.check(onPort(9100))!.headers!["set-cookie"]!.split(";")[0]!;
  match(cookie9100, new RegExp(`^${COOKIE}_9100=[0-9a-f]{64}$`));
  const page9100 = request("/", { host: "127.0.0.1:9100", cookie: cookie9100 });
  equal(access.check(page9100), null);
  const page9200 = request("/", { host: "127.0.0.1:9200", cookie: cookie9100 });
  equal(access.check(page9200)?.status, 401, "port 9100's cookie opened port 9200");

  // The form: 401 with a page that asks for the token, and says when the one given was wrong.
  const form = access.check(request("/"))!;
  equal(form.status, 401);
  match(String(form.body), /<form method="get" action="\.\/">/);
  const wrong = access.check(request("/?token=nope"))!;
  equal(wrong.status, 401);
  match(String(wrong.body), /wrong token/);
});

Deno.test("METRICS_PORT with AUTH_TOKEN: /healthz open; /, its assets, /events and /metrics need the token", async () => {
  await withServer({ METRICS_PORT: freePort(), AUTH_TOKEN: TOKEN }, async ({ server }) => {
    const base = `http://127.0.0.1:${server.metricsAddr!.port}`;
    const get = async (path: string, headers: Record<string, string> = {}) => {
      const r = await fetch(`${base}${path}`, { headers, redirect: "manual" });
      return { status: r.status, headers: r.headers, text: await r.text() };
    };
    equal((await get("/healthz")).status, 200);
    for (const path of ["/", "/events", "/metrics", "/assets/status.js", "/assets/uPlot.min.css"]) {
      equal((await get(path)).status, 401, path);
      const text = (await get(path, { authorization: "Bearer nope" })).text;
      ok(!text.includes(TOKEN), `${path} says the token`);
    }
    const metrics = await get("/metrics", { authorization: `Bearer ${TOKEN}` });
    equal(metrics.status, 200);
    match(metrics.text, /^msgserver_connections_open 0$/m);
    const page = await get("/", { authorization: `Bearer ${TOKEN}` });
    equal(page.status, 200);
    match(page.headers.get("content-security-policy")!, /default-src 'none'; script-src 'self'/);
    const script = await get("/assets/status.js", { authorization: `Bearer ${TOKEN}` });
    equal(script.headers.get("content-type"), "text/javascript; charset=utf-8");

    const login = await get(`/?token=${TOKEN}`);
    equal(login.status, 303);
    const cookie = login.headers.get("set-cookie")!.split(";")[0]!;
    equal((await get("/", { cookie })).status, 200);

    // The event stream with the cookie: its hello shows the settings with the token hidden.
    const events = await fetch(`${base}/events`, { headers: { cookie } });
    equal(events.status, 200);
    equal(events.headers.get("content-type"), "text/event-stream; charset=utf-8");
    const reader = events.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!/\n\ndata: /.test(text)) text += (await reader.read()).value ?? "";
    await reader.cancel();
    match(text, /^retry: 1000\nevent: hello\ndata: \{/);
    match(text, /"AUTH_TOKEN":"\(hidden\)"/);
    ok(!text.includes(TOKEN), "the event stream says the token");
  });
});
