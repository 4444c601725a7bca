/**
 * A WebSocket subscription to a queue or key_shared group: the session's
 * member of the group. The broker pushes deliveries to it, bounded by the
 * member's prefetch (records and bytes unsettled); the client settles them
 * with `settle` frames, which frees room. There is no credit: prefetch is
 * the flow control. Frames are documented in docs/protocol.md.
 *
 * Deliveries go out as `deliveries` frames, JSON records with their
 * attempt, or with `format: "batch"` the raw batch bytes plus the attempts
 * above 1 (always msgpack). A socket whose outgoing buffer is above the
 * session's bound holds them back in `#held` until it drains; that queue
 * stays within about twice the prefetch (records and bytes), since the broker delivers beyond
 * the prefetch only what it took back after an ack timeout: past that
 * bound, the oldest held deliveries are dropped unsent (their records are
 * in flight nowhere but here, and the ack timeout hands them out again).
 */
import type {
  Broker,
  GroupCreateRequest,
  GroupMode,
  GroupSettings,
  QueueDelivery,
  QueueJoinOptions,
  QueueMemberHandle,
  RecordFilter,
  Settlement,
  SettleResult,
} from "../broker.ts";
import { DakgharError } from "../errors.ts";
import type { Logger } from "../logger.ts";
import { sameFilter } from "../queue/filter.ts";
import { BadFrame } from "./bad_frame.ts";
import { type ReadEncoding, toDeliveryRecords } from "./json_records.ts";
import { QUEUE_LIMITS } from "../broker.ts";

/** Default prefetch, as the broker's: records and bytes unsettled at once. */
export const prefetchDefaults = { records: 1000, bytes: 1024 * 1024 };
/** Most records a member may ask to hold unsettled. */
export const prefetchRecordsMax = 100_000;
/** Most bytes a member may ask to hold unsettled. */
export const prefetchBytesMax = 64 * 1024 * 1024;
/** Most settlements one `settle` frame may carry, ack ranges counted out. */
export const settlementsPerFrameMax = 100_000;
/** Longest nack delay one settlement may ask for: 90 days. */
export const settleDelayMsMax = QUEUE_LIMITS.delayMsMax;
/** Longest error text one nack or reject may carry, as over HTTP. */
export const settleReasonLengthMax = QUEUE_LIMITS.reasonLengthMax;
/** Longest extension one settlement may ask for: 12 hours. */
export const settleExtendMsMax = QUEUE_LIMITS.extendMsMax;

/** What a queue subscription needs of its WebSocket session. */
export interface QueueSession {
  readonly broker: Broker;
  readonly log: Logger;
  readonly closed: boolean;
  /** Sends a frame; false once the socket is closed. */
  send(frame: Record<string, unknown>, encoding?: "json" | "msgpack"): boolean;
  sendError(
    id: unknown,
    error: unknown,
    fields?: Record<string, unknown>,
  ): void;
  /** True while the socket buffer is above the session's bound. */
  isCongested(): boolean;
  /** Drops the subscription `sub` from the session. */
  forget(sub: string): void;
  /** Resolves once the socket buffer is below the bound, or on close. */
  drained(): Promise<void>;
}

/** Settings of one queue subscription. */
export interface QueueSubscriptionSettings {
  group: string;
  topic: string;
  mode: "queue" | "key_shared";
  memberId: string;
  format: "json" | "batch";
  encoding: ReadEncoding;
  prefetch: { records: number; bytes: number };
}

/** One queue or key_shared member of a session. */
export class QueueSubscription {
  stopped = false;
  readonly handle: QueueMemberHandle;
  /** Deliveries not sent yet: before `subscribed`, or while congested. */
  #held: QueueDelivery[] = [];
  #heldRecords = 0;
  #heldBytes = 0;
  #announced = false;
  #flushing = false;

  constructor(
    readonly session: QueueSession,
    readonly sub: string,
    readonly settings: QueueSubscriptionSettings,
  ) {
    this.handle = {
      id: settings.memberId,
      deliver: (delivery) => this.deliver(delivery),
      removed: (reason) => this.#removed(reason),
    };
  }

