/**
 * The Broker interface: what the HTTP/WebSocket front end calls. The router
 * actor (actors/router_actor.ts) implements it on the main thread.
 *
 * Records cross this interface as record batches (`Uint8Array`, layout in
 * docs/architecture.md), except {@linkcode Broker.publishRecords}, which
 * takes records already parsed from JSON at the edge. All offsets and
 * timestamps are plain numbers below 2^53; timestamps are ms since epoch.
 */

import type { ErrorCode } from "./errors.ts";

/** How a partition makes appends durable before acknowledging them. */
export type FlushPolicy =
  /** fsync before every ack; concurrent appends share one fsync (group commit). */
  | "sync"
  /** ack at once, fsync every `flushIntervalMs`; a crash may lose that window. */
  | "interval";

/** A topic's settings, fixed at creation. */
export interface TopicConfig {
  /** Number of partitions, 1 to 1024. */
  partitions: number;
  /** Delete segments whose newest record is older; -1 keeps them forever. */
  retentionMs: number;
  /** Delete the oldest segments while a partition is larger; -1 for no limit. */
  retentionBytes: number;
  /** Largest record accepted, key, value and headers included. */
  maxMessageBytes: number;
  flush: FlushPolicy;
  /** fsync period for the "interval" policy. */
  flushIntervalMs: number;
  /** Roll to a new segment when the active one would pass this size. */
  segmentBytes: number;
  /** Roll to a new segment when the active one is older than this. */
  segmentMs: number;
  /**
   * When true, retention deletes segments even if a queue or key_shared
   * group has records in them unsettled; each is counted per group as
   * `lostToRetention`. Default false: such segments are kept.
   */
  retentionDropsUnsettled?: boolean;
}

/** A topic as listed: its name, creation time and settings. */
export interface TopicDescription {
  name: string;
  /** When the topic was created, ms since epoch. */
  createdAt: number;
  config: TopicConfig;
}

/** One partition's log, as its actor reports it. */
export interface PartitionStats {
  partition: number;
  /** Oldest retained offset. */
  logStartOffset: number;
  /** Next offset to assign. */
  logEndOffset: number;
  /** Every offset below it is durable and visible to consumers. */
  highWatermark: number;
  /** Bytes on disk in segment files. */
  bytes: number;
  segments: number;
  /** Delayed records pending in this partition, not yet due. */
  delayed?: number;
}

/** A record parsed at the JSON edge, before it is framed into a batch. */
export interface ProducerRecord {
  /** Picks the partition by hash when `partition` is absent; null or absent for none. */
  key?: Uint8Array | null;
  value: Uint8Array | null;
  /** Name and value pairs, as in a record batch. */
  headers?: [string, Uint8Array | null][];
  /** Producer's create time; the broker's clock when absent. */
  timestamp?: number;
  /** Explicit partition; wins over the key. */
  partition?: number;
  /**
   * Hold the record back until this broker time (ms since epoch); it is
   * appended, and gets its offset, when due. Wins over `delayMs`.
   */
  deliverAt?: number;
  /** Hold the record back this long from its arrival at the broker. */
  delayMs?: number;
}

/**
 * Where one published record landed. A delayed record has no offset yet:
 * `offset` is -1 and `delayId`/`dueAt` say how to cancel it and when it
 * becomes visible.
 */
export interface RecordPosition {
  partition: number;
  offset: number;
  /** Set for a delayed record: cancel it with {@linkcode Broker.cancelDelayed}. */
  delayId?: string;
  /** Broker time the delayed record becomes due, ms since epoch. */
  dueAt?: number;
}

/** Result of {@linkcode Broker.publish}: where the batch landed. */
export interface PublishResult {
  partition: number;
  baseOffset: number;
  lastOffset: number;
  /** Broker time stamped on the batch, ms since epoch. */
  appendTime: number;
}

/** Options for {@linkcode Broker.publish}. */
export interface PublishOptions {
  partition?: number;
  key?: Uint8Array | null;
}

/** Options for {@linkcode Broker.read}. */
export interface ReadOptions {
  /** Soft limit on the bytes returned; at least one whole batch is returned. */
  maxBytes: number;
  /** How long to wait at the high watermark for data; 0 answers at once. */
  maxWaitMs: number;
  /** Aborting ends a waiting read early with no bytes. */
  signal?: AbortSignal;
  /**
   * Only records matching it are returned; the rest are skipped, and
   * `ReadResult.nextOffset` says where the next read continues.
   */
  filter?: RecordFilter;
}

