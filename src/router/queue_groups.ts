/**
 * The router's queue half: group settings as the Broker takes them, one
 * QueueDispatcher per queue or key_shared group, the partition actors'
 * queue notices, dead letters and redrive.
 *
 * Settings are stored with the group by the GroupCoordinator (its group
 * file); this class keeps them in step with the partition actors: every
 * partition of a queue group's topic gets the group's `qconfig` when the
 * group is created or changed and on every start of its actor, before any
 * other queue message (see {@linkcode QueueGroups.partitionStarted}).
 */
import type {
  GroupCreateRequest,
  GroupDescription,
  GroupSettings,
  GroupSummary,
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
  Settlement,
  SettleResult,
  StartPosition,
  TopicConfig,
  TopicDescription,
} from "../broker.ts";
import { DakgharError } from "../errors.ts";
import type { Logger } from "../logger.ts";
import { DEAD_LETTER_PROVENANCE_MAX_BYTES } from "../queue/dead_letter_batch.ts";
import { validateFilter } from "../queue/filter.ts";
import { DeadLetterSink } from "./dead_letters.ts";
import {
  type GroupCoordinator,
  type LogRange,
  validateGroupName,
} from "./group_coordinator.ts";
import {
  cursorConfig,
  deadLetterRetentionMs,
  isQueueMode,
  resolveGroupSettings,
  sameIdentity,
} from "./group_settings.ts";
import type { PartitionClient, QueueNotice } from "./partition_client.ts";
import { QueueDispatcher } from "./queue_dispatcher.ts";
import { redrive } from "./redrive.ts";
import { validateTopicName } from "./topic_store.ts";

/** Bytes per read when redriving dead letters. */
const REDRIVE_READ_BYTES = 1024 * 1024;
const MESSAGE_BYTES_MAX = 64 * 1024 * 1024;

/** What the queue half asks of the router. */
export interface QueueGroupsHost {
  groups: GroupCoordinator;
  /** A topic's partitions; throws UnknownTopicError for an unknown topic. */
  partitions(topic: string): PartitionClient[];
  /** A topic's settings; throws UnknownTopicError for an unknown topic. */
  topicConfig(topic: string): TopicConfig;
  /** Settings of topics created without them. */
  topicDefaults: TopicConfig;
  hasTopic(topic: string): boolean;
  logRanges(topic: string): Promise<LogRange[]>;
  createTopic(
    name: string,
    options: Partial<TopicConfig>,
  ): Promise<TopicDescription>;
  publish(
    topic: string,
    batch: Uint8Array,
    options: PublishOptions,
  ): Promise<PublishResult>;
  publishRecords(
    topic: string,
    records: ProducerRecord[],
  ): Promise<RecordPosition[]>;
  read(
    topic: string,
    partition: number,
    offset: number,
    options: ReadOptions,
  ): Promise<ReadResult>;
  log: Logger;
}

/** Queue and key_shared groups of one broker. */
export class QueueGroups {
  readonly #host: QueueGroupsHost;
  readonly #log: Logger;
  readonly #dispatchers = new Map<string, QueueDispatcher>();
  readonly #deadLetters: DeadLetterSink;
  readonly #creating = new Map<string, Promise<unknown>>();
  /** Tail of each group's chain of redrives. */
  readonly #redrives = new Map<string, Promise<unknown>>();