  /** Joins the group; `subscribed` goes out once the broker took the member. */
  async start(id: unknown): Promise<void> {
    const { group, prefetch, memberId, mode } = this.settings;
    const options: QueueJoinOptions = {
      prefetchRecords: prefetch.records,
      prefetchBytes: prefetch.bytes,
    };
    if (this.stopped) return;
    await this.session.broker.joinQueueGroup(group, this.handle, options);
    if (this.stopped) {
      // Stopped while joining: the leave in stop() may have come first.
      this.session.broker.leaveQueueGroup(group, memberId, this.handle);
      return;
    }
    this.session.send({ op: "subscribed", id, sub: this.sub, memberId, mode });
    this.#announced = true;
    this.#flush();
  }

  /** Settles deliveries; resolves once the broker answered. */
  settle(settlements: Settlement[]): Promise<SettleResult> {
    return this.session.broker.settle(this.settings.group, settlements);
  }

  /** Leaves the group: its in-flight records go back to the group at once. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.#held = [];
    this.#heldRecords = 0;
    this.#heldBytes = 0;
    this.session.broker.leaveQueueGroup(
      this.settings.group,
      this.settings.memberId,
      this.handle,
    );
  }

  /**
   * The broker dropped the member (group or topic deleted): the
   * subscription ends with an `error` frame naming it; later frames for it
   * get `not_found`.
   */
  #removed(reason: { code: string; message: string }): void {
    if (this.stopped) return;
    this.stopped = true;
    this.#held = [];
    this.#heldRecords = 0;
    this.#heldBytes = 0;
    this.session.forget(this.sub);
    this.session.send({
      op: "error",
      sub: this.sub,
      code: reason.code,
      message: reason.message,
      group: this.settings.group,
    });
  }

  /** Sends a delivery, or holds it until `subscribed` went out and the socket drained. */
  deliver(delivery: QueueDelivery): void {
    if (this.stopped || this.session.closed) return;
    if (
      !this.#announced || this.#held.length > 0 || this.session.isCongested()
    ) {
      this.#hold(delivery);
      return;
    }
    this.#send(delivery);
  }

  #hold(delivery: QueueDelivery): void {
    this.#held.push(delivery);
    this.#heldRecords += delivery.records;
    this.#heldBytes += delivery.bytes.length;
    const { records, bytes } = this.settings.prefetch;
    while (
      (this.#heldRecords > 2 * records || this.#heldBytes > 2 * bytes) &&
      this.#held.length > 1
    ) {
      const dropped = this.#held.shift()!;
      this.#heldRecords -= dropped.records;
      this.#heldBytes -= dropped.bytes.length;
      this.session.log.debug("held delivery dropped", {
        sub: this.sub,
        partition: dropped.partition,
        records: dropped.records,
      });
    }
    if (this.#announced) this.#flush();
  }

  /** Sends held deliveries as the socket drains. */
  #flush(): void {
    if (this.#flushing) return;
    this.#flushing = true;
    (async () => {
      while (this.#held.length > 0 && !this.stopped && !this.session.closed) {
        await this.session.drained();
        if (this.stopped || this.session.closed) break;
        const delivery = this.#held.shift()!;
        this.#heldRecords -= delivery.records;
        this.#heldBytes -= delivery.bytes.length;
        this.#send(delivery);
      }
    })().finally(() => this.#flushing = false);
  }

  #send(delivery: QueueDelivery): void {
    const { topic, partition } = delivery;
    if (this.settings.format === "batch") {
      this.session.send({
        op: "deliveries",
        sub: this.sub,
        topic,
        partition,
        bytes: delivery.bytes,
        redelivered: delivery.redelivered,
      }, "msgpack");
      return;
    }
    this.session.send({
      op: "deliveries",
      sub: this.sub,
      topic,
      partition,
      records: toDeliveryRecords(delivery, this.settings.encoding),
    });
  }
}

/**
 * Parses the settlements of a `settle` frame:
 *
 *   acks:    [[partition, offset, count, attempt], ...]  count offsets from offset
 *   nacks:   [[partition, offset, attempt, delayMs | null, reason?], ...]
 *   rejects: [[partition, offset, attempt, reason?], ...]
 *   extends: [[partition, offset, attempt, ms], ...]
 *
 * @returns the settlements, or a message saying what is wrong with the frame
 */
