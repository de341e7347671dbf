/**
 * Who may read METRICS_PORT when AUTH_TOKEN is set: everything but `/healthz` needs the token.
 * Scrapers and `msgserver status` send `Authorization: Bearer <AUTH_TOKEN>`. A browser cannot
 * add that header to a page load or to an EventSource, so it gets a cookie instead: opening
 * `/?token=<AUTH_TOKEN>` (or the small form served with the 401) sets an HttpOnly, SameSite=Strict
 * cookie and redirects to `/`, so that the token does not stay in the address bar or the history.
 * The cookie holds an HMAC of the token, not the token: it opens the page and nothing else (not
 * HELLO), and it stays valid across restarts for as long as the token does.
 *
 * @module
 */

import { createHmac } from "node:crypto";
import type { HttpRequest, HttpResponse } from "../http/http_server.ts";
import { timingSafeEqual } from "../server/auth.ts";
import login from "./login.html" with { type: "text" };

/** The cookie a browser shows the token with; `_<port>` follows when the Host names one. */
export const COOKIE = "msgserver_status";

/** How long the cookie lasts: a day, after which the page asks for the token again. */
const COOKIE_MAX_AGE_S = 86_400;

/**
 * The cookie's name for a request to `host`: browsers keep cookies per host name, not per port,
 * so two servers on one host (or any other service there) must not see each other's.
 */
function cookieName(host: string | undefined): string {
  const port = host === undefined ? undefined : /:(\d+)$/.exec(host)?.[1];
  return port === undefined ? COOKIE : `${COOKIE}_${port}`;
}

const enc = new TextEncoder();

/** The value of cookie `name` in a `Cookie` header, or null. */
function cookieOf(header: string | undefined, name: string): string | null {
  if (header === undefined) return null;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return null;
}

function escapeHtml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;");
}

/**
 * The token check for METRICS_PORT.
 *
 * @example
 * ```ts
 * import { Access } from "./access.ts";
 * import type { HttpRequest } from "../http/http_server.ts";
 * declare const req: HttpRequest;
 * const access = new Access("s3cret");
 * const refusal = access.check(req); // null: let it through
 * ```
 */
export class Access {
  readonly #token: Uint8Array;
  readonly #cookie: Uint8Array;
  readonly #cookieValue: string;

  /** `token`: AUTH_TOKEN, not empty. */
  constructor(token: string) {
    this.#token = enc.encode(token);
    this.#cookieValue = createHmac("sha256", token).update("msgserver status page").digest("hex");
    this.#cookie = enc.encode(this.#cookieValue);
  }

  /**
   * Null when `req` may be answered; otherwise the reply instead: 401, or for `/?token=` with
   * the right token, the redirect that sets the cookie.
   */
  check(req: HttpRequest): HttpResponse | null {
    // Only a bearer token is ours to judge: another scheme (Basic, say, from a proxy in front
    // that asks for its own password) leaves the decision to the cookie.
    const bearer = /^bearer +(.*)$/i.exec(req.headers.get("authorization") ?? "");
    if (bearer !== null) {
      if (timingSafeEqual(this.#token, enc.encode(bearer[1]!.trim()))) return null;
      return this.#refuse(req, "wrong token");
    }
    const name = cookieName(req.headers.get("host"));
    const cookie = cookieOf(req.headers.get("cookie"), name);
    if (cookie !== null && timingSafeEqual(this.#cookie, enc.encode(cookie))) return null;
    const given = req.query.get("token");
    if (req.path === "/" && given !== null) {
      if (!timingSafeEqual(this.#token, enc.encode(given))) return this.#refuse(req, "wrong token");
      return {
        status: 303,
        headers: {
          // Relative, so that it also works behind a proxy that serves the page under a prefix.
          "location": "./",
          "set-cookie": `${name}=${this.#cookieValue}; Path=/; Max-Age=${COOKIE_MAX_AGE_S}; ` +
            "HttpOnly; SameSite=Strict",
          "referrer-policy": "no-referrer",
        },
        body: "see ./\n",
      };
    }
    return this.#refuse(req, "");
  }

  #refuse(req: HttpRequest, problem: string): HttpResponse {
    if (req.path === "/") {
      return {
        status: 401,
        headers: {
          "content-type": "text/html; charset=utf-8",
          "content-security-policy": "default-src 'none'; img-src data:; form-action 'self'",
          "referrer-policy": "no-referrer",
          "www-authenticate": 'Bearer realm="msgserver"',
        },
        body: login.replace("{{ problem }}", escapeHtml(problem)),
      };
    }
    return {
      status: 401,
      headers: { "www-authenticate": 'Bearer realm="msgserver"' },
      body: problem === "" ? "unauthorized: AUTH_TOKEN required\n" : `unauthorized: ${problem}\n`,
    };
  }
}
