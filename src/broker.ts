/**
 * The Broker interface: what the HTTP/WebSocket front end calls. The router
 * actor (actors/router_actor.ts) implements it on the main thread.
 *
 * Records cross this interface as record batches (`Uint8Array`, layout in
 * docs/architecture.md), except {@linkcode Broker.publishRecords}, which
 * takes records already parsed from JSON at the edge. All offsets and
 * timestamps are plain numbers below 2^53; timestamps are ms since epoch.
 */

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
}

/** Where one published record landed. */
export interface RecordPosition {
  partition: number;
  offset: number;
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
}

/** Result of {@linkcode Broker.read}. */
export interface ReadResult {
  /** Whole record batches; empty when there was nothing to read in time. */
  bytes: Uint8Array;
  highWatermark: number;
  logStartOffset: number;
  logEndOffset: number;
}

/** Where a new member of a group with no committed offset starts. */
export type StartPosition = "earliest" | "latest";

/** How a group hands out records. Only "stream" is implemented. */
export type GroupMode =
  /** Each partition is owned by one member; members commit offsets. */
  | "stream"
  /** Reserved for per-message acknowledgements. */
  | "queue";

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
}

/** A group as {@linkcode Broker.listGroups} reports it. */
export interface GroupSummary {
  name: string;
  mode: GroupMode;
  generation: number;
  members: number;
}

/** What the front end calls. Every method may throw a `DakgharError`. */
export interface Broker {
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