/** Result of {@linkcode Broker.read}. */
export interface ReadResult {
  /** Whole record batches; empty when there was nothing to read in time. */
  bytes: Uint8Array;
  /**
   * Set for a filtered read: the offset after the last record examined,
   * matching or not. Continue there; `bytes` may be empty while it moves.
   */
  nextOffset?: number;
  highWatermark: number;
  logStartOffset: number;
  logEndOffset: number;
}

/** Where a new member of a group with no committed offset starts. */
export type StartPosition = "earliest" | "latest";

/** How a group hands out records. */
export type GroupMode =
  /** Each partition is owned by one member; members commit offsets. */
  | "stream"
  /** Any member may receive any record; each record is settled on its own. */
  | "queue"
  /** As "queue", but at most one record per key is in flight, in offset order. */
  | "key_shared";

/** A partition handed to a member, and where to start fetching. */
export interface PartitionAssignment {
  partition: number;
  offset: number;
}

/** A consumer in a group, as the front end represents it to the router. */
export interface MemberHandle {
  /** Unique within the group; rejoining with it inside the session timeout takes the member over. */
  id: string;
  /**
   * Start fetching these partitions, which the member gains (incremental:
   * partitions it already owns are not repeated); commits must carry
   * `generation` or a later one. Called with no partitions when the member
   * joins or loses its last partition and owns nothing.
   */
  onAssignment(assignment: {
    generation: number;
    topic: string;
    partitions: PartitionAssignment[];
  }): void;
  /**
   * Stop fetching these partitions, which move to another member; the rest
   * stay. They are handed over once this returns, or once the promise it
   * returns settles (bounded by the session timeout). `generation` is the
   * member's current one; commits for these partitions work until then.
   */
  onRevocation(revocation: {
    generation: number;
    topic: string;
    partitions: number[];
  }): void | Promise<void>;
  /**
   * The group was sought: continue `partition` from `offset`. Commits for it
   * must carry `generation` or a later one from now on.
   */
  onSeek?(seek: {
    generation: number;
    topic: string;
    partition: number;
    offset: number;
  }): void;
}

/** Where {@linkcode Broker.seekGroup} moves a group's partitions. */
export type SeekTarget =
  | "earliest"
  | "latest"
  | { offset: number }
  /** First record appended at or after it, else the log end. */
  | { timestamp: number };

/** Result of {@linkcode Broker.seekGroup}. */
export interface GroupSeekResult {
  group: string;
  topic: string;
  /** Commits for the sought partitions need this generation or a later one. */
  generation: number;
  partitions: { partition: number; offset: number }[];
}

/** One member of a group and what it owns. */
export interface GroupMemberDescription {
  id: string;
  topic: string;
  partitions: number[];
  /** False while a disconnected member waits out its session timeout. */
  connected?: boolean;
}

/** One partition's progress in a group. */
export interface GroupPartitionDescription {
  topic: string;
  partition: number;
  /** Null when the group never committed for this partition. */
  committedOffset: number | null;
  logEndOffset: number;
  /** logEndOffset minus the committed offset (or minus logStartOffset when none). */
  lag: number;
  /** ms since the append time of the first record not committed; 0 when none. */
  lagMs: number;
  /** Member id, or null when unassigned. */
  owner: string | null;
}

/** A consumer group as {@linkcode Broker.describeGroup} reports it. */
export interface GroupDescription {
  name: string;
  mode: GroupMode;
  generation: number;
  members: GroupMemberDescription[];
  partitions: GroupPartitionDescription[];
  /** How the group was created (queue and key_shared groups always have them). */
  settings?: GroupSettings;
  /** Queue and key_shared groups: per-partition settlement progress. */
  queue?: QueuePartitionDescription[];
}

/** A group as {@linkcode Broker.listGroups} reports it. */
export interface GroupSummary {
  name: string;
  mode: GroupMode;
  generation: number;
  members: number;
}

/**
 * An exact broker-side filter. A record matches when it carries every tag
 * listed (a header named {@linkcode TAG_HEADER} with that value) and, for
 * every header listed, a header of that name whose value is exactly that
 * UTF-8 string. An empty filter matches every record.
 */
export interface RecordFilter {
  tags?: string[];
  headers?: Record<string, string>;
}

/** Header that carries one tag of a record; a record may carry several. */
export const TAG_HEADER = "dakghar.tag";
/** Header a delayed record carries once appended: the id it was scheduled with. */
export const DELAY_ID_HEADER = "dakghar.delay-id";

