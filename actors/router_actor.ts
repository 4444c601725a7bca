/**
 * The router actor: implements the Broker interface on the main thread.
 *
 * It owns topic metadata, one PartitionClient per partition (each a worker
 * running actors/partition_actor.ts), the partitioners and the consumer
 * groups, and talks to partitions only by messages. It runs beside the
 * front end rather than on a worker of its own, which saves two thread hops
 * on every publish and fetch.
 */
import type {
  Broker,
  GroupCreateRequest,
  GroupDescription,
  GroupSeekResult,
  GroupSettings,
  GroupSummary,
  MemberHandle,
  PartitionStats,
  ProducerRecord,
  PublishOptions,
  PublishResult,
  QueueDelivery,
  QueueJoinOptions,
  QueueMemberHandle,
  QueuePartitionDescription,
  ReadOptions,
  ReadResult,
  ReceiveOptions,
  RecordPosition,
  RedriveOptions,
  RedriveResult,
  SeekTarget,
  Settlement,
  SettleResult,
  StartPosition,
  TopicConfig,
  TopicDescription,
} from "../src/broker.ts";
import { DakgharError, UnknownTopicError } from "../src/errors.ts";
import { delayIdPartition, dueTime } from "../src/router/delayed_records.ts";
import { QueueGroups } from "../src/router/queue_groups.ts";
import type { PartitionLogConfig } from "../src/log/partition_log.ts";
import { type BatchRecord, encodeRecords } from "../src/log/record_batch.ts";
import { type DataDirLock, lockDataDir } from "../src/router/data_dir_lock.ts";
import { type Logger, silentLogger } from "../src/logger.ts";
import { GroupCoordinator } from "../src/router/group_coordinator.ts";
import { OffsetStore } from "../src/router/offset_store.ts";
import { PartitionClient } from "../src/router/partition_client.ts";
import { Partitioner } from "../src/router/partitioner.ts";
import {
  defaultTopicConfig,
  resolveTopicConfig,
  TopicStore,
} from "../src/router/topic_store.ts";
import type { Runtime } from "../src/runtime/types.ts";

/** Bytes of log between two offset index entries, for every partition. */
const INDEX_INTERVAL_BYTES = 4096;

/** Options for {@linkcode startRouter}. */
export interface RouterOptions {
  /** Holds topics/ and groups/. */
  dataDir: string;
  /** The file system and worker halves of the runtime; a whole `Runtime` fits. */
  runtime: Pick<Runtime, "fs" | "startWorker">;
  logger?: Logger;
  /** Create a topic with default settings on its first publish (default false). */
  autoCreateTopics?: boolean;
  /** Settings for topics created without them; defaults to `defaultTopicConfig`. */
  topicDefaults?: Partial<TopicConfig>;
  /**
   * Most partitions across all topics (default 256). Each partition is a
   * worker thread costing about 16 MB, so this bounds the broker's memory.
   */
  maxPartitions?: number;
  /**
   * How long a group member whose connection dropped keeps its partitions
   * before they move to the others (default 45 s).
   */
  sessionTimeoutMs?: number;
}

/** Default for {@linkcode RouterOptions.maxPartitions}. */
export const defaultMaxPartitions = 256;

interface Topic {
  description: TopicDescription;
  partitioner: Partitioner;
  partitions: PartitionClient[];
  /**
   * Highest log end offset seen per partition (from its start, appends,
   * reads and stats), -1 before the first. A log end never goes down, so
   * every offset a consumer was handed lies at or below it: commits above
   * it are refused without a round trip to the partition.
   */
  logEnds: number[];
}

/**
 * Loads every topic, starts its partition actors (each recovers its log)
 * and loads the consumer groups.
 *
 * @example
 * ```ts
 * const broker = await startRouter({ dataDir: "data", runtime });
 * await broker.createTopic("orders", { partitions: 3 });
 * ```
 */
export async function startRouter(
  options: RouterOptions,
): Promise<RouterActor> {
  const router = new RouterActor(options);
  try {
    await router.start();
  } catch (error) {
    await router.close();
    throw error;
  }
  return router;
}

/** The Broker on the main thread. Create it with {@linkcode startRouter}. */
export class RouterActor implements Broker {
  readonly #options: RouterOptions;
  readonly #log: Logger;
  readonly #store: TopicStore;
  readonly #groups: GroupCoordinator;
  readonly #topics = new Map<string, Topic>();
  readonly #creating = new Map<string, Promise<TopicDescription>>();
  readonly #topicDefaults: TopicConfig;
  readonly #queues: QueueGroups;
  #closing = false;
  #lock: DataDirLock | undefined;

