/**
 * Dakghar: a message broker that is an event log and a message queue at once.
 *
 * This module is the only public entry point. It starts a broker in-process
 * and exports the record batch codec that binary producers and consumers use
 * to speak the wire format, plus the error classes and broker types.
 *
 * @example
 * ```ts
 * import { startBroker } from "dakghar";
 *
 * const running = await startBroker({ dataDir: "./data", port: 8080 });
 * await fetch(`${running.url}/topics`, {
 *   method: "POST",
 *   headers: { "content-type": "application/json" },
 *   body: JSON.stringify({ name: "orders", partitions: 3 }),
 * });
 * await running.stop();
 * ```
 *
 * @module
 */

export {
  type BrokerServerOptions,
  type RunningBroker,
  startBroker,
} from "./server.ts";

export {
  BATCH_HEADER_BYTES,
  batchAppendTime,
  batchBaseOffset,
  batchBaseTimestamp,
  batchLastOffset,
  batchLength,
  type BatchRecord,
  batchRecordCount,
  decodeBatches,
  type DecodedRecord,
  encodeBatch,
  encodeRecords,
  forEachRecord,
  sliceBatches,
  validateBatches,
} from "./log/record_batch.ts";

export {
  DakgharError,
  type ErrorCode,
  errorStatus,
  MalformedBatchError,
  OffsetOutOfRangeError,
  PartitionClosedError,
  RecordTooLargeError,
  UnknownTopicError,
} from "./errors.ts";

export type {
  Broker,
  FlushPolicy,
  GroupCreateRequest,
  GroupDescription,
  GroupMode,
  GroupSettings,
  PartitionStats,
  ProducerRecord,
  PublishResult,
  QueueSettings,
  ReadResult,
  RecordFilter,
  Settlement,
  TopicConfig,
  TopicDescription,
} from "./broker.ts";

export {
  createLogger,
  type Logger,
  type LogLevel,
  silentLogger,
  textSink,
} from "./logger.ts";

export {
  type ClientErrorCode,
  ConsumedRecord,
  createClient,
  type CreatedGroup,
  DakgharClient,
  DakgharClientError,
  type DakgharClientOptions,
  type GroupCreateOptions,
  GroupMember,
  type JoinOptions,
  type MemberFetchOptions,
  type MemberFetchResult,
  type MemberJoined,
  Message,
  type NackOptions,
  type OutgoingRecord,
  type PartitionReadResult,
  type PublishOptions,
  QueueMessage,
  type QueueSubscribeOptions,
  QueueSubscription,
  type QueueSubscriptionEvent,
  type ReadOptions,
  type ReceiptAction,
  type ReceiptSettleResult,
  ReceivedMessage,
  type ReceiveOptions as ClientReceiveOptions,
  type ReconnectOptions,
  type RecordPosition,
  type RecordValue,
  type SeekResult,
  type SeekTarget,
  type SubscribeFrom,
  type SubscribeOptions,
  Subscription,
  type SubscriptionEvent,
  type TopicDetails,
  type WebSocketConstructor,
  type WebSocketLike,
} from "./client/mod.ts";
