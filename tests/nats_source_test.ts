// The export's check of what a consumer delivered against the stream's leader. A replica that
// disagrees with the leader comes from nats-server itself (a stream leader killed under load and
// restarted), at no moment a test can choose; so the check is driven here with the leader's copy
// and the replica's as maps, and export_test.ts shows the normal path against a real server.
import { deepStrictEqual, equal, rejects } from "node:assert/strict";
import { checkAgainstLeader } from "../src/export/nats_source.ts";
import type { SourceMessage } from "../src/export/source.ts";

const enc = new TextEncoder();

/** Message `seq` of client `client`, one line per id in `ids`. */
function message(seq: number, client: number, ids: number[]): SourceMessage {
  const text = ids.map((id) => `${client} ${id} bench p${id}\n`).join("");
  return {
    seq,
    subject: `msgs.${client}.7`,
    data: enc.encode(text),
    last: ids.at(-1)!,
    records: ids.length,
    expected: null,
  };
}

/** The leader's stream: seqs 1 to `n`, client `seq % 3 + 1`, two ids each. */
function leaderStream(n: number): Map<number, SourceMessage> {
  return new Map(
    Array.from({ length: n }, (_, i) => {
      const seq = i + 1;
      return [seq, message(seq, seq % 3 + 1, [2 * seq - 1, 2 * seq])];
    }),
  );
}

/** A leader lookup over `stream` that records what it was asked. */
function leaderOf(stream: Map<number, SourceMessage>, asked: number[] = []) {
  return (seq: number) => {
    asked.push(seq);
    return Promise.resolve(stream.get(seq) ?? null);
  };
}

const seqsOf = (ms: SourceMessage[] | null) => ms?.map((m) => m.seq) ?? null;

Deno.test("checkAgainstLeader() keeps a batch the leader holds, asking for its first and last only", async () => {
  const leader = leaderStream(10);
  const asked: number[] = [];
  const batch = [3, 4, 5, 6, 7].map((s) => leader.get(s)!);
  equal(await checkAgainstLeader(batch, leaderOf(leader, asked)), null);
  deepStrictEqual(asked, [3, 7]);
  // One message: one question.
  asked.length = 0;
  equal(await checkAgainstLeader([leader.get(9)!], leaderOf(leader, asked)), null);
  deepStrictEqual(asked, [9]);
  equal(await checkAgainstLeader([], leaderOf(leader, asked)), null);
  deepStrictEqual(asked, [9]);
});

Deno.test("checkAgainstLeader() replaces a batch ending in messages the leader does not hold", async () => {
  // The replica went on past the leader's end with messages the cluster never took (its publish
  // timed out and was refused): the leader is at 8, the replica delivers 6 to 10.
  const leader = leaderStream(8);
  const replica = new Map(leader);
  replica.set(9, message(9, 1, [40, 41]));
  replica.set(10, message(10, 2, [42]));
  const batch = [6, 7, 8, 9, 10].map((s) => replica.get(s)!);
  const replaced = await checkAgainstLeader(batch, leaderOf(leader));
  deepStrictEqual(seqsOf(replaced), [6, 7, 8]);
  deepStrictEqual(replaced, [6, 7, 8].map((s) => leader.get(s)));
});

Deno.test("checkAgainstLeader() replaces a batch whose last message differs from the leader's", async () => {
  // What the cluster preset met: at sequence 225 the replica held a message refused with NACK 4,
  // the leader the acked one; 52,480 records either way, so only the contents tell them apart.
  const leader = leaderStream(225);
  leader.set(225, message(225, 20, [6657, 6658]));
  const replica = new Map(leader);
  replica.set(225, message(225, 21, [6401, 6402]));
  const batch = [221, 222, 223, 224, 225].map((s) => replica.get(s)!);
  const asked: number[] = [];
  const replaced = await checkAgainstLeader(batch, leaderOf(leader, asked));
  deepStrictEqual(replaced, [221, 222, 223, 224, 225].map((s) => leader.get(s)));
  deepStrictEqual(asked, [221, 225, 221, 222, 223, 224, 225]);
});

Deno.test("checkAgainstLeader() replaces a batch whose first message differs, however its last looks", async () => {
  // A replica repaired while a fetch ran: its wrong messages first, the leader's after them.
  const leader = leaderStream(12);
  const replica = new Map(leader);
  replica.set(5, message(5, 1, [90]));
  replica.set(6, message(6, 1, [91]));
  const batch = [5, 6, 7, 8].map((s) => replica.get(s)!);
  deepStrictEqual(
    await checkAgainstLeader(batch, leaderOf(leader)),
    [5, 6, 7, 8].map((s) => leader.get(s)),
  );
  // Same subject and size, another byte: still another message.
  const twin = message(7, 2, [13, 14]);
  const altered = { ...twin, data: twin.data.slice() };
  altered.data[altered.data.length - 2] = 0x78;
  deepStrictEqual(seqsOf(await checkAgainstLeader([altered], leaderOf(leader))), [7]);
});

Deno.test("checkAgainstLeader() reads the leader's copies up to the first it does not hold", async () => {
  const leader = leaderStream(10);
  leader.delete(4); // gone from the stream (a limit, or deleted)
  const replica = leaderStream(10);
  replica.set(10, message(10, 3, [77]));
  const batch = [2, 3, 4, 5, 10].map((s) => replica.get(s)!);
  // 4 is not at the leader: the batch stops before it, and the exporter meets the gap there.
  deepStrictEqual(seqsOf(await checkAgainstLeader(batch, leaderOf(leader))), [2, 3]);
  // A leader holding none of the batch: nothing is handed out.
  deepStrictEqual(
    await checkAgainstLeader([replica.get(10)!], leaderOf(new Map())),
    [],
  );
});

Deno.test("checkAgainstLeader() passes the leader lookup's failure on", async () => {
  const leader = leaderStream(3);
  await rejects(
    checkAgainstLeader(
      [leader.get(1)!],
      () => Promise.reject(new Error("NATS has failed for 5000 ms")),
    ),
    /NATS has failed/,
  );
});
