/**
 * The queue half of FakeBroker, in memory: queue and key_shared groups
 * (key_shared behaves as queue here), prefetch-bounded deliveries to
 * members, anonymous long-poll receives, settlement by attempt, delayed
 * records and filtered reads. Enough for front-end tests; the real
 * semantics live in the partition actors.
 */
import {
  type GroupCreateRequest,
  type GroupSettings,
  type QueueDelivery,
  type QueueJoinOptions,
  type QueueMemberHandle,
  type QueuePartitionDescription,
  type ReceiveOptions,
  type RecordFilter,
  type RedriveOptions,
  type RedriveResult,
  type Settlement,
  type SettleResult,
  TAG_HEADER,
} from "../../src/broker.ts";
import { DakgharError } from "../../src/errors.ts";
import {
  type DecodedRecord,
  encodeBatch,
  stampBatch,
} from "../../src/log/record_batch.ts";

/** What the fake needs of the log half. */
export interface FakeLog {
  /** Records of one partition from `offset` on, decoded. */
  recordsFrom(
    topic: string,
    partition: number,
    offset: number,
  ): DecodedRecord[];
  partitionCount(topic: string): number;
}

interface FakeMember {
  handle: QueueMemberHandle;
  prefetchRecords: number;
  inFlight: number;
}

interface InFlight {
  attempt: number;
  member: FakeMember | undefined;
}

interface FakeQueueGroup {
  settings: GroupSettings;
  members: FakeMember[];
  /** Per partition: the next offset never delivered. */
  readOffsets: number[];
  /** "p.o" → the current delivery. */
  inFlight: Map<string, InFlight>;
  /** "p.o" → delivery count, for records delivered at least once. */
  attempts: Map<string, number>;
  /** Released records waiting for redelivery, as [partition, offset]. */
  waiting: [number, number][];
  settled: Set<string>;
  deadLettered: number;
  receivers: Set<() => void>;
}

/** A record held back by delayMs or deliverAt. */
export interface FakeDelayed {
  topic: string;
  delayId: string;
  dueAt: number;
}

/** True when `record` matches `filter` (exact, every entry). */
export function matchesFilter(
  record: DecodedRecord,
  filter: RecordFilter | null | undefined,
): boolean {
  if (!filter) return true;
  const decoder = new TextDecoder();
  const values = (name: string) =>
    record.headers.filter(([n, v]) => n === name && v !== null).map((
      [, v],
    ) => decoder.decode(v!));
  for (const tag of filter.tags ?? []) {
    if (!values(TAG_HEADER).includes(tag)) return false;
  }
  for (const [name, value] of Object.entries(filter.headers ?? {})) {
    if (!values(name).includes(value)) return false;
  }
  return true;
}

const key = (partition: number, offset: number) => `${partition}.${offset}`;

/** Queue groups and delayed records of the fake broker. */
export class FakeQueues {
  readonly groups = new Map<string, FakeQueueGroup>();
  readonly delayed = new Map<string, FakeDelayed>();
  /** Every settle call, in order, for tests to look at. */
  readonly settleCalls: { group: string; settlements: Settlement[] }[] = [];
  readonly redriveCalls: { group: string; options?: RedriveOptions }[] = [];
  /** Stream groups created by joins, by name → topic; set by FakeBroker. */
  streamGroups: Map<string, { topic: string }> = new Map();
  #delayCount = 0;

  constructor(readonly log: FakeLog) {}

  createGroup(name: string, request: GroupCreateRequest): GroupSettings {
    this.log.partitionCount(request.topic);
    const existing = this.groups.get(name)?.settings;
    if (
      existing !== undefined &&
      (existing.mode !== request.mode || existing.topic !== request.topic ||
        JSON.stringify(existing.filter) !==
          JSON.stringify(request.filter ?? null))
    ) {
      throw new DakgharError(
        "group_exists",
        `Group ${name} exists with another mode, topic or filter`,
        { group: name },
      );
    }
    const queued = request.mode !== "stream";
    const settings: GroupSettings = {
      topic: request.topic,
      mode: request.mode,
      from: request.from ?? "earliest",
      filter: request.filter ?? null,
      ...(queued
        ? {
          queue: {
            ackTimeoutMs: 30_000,
            maxDeliveries: 5,
            backoffInitialMs: 1000,
            backoffMaxMs: 60_000,
            deadLetterTopic: `${request.topic}.${name}.dlq`,
            maxUnsettled: 1_000_000,
            ...existing?.queue,
            ...request.queue,
          },
        }
        : {}),
    };
    if (existing !== undefined) {
      this.groups.get(name)!.settings = settings;
      return settings;
    }
    this.groups.set(name, {
      settings,
      members: [],
      readOffsets: Array.from(
        { length: this.log.partitionCount(request.topic) },
        () => 0,
      ),
      inFlight: new Map(),
      attempts: new Map(),
      waiting: [],
      settled: new Set(),
      deadLettered: 0,
      receivers: new Set(),
    });
    return settings;
  }

