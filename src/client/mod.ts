/**
 * The msgserver client library.
 *
 * @example
 * ```ts
 * import { MsgClient } from "./mod.ts";
 * const client = await MsgClient.connect({ port: 9000, clientId: 1 });
 * await client.send("client_1", "hello");
 * await client.close();
 * ```
 *
 * @module
 */
export {
  ConnectionError,
  type ConnectOptions,
  MsgClient,
  NackError,
  randomSession,
} from "./client.ts";
export {
  ClientClosedError,
  type Delivery,
  type DeliveryKind,
  GiveUpError,
  ReliableClient,
  type ReliableOptions,
  type ReliableStats,
  SessionLostError,
} from "./reliable.ts";
export { formatServer, type Server, type ServerAddress } from "./servers.ts";
export { ErrorCode, MAX_NAME_BYTES, NackCode, PROTOCOL_VERSION } from "../protocol/frames.ts";
export type { Welcome } from "../protocol/replies.ts";
