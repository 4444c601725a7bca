/**
 * The router's side of one queue or key_shared group: its members, their
 * prefetch, and which partitions have records to hand out.
 *
 * The partition actors hold every record's state (docs/queues.md); this
 * class only decides who asks whom for the next deliveries. Per partition
 * it keeps whether the cursor may have deliverable records (a `qfetch`
 * answered `more: false` makes it not ready until the actor's `qready`)
 * and allows one `qfetch` in flight (the actor answers most without
 * waiting for a state write). Members are served round robin, each fetch
 * asking for the member's share of its prefetch, so 20 members on 4
 * partitions all get work while the backlog lasts.
 *
 * Prefetch is counted per member and partition, in records and bytes:
 * a delivery adds its record count and batch bytes; `qfreed` (settled or
 * expired deliveries) and `qsettled.freed` (a release) subtract what the
 * actor says ended (each batch header is charged to its first record, so
 * the bytes add up; a member's bytes on a partition are also zeroed
 * whenever its records there are, which keeps a rounding slip from
 * sticking).
 *
 * Numbers: each member gets a number from 1 up, never reused while the
 * router runs (a replaced member gets a new one, so a late `qrelease` of
 * the old handle cannot free the new one's deliveries); 0 is the
 * anonymous HTTP receiver, whose deliveries count against no prefetch.
 */
import type {
  QueueDelivery,
  QueueJoinOptions,
  QueueMemberHandle,
  QueuePartitionDescription,
  ReceiveOptions,
  RefusedSettlement,
  Settlement,
  SettleResult,
} from "../broker.ts";
import type { PartitionMessage, QueueSettleItem } from "../envelope.ts";
import { DakgharError, type ErrorCode } from "../errors.ts";
import type { Logger } from "../logger.ts";
import type { PartitionClient } from "./partition_client.ts";
import { QUEUE_LIMITS } from "../broker.ts";

/** Default of {@linkcode QueueJoinOptions.prefetchRecords}. */
export const defaultPrefetchRecords = 1000;
/** Default of {@linkcode QueueJoinOptions.prefetchBytes}. */
export const defaultPrefetchBytes = 1024 * 1024;

const PREFETCH_RECORDS_MAX = 1_000_000;
const PREFETCH_BYTES_MAX = 1024 * 1024 * 1024;
const RECEIVE_RECORDS_MAX = QUEUE_LIMITS.receiveRecordsMax;
/** Pause before asking a partition again after a failed or empty fetch. */
const RETRY_MS = 200;

type Deliveries = Extract<PartitionMessage, { type: "deliveries" }>;

/** Options for {@linkcode QueueDispatcher}. */
export interface QueueDispatcherOptions {
  group: string;
  topic: string;
  /** The topic's partitions now; throws UnknownTopicError once it is deleted. */
  partitions(): PartitionClient[];
  log: Logger;
}

interface Member {
  id: string;
  number: number;
  handle: QueueMemberHandle;
  prefetchRecords: number;
  prefetchBytes: number;
  /** In flight plus asked for by fetches not answered yet. */
  records: number;
  bytes: number;
  /** In flight per partition. */
  recordsOn: number[];
  bytesOn: number[];
  removed: boolean;
}

interface PartitionState {
  ready: boolean;
  /** `qfetch` requests in flight: 0 or 1. */
  fetching: number;
  retry: ReturnType<typeof setTimeout> | undefined;
}

/** Members and deliveries of one queue or key_shared group. */
export class QueueDispatcher {
  readonly group: string;
  readonly topic: string;
  readonly #options: QueueDispatcherOptions;
  readonly #log: Logger;
  readonly #members = new Map<string, Member>();
  readonly #byNumber = new Map<number, Member>();
  /** Member order for round robin; removed members are skipped lazily. */
  #order: Member[] = [];
  #turn = 0;
  #firstPartition = 0;
  #nextNumber = 1;
  #states: PartitionState[] = [];
  /** Receivers waiting for any partition to become ready. */
  #wakers = new Set<() => void>();
  #closed = false;

  constructor(options: QueueDispatcherOptions) {
    this.group = options.group;
    this.topic = options.topic;
    this.#options = options;
    this.#log = options.log;
  }

  /** Number of members. */
  get size(): number {
    return this.#members.size;
  }