  constructor(host: QueueGroupsHost) {
    this.#host = host;
    this.#log = host.log;
    this.#deadLetters = new DeadLetterSink({
      deadLetterTopic: (group) => this.#settings(group)?.queue?.deadLetterTopic,
      ensureTopic: (name, source) => this.#ensureDeadLetterTopic(name, source),
      append: async (topic, partition, bytes) => {
        const count = host.partitions(topic).length;
        await host.publish(topic, bytes, { partition: partition % count });
      },
      settled: (group, partition, reply) =>
        this.#dispatchers.get(group)?.freed(partition, reply.freed),
      log: host.log.scope("dead_letters"),
    });
  }

  /**
   * Makes a dispatcher for every queue group the coordinator loaded. Call
   * before any partition starts, so each start configures their cursors.
   */
  load(): void {
    for (const { name, settings } of this.#host.groups.groupsWithSettings()) {
      if (isQueueMode(settings.mode)) this.#addDispatcher(name, settings);
    }
  }

  /** As {@linkcode QueueBroker.createGroup}. */
  async createGroup(
    name: string,
    request: GroupCreateRequest,
  ): Promise<GroupSettings> {
    // First, so a bad name is reported as such, not as a setting made of it.
    validateGroupName(name);
    const groups = this.#host.groups;
    const info = groups.groupInfo(name);
    const stored = info?.settings;
    const settings = resolveGroupSettings(
      name,
      stored === undefined ? request : keepStored(request, stored),
      stored?.queue,
    );
    const partitions = this.#host.partitions(settings.topic);
    if (settings.queue !== undefined) {
      checkDeadLetterTopic(settings.queue.deadLetterTopic);
    }
    if (info !== undefined) {
      const differs = info.mode !== settings.mode ||
        (stored !== undefined && !sameIdentity(stored, settings)) ||
        // A group made by a member's join is bound to the topics it reads.
        (stored === undefined &&
          info.topics.some((topic) => topic !== settings.topic));
      if (differs) {
        throw new DakgharError(
          "group_exists",
          `Group exists with another mode, topic or filter: ${name}`,
          { group: name, mode: info.mode, topic: info.settings?.topic },
        );
      }
    }

    await groups.saveSettings(name, settings);
    if (isQueueMode(settings.mode)) {
      // qconfig goes out before the new dispatcher's first qfetch.
      const config = cursorConfig(settings);
      const configured = Promise.all(
        partitions.map((client) =>
          client.request({ type: "qconfig", group: name, config })
        ),
      );
      if (!this.#dispatchers.has(name)) this.#addDispatcher(name, settings);
      await configured;
    }
    this.#log.info("group created", { group: name, ...settings });
    return settings;
  }

  /** As {@linkcode QueueBroker.groupSettings}. */
  groupSettings(name: string): GroupSettings | undefined {
    const info = this.#host.groups.groupInfo(name);
    if (info === undefined) return undefined;
    return info.settings ?? {
      topic: info.topics[0] ?? "",
      mode: "stream",
      // A group made by a member's join was never given a start position.
      from: null as unknown as StartPosition,
      filter: null,
    };
  }

  /** As {@linkcode QueueBroker.deleteGroup}; drops the cursors of a queue group. */
  async deleteGroup(name: string): Promise<void> {
    const dispatcher = this.#dispatchers.get(name);
    if (dispatcher !== undefined) {
      this.#dispatchers.delete(name);
      dispatcher.close({
        code: "unknown_group",
        message: `Group ${name} was deleted`,
      });
      let clients: PartitionClient[] = [];
      try {
        clients = this.#host.partitions(dispatcher.topic);
      } catch {
        // topic deleted: its cursors went with it
      }
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
    await this.#host.groups.deleteGroup(name);
  }

  /** As {@linkcode QueueBroker.joinQueueGroup}. */
  join(
    group: string,
    member: QueueMemberHandle,
    options?: QueueJoinOptions,
  ): void {
    this.#dispatcher(group).join(member, options);
  }

  /** As {@linkcode QueueBroker.leaveQueueGroup}. */
  leave(group: string, memberId: string, member?: QueueMemberHandle): void {
    this.#dispatchers.get(group)?.leave(memberId, member);
  }

  /** As {@linkcode QueueBroker.settle}. */
  settle(group: string, settlements: Settlement[]): Promise<SettleResult> {
    return this.#dispatcher(group).settle(settlements);
  }

  /** As {@linkcode QueueBroker.receive}. */
  receive(group: string, options: ReceiveOptions): Promise<QueueDelivery[]> {
    return this.#dispatcher(group).receive(options);
  }

  /** As {@linkcode QueueBroker.describeQueue}. */
  describeQueue(group: string): Promise<QueuePartitionDescription[]> {
    return this.#dispatcher(group).describe();
  }

  /**
   * Completes a coordinator's description of a queue group: its members,
   * each partition's ack floor as the committed offset, and `queue`.
   * Other groups are returned as they are.
   */
  async describeGroup(
    description: GroupDescription,
  ): Promise<GroupDescription> {
    const dispatcher = this.#dispatchers.get(description.name);
    if (dispatcher === undefined) return description;
    const topic = dispatcher.topic;
    let queue: QueuePartitionDescription[] = [];
    try {
      queue = await dispatcher.describe();
    } catch (error) {
      if (!(error instanceof DakgharError)) throw error;
      this.#log.debug("queue group not described", {
        group: description.name,
        error,
      });
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

  /** Puts queue groups' member counts into the coordinator's list. */
  listGroups(summaries: GroupSummary[]): GroupSummary[] {
    return summaries.map((summary) => {
      const dispatcher = this.#dispatchers.get(summary.name);
      return dispatcher === undefined
        ? summary
        : { ...summary, members: dispatcher.size };
    });
  }

  /**
   * As {@linkcode QueueBroker.redrive}. Redrives of one group run one at a
   * time, so two at once cannot both republish what lies past the cursor.
   */
  redrive(group: string, options: RedriveOptions = {}): Promise<RedriveResult> {
    const previous = this.#redrives.get(group) ?? Promise.resolve();
    const next = previous.catch(() => {}).then(() =>
      this.#redriveNow(group, options)
    );
    const tail = next.catch(() => {});
    this.#redrives.set(group, tail);
    tail.then(() => {
      if (this.#redrives.get(group) === tail) this.#redrives.delete(group);
    });
    return next;
  }

  async #redriveNow(
    group: string,
    options: RedriveOptions,
  ): Promise<RedriveResult> {
    this.#dispatcher(group);
    const host = this.#host;
    const deadLetterTopic = this.#settings(group)!.queue!.deadLetterTopic;
    const filter = validateFilter(options.filter) ?? undefined;
    if (options.toTopic !== undefined) host.topicConfig(options.toTopic);
    return await redrive({
      group,
      deadLetterTopic,
      logRanges: (topic) => host.logRanges(topic),
      committed: (cursorGroup, topic) =>
        Promise.resolve(host.groups.committedOffsets(cursorGroup, topic)),
      read: (topic, partition, offset) =>
        host.read(topic, partition, offset, {
          maxBytes: REDRIVE_READ_BYTES,
          maxWaitMs: 0,
        }),
      publish: async (topic, records) => {
        await host.publishRecords(topic, records);
      },
      commit: async (cursorGroup, topic, positions) => {
        await host.groups.seek(cursorGroup, topic, positions);
      },
    }, { ...options, filter });
  }

  /**
   * A partition actor started (`epoch` 1) or restarted: sends it the
   * cursor of every queue group of its topic, and after a restart tells
   * the dispatchers its deliveries are gone. Runs before requests held
   * during the restart are sent.
   */
  partitionStarted(client: PartitionClient, epoch: number): void {
    for (const [name, dispatcher] of this.#dispatchers) {
      if (dispatcher.topic !== client.topic) continue;
      const settings = this.#settings(name);
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

  /** Routes a partition actor's `qready`, `qfreed` or `qdead`. */
  notice(client: PartitionClient, notice: QueueNotice, epoch: number): void {
    if (notice.type === "qdead") {
      this.#deadLetters.accept(client, notice, epoch);
      return;
    }
    const dispatcher = this.#dispatchers.get(notice.group);
    if (dispatcher === undefined || dispatcher.topic !== client.topic) return;
    if (notice.type === "qready") dispatcher.ready(client.partition);
    else dispatcher.freed(client.partition, notice.freed);
  }

  /** A topic was deleted: its queue groups' cursors went with it. */
  topicDeleted(topic: string): void {
    for (const dispatcher of this.#dispatchers.values()) {
      if (dispatcher.topic === topic) {
        dispatcher.reset({
          code: "unknown_topic",
          message: `Topic ${topic} was deleted`,
        });
      }
    }
  }

  /** Stops every dispatcher and dead-letter retry. */
  close(): void {
    this.#deadLetters.close();
    for (const dispatcher of this.#dispatchers.values()) dispatcher.close();
  }

  #addDispatcher(name: string, settings: GroupSettings): void {
    this.#dispatchers.set(
      name,
      new QueueDispatcher({
        group: name,
        topic: settings.topic,
        partitions: () => this.#host.partitions(settings.topic),
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
    const dispatcher = this.#dispatchers.get(group);
    if (dispatcher !== undefined) return dispatcher;
    const info = this.#host.groups.groupInfo(group);
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

  #settings(group: string): GroupSettings | undefined {
    const settings = this.#host.groups.groupInfo(group)?.settings;
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
    if (this.#host.hasTopic(name)) return;
    let creating = this.#creating.get(name);
    if (creating === undefined) {
      const sourceConfig = this.#host.topicConfig(source);
      creating = this.#host.createTopic(name, {
        partitions: sourceConfig.partitions,
        retentionMs: deadLetterRetentionMs,
        maxMessageBytes: Math.min(
          MESSAGE_BYTES_MAX,
          Math.max(
            this.#host.topicDefaults.maxMessageBytes,
            sourceConfig.maxMessageBytes + DEAD_LETTER_PROVENANCE_MAX_BYTES,
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
}

/**
 * A create request for an existing group: `from` and `filter` left out
 * mean the stored ones (an explicit filter still has to match).
 */
function keepStored(
  request: GroupCreateRequest,
  stored: GroupSettings,
): GroupCreateRequest {
  if (typeof request !== "object" || request === null) return request;
  const kept = { ...request };
  if (kept.from == null && stored.from != null) kept.from = stored.from;
  if (kept.filter === undefined) kept.filter = stored.filter;
  return kept;
}

function checkDeadLetterTopic(name: string): void {
  try {
    validateTopicName(name);
  } catch {
    throw new DakgharError(
      "bad_request",
      `Invalid group setting deadLetterTopic: ${
        JSON.stringify(name)
      }, not a valid topic name`,
      { field: "deadLetterTopic", value: name },
    );
  }
}
