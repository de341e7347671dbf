import { equal, ok, throws } from "node:assert/strict";
import { Logger } from "../src/log.ts";
import { acceptLoop, listen, ListenError, refuse } from "../src/server/listener.ts";
import { ErrorCode } from "../src/protocol/frames.ts";
import { RawPeer } from "./support/raw_peer.ts";

Deno.test("listen() names the address and the setting when the port is taken", () => {
  const taken = listen("127.0.0.1", 0, 16, "PORT");
  const port = (taken.addr as Deno.NetAddr).port;
  throws(() => listen("127.0.0.1", port, 16, "LEGACY_PORT"), (e: unknown) => {
    ok(e instanceof ListenError);
    ok(e.message.startsWith(`Cannot listen on 127.0.0.1:${port} (LEGACY_PORT): `), e.message);
    ok(e.cause instanceof Deno.errors.AddrInUse);
    return true;
  });
  taken.close();
});

Deno.test("acceptLoop() hands each connection over and ends when the listener closes", async () => {
  const listener = listen("127.0.0.1", 0, 16, "PORT");
  const port = (listener.addr as Deno.NetAddr).port;
  const accepted: Deno.Conn[] = [];
  const stats = { acceptErrors: 0, shed: 0 };
  const loop = acceptLoop(listener, (c) => accepted.push(c), {
    name: "PORT",
    log: new Logger("error", () => {}),
    stats,
  });
  const clients = await Promise.all(
    [1, 2, 3].map(() => Deno.connect({ hostname: "127.0.0.1", port })),
  );
  while (accepted.length < 3) await new Promise((r) => setTimeout(r, 5));
  listener.close();
  await loop; // returns: a closed listener is not an accept error
  equal(stats.acceptErrors, 0);
  for (const c of [...accepted, ...clients]) c.close();
});

Deno.test("refuse() sends ERROR 4 with the reason and closes", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const peer = await RawPeer.connect(listener.addr.port);
  const conn = await listener.accept();
  await refuse(conn, "too many connections");
  const seen = await peer.readUntilClose();
  equal(seen.length, 1);
  equal(seen[0], `ERROR ${ErrorCode.TOO_MANY_CONNECTIONS} too many connections`);
  peer.close();
  listener.close();
});
