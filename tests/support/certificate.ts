/**
 * Throwaway certificates for the TLS tests.
 *
 * @module
 */

import { equal } from "node:assert/strict";

/**
 * Makes a throwaway CA and a certificate it signs for 127.0.0.1 and localhost, with openssl.
 * (rustls refuses a self-signed certificate used directly as the server's.)
 *
 * @example
 * ```ts
 * import { makeCertificate } from "./certificate.ts";
 * const { ca, cert, key } = await makeCertificate(await Deno.makeTempDir());
 * ```
 */
export async function makeCertificate(
  dir: string,
): Promise<{ ca: string; cert: string; key: string }> {
  const openssl = async (...args: string[]) => {
    const out = await new Deno.Command("openssl", {
      args,
      cwd: dir,
      stdout: "null",
      stderr: "piped",
    })
      .output();
    equal(out.code, 0, `openssl ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  await openssl(
    "req",
    "-x509",
    ...ec,
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "1",
    "-subj",
    "/CN=msgserver test CA",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign",
  );
  await openssl("req", ...ec, "-keyout", "key.pem", "-out", "server.csr", "-subj", "/CN=localhost");
  await Deno.writeTextFile(
    `${dir}/ext.cnf`,
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n" +
      "extendedKeyUsage=serverAuth\n",
  );
  await openssl(
    "x509",
    "-req",
    "-in",
    "server.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    "cert.pem",
    "-days",
    "1",
    "-extfile",
    "ext.cnf",
  );
  return { ca: `${dir}/ca.pem`, cert: `${dir}/cert.pem`, key: `${dir}/key.pem` };
}