/** Provenance headers of a dead letter; values are UTF-8 strings. */
export const DEAD_LETTER_HEADERS = {
  topic: "dakghar.dlq.topic",
  partition: "dakghar.dlq.partition",
  offset: "dakghar.dlq.offset",
  group: "dakghar.dlq.group",
  /** Deliveries the record had when it was dead-lettered. */
  deliveries: "dakghar.dlq.deliveries",
  /** "rejected" or "max_deliveries". */
  reason: "dakghar.dlq.reason",
  /** The last error text a member gave (nack or reject), when any. */
  error: "dakghar.dlq.error",
  /** When the first delivery failed, ms since epoch as decimal text. */
  firstFailedAt: "dakghar.dlq.first-failed-at",
} as const;

/** Limits every way in (HTTP, WebSocket, router) applies alike. */
export const QUEUE_LIMITS = {
  /** Longest delay of a delayed record, or of a nack: 90 days. */
  delayMsMax: 90 * 86_400_000,
  /** Longest extension of a delivery's ack deadline: 12 hours. */
  extendMsMax: 12 * 3_600_000,
  /** Longest error text a nack or reject carries. */
  reasonLengthMax: 4096,
  /** Most records one receive hands out. */
  receiveRecordsMax: 1000,
} as const;

/** Settings of a queue or key_shared group; every field has a default. */
export interface QueueSettings {
  /** A delivery not settled within this is redelivered (default 30,000). */
  ackTimeoutMs: number;
  /** Deliveries before a record goes to dead letters (default 5). */
  maxDeliveries: number;
  /** Redelivery delay after the first nack without a delay (default 1,000). */
  backoffInitialMs: number;
  /** Cap of the doubling nack backoff (default 60,000). */
  backoffMaxMs: number;
  /** Topic dead letters go to (default `<topic>.<group>.dlq`, created on first use). */
  deadLetterTopic: string;
  /**
   * Most records between the oldest unsettled one and the read position
   * (default 1,000,000); delivery of new records pauses at the limit.
   */
  maxUnsettled: number;
}

/** A group's settings, fixed at creation except the queue settings. */
export interface GroupSettings {
  /** The one topic a queue or key_shared group reads; stream groups may read several. */
  topic: string;
  mode: GroupMode;
  /** Where the group starts on a partition it has no state for (default "earliest"). */
  from: StartPosition;
  /** Exact filter applied to every member's deliveries; null for none. */
  filter: RecordFilter | null;
  /** Present for queue and key_shared groups. */
  queue?: QueueSettings;
}

/** What {@linkcode Broker.createGroup} takes: mode and topic, the rest optional. */
export interface GroupCreateRequest {
  topic: string;
  mode: GroupMode;
  from?: StartPosition;
  filter?: RecordFilter | null;
  queue?: Partial<QueueSettings>;
}

/**
 * Records handed to a queue or key_shared member from one partition.
 * `bytes` holds whole record batches (one per run of consecutive offsets);
 * every record in them is a delivery. A record's attempt (delivery count,
 * 1 on the first delivery) is 1 unless listed in `redelivered`.
 */
export interface QueueDelivery {
  topic: string;
  partition: number;
  bytes: Uint8Array;
  /** Flat pairs [offset, attempt, offset, attempt, ...] for attempts above 1. */
  redelivered: number[];
  /** Records in `bytes`. */
  records: number;
}

/** How one delivery is settled. */
export type SettleAction =
  /** Done: never delivered again. */
  | "ack"
  /** Failed: redeliver after `delayMs`, or after the group's backoff when absent. */
  | "nack"
  /** Failed for good: straight to dead letters with `reason`. */
  | "reject"
  /** Still working: the ack deadline becomes now + `delayMs`. */
  | "extend";

/** One settlement; `attempt` must be the delivery's current one. */
export interface Settlement {
  partition: number;
  offset: number;
  attempt: number;
  action: SettleAction;
  /**
   * ack only: settles `count` consecutive offsets from `offset`, each
   * delivered with `attempt` (default 1), as one entry, so a range of
   * acks costs no object per record.
   */
  count?: number;
  /** nack: delay before redelivery; extend: new deadline from now. */
  delayMs?: number;
  /** nack or reject: the error text recorded for dead letters. */
  reason?: string;
}

/** A settlement that was not taken, and why. */
export interface RefusedSettlement {
  partition: number;
  offset: number;
  attempt: number;
  /** "stale_receipt": the record was redelivered, settled, or never delivered with that attempt. */
  code: "stale_receipt" | "unknown_partition";
}

/** Result of {@linkcode Broker.settle}. */
export interface SettleResult {
  /** Settlements taken. */
  settled: number;
  refused: RefusedSettlement[];
}

