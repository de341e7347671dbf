/**
 * Records in a JetStream stream laid out as the JetStream store lays them
 * (`src/store/jetstream_layout.ts`): one message per session per batch, its data the lines the
 * data file would hold, formatted by the server's own formatter (`LineBuffer`).
 *
 * @module
 */

import { headers, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type PubAck } from "@nats-io/jetstream";
import { LineBuffer } from "../../src/server/line.ts";
import {
  Header,
  legacySubject,
  sessionMsgId,
  sessionSubject,
  streamSubjects,
} from "../../src/store/jetstream_layout.ts";

const encoder = new TextEncoder();

/** One record: its msg_id, name and payload. */
export interface Rec {
  msgId: number;
  name: string;
  payload: string | Uint8Array;
}

/** A message to publish: one session's records of one batch (session null: LEGACY_PORT). */
export interface SessionBatch {
  clientId: number;
  session: bigint | null;
  records: Rec[];
}

/** Formats records as the data file's lines, with the server's formatter. */
export function formatLines(clientId: number, records: Rec[]): Uint8Array {
  const out = new LineBuffer(1024);
  for (const r of records) {
    const name = encoder.encode(r.name);
    const payload = typeof r.payload === "string" ? encoder.encode(r.payload) : r.payload;
    out.writeRecord(clientId, r.msgId, name, 0, name.length, payload, 0, payload.length);
  }
  return out.bytes.slice(0, out.length);
}

/** Creates the stream `name` taking `<subject>.>`, as the store would. */
export async function createStream(nc: NatsConnection, name = "MSGS", subject = "msgs") {
  const jsm = await jetstreamManager(nc);
  return await jsm.streams.add({ name, subjects: streamSubjects(subject) });
}

/**
 * Publishes each batch as one message (many in flight at once), in order; resolves with each
 * message's data and sequence.
 */
export async function publishBatches(
  nc: NatsConnection,
  batches: SessionBatch[],
  subject = "msgs",
): Promise<{ seq: number; data: Uint8Array }[]> {
  const js = jetstream(nc);
  const out: { seq: number; data: Uint8Array }[] = [];
  const window = 512;
  for (let i = 0; i < batches.length; i += window) {
    const acks: Promise<PubAck>[] = [];
    const datas: Uint8Array[] = [];
    for (const b of batches.slice(i, i + window)) {
      const data = formatLines(b.clientId, b.records);
      const first = b.records[0]?.msgId ?? 0;
      const last = b.records.at(-1)?.msgId ?? 0;
      const h = headers();
      h.set(Header.FIRST, `${first}`);
      h.set(Header.LAST, `${last}`);
      h.set(Header.RECORDS, `${b.records.length}`);
      const subj = b.session === null
        ? legacySubject(subject)
        : sessionSubject(subject, b.clientId, b.session);
      const id = b.session === null
        ? `legacy.${i}.${datas.length}.${crypto.randomUUID()}`
        : sessionMsgId(b.clientId, b.session, first, last);
      acks.push(js.publish(subj, data, { headers: h, msgID: id }));
      datas.push(data);
    }
    const done = await Promise.all(acks);
    done.forEach((ack, k) => out.push({ seq: ack.seq, data: datas[k]! }));
  }
  return out;
}

/**
 * `count` batches of `perBatch` records each for client `clientId` in `session`, msg_ids from
 * `firstId` on, payloads `p<msg_id>` padded to about `payloadBytes`.
 */
export function sequentialBatches(
  clientId: number,
  session: bigint,
  count: number,
  perBatch: number,
  options: { firstId?: number; payloadBytes?: number } = {},
): SessionBatch[] {
  const batches: SessionBatch[] = [];
  let id = options.firstId ?? 1;
  const pad = "x".repeat(Math.max(0, (options.payloadBytes ?? 16) - 8));
  for (let b = 0; b < count; b++) {
    const records: Rec[] = [];
    for (let r = 0; r < perBatch; r++, id++) {
      records.push({ msgId: id, name: `client_${clientId}`, payload: `p${id}${pad}` });
    }
    batches.push({ clientId, session, records });
  }
  return batches;
}