  groupSettings(name: string): GroupSettings | undefined {
    const settings = this.groups.get(name)?.settings;
    if (settings !== undefined) return settings;
    const stream = this.streamGroups.get(name);
    return stream === undefined
      ? undefined
      : { topic: stream.topic, mode: "stream", from: "latest", filter: null };
  }

  deleteGroup(name: string): void {
    const group = this.group(name);
    for (const wake of group.receivers) wake();
    this.groups.delete(name);
  }

  joinQueueGroup(
    name: string,
    handle: QueueMemberHandle,
    options: QueueJoinOptions = {},
  ): void {
    const group = this.queueGroup(name);
    this.leaveQueueGroup(name, handle.id);
    group.members.push({
      handle,
      prefetchRecords: options.prefetchRecords ?? 1000,
      inFlight: 0,
    });
    this.pump(name);
  }

  leaveQueueGroup(
    name: string,
    memberId: string,
    handle?: QueueMemberHandle,
  ): void {
    const group = this.groups.get(name);
    if (group === undefined) return;
    const member = group.members.find((m) =>
      m.handle.id === memberId && (handle === undefined || m.handle === handle)
    );
    if (member === undefined) return;
    group.members = group.members.filter((m) => m !== member);
    for (const [id, flight] of group.inFlight) {
      if (flight.member === member) this.release(group, id);
    }
    this.pump(name);
  }

  /** Every delivery in flight goes back, as if its ack timeout passed. */
  expireAll(name: string): void {
    const group = this.group(name);
    for (const id of [...group.inFlight.keys()]) this.release(group, id);
    this.pump(name);
  }

  settle(name: string, settlements: Settlement[]): SettleResult {
    const group = this.queueGroup(name);
    this.settleCalls.push({ group: name, settlements });
    const result: SettleResult = { settled: 0, refused: [] };
    for (const settlement of settlements) {
      const { partition, offset, attempt, action } = settlement;
      const id = key(partition, offset);
      const flight = group.inFlight.get(id);
      if (flight === undefined || flight.attempt !== attempt) {
        result.refused.push({
          partition,
          offset,
          attempt,
          code: partition < group.readOffsets.length
            ? "stale_receipt"
            : "unknown_partition",
        });
        continue;
      }
      result.settled++;
      if (action === "extend") continue;
      if (action === "nack") {
        this.release(group, id);
        continue;
      }
      group.inFlight.delete(id);
      if (flight.member) flight.member.inFlight--;
      group.settled.add(id);
      if (action === "reject") group.deadLettered++;
    }
    this.pump(name);
    return result;
  }

