/**
 * One suite for what both kinds of connection share (native on PORT, legacy on LEGACY_PORT):
 * acks, end of input, timeouts, the connection limit, shutdown and storage refusal. Each kind
 * says only how its peer speaks and how its protocol says goodbye; the expectations are common.
 */

import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { delay } from "../src/io/within.ts";
import { decodeAck, decodeError, decodeNack } from "../src/protocol/replies.ts";
import { encodeMsg, ErrorCode, FrameType, NackCode } from "../src/protocol/frames.ts";
import { concat } from "../src/io/concat.ts";
import { MsgClient } from "../src/client/client.ts";
import { freePort } from "./support/net.ts";
import { RawPeer } from "./support/raw_peer.ts";
import { readRecords, type TestServer, withServer } from "./support/server.ts";
import { legacyFrame, LegacyPeer } from "./support/legacy_peer.ts";
import { FakeStore } from "./support/fake_store.ts";

/** How a connection ended, as the peer saw it. */
interface Outcome {
  /** Messages acked. */
  acked: number;
  /** msg_ids refused with NACK 4 (native only: the legacy protocol cannot refuse). */
  refused: number[];
  /** The ERROR code of the goodbye, or null when the connection just closed. */
  error: number | null;
}

interface Peer {
  /** Sends messages with these msg_ids (client_id and name are the kind's). */
  send(ids: number[]): Promise<void>;
  /** Ends the peer's input (half-close), as a client that has sent all it has. */
  closeWrite(): Promise<void>;
  /** Reads until the server closes the connection. */
  readUntilClose(timeoutMs?: number): Promise<Outcome>;
  close(): void;
}

interface Kind {
  name: string;
  /** LEGACY_PORT for the server, when the kind needs it. */
  config(): { LEGACY_PORT?: number };
  port(t: TestServer): number;
  /** Opens a connection, ready to send. */
  open(port: number, clientId: number): Promise<Peer>;
  /** The ERROR code a goodbye of `code` arrives as: the legacy protocol has none. */
  goodbye(code: number): number | null;
}

const native: Kind = {
  name: "native",
  config: () => ({}),
  port: (t) => t.port,
  async open(port, clientId) {
    const { peer, welcome } = await RawPeer.hello(port, clientId, 0n);
    ok(welcome.startsWith("WELCOME"), welcome);
    return {
      send: (ids) => peer.write(concat(ids.map((id) => encodeMsg(id, "kind", `m${id}`)))),
      closeWrite: () => peer.conn.closeWrite(),
      async readUntilClose(timeoutMs = 10000) {
        const outcome: Outcome = { acked: 0, refused: [], error: null };
        for (;;) {
          let frame;
          try {
            frame = await peer.readOrClose(timeoutMs);
          } catch (e) {
            if (e instanceof Deno.errors.ConnectionReset) return outcome;
            throw e;
          }
          if (frame === null) return outcome;
          const { type, body } = frame;
          if (type === FrameType.ACK) outcome.acked = decodeAck(body, 0, body.length);
          else if (type === FrameType.NACK) {
            outcome.refused.push(decodeNack(body, 0, body.length).msgId);
          } else if (type === FrameType.ERROR) {
            outcome.error = decodeError(body, 0, body.length).code;
          }
        }
      },
      close: () => peer.close(),
    };
  },
  goodbye: (code) => code,
};

const legacy: Kind = {
  name: "legacy",
  config: () => ({ LEGACY_PORT: freePort() }),
  port: (t) => t.server.legacyAddr!.port,
  async open(port, clientId) {
    const peer = await LegacyPeer.connect(port);
    return {
      send: (ids) =>
        peer.write(concat(ids.map((id) => legacyFrame(clientId, id, "kind", `m${id}`)))),
      closeWrite: () => peer.conn.closeWrite(),
      async readUntilClose(timeoutMs) {
        const text = await peer.readUntilClose(timeoutMs);
        ok(/^(ack)*$/.test(text), `not only acks: ${text}`);
        return { acked: text.length / 3, refused: [], error: null };
      },
      close: () => peer.close(),
    };
  },
  goodbye: () => null,
};

const ids = (n: number) => Array.from({ length: n }, (_, i) => i + 1);

