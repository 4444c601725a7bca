/**
 * An in-memory Broker for front-end tests: real record batches, offsets,
 * long-poll and filtered reads, a one-rebalance-per-join group, and the
 * queue half from _fake_queues.ts; no files or workers.
 */
import type {
  Broker,
  GroupCreateRequest,
  GroupDescription,
  GroupSettings,
  GroupSummary,
  MemberHandle,
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
} from "../../src/broker.ts";
import {
  DakgharError,
  errorFromData,
  errorToData,
  OffsetOutOfRangeError,
  UnknownTopicError,
} from "../../src/errors.ts";
import {
  batchLastOffset,
  batchLength,
  batchRecordCount,
  decodeBatches,
  type DecodedRecord,
  encodeBatch,
  stampBatch,
  validateBatches,
} from "../../src/log/record_batch.ts";
import { FakeQueues, matchesFilter } from "./_fake_queues.ts";

interface FakePartition {
  batches: { baseOffset: number; bytes: Uint8Array }[];
  logStartOffset: number;
  logEndOffset: number;
  waiters: Set<() => void>;
}

interface FakeTopic {
  description: TopicDescription;
  partitions: FakePartition[];
}

interface FakeGroup {
  topic: string;
  generation: number;
  members: MemberHandle[];
  owned: Map<string, number[]>;
  committed: Map<number, number>;
  from: StartPosition;
}

const defaultConfig: TopicConfig = {
  partitions: 1,
  retentionMs: -1,
  retentionBytes: -1,
  maxMessageBytes: 1024 * 1024,
  flush: "sync",
  flushIntervalMs: 1000,
  segmentBytes: 1 << 27,
  segmentMs: 7 * 86_400_000,
};

/** The fake broker; `reads` counts calls to read() so tests can watch fetches. */
export class FakeBroker implements Broker {
  readonly topics = new Map<string, FakeTopic>();
  readonly groups = new Map<string, FakeGroup>();
  reads = 0;
  /** Largest number of reads waiting at once. */
  openReads = 0;
  closed = false;
  /** Every publishRecords call's records, for tests to look at. */
  readonly published: ProducerRecord[][] = [];
  readonly queues = new FakeQueues({
    recordsFrom: (topic, partition, offset) =>
      this.recordsFrom(topic, partition, offset),
    partitionCount: (topic) => this.topic(topic).partitions.length,
  });

  constructor() {
    this.queues.streamGroups = this.groups;
  }

  createTopic(
    name: string,
    options: Partial<TopicConfig> = {},
  ): Promise<TopicDescription> {
    if (!/^[A-Za-z0-9._-]{1,200}$/.test(name)) {
      return Promise.reject(
        new DakgharError("invalid_topic_name", `Invalid topic name: ${name}`),
      );
    }
    if (this.topics.has(name)) {
      return Promise.reject(
        new DakgharError("topic_exists", `Topic exists: ${name}`),
      );
    }
    const config = { ...defaultConfig, ...options };
    const description = { name, createdAt: 1, config };
    this.topics.set(name, {
      description,
      partitions: Array.from({ length: config.partitions }, () => ({
        batches: [],
        logStartOffset: 0,
        logEndOffset: 0,
        waiters: new Set(),
      })),
    });
    return Promise.resolve(description);
  }

  listTopics(): TopicDescription[] {
    return [...this.topics.values()].map((t) => t.description);
  }

  describeTopic(name: string) {
    const topic = this.topic(name);
    return Promise.resolve({
      ...topic.description,
      partitions: topic.partitions.map((p, partition) => ({
        partition,
        logStartOffset: p.logStartOffset,
        logEndOffset: p.logEndOffset,
        highWatermark: p.logEndOffset,
        bytes: p.batches.reduce((sum, b) => sum + b.bytes.length, 0),
        segments: 1,
        delayed: [...this.queues.delayed.values()].filter((d) =>
          d.topic === name
        ).length,
      })),
    });
  }

  deleteTopic(name: string): Promise<void> {
    this.topic(name);
    this.topics.delete(name);
    return Promise.resolve();
  }