/** A consumer in a queue or key_shared group, as the front end represents it. */
export interface QueueMemberHandle {
  /** Unique within the group. */
  id: string;
  /**
   * Records for this member; they count against its prefetch until
   * settled, expired or released. Never called with more than its prefetch
   * allows.
   */
  deliver(delivery: QueueDelivery): void;
  /**
   * The broker removed the member: its group (`unknown_group`) or its topic
   * (`unknown_topic`) was deleted. No more deliveries come; the member
   * should stop settling and tell its client.
   */
  removed?(reason: { code: ErrorCode; message: string }): void;
}

/** Options for {@linkcode Broker.joinQueueGroup}. */
export interface QueueJoinOptions {
  /** Most unsettled deliveries at once (default 1,000). */
  prefetchRecords?: number;
  /**
   * Most unsettled bytes at once (default 1 MiB); each concurrent partition
   * fetch may bring one record past its share of it.
   */
  prefetchBytes?: number;
}

/** Options for {@linkcode Broker.receive}. */
export interface ReceiveOptions {
  /** Most records returned (default 10, at most 1,000). */
  maxRecords: number;
  /** Soft byte limit; at least one record is returned when any is ready. */
  maxBytes: number;
  /** Long-poll: wait this long when nothing is ready; 0 answers at once. */
  maxWaitMs: number;
  signal?: AbortSignal;
}

/** A queue or key_shared group's progress on one partition. */
export interface QueuePartitionDescription {
  partition: number;
  /** Every offset below it is settled for the group. */
  ackFloor: number;
  /** Next offset never delivered to the group. */
  readOffset: number;
  logEndOffset: number;
  /** Records not yet settled: logEndOffset - ackFloor minus those settled above the floor. */
  unsettled: number;
  inFlight: number;
  /** Waiting for a nack delay or for their key to come free. */
  waiting: number;
  /** Records dead-lettered from this partition since the group was created. */
  deadLettered: number;
  /** Unsettled records removed by retention (only when the topic allows it). */
  lostToRetention: number;
}

/** Options for {@linkcode Broker.redrive}. */
export interface RedriveOptions {
  /** Target topic; default: each letter's source topic. */
  toTopic?: string;
  /** Only letters matching it (source headers and tags are kept on letters). */
  filter?: RecordFilter;
  /** Ignore the redrive cursor and start at the dead-letter topic's log start. */
  fromStart?: boolean;
}

/** Result of {@linkcode Broker.redrive}. */
export interface RedriveResult {
  deadLetterTopic: string;
  redriven: number;
  /** Letters read past without republishing (not matching the filter). */
  skipped: number;
}

/** The queue and delay half of the broker; {@linkcode Broker} extends it. */
export interface QueueBroker {
  /**
   * Creates a group with a mode, or updates the queue settings of an
   * existing one (mode, topic and filter cannot change).
   *
   * @throws UnknownTopicError, DakgharError bad_request, group_exists (different mode/topic/filter)
   */
  createGroup(
    name: string,
    request: GroupCreateRequest,
  ): Promise<GroupSettings>;
  /**
   * Settings of a group, or undefined for an unknown one. Groups created
   * by a stream member's join report mode "stream", from and filter null.
   */
  groupSettings(name: string): GroupSettings | undefined;
  /**
   * Deletes a group: its members are removed and its state is dropped.
   *
   * @throws DakgharError unknown_group
   */
  deleteGroup(name: string): Promise<void>;
  /**
   * Adds a member to a queue or key_shared group; deliveries start at
   * once. A member id already in the group replaces the old handle, whose
   * in-flight records go back to the group.
   *
   * @throws DakgharError unknown_group, bad_request (a stream group)
   */
  joinQueueGroup(
    group: string,
    member: QueueMemberHandle,
    options?: QueueJoinOptions,
  ): Promise<void>;
  /**
   * Removes a member; its in-flight records go back to the group at once
   * (their delivery counts stay). No error when absent, nor when `member`
   * is given and is no longer the id's handle.
   */
  leaveQueueGroup(
    group: string,
    memberId: string,
    member?: QueueMemberHandle,
  ): void;
  /**
   * Settles deliveries of a queue or key_shared group. Resolves once the
   * group's state covering them is on disk.
   *
   * @throws DakgharError unknown_group
   */
  settle(group: string, settlements: Settlement[]): Promise<SettleResult>;
  /**
   * Hands records to an anonymous receiver (HTTP long-poll): they are in
   * flight until settled or until the ack timeout.
   *
   * @throws DakgharError unknown_group, bad_request (a stream group)
   */
  receive(group: string, options: ReceiveOptions): Promise<QueueDelivery[]>;
  /** Per-partition progress of a queue or key_shared group. */
  describeQueue(group: string): Promise<QueuePartitionDescription[]>;
  /**
   * Republishes dead letters of `group` read past its redrive cursor (or
   * from the start) up to the dead-letter topic's current end, then moves
   * the cursor there.
   */
  redrive(group: string, options?: RedriveOptions): Promise<RedriveResult>;
  /**
   * Cancels a delayed record before it is due.
   *
   * @returns false when no record with that id is pending (fired, cancelled or never)
   * @throws UnknownTopicError
   */
  cancelDelayed(topic: string, delayId: string): Promise<boolean>;
}