  /** Member ids, sorted. */
  memberIds(): string[] {
    return [...this.#members.keys()].sort();
  }

  /**
   * Adds a member, or replaces the handle of a member id already present
   * (the old handle's deliveries go back to the group), and starts
   * delivering.
   *
   * @throws DakgharError bad_request for a prefetch out of range
   */
  join(handle: QueueMemberHandle, options: QueueJoinOptions = {}): void {
    const prefetchRecords = checkPrefetch(
      "prefetchRecords",
      options.prefetchRecords ?? defaultPrefetchRecords,
      PREFETCH_RECORDS_MAX,
    );
    const prefetchBytes = checkPrefetch(
      "prefetchBytes",
      options.prefetchBytes ?? defaultPrefetchBytes,
      PREFETCH_BYTES_MAX,
    );
    const previous = this.#members.get(handle.id);
    if (previous !== undefined) {
      this.#remove(previous);
      if (previous.handle !== handle) {
        previous.handle.removed?.({
          code: "member_replaced",
          message:
            `Member ${handle.id} of ${this.group} joined again elsewhere`,
        });
      }
    }
    const member: Member = {
      id: handle.id,
      number: this.#nextNumber++,
      handle,
      prefetchRecords,
      prefetchBytes,
      records: 0,
      bytes: 0,
      recordsOn: [],
      bytesOn: [],
      removed: false,
    };
    this.#members.set(member.id, member);
    this.#byNumber.set(member.number, member);
    this.#order.push(member);
    this.#log.info("queue member joined", {
      group: this.group,
      member: member.id,
      number: member.number,
      replaced: previous !== undefined,
    });
    this.#pump();
  }

  /**
   * Removes a member; its deliveries go back to the group at once. No-op
   * when absent or when `handle` is given and is no longer the member's.
   */
  leave(memberId: string, handle?: QueueMemberHandle): void {
    const member = this.#members.get(memberId);
    if (member === undefined) return;
    if (handle !== undefined && member.handle !== handle) return;
    this.#remove(member);
    this.#log.info("queue member left", {
      group: this.group,
      member: memberId,
    });
  }

  /**
   * Hands records to an anonymous receiver: fetches from ready partitions
   * until `maxRecords`, waiting up to `maxWaitMs` for any to have some.
   *
   * @throws DakgharError bad_request for maxRecords outside 1..1000
   */
  async receive(options: ReceiveOptions): Promise<QueueDelivery[]> {
    const { maxRecords, maxBytes, maxWaitMs, signal } = options;
    if (
      !Number.isInteger(maxRecords) || maxRecords < 1 ||
      maxRecords > RECEIVE_RECORDS_MAX
    ) {
      throw new DakgharError(
        "bad_request",
        `Invalid maxRecords: ${maxRecords}, expected 1 to ${RECEIVE_RECORDS_MAX}`,
        { field: "maxRecords", value: maxRecords },
      );
    }
    const deadline = Date.now() + Math.max(0, maxWaitMs);
    while (true) {
      const deliveries = await this.#collect(maxRecords, maxBytes);
      const left = deadline - Date.now();
      if (
        deliveries.length > 0 || left <= 0 || signal?.aborted || this.#closed
      ) {
        return deliveries;
      }
      await this.#waitReady(left, signal);
    }
  }

  /**
   * Settles deliveries: one `qsettle` per partition, acks of consecutive
   * offsets at one attempt sent as runs. A partition that fails to answer
   * refuses its settlements as stale (its deliveries will come again).
   *
   * @throws DakgharError bad_request for a malformed settlement
   */
  async settle(settlements: Settlement[]): Promise<SettleResult> {
    const clients = this.#clients();
    const refused: RefusedSettlement[] = [];
    const byPartition = new Map<
      number,
      { acks: number[]; items: QueueSettleItem[]; all: Settlement[] }
    >();
    for (const settlement of settlements) {
      checkSettlement(settlement);
      const { partition, offset, attempt, action } = settlement;
      const count = action === "ack" ? settlement.count ?? 1 : 1;
      if (partition >= clients.length) {
        for (let i = 0; i < count; i++) {
          refused.push({
            partition,
            offset: offset + i,
            attempt,
            code: "unknown_partition",
          });
        }
        continue;
      }
      let batch = byPartition.get(partition);
      if (batch === undefined) {
        batch = { acks: [], items: [], all: [] };
        byPartition.set(partition, batch);
      }
      batch.all.push(settlement);
      if (action === "ack") {
        const acks = batch.acks;
        const last = acks.length - 3;
        if (
          last >= 0 && acks[last] + acks[last + 1] === offset &&
          acks[last + 2] === attempt
        ) {
          acks[last + 1] += count;
        } else {
          acks.push(offset, count, attempt);
        }
        continue;
      }
      const item: QueueSettleItem = { offset, attempt, action };
      if (settlement.delayMs !== undefined) item.delayMs = settlement.delayMs;
      if (settlement.reason !== undefined) item.reason = settlement.reason;
      batch.items.push(item);
    }

    let settled = 0;
    await Promise.all(
      [...byPartition].map(async ([partition, batch]) => {
        try {
          const reply = await clients[partition].request({
            type: "qsettle",
            group: this.group,
            acks: batch.acks,
            items: batch.items,
          });
          settled += reply.settled;
          for (const r of reply.refused) refused.push({ ...r, partition });
          this.freed(partition, reply.freed);
        } catch (error) {
          if (!(error instanceof DakgharError)) throw error;
          this.#log.warn("settlements refused: partition did not answer", {
            group: this.group,
            partition,
            error,
          });
          for (const { offset, attempt, action, count } of batch.all) {
            const records = action === "ack" ? count ?? 1 : 1;
            for (let i = 0; i < records; i++) {
              refused.push({
                partition,
                offset: offset + i,
                attempt,
                code: "stale_receipt",
              });
            }
          }
        }
      }),
    );
    return { settled, refused };
  }

  /** Per-partition progress, from each partition's cursor. */
  async describe(): Promise<QueuePartitionDescription[]> {
    const clients = this.#clients();
    return await Promise.all(clients.map(async (client, partition) => {
      const { stats } = await client.request({
        type: "qdescribe",
        group: this.group,
      });
      return { partition, ...stats };
    }));
  }

  /**
   * Gives members back the prefetch of deliveries a partition released:
   * `freed` is flat triples [member, records, bytes].
   */
  freed(partition: number, freed: number[]): void {
    for (let i = 0; i + 2 < freed.length; i += 3) {
      const member = this.#byNumber.get(freed[i]);
      if (member === undefined) continue;
      const records = Math.min(freed[i + 1], member.recordsOn[partition] ?? 0);
      member.recordsOn[partition] = (member.recordsOn[partition] ?? 0) -
        records;
      member.records -= records;
      let bytes = Math.min(freed[i + 2], member.bytesOn[partition] ?? 0);
      if (member.recordsOn[partition] === 0) {
        bytes = member.bytesOn[partition] ?? 0;
      }
      member.bytesOn[partition] = (member.bytesOn[partition] ?? 0) - bytes;
      member.bytes -= bytes;
    }
    this.#pump();
  }

  /** A partition has deliverable records again (its `qready`). */
  ready(partition: number): void {
    const state = this.#state(partition);
    clearTimeout(state.retry);
    state.retry = undefined;
    state.ready = true;
    this.#wake();
    this.#pump();
  }

  /**
   * A partition's actor (re)started: what was in flight from it is
   * deliverable again, so members get its prefetch back, and it is asked
   * again. Call after its queue groups' `qconfig` went out.
   */
  restarted(partition: number): void {
    for (const member of this.#members.values()) {
      member.records -= member.recordsOn[partition] ?? 0;
      member.bytes -= member.bytesOn[partition] ?? 0;
      member.recordsOn[partition] = 0;
      member.bytesOn[partition] = 0;
    }
    queueMicrotask(() => this.ready(partition));
  }

  /**
   * The topic's partitions were replaced (deleted, maybe created again):
   * forget everything tied to the old ones.
   */
  reset(reason?: { code: ErrorCode; message: string }): void {
    for (const state of this.#states) clearTimeout(state.retry);
    this.#states = [];
    // The members' deliveries went with the partitions: drop them, and
    // tell them, as a stream member hears its partitions are gone.
    if (reason !== undefined) this.#dropMembers(reason);
    // Fetches still running keep their reservations until they fail.
    for (const member of this.#members.values()) {
      for (const records of member.recordsOn) member.records -= records ?? 0;
      for (const bytes of member.bytesOn) member.bytes -= bytes ?? 0;
      member.recordsOn = [];
      member.bytesOn = [];
    }
    this.#wake();
  }

  /**
   * Drops every member and stops; waiting receivers answer empty. Members
   * hear `removed` with `reason` when one is given.
   */
  close(reason?: { code: ErrorCode; message: string }): void {
    this.#closed = true;
    for (const state of this.#states) clearTimeout(state.retry);
    this.#dropMembers(reason);
    this.#wake();
  }

  /** Forgets every member without releasing its deliveries; tells each `reason`, if any. */
  #dropMembers(reason?: { code: ErrorCode; message: string }): void {
    for (const member of this.#members.values()) {
      member.removed = true;
      if (reason !== undefined) member.handle.removed?.(reason);
    }
    this.#members.clear();
    this.#byNumber.clear();
    this.#order = [];
  }

  #remove(member: Member): void {
    member.removed = true;
    this.#members.delete(member.id);
    this.#byNumber.delete(member.number);
    this.#order = this.#order.filter((m) => m !== member);
    let clients: PartitionClient[];
    try {
      clients = this.#clients();
    } catch {
      return; // topic deleted: nothing holds its deliveries
    }
    for (const client of clients) {
      client.request({
        type: "qrelease",
        group: this.group,
        member: member.number,
      }).catch((error) =>
        this.#log.debug("release not delivered", {
          group: this.group,
          partition: client.partition,
          error,
        })
      );
    }
  }

  #clients(): PartitionClient[] {
    const clients = this.#options.partitions();
    if (this.#states.length !== clients.length) {
      for (const state of this.#states) clearTimeout(state.retry);
      this.#states = clients.map(() => ({
        ready: true,
        fetching: 0,
        retry: undefined,
      }));
    }
    return clients;
  }

  #state(partition: number): PartitionState {
    return this.#states[partition] ??= {
      ready: true,
      fetching: 0,
      retry: undefined,
    };
  }

  /** Starts a fetch on every ready, idle partition for a member with room. */
  #pump(): void {
    if (this.#closed || this.#members.size === 0) return;
    let clients: PartitionClient[];
    try {
      clients = this.#clients();
    } catch {
      return;
    }
    const count = clients.length;
    for (let i = 0; i < count; i++) {
      const partition = (this.#firstPartition + i) % count;
      const state = this.#states[partition];
      if (!state.ready || state.fetching > 0) continue;
      const member = this.#nextWithRoom();
      if (member === undefined) break;
      const records = Math.min(
        member.prefetchRecords - member.records,
        Math.max(1, Math.ceil(member.prefetchRecords / count)),
      );
      const bytes = Math.max(
        1,
        Math.min(
          member.prefetchBytes - member.bytes,
          Math.ceil(member.prefetchBytes / count),
        ),
      );
      // Reserved while the fetch runs, so concurrent fetches on other
      // partitions share what is free rather than each taking all of it.
      member.records += records;
      member.bytes += bytes;
      void this.#fetch(clients[partition], member, records, bytes);
    }
    this.#firstPartition = (this.#firstPartition + 1) % count;
  }

  /**
   * The next member in turn with room for a worthwhile fetch: a quarter
   * of its prefetch free, or nothing in flight (so a large record still
   * goes to somebody).
   */
  #nextWithRoom(): Member | undefined {
    const order = this.#order;
    for (let i = 0; i < order.length; i++) {
      const member = order[(this.#turn + i) % order.length];
      const recordsFree = member.prefetchRecords - member.records;
      const bytesFree = member.prefetchBytes - member.bytes;
      const roomy = member.records === 0 ||
        (recordsFree >= Math.max(1, member.prefetchRecords >> 2) &&
          bytesFree >= member.prefetchBytes >> 2);
      if (recordsFree > 0 && bytesFree > 0 && roomy) {
        this.#turn = (this.#turn + i + 1) % order.length;
        return member;
      }
    }
    return undefined;
  }

  async #fetch(
    client: PartitionClient,
    member: Member,
    maxRecords: number,
    maxBytes: number,
  ): Promise<void> {
    const partition = client.partition;
    const reply = await this.#request(
      client,
      member.number,
      maxRecords,
      maxBytes,
    );
    member.records -= maxRecords;
    member.bytes -= maxBytes;
    if (reply !== undefined && reply.records > 0) {
      if (member.removed) {
        // Sent after this fetch, the member's qrelease frees these.
      } else {
        const bytes = reply.bytes.byteLength;
        member.records += reply.records;
        member.bytes += bytes;
        member.recordsOn[partition] = (member.recordsOn[partition] ?? 0) +
          reply.records;
        member.bytesOn[partition] = (member.bytesOn[partition] ?? 0) + bytes;
        try {
          member.handle.deliver({
            topic: this.topic,
            partition,
            bytes: reply.bytes,
            redelivered: reply.redelivered,
            records: reply.records,
          });
        } catch (error) {
          this.#log.error("queue delivery failed", {
            group: this.group,
            member: member.id,
            error,
          });
        }
      }
    }
    this.#pump();
  }

  /**
   * One `qfetch`, keeping the partition's flags: fetching while it runs,
   * then ready as the answer says. A failed or empty-but-more answer
   * retries the partition after a pause.
   */
  async #request(
    client: PartitionClient,
    member: number,
    maxRecords: number,
    maxBytes: number,
  ): Promise<Deliveries | undefined> {
    const state = this.#state(client.partition);
    state.fetching++;
    let reply: Deliveries | undefined;
    try {
      reply = await client.request({
        type: "qfetch",
        group: this.group,
        member,
        maxRecords,
        maxBytes,
      });
    } catch (error) {
      this.#log.debug("queue fetch failed", {
        group: this.group,
        partition: client.partition,
        error,
      });
    }
    if (this.#states[client.partition] !== state) return reply; // reset meanwhile
    state.fetching--;
    if (reply === undefined || (reply.records === 0 && reply.more)) {
      state.ready = false;
      this.#retryLater(client.partition, state);
    } else {
      state.ready = reply.more;
      if (reply.more) this.#wake();
    }
    return reply;
  }

  #retryLater(partition: number, state: PartitionState): void {
    if (this.#closed || state.retry !== undefined) return;
    state.retry = setTimeout(() => {
      state.retry = undefined;
      if (this.#states[partition] === state) this.ready(partition);
    }, RETRY_MS);
  }

  /** One pass over the ready, idle partitions for an anonymous receiver. */
  async #collect(
    maxRecords: number,
    maxBytes: number,
  ): Promise<QueueDelivery[]> {
    const clients = this.#clients();
    const deliveries: QueueDelivery[] = [];
    let records = 0;
    let bytes = 0;
    const count = clients.length;
    const first = this.#firstPartition++ % Math.max(1, count);
    for (let i = 0; i < count && records < maxRecords; i++) {
      const partition = (first + i) % count;
      const state = this.#state(partition);
      if (!state.ready || state.fetching > 0) continue;
      const reply = await this.#request(
        clients[partition],
        0,
        maxRecords - records,
        Math.max(1, maxBytes - bytes),
      );
      if (reply === undefined || reply.records === 0) continue;
      records += reply.records;
      bytes += reply.bytes.byteLength;
      deliveries.push({
        topic: this.topic,
        partition,
        bytes: reply.bytes,
        redelivered: reply.redelivered,
        records: reply.records,
      });
      if (bytes >= maxBytes) break;
    }
    this.#pump();
    return deliveries;
  }

  #waitReady(timeoutMs: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", done);
        this.#wakers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      signal?.addEventListener("abort", done, { once: true });
      this.#wakers.add(done);
    });
  }

  #wake(): void {
    const wakers = [...this.#wakers];
    this.#wakers.clear();
    for (const wake of wakers) wake();
  }
}