for (const kind of [native, legacy]) {
  Deno.test(`${kind.name}: a peer that ends its input gets every ack it is owed, then the close`, async () => {
    await withServer({ ...kind.config(), MSG_PER_WRITE: 7 }, async (t) => {
      const peer = await kind.open(kind.port(t), 5);
      await peer.send(ids(100));
      await peer.closeWrite();
      deepStrictEqual(await peer.readUntilClose(), { acked: 100, refused: [], error: null });
      peer.close();
      deepStrictEqual(
        (await readRecords(t.file)).map((r) => `${r.clientId} ${r.msgId}`),
        ids(100).map((i) => `5 ${i}`),
      );
    });
  });

  Deno.test(`${kind.name}: IDLE_TIMEOUT_MS cuts a silent connection, with ERROR 5 where the protocol has it`, async () => {
    await withServer({ ...kind.config(), IDLE_TIMEOUT_MS: 150 }, async (t) => {
      const peer = await kind.open(kind.port(t), 1);
      await peer.send([1]);
      const started = performance.now();
      const outcome = await peer.readUntilClose(5000);
      const took = performance.now() - started;
      peer.close();
      deepStrictEqual(outcome, { acked: 1, refused: [], error: kind.goodbye(ErrorCode.TIMEOUT) });
      ok(took >= 100 && took < 3000, `cut after ${took.toFixed(0)} ms`);
      ok(t.logs.some((l) => l.includes("idle for 150 ms")), t.logs.join(""));
    });
  });

  Deno.test(`${kind.name}: past MAX_CONNECTIONS (counting both kinds) a connection is refused`, async () => {
    await withServer({ ...kind.config(), MAX_CONNECTIONS: 1 }, async (t) => {
      const first = await MsgClient.connect({ port: t.port, clientId: 1 });
      let outcome: Outcome;
      if (kind === native) {
        const peer = await RawPeer.connect(kind.port(t)); // no HELLO: the refusal comes first
        const seen = await peer.readUntilClose();
        peer.close();
        outcome = {
          acked: 0,
          refused: [],
          error: seen.length > 0 ? Number(seen[0]!.split(" ")[1]) : null,
        };
      } else {
        const peer = await kind.open(kind.port(t), 2);
        outcome = await peer.readUntilClose();
        peer.close();
      }
      deepStrictEqual(outcome, {
        acked: 0,
        refused: [],
        error: kind.goodbye(ErrorCode.TOO_MANY_CONNECTIONS),
      });
      await first.close();
    });
  });

  Deno.test(`${kind.name}: shutdown stores and acks everything queued, then says goodbye`, async () => {
    const store = new FakeStore();
    let release!: () => void;
    store.gate = new Promise((r) => release = r); // holds the writer inside its first batch
    await withServer({ ...kind.config(), MSG_PER_WRITE: 1 }, async (t) => {
      const peer = await kind.open(kind.port(t), 3);
      await peer.send(ids(300));
      while (t.server.stats().received < 300) await delay(5);
      ok(t.server.stats().queueRecords > 0, "nothing was queued when shutdown began");
      const closing = peer.readUntilClose();
      const shutdown = t.server.shutdown();
      await delay(20);
      release();
      await shutdown;
      deepStrictEqual(await closing, {
        acked: 300,
        refused: [],
        error: kind.goodbye(ErrorCode.SHUTTING_DOWN),
      });
      peer.close();
      equal(store.batches.length, 300);
    }, { store });
  });

  Deno.test(`${kind.name}: records the store keeps refusing are never acked; the peer is told if it can be`, async () => {
    const store = new FakeStore();
    store.failAppends = Infinity;
    await withServer({ ...kind.config(), SHUTDOWN_TIMEOUT_MS: 20_000 }, async (t) => {
      const peer = await kind.open(kind.port(t), 4);
      await peer.send([1, 2]);
      if (kind === native) {
        // NACK 4 for each, and the connection goes on: once the store works, a new message lands.
        while (t.server.stats().writer.failedRecords < 2) await delay(5);
        store.failAppends = 0;
        await peer.send([3]);
        await delay(50);
        await peer.closeWrite();
        deepStrictEqual(await peer.readUntilClose(), { acked: 3, refused: [1, 2], error: null });
        equal(store.segments.join(""), "4 3 kind m3\n");
      } else {
        // No way to refuse: the connection is closed at once, without an ack.
        const started = performance.now();
        deepStrictEqual(await peer.readUntilClose(), { acked: 0, refused: [], error: null });
        ok(performance.now() - started < 5000);
        equal(store.segments.join(""), "");
      }
      peer.close();
      ok(t.logs.some((l) => l.includes(`refusing the batch with NACK ${NackCode.STORAGE_ERROR}`)));
    }, { store });
  });
}