  constructor(options: RouterOptions) {
    this.#options = options;
    this.#log = (options.logger ?? silentLogger).scope("router");
    this.#topicDefaults = resolveTopicConfig(
      options.topicDefaults,
      defaultTopicConfig,
    );
    this.#store = new TopicStore(
      options.runtime.fs,
      options.dataDir,
      this.#log,
    );
    this.#groups = new GroupCoordinator({
      store: new OffsetStore(options.runtime.fs, options.dataDir, this.#log),
      partitionCount: (topic) => this.#topic(topic).partitions.length,
      logRanges: (topic) => this.#stats(this.#topic(topic)),
      appendTimeAt: (topic, partition, offset) =>
        this.#appendTimeAt(topic, partition, offset),
      sessionTimeoutMs: options.sessionTimeoutMs,
      log: this.#log.scope("groups"),
    });
    this.#queues = new QueueGroups({
      groups: this.#groups,
      partitions: (topic) => this.#topic(topic).partitions,
      topicConfig: (topic) => this.#topic(topic).description.config,
      topicDefaults: this.#topicDefaults,
      hasTopic: (topic) => this.#topics.has(topic),
      logRanges: (topic) => this.#stats(this.#topic(topic)),
      createTopic: (name, config) => this.createTopic(name, config),
      publish: (topic, batch, options) => this.publish(topic, batch, options),
      publishRecords: (topic, records) => this.publishRecords(topic, records),
      read: (topic, partition, offset, options) =>
        this.read(topic, partition, offset, options),
      log: this.#log,
    });
  }

  /** Loads topics and groups; called once by {@linkcode startRouter}. */
  async start(): Promise<void> {
    // Before any file is read: a second broker on this directory must not
    // recover, or mark clean, partitions that a live broker is writing.
    this.#lock = lockDataDir(
      this.#options.runtime.fs,
      this.#options.dataDir,
      this.#log,
    );
    // Groups first: a partition's first start sends its queue groups' qconfig.
    this.#groups.load();
    this.#queues.load();
    const started: Promise<unknown>[] = [];
    for (const description of this.#store.load()) {
      started.push(this.#startTopic(description));
    }
    const results = await Promise.allSettled(started);
    const failed = results.filter((r) => r.status === "rejected").length;
    this.#log.info("router started", {
      topics: this.#topics.size,
      failedTopics: failed,
    });
  }

  async createTopic(
    name: string,
    options?: Partial<TopicConfig>,
  ): Promise<TopicDescription> {
    this.#checkOpen();
    this.#checkPartitionBudget(
      options?.partitions ?? this.#topicDefaults.partitions,
    );
    const description = this.#store.create(
      name,
      options,
      Date.now(),
      this.#topicDefaults,
    );
    this.#log.info("topic created", { topic: name, ...description.config });
    await this.#startTopic(description);
    return description;
  }

  listTopics(): TopicDescription[] {
    return this.#store.list();
  }

  async describeTopic(
    name: string,
  ): Promise<TopicDescription & { partitions: PartitionStats[] }> {
    const topic = this.#topic(name);
    return { ...topic.description, partitions: await this.#stats(topic) };
  }

  async deleteTopic(name: string): Promise<void> {
    this.#checkOpen();
    const topic = this.#topic(name);
    this.#topics.delete(name);
    await Promise.all(topic.partitions.map((p) => p.close(true)));
    this.#store.delete(name);
    // The cursors went with the partition directories.
    this.#queues.topicDeleted(name);
    await this.#groups.forgetTopic(name);
    this.#log.info("topic deleted", { topic: name });
  }

  async publish(
    topicName: string,
    batch: Uint8Array,
    options: PublishOptions = {},
  ): Promise<PublishResult> {
    this.#checkOpen();
    const topic = await this.#topicForPublish(topicName);
    const partition = options.partition !== undefined
      ? this.#checkPartition(topic, options.partition)
      : topic.partitioner.choose(options.key);
    const reply = await topic.partitions[partition].request({
      type: "append",
      batches: batch,
    });
    noteLogEnd(topic, partition, reply.lastOffset + 1);
    return {
      partition,
      baseOffset: reply.baseOffset,
      lastOffset: reply.lastOffset,
      appendTime: reply.appendTime,
    };
  }

  async publishRecords(
    topicName: string,
    records: ProducerRecord[],
  ): Promise<RecordPosition[]> {
    this.#checkOpen();
    if (records.length === 0) return [];
    const topic = await this.#topicForPublish(topicName);

    // Due times are checked before anything is sent, like sizes below.
    const now = Date.now();
    const dues = records.map((record) => dueTime(record, now));

    // Records without key or partition stick to one partition per call, so
    // a keyless burst makes one batch instead of one per partition.
    // Delayed records are partitioned alike but kept apart: they go to the
    // partition's delay journal, not its log.
    let keyless: number | undefined;
    const byPartition = new Map<number, number[]>();
    const delayedByPartition = new Map<number, number[]>();
    records.forEach((record, index) => {
      const partition = record.partition !== undefined
        ? this.#checkPartition(topic, record.partition)
        : record.key != null
        ? topic.partitioner.choose(record.key)
        : (keyless ??= topic.partitioner.choose(null));
      const groups = dues[index] === undefined
        ? byPartition
        : delayedByPartition;
      const indexes = groups.get(partition) ?? [];
      indexes.push(index);
      groups.set(partition, indexes);
    });

    // Encode every partition's batches before appending any, so that a
    // record the topic cannot take fails the request with nothing written.
    const { maxMessageBytes } = topic.description.config;
    const frame = (indexes: number[]) =>
      encodeRecords(
        indexes.map((index): BatchRecord => {
          const record = records[index];
          return {
            key: record.key ?? null,
            value: record.value,
            headers: record.headers ?? [],
            timestamp: record.timestamp ?? now,
          };
        }),
        maxMessageBytes,
      );
    const appends = [...byPartition].map(([partition, indexes]) => ({
      partition,
      indexes,
      batch: frame(indexes),
    }));
    const schedules = [...delayedByPartition].map(([partition, indexes]) => ({
      partition,
      indexes,
      batch: frame(indexes),
    }));

    const positions: RecordPosition[] = new Array(records.length);
    await Promise.all([
      ...appends.map(async ({ partition, indexes, batch }) => {
        const reply = await topic.partitions[partition].request({
          type: "append",
          batches: batch,
        });
        noteLogEnd(topic, partition, reply.lastOffset + 1);
        indexes.forEach((recordIndex, i) => {
          positions[recordIndex] = { partition, offset: reply.baseOffset + i };
        });
      }),
      ...schedules.map(async ({ partition, indexes, batch }) => {
        const reply = await topic.partitions[partition].request({
          type: "schedule",
          records: batch,
          due: indexes.map((index) => dues[index]!),
        });
        indexes.forEach((recordIndex, i) => {
          positions[recordIndex] = {
            partition,
            offset: -1,
            delayId: reply.ids[i],
            dueAt: reply.due[i] ?? dues[recordIndex],
          };
        });
      }),
    ]);
    return positions;
  }

  async cancelDelayed(topicName: string, delayId: string): Promise<boolean> {
    this.#checkOpen();
    const topic = this.#topic(topicName);
    const partition = typeof delayId === "string"
      ? delayIdPartition(delayId)
      : undefined;
    if (partition === undefined || partition >= topic.partitions.length) {
      return false;
    }
    const reply = await topic.partitions[partition].request({
      type: "unschedule",
      delayId,
    });
    return reply.found;
  }

  async read(
    topicName: string,
    partition: number,
    offset: number,
    options: ReadOptions,
  ): Promise<ReadResult> {
    this.#checkOpen();
    const topic = this.#topic(topicName);
    this.#checkPartition(topic, partition);
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw new DakgharError("bad_request", `Invalid offset: ${offset}`, {
        offset,
      });
    }
    const reply = await topic.partitions[partition].request({
      type: "read",
      offset,
      maxBytes: options.maxBytes,
      maxWaitMs: options.maxWaitMs,
      ...(options.filter == null ? {} : { filter: options.filter }),
    }, options.signal);
    noteLogEnd(topic, partition, reply.logEndOffset);
    return {
      bytes: reply.bytes,
      ...(reply.nextOffset === undefined
        ? {}
        : { nextOffset: reply.nextOffset }),
      highWatermark: reply.highWatermark,
      logStartOffset: reply.logStartOffset,
      logEndOffset: reply.logEndOffset,
    };
  }

  async offsetForTime(
    topicName: string,
    partition: number,
    timestamp: number,
  ): Promise<number> {
    this.#checkOpen();
    const topic = this.#topic(topicName);
    this.#checkPartition(topic, partition);
    const reply = await topic.partitions[partition].request({
      type: "offsetForTime",
      timestamp,
    });
    return reply.offset;
  }

  async joinGroup(
    group: string,
    topic: string,
    member: MemberHandle,
    from: StartPosition,
  ): Promise<void> {
    this.#checkOpen();
    await this.#groups.joinGroup(group, topic, member, from);
  }

  leaveGroup(group: string, memberId: string, member?: MemberHandle): void {
    void this.#groups.leaveGroup(group, memberId, member).catch((error) =>
      this.#log.warn("rebalance after leave failed", { group, error })
    );
  }

  disconnectMember(
    group: string,
    memberId: string,
    member: MemberHandle,
  ): void {
    this.#groups.disconnect(group, memberId, member);
  }

  async seekGroup(
    group: string,
    topicName: string,
    to: SeekTarget,
    partitions?: number[],
  ): Promise<GroupSeekResult> {
    this.#checkOpen();
    const mode = this.groupSettings(group)?.mode ?? "stream";
    if (mode !== "stream") {
      throw new DakgharError(
        "bad_request",
        `Cannot seek ${group}: it is a ${mode} group, which settles records one by one rather than keeping offsets`,
        { group, mode },
      );
    }
    const topic = this.#topic(topicName);
    const chosen = partitions ?? topic.partitions.map((_, p) => p);
    for (const p of chosen) this.#checkPartition(topic, p);
    const stats = await this.#stats(topic);
    const positions = await Promise.all(chosen.map(async (partition) => {
      const { logStartOffset, logEndOffset } = stats[partition];
      let offset: number;
      if (to === "earliest") offset = logStartOffset;
      else if (to === "latest") offset = logEndOffset;
      else if ("offset" in to) {
        offset = Math.min(Math.max(to.offset, logStartOffset), logEndOffset);
      } else {
        offset = await this.offsetForTime(topicName, partition, to.timestamp);
      }
      return { partition, offset };
    }));
    const generation = await this.#groups.seek(group, topicName, positions);
    return { group, topic: topicName, generation, partitions: positions };
  }

  // async so that every failure is a rejection; the checks still run
  // synchronously, before the first await, which lets a member commit from
  // inside onRevocation.
  async commit(
    group: string,
    topic: string,
    partition: number,
    offset: number,
    memberId: string,
    generation: number,
  ): Promise<void> {
    this.#checkOpen();
    const known = this.#topics.get(topic);
    const logEnd = known?.logEnds[partition];
    // Past the log end, the group would skip records not yet written. An
    // unknown end (the partition not started yet) is not checked.
    if (logEnd !== undefined && logEnd >= 0 && offset > logEnd) {
      throw new DakgharError(
        "offset_out_of_range",
        `Cannot commit to group ${group}: offset ${offset} is past the log end ${logEnd} of ${topic}/${partition}`,
        { group, topic, partition, offset, logEndOffset: logEnd },
      );
    }
    await this.#groups.commit(
      group,
      topic,
      partition,
      offset,
      memberId,
      generation,
    );
  }

  async describeGroup(name: string): Promise<GroupDescription> {
    return await this.#queues.describeGroup(
      await this.#groups.describeGroup(name),
    );
  }

  listGroups(): GroupSummary[] {
    return this.#queues.listGroups(this.#groups.listGroups());
  }

  async createGroup(
    name: string,
    request: GroupCreateRequest,
  ): Promise<GroupSettings> {
    this.#checkOpen();
    return await this.#queues.createGroup(name, request);
  }

  groupSettings(name: string): GroupSettings | undefined {
    return this.#queues.groupSettings(name);
  }

  async deleteGroup(name: string): Promise<void> {
    this.#checkOpen();
    await this.#queues.deleteGroup(name);
  }

  joinQueueGroup(
    group: string,
    member: QueueMemberHandle,
    options?: QueueJoinOptions,
  ): Promise<void> {
    try {
      this.#checkOpen();
      this.#queues.join(group, member, options);
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  leaveQueueGroup(
    group: string,
    memberId: string,
    member?: QueueMemberHandle,
  ): void {
    this.#queues.leave(group, memberId, member);
  }

  async settle(
    group: string,
    settlements: Settlement[],
  ): Promise<SettleResult> {
    this.#checkOpen();
    return await this.#queues.settle(group, settlements);
  }

  async receive(
    group: string,
    options: ReceiveOptions,
  ): Promise<QueueDelivery[]> {
    this.#checkOpen();
    return await this.#queues.receive(group, options);
  }

  async describeQueue(group: string): Promise<QueuePartitionDescription[]> {
    return await this.#queues.describeQueue(group);
  }

  async redrive(
    group: string,
    options?: RedriveOptions,
  ): Promise<RedriveResult> {
    this.#checkOpen();
    return await this.#queues.redrive(group, options);
  }

  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    this.#queues.close();
    await this.#groups.close();
    const partitions = [...this.#topics.values()].flatMap((t) => t.partitions);
    await Promise.all(partitions.map((p) => p.close(false)));
    this.#topics.clear();
    this.#lock?.release();
    this.#log.info("router closed", { partitions: partitions.length });
  }

  #checkPartitionBudget(requested: unknown): void {
    if (typeof requested !== "number") return; // the store rejects it
    const max = this.#options.maxPartitions ?? defaultMaxPartitions;
    const existing = this.#store.list().reduce(
      (sum, topic) => sum + topic.config.partitions,
      0,
    );
    if (existing + requested > max) {
      throw new DakgharError(
        "invalid_config",
        `Cannot create ${requested} partitions: the broker has ${existing} of at most ${max}`,
        { field: "partitions", existing, maxPartitions: max },
      );
    }
  }

  /** A partition's actor, for tests that kill workers. */
  partitionClient(topic: string, partition: number): PartitionClient {
    const found = this.#topic(topic).partitions[partition];
    if (found === undefined) throw new RangeError(`No partition ${partition}`);
    return found;
  }

  #startTopic(description: TopicDescription): Promise<PartitionStats[]> {
    const { partitions: count, ...settings } = description.config;
    const config: PartitionLogConfig = {
      ...settings,
      indexIntervalBytes: INDEX_INTERVAL_BYTES,
    };
    const partitions: PartitionClient[] = [];
    for (let partition = 0; partition < count; partition++) {
      partitions.push(
        new PartitionClient({
          topic: description.name,
          partition,
          dir: this.#store.partitionDir(description.name, partition),
          config,
          startWorker: this.#options.runtime.startWorker,
          log: this.#log.scope("partition", {
            topic: description.name,
            partition,
          }),
          onStart: (client, epoch) =>
            this.#queues.partitionStarted(client, epoch),
          onQueueNotice: (client, notice, epoch) =>
            this.#queues.notice(client, notice, epoch),
        }),
      );
    }
    const topic: Topic = {
      description,
      partitioner: new Partitioner(count),
      partitions,
      logEnds: partitions.map(() => -1),
    };
    this.#topics.set(description.name, topic);
    return Promise.all(partitions.map(async (p, partition) => {
      const stats = await p.start();
      noteLogEnd(topic, partition, stats.logEndOffset);
      return stats;
    }));
  }

  #topic(name: string): Topic {
    const topic = this.#topics.get(name);
    if (topic === undefined) throw new UnknownTopicError(name);
    return topic;
  }

  async #topicForPublish(name: string): Promise<Topic> {
    const topic = this.#topics.get(name);
    if (topic !== undefined) return topic;
    if (!this.#options.autoCreateTopics) throw new UnknownTopicError(name);

    // Concurrent first publishes share one create.
    let creating = this.#creating.get(name);
    if (creating === undefined) {
      creating = this.createTopic(name).finally(() =>
        this.#creating.delete(name)
      );
      this.#creating.set(name, creating);
    }
    await creating;
    return this.#topic(name);
  }

  #checkPartition(topic: Topic, partition: number): number {
    if (
      !Number.isInteger(partition) || partition < 0 ||
      partition >= topic.partitions.length
    ) {
      throw new DakgharError(
        "unknown_partition",
        `Partition not found: ${topic.description.name}/${partition}`,
        { topic: topic.description.name, partition },
      );
    }
    return partition;
  }

  /** Append time of the batch holding `offset`, by a one-batch read. */
  async #appendTimeAt(
    topicName: string,
    partition: number,
    offset: number,
  ): Promise<number | undefined> {
    const { bytes } = await this.read(topicName, partition, offset, {
      maxBytes: 1,
      maxWaitMs: 0,
    });
    if (bytes.length < 40) return undefined;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    // appendTime: u64 at byte 12, below 2^53 (see the record batch layout).
    return view.getUint32(12, true) + view.getUint32(16, true) * 2 ** 32;
  }

  async #stats(topic: Topic): Promise<PartitionStats[]> {
    const replies = await Promise.all(
      topic.partitions.map((p) => p.request({ type: "stats" })),
    );
    replies.forEach((reply, partition) =>
      noteLogEnd(topic, partition, reply.stats.logEndOffset)
    );
    return replies.map((reply) => reply.stats);
  }

  #checkOpen(): void {
    if (this.#closing) {
      throw new DakgharError("shutting_down", "Broker is shutting down");
    }
  }
}

/** Raises the known log end of a partition; it never goes down. */
function noteLogEnd(
  topic: Topic,
  partition: number,
  logEndOffset: number,
): void {
  if (logEndOffset > topic.logEnds[partition]) {
    topic.logEnds[partition] = logEndOffset;
  }
}