  publish(
    topicName: string,
    batch: Uint8Array,
    options: PublishOptions = {},
  ): Promise<PublishResult> {
    try {
      const topic = this.topic(topicName);
      validateBatches(batch, topic.description.config.maxMessageBytes);
      const partitionIndex = options.partition ?? 0;
      const partition = this.partition(topic, topicName, partitionIndex);
      const bytes = batch.slice();
      const baseOffset = partition.logEndOffset;
      for (let position = 0; position < bytes.length;) {
        const length = batchLength(bytes, position);
        stampBatch(bytes, position, partition.logEndOffset, Date.now());
        partition.batches.push({
          baseOffset: partition.logEndOffset,
          bytes: bytes.subarray(position, position + length),
        });
        partition.logEndOffset += batchRecordCount(bytes, position);
        position += length;
      }
      for (const waiter of partition.waiters) waiter();
      this.queues.pump();
      return Promise.resolve({
        partition: partitionIndex,
        baseOffset,
        lastOffset: partition.logEndOffset - 1,
        appendTime: Date.now(),
      });
    } catch (error) {
      return Promise.reject(error);
    }
  }

  async publishRecords(
    topic: string,
    records: ProducerRecord[],
  ): Promise<RecordPosition[]> {
    this.published.push(records);
    const positions: RecordPosition[] = [];
    for (const record of records) {
      if (record.deliverAt !== undefined || record.delayMs !== undefined) {
        this.topic(topic);
        const dueAt = record.deliverAt ?? Date.now() + record.delayMs!;
        const delayId = this.queues.schedule(topic, dueAt);
        positions.push({
          partition: record.partition ?? 0,
          offset: -1,
          delayId,
          dueAt,
        });
        continue;
      }
      const batch = encodeBatch([{
        key: record.key ?? null,
        value: record.value,
        headers: record.headers ?? [],
        timestamp: record.timestamp ?? Date.now(),
      }]);
      const result = await this.publish(topic, batch, {
        partition: record.partition,
      });
      positions.push({
        partition: result.partition,
        offset: result.baseOffset,
      });
    }
    return positions;
  }

  async read(
    topicName: string,
    partitionIndex: number,
    offset: number,
    options: ReadOptions,
  ): Promise<ReadResult> {
    this.reads++;
    const topic = this.topic(topicName);
    const partition = this.partition(topic, topicName, partitionIndex);
    if (offset < partition.logStartOffset || offset > partition.logEndOffset) {
      // Rebuilt from plain data, as an error from a partition worker is.
      throw errorFromData(errorToData(
        new OffsetOutOfRangeError(
          topicName,
          partitionIndex,
          offset,
          partition.logStartOffset,
          partition.logEndOffset,
        ),
      ));
    }
    if (offset === partition.logEndOffset && options.maxWaitMs > 0) {
      await this.waitForData(partition, options);
    }
    const chunks: Uint8Array[] = [];
    let size = 0;
    for (const batch of partition.batches) {
      if (batchLastOffset(batch.bytes) < offset) continue;
      if (size > 0 && size + batch.bytes.length > options.maxBytes) break;
      chunks.push(batch.bytes);
      size += batch.bytes.length;
    }
    let bytes: Uint8Array = new Uint8Array(size);
    let position = 0;
    for (const chunk of chunks) {
      bytes.set(chunk, position);
      position += chunk.length;
    }
    let nextOffset: number | undefined;
    if (options.filter !== undefined) {
      const examined = decodeBatches(bytes).filter((r) => r.offset >= offset);
      nextOffset = examined.length === 0
        ? offset
        : examined[examined.length - 1].offset + 1;
      const kept = examined.filter((r) => matchesFilter(r, options.filter));
      bytes = kept.length === 0 ? new Uint8Array(0) : reframe(kept);
    }
    return {
      bytes,
      ...(nextOffset === undefined ? {} : { nextOffset }),
      highWatermark: partition.logEndOffset,
      logStartOffset: partition.logStartOffset,
      logEndOffset: partition.logEndOffset,
    };
  }

  /** Drops the batches wholly below `offset`, as retention would. */
  deleteRecordsBefore(topicName: string, index: number, offset: number) {
    const partition = this.partition(this.topic(topicName), topicName, index);
    partition.batches = partition.batches.filter((batch) =>
      batchLastOffset(batch.bytes) >= offset
    );
    partition.logStartOffset = partition.batches[0]?.baseOffset ??
      partition.logEndOffset;
  }