/** What the front end calls. Every method may throw a `DakgharError`. */
export interface Broker extends QueueBroker {
  /**
   * Creates a topic and starts its partitions.
   *
   * @throws DakgharError invalid_topic_name, invalid_config, topic_exists
   */
  createTopic(
    name: string,
    options?: Partial<TopicConfig>,
  ): Promise<TopicDescription>;
  /** Every topic, sorted by name. */
  listTopics(): TopicDescription[];
  /**
   * A topic with live statistics for each partition.
   *
   * @throws UnknownTopicError
   */
  describeTopic(
    name: string,
  ): Promise<TopicDescription & { partitions: PartitionStats[] }>;
  /**
   * Stops a topic's partitions and deletes its files.
   *
   * @throws UnknownTopicError
   */
  deleteTopic(name: string): Promise<void>;
  /**
   * Appends one or several record batches to one partition: `partition` if
   * given, else a hash of `key`, else round robin. Resolves once the batch
   * is durable per the topic's flush policy.
   *
   * @throws UnknownTopicError, DakgharError unknown_partition,
   *   MalformedBatchError, RecordTooLargeError, PartitionClosedError
   */
  publish(
    topic: string,
    batch: Uint8Array,
    options?: PublishOptions,
  ): Promise<PublishResult>;
  /**
   * Groups records by partition, frames one batch per partition and appends
   * them. Resolves with each record's position, in input order.
   */
  publishRecords(
    topic: string,
    records: ProducerRecord[],
  ): Promise<RecordPosition[]>;
  /**
   * Reads whole batches from `offset`, waiting up to `maxWaitMs` when there
   * is nothing yet.
   *
   * @throws OffsetOutOfRangeError outside [logStartOffset, logEndOffset]
   */
  read(
    topic: string,
    partition: number,
    offset: number,
    options: ReadOptions,
  ): Promise<ReadResult>;
  /** First offset whose append time is at or after `timestamp`, else the log end offset. */
  offsetForTime(
    topic: string,
    partition: number,
    timestamp: number,
  ): Promise<number>;
  /**
   * Adds a member to a group on `topic` and rebalances incrementally: only
   * partitions that move are revoked from their owners, and handed to the
   * new one once let go. Resolves once the free partitions are handed out.
   * A member id already in the group (a reconnect) gets its partitions back.
   */
  joinGroup(
    group: string,
    topic: string,
    member: MemberHandle,
    from: StartPosition,
  ): Promise<void>;
  /**
   * Removes a member at once and rebalances the rest; no error when absent,
   * nor when `member` is given and is no longer the id's handle.
   */
  leaveGroup(group: string, memberId: string, member?: MemberHandle): void;
  /**
   * The member's connection is gone: it keeps its partitions for the
   * session timeout, then leaves, unless it rejoins with the same id.
   */
  disconnectMember?(
    group: string,
    memberId: string,
    member: MemberHandle,
  ): void;
  /**
   * Moves a live group's committed offsets on `topic` (every partition, or
   * `partitions`) to `to`; owners hear `onSeek` and continue from there.
   *
   * @throws UnknownTopicError, DakgharError unknown_partition, bad_request
   */
  seekGroup?(
    group: string,
    topic: string,
    to: SeekTarget,
    partitions?: number[],
  ): Promise<GroupSeekResult>;
  /**
   * Records that the group consumed `partition` up to (not including)
   * `offset`. Resolves once the commit is on disk.
   *
   * @throws DakgharError unknown_group, stale_generation, not_assigned
   */
  commit(
    group: string,
    topic: string,
    partition: number,
    offset: number,
    memberId: string,
    generation: number,
  ): Promise<void>;
  /**
   * Members, assignment and lag per partition.
   *
   * @throws DakgharError unknown_group
   */
  describeGroup(name: string): Promise<GroupDescription>;
  listGroups(): GroupSummary[];
  /** Stops accepting requests, closes every partition cleanly and flushes group state. */
  close(): Promise<void>;
}