  async receive(
    name: string,
    options: ReceiveOptions,
  ): Promise<QueueDelivery[]> {
    let deliveries = this.take(this.queueGroup(name), options.maxRecords);
    if (deliveries.length > 0 || options.maxWaitMs === 0) return deliveries;
    const group = this.queueGroup(name);
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        group.receivers.delete(done);
        options.signal?.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, options.maxWaitMs);
      group.receivers.add(done);
      options.signal?.addEventListener("abort", done);
      if (options.signal?.aborted) done();
    });
    if (!this.groups.has(name)) return [];
    deliveries = this.take(group, options.maxRecords);
    return deliveries;
  }

  describeQueue(name: string): QueuePartitionDescription[] {
    const group = this.queueGroup(name);
    return group.readOffsets.map((readOffset, partition) => {
      const inFlight = [...group.inFlight.keys()].filter((id) =>
        id.startsWith(`${partition}.`)
      ).length;
      const logEndOffset = readOffset +
        this.log.recordsFrom(group.settings.topic, partition, readOffset)
          .length;
      let ackFloor = 0;
      while (group.settled.has(key(partition, ackFloor))) {
        ackFloor++;
      }
      return {
        partition,
        ackFloor,
        readOffset,
        logEndOffset,
        unsettled: logEndOffset -
          [...group.settled].filter((id) =>
            id.startsWith(`${partition}.`)
          )
            .length,
        inFlight,
        waiting: group.waiting.filter(([p]) => p === partition).length,
        deadLettered: group.deadLettered,
        lostToRetention: 0,
      };
    });
  }

  redrive(name: string, options?: RedriveOptions): RedriveResult {
    const group = this.queueGroup(name);
    this.redriveCalls.push({ group: name, options });
    return {
      deadLetterTopic: group.settings.queue!.deadLetterTopic,
      redriven: group.deadLettered,
      skipped: 0,
    };
  }

  /** Holds a record back; returns its id. */
  schedule(topic: string, dueAt: number): string {
    const delayId = `d${++this.#delayCount}`;
    this.delayed.set(delayId, { topic, delayId, dueAt });
    return delayId;
  }

  cancelDelayed(topic: string, delayId: string): boolean {
    this.log.partitionCount(topic);
    const delayed = this.delayed.get(delayId);
    if (delayed === undefined || delayed.topic !== topic) return false;
    this.delayed.delete(delayId);
    return true;
  }

  /** Hands records to members with room and wakes waiting receives. */
  pump(name?: string): void {
    for (const [groupName, group] of this.groups) {
      if (name !== undefined && groupName !== name) continue;
      if (group.settings.mode === "stream") continue;
      for (const member of group.members) {
        const room = member.prefetchRecords - member.inFlight;
        if (room <= 0) continue;
        for (const delivery of this.take(group, room, member)) {
          member.handle.deliver(delivery);
        }
      }
      if (this.hasWork(group)) {
        for (const wake of [...group.receivers]) wake();
      }
    }
  }

  group(name: string): FakeQueueGroup {
    const group = this.groups.get(name);
    if (group === undefined) {
      throw new DakgharError("unknown_group", `Group not found: ${name}`, {
        group: name,
      });
    }
    return group;
  }

  queueGroup(name: string): FakeQueueGroup {
    const group = this.group(name);
    if (group.settings.mode === "stream") {
      throw new DakgharError("bad_request", `Group ${name} is a stream group`);
    }
    return group;
  }

  release(group: FakeQueueGroup, id: string): void {
    const flight = group.inFlight.get(id);
    if (flight === undefined) return;
    group.inFlight.delete(id);
    if (flight.member) flight.member.inFlight--;
    const [partition, offset] = id.split(".").map(Number);
    group.waiting.push([partition, offset]);
  }

  hasWork(group: FakeQueueGroup): boolean {
    if (group.waiting.length > 0) return true;
    return group.readOffsets.some((offset, partition) =>
      this.log.recordsFrom(group.settings.topic, partition, offset).some((r) =>
        matchesFilter(r, group.settings.filter)
      )
    );
  }

  /** Up to `max` records, redeliveries first, one delivery per partition. */
  take(
    group: FakeQueueGroup,
    max: number,
    member?: FakeMember,
  ): QueueDelivery[] {
    const { topic } = group.settings;
    const picked = new Map<number, DecodedRecord[]>();
    let count = 0;
    const pick = (partition: number, record: DecodedRecord) => {
      const id = key(partition, record.offset);
      const attempt = (group.attempts.get(id) ?? 0) + 1;
      group.attempts.set(id, attempt);
      group.inFlight.set(id, { attempt, member });
      if (member) member.inFlight++;
      picked.set(partition, [...picked.get(partition) ?? [], record]);
      count++;
    };

    group.waiting.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    while (count < max && group.waiting.length > 0) {
      const [partition, offset] = group.waiting.shift()!;
      const [record] = this.log.recordsFrom(topic, partition, offset);
      if (record?.offset === offset) pick(partition, record);
    }
    for (let p = 0; p < group.readOffsets.length && count < max; p++) {
      for (
        const record of this.log.recordsFrom(topic, p, group.readOffsets[p])
      ) {
        if (count >= max) break;
        group.readOffsets[p] = record.offset + 1;
        if (!matchesFilter(record, group.settings.filter)) {
          group.settled.add(key(p, record.offset));
          continue;
        }
        pick(p, record);
      }
    }

    return [...picked].map(([partition, records]) => {
      records.sort((a, b) => a.offset - b.offset);
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
      const redelivered: number[] = [];
      for (const record of records) {
        const attempt = group.attempts.get(key(partition, record.offset))!;
        if (attempt > 1) redelivered.push(record.offset, attempt);
      }
      return { topic, partition, bytes, redelivered, records: records.length };
    });
  }
}
