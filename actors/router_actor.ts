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
import { DeadLetterSink } from "../src/router/dead_letters.ts";
import { delayIdPartition, dueTime } from "../src/router/delayed_records.ts";
import {
  cursorConfig,
  deadLetterRetentionMs,
  isQueueMode,
  resolveGroupSettings,
  sameIdentity,
} from "../src/router/group_settings.ts";
import { QueueDispatcher } from "../src/router/queue_dispatcher.ts";
import { redrive } from "../src/router/redrive.ts";
import { validateFilter } from "../src/queue/filter.ts";
import type { PartitionLogConfig } from "../src/log/partition_log.ts";
import { type BatchRecord, encodeRecords } from "../src/log/record_batch.ts";
import { type DataDirLock, lockDataDir } from "../src/router/data_dir_lock.ts";
import { type Logger, silentLogger } from "../src/logger.ts";
import { GroupCoordinator } from "../src/router/group_coordinator.ts";
import { OffsetStore } from "../src/router/offset_store.ts";
import {
  PartitionClient,
  type QueueNotice,
} from "../src/router/partition_client.ts";
import { Partitioner } from "../src/router/partitioner.ts";
import {
  defaultTopicConfig,
  resolveTopicConfig,
  TopicStore,
  validateTopicName,
} from "../src/router/topic_store.ts";
import type { Runtime } from "../src/runtime/types.ts";