  waitForData(partition: FakePartition, options: ReadOptions): Promise<void> {
    return new Promise((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined = undefined;
      const done = () => {
        clearTimeout(timer);
        partition.waiters.delete(done);
        options.signal?.removeEventListener("abort", done);
        this.openReads--;
        resolve();
      };
      this.openReads++;
      timer = setTimeout(done, options.maxWaitMs);
      partition.waiters.add(done);
      options.signal?.addEventListener("abort", done);
      if (options.signal?.aborted) done();
    });
  }

  offsetForTime(
    topicName: string,
    partitionIndex: number,
    timestamp: number,
  ): Promise<number> {
    const topic = this.topic(topicName);
    const partition = this.partition(topic, topicName, partitionIndex);
    return Promise.resolve(
      timestamp <= 0 ? partition.logStartOffset : partition.logEndOffset,
    );
  }

  joinGroup(
    name: string,
    topic: string,
    member: MemberHandle,
    from: StartPosition,
  ): Promise<void> {
    if (!/^[A-Za-z0-9._-]{1,200}$/.test(name) || name === "..") {
      throw new DakgharError("bad_request", `Invalid group name: ${name}`);
    }
    this.topic(topic);
    const group: FakeGroup = this.groups.get(name) ??
      {
        topic,
        generation: 0,
        members: [],
        owned: new Map(),
        committed: new Map(),
        from,
      };
    this.groups.set(name, group);
    group.members.push(member);
    this.rebalance(group);
    return Promise.resolve();
  }

  leaveGroup(name: string, memberId: string): void {
    const group = this.groups.get(name);
    if (!group) return;
    const before = group.members.length;
    group.members = group.members.filter((m) => m.id !== memberId);
    group.owned.delete(memberId);
    if (group.members.length !== before) this.rebalance(group);
  }

  rebalance(group: FakeGroup): void {
    for (const member of group.members) {
      const owned = group.owned.get(member.id);
      if (owned?.length) {
        member.onRevocation({
          generation: group.generation,
          topic: group.topic,
          partitions: owned,
        });
      }
    }
    group.generation++;
    group.owned.clear();
    const topic = this.topic(group.topic);
    const count = topic.partitions.length;
    group.members.forEach((member, index) => {
      const partitions: number[] = [];
      for (let p = index; p < count; p += group.members.length) {
        partitions.push(p);
      }
      group.owned.set(member.id, partitions);
      member.onAssignment({
        generation: group.generation,
        topic: group.topic,
        partitions: partitions.map((partition) => ({
          partition,
          offset: group.committed.get(partition) ??
            (group.from === "earliest"
              ? 0
              : topic.partitions[partition].logEndOffset),
        })),
      });
    });
  }

  commit(
    name: string,
    _topic: string,
    partition: number,
    offset: number,
    memberId: string,
    generation: number,
  ): Promise<void> {
    const group = this.groups.get(name);
    if (!group) {
      return Promise.reject(
        new DakgharError("unknown_group", `Group not found: ${name}`),
      );
    }
    if (generation !== group.generation) {
      return Promise.reject(
        new DakgharError("stale_generation", "Stale generation"),
      );
    }
    if (!group.owned.get(memberId)?.includes(partition)) {
      return Promise.reject(new DakgharError("not_assigned", "Not assigned"));
    }
    group.committed.set(partition, offset);
    return Promise.resolve();
  }

  describeGroup(name: string): Promise<GroupDescription> {
    const group = this.groups.get(name);
    const queued = this.queues.groups.get(name);
    if (!group && queued) {
      return Promise.resolve({
        name,
        mode: queued.settings.mode,
        generation: 0,
        members: queued.members.map((m) => ({
          id: m.handle.id,
          topic: queued.settings.topic,
          partitions: [],
        })),
        partitions: [],
        // As the router does: settings and per-partition progress.
        settings: queued.settings,
        queue: this.queues.describeQueue(name),
      });
    }
    if (!group) {
      return Promise.reject(
        new DakgharError("unknown_group", `Group not found: ${name}`),
      );
    }
    return Promise.resolve({
      name,
      mode: "stream",
      generation: group.generation,
      members: group.members.map((m) => ({
        id: m.id,
        topic: group.topic,
        partitions: group.owned.get(m.id) ?? [],
      })),
      partitions: [],
    });
  }