function checkPrefetch(field: string, value: number, max: number): number {
  if (!Number.isInteger(value) || value < 1 || value > max) {
    throw new DakgharError(
      "bad_request",
      `Invalid ${field}: ${value}, expected an integer in [1, ${max}]`,
      { field, value },
    );
  }
  return value;
}

const actions = new Set(["ack", "nack", "reject", "extend"]);

function checkSettlement(settlement: Settlement): void {
  const { partition, offset, attempt, action } = settlement;
  const fault = !Number.isSafeInteger(partition) || partition < 0
    ? "partition"
    : !Number.isSafeInteger(offset) || offset < 0
    ? "offset"
    : !Number.isSafeInteger(attempt) || attempt < 1
    ? "attempt"
    : !actions.has(action)
    ? "action"
    : settlement.count !== undefined &&
        (action !== "ack" || !Number.isSafeInteger(settlement.count) ||
          settlement.count < 1)
    ? "count"
    : settlement.delayMs !== undefined &&
        (!Number.isFinite(settlement.delayMs) || settlement.delayMs < 0)
    ? "delayMs"
    : settlement.reason !== undefined && typeof settlement.reason !== "string"
    ? "reason"
    : undefined;
  if (fault !== undefined) {
    throw new DakgharError(
      "bad_request",
      `Invalid settlement ${fault}: ${
        JSON.stringify(settlement[fault as keyof Settlement])
      }`,
      { field: fault },
    );
  }
}
