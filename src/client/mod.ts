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
  CreatedGroup,
  GroupCreateOptions,
  JoinOptions,
  MemberFetchOptions,
  MemberFetchResult,
  MemberJoined,
  PartitionReadResult,
  ReadOptions,
  ReceiptAction,
  ReceiptSettleResult,
  ReceiveOptions,
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
  type NackOptions,
  QueueMessage,
  type QueueSubscribeOptions,
  QueueSubscription,
  type QueueSubscriptionEvent,
} from "./queue_subscription.ts";
export { ReceivedMessage } from "./received_message.ts";
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