export function parseSettleFrame(
  frame: Record<string, unknown>,
): Settlement[] | string {
  const settlements: Settlement[] = [];
  const lists = ["acks", "nacks", "rejects", "extends"] as const;
  for (const name of lists) {
    const list = frame[name];
    if (list === undefined) continue;
    if (!Array.isArray(list)) return `${name}: expected an array of arrays`;
    for (const [index, entry] of list.entries()) {
      const at = `${name}[${index}]`;
      if (!Array.isArray(entry)) return `${at}: expected an array`;
      const [partition, offset] = entry;
      if (!isWhole(partition) || !isWhole(offset)) {
        return `${at}: partition and offset must be integers ≥ 0`;
      }
      const problem = addSettlements(name, entry, settlements);
      if (problem !== undefined) return `${at}: ${problem}`;
      if (settlements.length > settlementsPerFrameMax) {
        return `at most ${settlementsPerFrameMax} settlements per frame`;
      }
    }
  }
  if (settlements.length === 0) {
    return "settle: expected acks, nacks, rejects or extends";
  }
  return settlements;
}

function addSettlements(
  list: "acks" | "nacks" | "rejects" | "extends",
  entry: unknown[],
  settlements: Settlement[],
): string | undefined {
  const [partition, offset] = entry as number[];
  if (list === "acks") {
    const [, , count, attempt] = entry;
    if (entry.length !== 4) {
      return "expected [partition, offset, count, attempt]";
    }
    if (!isWhole(count) || count < 1 || !isWhole(attempt) || attempt < 1) {
      return "count and attempt must be integers ≥ 1";
    }
    if (count > settlementsPerFrameMax) {
      return `count at most ${settlementsPerFrameMax}`;
    }
    for (let i = 0; i < count; i++) {
      settlements.push({
        partition,
        offset: offset + i,
        attempt,
        action: "ack",
      });
    }
    return undefined;
  }

  const attempt = entry[2];
  if (!isWhole(attempt) || attempt < 1) return "attempt must be an integer ≥ 1";
  if (list === "nacks") {
    const [, , , delayMs, reason] = entry;
    if (entry.length < 4 || entry.length > 5) {
      return "expected [partition, offset, attempt, delayMs | null, reason?]";
    }
    if (delayMs !== null && (!isWhole(delayMs) || delayMs > settleDelayMsMax)) {
      return `delayMs must be null or an integer from 0 to ${settleDelayMsMax}`;
    }
    if (
      reason !== undefined &&
      (typeof reason !== "string" || reason.length > settleReasonLengthMax)
    ) {
      return `reason must be a string of at most ${settleReasonLengthMax} characters`;
    }
    settlements.push({
      partition,
      offset,
      attempt,
      action: "nack",
      ...(delayMs === null ? {} : { delayMs: delayMs as number }),
      ...(reason === undefined ? {} : { reason: reason as string }),
    });
    return undefined;
  }
  if (list === "rejects") {
    const reason = entry[3];
    if (entry.length < 3 || entry.length > 4) {
      return "expected [partition, offset, attempt, reason?]";
    }
    if (
      reason !== undefined &&
      (typeof reason !== "string" || reason.length > settleReasonLengthMax)
    ) {
      return `reason must be a string of at most ${settleReasonLengthMax} characters`;
    }
    settlements.push({
      partition,
      offset,
      attempt,
      action: "reject",
      ...(reason === undefined ? {} : { reason: reason as string }),
    });
    return undefined;
  }
  const ms = entry[3];
  if (entry.length !== 4) return "expected [partition, offset, attempt, ms]";
  if (!isWhole(ms) || ms < 1 || ms > settleExtendMsMax) {
    return `ms must be an integer from 1 to ${settleExtendMsMax}`;
  }
  settlements.push({
    partition,
    offset,
    attempt,
    action: "extend",
    delayMs: ms,
  });
  return undefined;
}

function isWhole(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

/**
 * Parses a `prefetch` field: `{ records?, bytes? }`.
 *
 * @returns the prefetch with defaults filled in, or a message saying what is wrong
 */
export function parsePrefetch(
  value: unknown,
): { records: number; bytes: number } | string {
  if (value === undefined) return { ...prefetchDefaults };
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return "prefetch: expected { records?, bytes? }";
  }
  const { records, bytes, ...rest } = value as Record<string, unknown>;
  if (Object.keys(rest).length > 0) {
    return `prefetch: unknown field ${Object.keys(rest)[0]}`;
  }
  if (
    records !== undefined &&
    (!isWhole(records) || records < 1 || records > prefetchRecordsMax)
  ) {
    return `prefetch.records: expected an integer from 1 to ${prefetchRecordsMax}`;
  }
  if (
    bytes !== undefined &&
    (!isWhole(bytes) || bytes < 1 || bytes > prefetchBytesMax)
  ) {
    return `prefetch.bytes: expected an integer from 1 to ${prefetchBytesMax}`;
  }
  return {
    records: (records as number | undefined) ?? prefetchDefaults.records,
    bytes: (bytes as number | undefined) ?? prefetchDefaults.bytes,
  };
}

