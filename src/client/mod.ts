/**
 * The Dakghar client, for browsers, Deno, Node 20+ and edge functions.
 *
 * @example
 * ```ts
 * import { createClient } from "dakghar";
 *
 * const client = createClient({ url: "http://127.0.0.1:8080" });
 * await client.publish("orders", { key: "c-42", value: { total: 12.5 } });
 * ```
 *
 * @module
 */
export {
  createClient,
  DakgharClient,
  type DakgharClientOptions,
  GroupMember,
  type PublishOptions,
} from "./client.ts";
export { type ClientErrorCode, DakgharClientError } from "./errors.ts";
export type {
  JoinOptions,
  MemberFetchOptions,
  MemberFetchResult,
  MemberJoined,
  PartitionReadResult,
  ReadOptions,
  SeekResult,
  SeekTarget,
  TopicDetails,
} from "./http.ts";
export {
  ConsumedRecord,
  type OutgoingRecord,
  type RecordPosition,
  type RecordValue,
} from "./records.ts";
export {
  Message,
  type ReconnectOptions,
  type SubscribeFrom,
  type SubscribeOptions,
  Subscription,
  type SubscriptionEvent,
} from "./subscription.ts";
export type {
  WebSocketConstructor,
  WebSocketLike,
} from "./websocket_transport.ts";