  listGroups(): GroupSummary[] {
    return [
      ...[...this.groups.entries()].map(([name, group]) => ({
        name,
        mode: "stream" as const,
        generation: group.generation,
        members: group.members.length,
      })),
      ...[...this.queues.groups.entries()].map(([name, group]) => ({
        name,
        mode: group.settings.mode,
        generation: 0,
        members: group.members.length,
      })),
    ].sort((a, b) => a.name < b.name ? -1 : 1);
  }

  // The queue half: see _fake_queues.ts.

  createGroup(
    name: string,
    request: GroupCreateRequest,
  ): Promise<GroupSettings> {
    return attempt(() => this.queues.createGroup(name, request));
  }

  groupSettings(name: string): GroupSettings | undefined {
    return this.queues.groupSettings(name);
  }

  deleteGroup(name: string): Promise<void> {
    if (this.groups.delete(name)) return Promise.resolve();
    return attempt(() => this.queues.deleteGroup(name));
  }

  joinQueueGroup(
    group: string,
    member: QueueMemberHandle,
    options?: QueueJoinOptions,
  ): Promise<void> {
    return attempt(() => this.queues.joinQueueGroup(group, member, options));
  }

  leaveQueueGroup(
    group: string,
    memberId: string,
    member?: QueueMemberHandle,
  ): void {
    this.queues.leaveQueueGroup(group, memberId, member);
  }

  settle(group: string, settlements: Settlement[]): Promise<SettleResult> {
    return attempt(() => this.queues.settle(group, settlements));
  }

  receive(group: string, options: ReceiveOptions): Promise<QueueDelivery[]> {
    try {
      return this.queues.receive(group, options);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  describeQueue(group: string): Promise<QueuePartitionDescription[]> {
    return attempt(() => this.queues.describeQueue(group));
  }

  redrive(group: string, options?: RedriveOptions): Promise<RedriveResult> {
    return attempt(() => this.queues.redrive(group, options));
  }

  cancelDelayed(topic: string, delayId: string): Promise<boolean> {
    return attempt(() => this.queues.cancelDelayed(topic, delayId));
  }

  /** Records of one partition from `offset` on, decoded. */
  recordsFrom(
    topicName: string,
    index: number,
    offset: number,
  ): DecodedRecord[] {
    const partition = this.partition(this.topic(topicName), topicName, index);
    const records: DecodedRecord[] = [];
    for (const batch of partition.batches) {
      if (batchLastOffset(batch.bytes) < offset) continue;
      for (const record of decodeBatches(batch.bytes)) {
        if (record.offset >= offset) records.push(record);
      }
    }
    return records;
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }

  topic(name: string): FakeTopic {
    const topic = this.topics.get(name);
    if (!topic) throw new UnknownTopicError(name);
    return topic;
  }

  partition(topic: FakeTopic, name: string, index: number): FakePartition {
    const partition = topic.partitions[index];
    if (!partition) {
      throw new DakgharError(
        "unknown_partition",
        `Partition not found: ${name}/${index}`,
      );
    }
    return partition;
  }
}

/** Runs `work` and settles a promise with its result or its throw. */
function attempt<T>(work: () => T): Promise<T> {
  try {
    return Promise.resolve(work());
  } catch (error) {
    return Promise.reject(error);
  }
}

/** Decoded records framed again, one batch each, at their own offsets. */
function reframe(records: DecodedRecord[]): Uint8Array {
  const parts = records.map((record) => {
    const bytes = encodeBatch([record]);
    stampBatch(bytes, 0, record.offset, record.appendTime);
    return bytes;
  });
  const bytes = new Uint8Array(parts.reduce((n, b) => n + b.length, 0));
  let position = 0;
  for (const part of parts) {
    bytes.set(part, position);
    position += part.length;
  }
  return bytes;
}