/**
 * The mode a subscription joins with: the group's own when it exists
 * (queue and key_shared may stand for each other in the frame, which only
 * says how to create the group), else the frame's, else stream.
 *
 * @throws DakgharError group_exists when the frame asks for a stream group
 *   and the group is a queue group, or the other way round
 */
export function subscriptionMode(
  group: string | undefined,
  settings: GroupSettings | undefined,
  asked: GroupMode | undefined,
): GroupMode {
  if (group === undefined) return "stream";
  if (settings === undefined) return asked ?? "stream";
  if (
    asked !== undefined &&
    (asked === "stream") !== (settings.mode === "stream")
  ) {
    throw new DakgharError(
      "group_exists",
      `Group ${group} is a ${settings.mode} group`,
      { group, mode: settings.mode },
    );
  }
  return settings.mode;
}

/** What the session already decided about a queue `subscribe` frame. */
export interface QueueSubscribeChoice {
  group: string;
  topic: string | undefined;
  mode: "queue" | "key_shared";
  /** The frame's filter, already checked; null when it has none. */
  filter: RecordFilter | null;
  /** The group's settings; undefined when the group must be created. */
  settings: GroupSettings | undefined;
}

/**
 * Checks the rest of a `subscribe` frame for a queue or key_shared group.
 *
 * @returns the subscription's settings (`memberId` only when the client
 *   chose one) and, for a group that does not exist yet, how to create it
 * @throws BadFrame for a malformed field; DakgharError bad_request for a
 *   topic or filter that is not the group's
 */
export function parseQueueSubscribe(
  frame: Record<string, unknown>,
  id: unknown,
  choice: QueueSubscribeChoice & { defaultFormat: "json" | "batch" },
): {
  settings: Omit<QueueSubscriptionSettings, "memberId"> & {
    memberId?: string;
  };
  create?: GroupCreateRequest;
} {
  const { group, settings, filter, mode } = choice;
  const topic = choice.topic ?? settings?.topic;
  if (topic === undefined) {
    throw new BadFrame("topic: needed to create a group", id);
  }
  if (settings !== undefined && topic !== settings.topic) {
    throw new DakgharError(
      "bad_request",
      `topic: group ${group} reads ${settings.topic}`,
      { group, topic: settings.topic },
    );
  }
  if (
    settings !== undefined && filter !== null &&
    !sameFilter(settings.filter, filter)
  ) {
    throw new DakgharError(
      "bad_request",
      `filter: group ${group} has another filter; omit it to use the group's`,
      { group, filter: settings.filter },
    );
  }
  if (frame.partitions !== undefined) {
    throw new BadFrame("partitions: a group assigns partitions itself", id);
  }
  // A frame without a mode may be a stream client's that found a queue
  // group (it learns so from `subscribed`); one that asked for a queue
  // member and sends credit has misread the protocol.
  if (frame.credit !== undefined && frame.mode !== undefined) {
    throw new BadFrame(
      "credit: a queue member's deliveries are bounded by prefetch, not credit",
      id,
    );
  }
  const from = frame.from;
  if (from !== undefined && from !== "earliest" && from !== "latest") {
    throw new BadFrame('from: expected "earliest" or "latest" for a group', id);
  }
  const prefetch = parsePrefetch(frame.prefetch);
  if (typeof prefetch === "string") throw new BadFrame(prefetch, id);
  const format = frame.format ?? choice.defaultFormat;
  if (format !== "json" && format !== "batch") {
    throw new BadFrame('format: expected "json" or "batch"', id);
  }
  const encoding = frame.encoding ?? "utf8";
  if (encoding !== "utf8" && encoding !== "base64") {
    throw new BadFrame('encoding: expected "utf8" or "base64"', id);
  }
  const memberId = frame.memberId;
  if (
    memberId !== undefined &&
    (typeof memberId !== "string" || memberId === "" || memberId.length > 200)
  ) {
    throw new BadFrame("memberId: 1 to 200 characters", id);
  }

  return {
    settings: {
      group,
      topic,
      mode,
      format,
      encoding,
      prefetch,
      ...(memberId === undefined ? {} : { memberId }),
    },
    ...(settings !== undefined ? {} : {
      create: {
        topic,
        mode,
        ...(from === undefined ? {} : { from }),
        ...(filter === null ? {} : { filter }),
      },
    }),
  };
}