/** Bytes of log between two offset index entries, for every partition. */
const INDEX_INTERVAL_BYTES = 4096;
/** Bytes per read when redriving dead letters. */
const REDRIVE_READ_BYTES = 1024 * 1024;
/** Room a dead letter needs beyond its record for the provenance headers. */
const DEAD_LETTER_HEADROOM_BYTES = 4096;

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
  /** Queue and key_shared groups by name. */
  readonly #queues = new Map<string, QueueDispatcher>();
  readonly #deadLetters: DeadLetterSink;
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
    this.#deadLetters = new DeadLetterSink({
      deadLetterTopic: (group) =>
        this.#queueSettings(group)?.queue?.deadLetterTopic,
      ensureTopic: (name, source) => this.#ensureDeadLetterTopic(name, source),
      append: async (topicName, partition, bytes) => {
        const topic = this.#topic(topicName);
        await this.publish(topicName, bytes, {
          partition: partition % topic.partitions.length,
        });
      },
      settled: (group, partition, reply) =>
        this.#queues.get(group)?.freed(partition, reply.freed),
      log: this.#log.scope("dead_letters"),
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
    for (const { name, settings } of this.#groups.groupsWithSettings()) {
      if (isQueueMode(settings.mode)) this.#addDispatcher(name, settings);
    }
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
    for (const dispatcher of this.#queues.values()) {
      if (dispatcher.topic === name) dispatcher.reset();
    }
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
    const description = await this.#groups.describeGroup(name);
    const dispatcher = this.#queues.get(name);
    if (dispatcher === undefined) return description;

    const topic = dispatcher.topic;
    let queue: QueuePartitionDescription[] = [];
    try {
      queue = await dispatcher.describe();
    } catch (error) {
      if (!(error instanceof DakgharError)) throw error;
      this.#log.debug("queue group not described", { group: name, error });
    }
    return {
      ...description,
      members: dispatcher.memberIds().map((id) => ({
        id,
        topic,
        partitions: [],
        connected: true,
      })),
      partitions: queue.map((q) => ({
        topic,
        partition: q.partition,
        committedOffset: q.ackFloor,
        logEndOffset: q.logEndOffset,
        lag: q.unsettled,
        lagMs: 0,
        owner: null,
      })),
      queue,
    };
  }

  listGroups(): GroupSummary[] {
    return this.#groups.listGroups().map((summary) => {
      const dispatcher = this.#queues.get(summary.name);
      return dispatcher === undefined
        ? summary
        : { ...summary, members: dispatcher.size };
    });
  }

  async createGroup(
    name: string,
    request: GroupCreateRequest,
  ): Promise<GroupSettings> {
    this.#checkOpen();
    const info = this.#groups.groupInfo(name);
    const settings = resolveGroupSettings(
      name,
      request,
      info?.settings?.queue,
    );
    const topic = this.#topic(settings.topic);
    if (settings.queue !== undefined) {
      try {
        validateTopicName(settings.queue.deadLetterTopic);
      } catch {
        throw new DakgharError(
          "bad_request",
          `Invalid group setting deadLetterTopic: ${
            JSON.stringify(settings.queue.deadLetterTopic)
          }, not a valid topic name`,
          { field: "deadLetterTopic", value: settings.queue.deadLetterTopic },
        );
      }
    }
    if (info !== undefined) {
      const differs = info.mode !== settings.mode ||
        (info.settings !== undefined && !sameIdentity(info.settings, settings));
      if (differs) {
        throw new DakgharError(
          "group_exists",
          `Group exists with another mode, topic or filter: ${name}`,
          { group: name, mode: info.mode, topic: info.settings?.topic },
        );
      }
    }

    await this.#groups.saveSettings(name, settings);
    if (isQueueMode(settings.mode)) {
      const configured = this.#configureQueue(name, settings, topic);
      if (!this.#queues.has(name)) this.#addDispatcher(name, settings);
      await configured;
    }
    this.#log.info("group created", { group: name, ...settings });
    return settings;
  }

  groupSettings(name: string): GroupSettings | undefined {
    const info = this.#groups.groupInfo(name);
    if (info === undefined) return undefined;
    return info.settings ?? {
      topic: info.topics[0] ?? "",
      mode: "stream",
      // A group made by a member's join was never given a start position.
      from: null as unknown as StartPosition,
      filter: null,
    };
  }

  async deleteGroup(name: string): Promise<void> {
    this.#checkOpen();
    const dispatcher = this.#queues.get(name);
    if (dispatcher !== undefined) {
      this.#queues.delete(name);
      dispatcher.close();
      const clients = this.#topics.get(dispatcher.topic)?.partitions ?? [];
      const dropped = await Promise.allSettled(
        clients.map((client) =>
          client.request({ type: "qconfig", group: name, config: null })
        ),
      );
      for (const result of dropped) {
        if (result.status === "rejected") {
          this.#log.warn("queue cursor not dropped", {
            group: name,
            error: result.reason,
          });
        }
      }
    }
    await this.#groups.deleteGroup(name);
  }

  joinQueueGroup(
    group: string,
    member: QueueMemberHandle,
    options?: QueueJoinOptions,
  ): Promise<void> {
    try {
      this.#checkOpen();
      this.#dispatcher(group).join(member, options);
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
    this.#queues.get(group)?.leave(memberId, member);
  }

  async settle(
    group: string,
    settlements: Settlement[],
  ): Promise<SettleResult> {
    this.#checkOpen();
    return await this.#dispatcher(group).settle(settlements);
  }

  async receive(
    group: string,
    options: ReceiveOptions,
  ): Promise<QueueDelivery[]> {
    this.#checkOpen();
    return await this.#dispatcher(group).receive(options);
  }

  async describeQueue(group: string): Promise<QueuePartitionDescription[]> {
    return await this.#dispatcher(group).describe();
  }

  async redrive(
    group: string,
    options: RedriveOptions = {},
  ): Promise<RedriveResult> {
    this.#checkOpen();
    this.#dispatcher(group);
    const deadLetterTopic = this.#queueSettings(group)!.queue!.deadLetterTopic;
    const filter = validateFilter(options.filter) ?? undefined;
    if (options.toTopic !== undefined) this.#topic(options.toTopic);
    return await redrive({
      group,
      deadLetterTopic,
      logRanges: (topic) => this.#stats(this.#topic(topic)),
      committed: async (cursorGroup, topic) => {
        let description: GroupDescription;
        try {
          description = await this.#groups.describeGroup(cursorGroup);
        } catch {
          return [];
        }
        const offsets: (number | null)[] = [];
        for (const row of description.partitions) {
          if (row.topic === topic) offsets[row.partition] = row.committedOffset;
        }
        return offsets;
      },
      read: (topic, partition, offset) =>
        this.read(topic, partition, offset, {
          maxBytes: REDRIVE_READ_BYTES,
          maxWaitMs: 0,
        }),
      publish: async (topic, records) => {
        await this.publishRecords(topic, records);
      },
      commit: async (cursorGroup, topic, positions) => {
        await this.#groups.seek(cursorGroup, topic, positions);
      },
    }, { ...options, filter });
  }

  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    this.#deadLetters.close();
    for (const dispatcher of this.#queues.values()) dispatcher.close();
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
          onStart: (client, epoch) => this.#partitionStarted(client, epoch),
          onQueueNotice: (client, notice, epoch) =>
            this.#queueNotice(client, notice, epoch),
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

  /** Sends a restarted partition its queue groups' cursors first. */
  #partitionStarted(client: PartitionClient, epoch: number): void {
    for (const [name, dispatcher] of this.#queues) {
      if (dispatcher.topic !== client.topic) continue;
      const settings = this.#queueSettings(name);
      if (settings === undefined) continue;
      client.request({
        type: "qconfig",
        group: name,
        config: cursorConfig(settings),
      }).catch((error) =>
        this.#log.warn("queue cursor not configured", {
          group: name,
          topic: client.topic,
          partition: client.partition,
          error,
        })
      );
      if (epoch > 1) dispatcher.restarted(client.partition);
    }
  }

  #queueNotice(
    client: PartitionClient,
    notice: QueueNotice,
    epoch: number,
  ): void {
    if (notice.type === "qdead") {
      this.#deadLetters.accept(client, notice, epoch);
      return;
    }
    const dispatcher = this.#queues.get(notice.group);
    if (dispatcher === undefined || dispatcher.topic !== client.topic) return;
    if (notice.type === "qready") dispatcher.ready(client.partition);
    else dispatcher.freed(client.partition, notice.freed);
  }

  /** Sends every partition of the group's topic its cursor settings. */
  async #configureQueue(
    name: string,
    settings: GroupSettings,
    topic: Topic,
  ): Promise<void> {
    const config = cursorConfig(settings);
    await Promise.all(
      topic.partitions.map((client) =>
        client.request({ type: "qconfig", group: name, config })
      ),
    );
  }

  #addDispatcher(name: string, settings: GroupSettings): void {
    this.#queues.set(
      name,
      new QueueDispatcher({
        group: name,
        topic: settings.topic,
        partitions: () => this.#topic(settings.topic).partitions,
        log: this.#log.scope("queue", { group: name }),
      }),
    );
  }

  /**
   * The dispatcher of a queue or key_shared group.
   *
   * @throws DakgharError unknown_group, bad_request for a stream group
   */
  #dispatcher(group: string): QueueDispatcher {
    const dispatcher = this.#queues.get(group);
    if (dispatcher !== undefined) return dispatcher;
    const info = this.#groups.groupInfo(group);
    if (info === undefined) {
      throw new DakgharError("unknown_group", `Group not found: ${group}`, {
        group,
      });
    }
    throw new DakgharError(
      "bad_request",
      `Group ${group} is a ${info.mode} group, not a queue group`,
      { group, mode: info.mode },
    );
  }

  #queueSettings(group: string): GroupSettings | undefined {
    const settings = this.#groups.groupInfo(group)?.settings;
    return settings !== undefined && isQueueMode(settings.mode)
      ? settings
      : undefined;
  }

  /**
   * Creates a dead-letter topic on first use: as many partitions as the
   * source, 14 days' retention, room for the provenance headers, and
   * fsync before every append, since an appended letter is one the source
   * group stops holding.
   */
  async #ensureDeadLetterTopic(name: string, source: string): Promise<void> {
    if (this.#topics.has(name)) return;
    let creating = this.#creating.get(name);
    if (creating === undefined) {
      const sourceConfig = this.#topic(source).description.config;
      creating = this.createTopic(name, {
        partitions: sourceConfig.partitions,
        retentionMs: deadLetterRetentionMs,
        maxMessageBytes: Math.min(
          64 * 1024 * 1024,
          Math.max(
            this.#topicDefaults.maxMessageBytes,
            sourceConfig.maxMessageBytes + DEAD_LETTER_HEADROOM_BYTES,
          ),
        ),
        flush: "sync",
      }).finally(() => this.#creating.delete(name));
      this.#creating.set(name, creating);
    }
    try {
      await creating;
    } catch (error) {
      if (!(error instanceof DakgharError && error.code === "topic_exists")) {
        throw error;
      }
    }
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
