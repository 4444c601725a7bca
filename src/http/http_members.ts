/**
 * Group members over plain HTTP, for clients that cannot hold a socket
 * (edge functions, serverless handlers). An HTTP member is a
 * {@linkcode MemberHandle} kept by the broker between requests: it tracks
 * its assignment and a fetch position per partition, and leaves the group
 * when no fetch, commit or heartbeat reached it within its session timeout.
 *
 * Nothing is buffered between fetches: a fetch reads the member's assigned
 * partitions from its positions, at most `maxRecords` records and about
 * `fetchBytesMax` bytes, and moves the positions past what it returns. A
 * revoked partition is dropped at once, so `onRevocation` returns at once.
 */
import { nanoid } from "nanoid";
import type {
  Broker,
  MemberHandle,
  PartitionAssignment,
  StartPosition,
} from "../broker.ts";
import { DakgharError, errorToData } from "../errors.ts";
import { decodeBatches, sliceBatches } from "../log/record_batch.ts";
import type { Logger } from "../logger.ts";
import {
  type ConsumerJsonRecord,
  type ReadEncoding,
  toConsumerRecords,
} from "./json_records.ts";

/** Settings for {@linkcode HttpMembers}. */
export interface HttpMemberOptions {
  /** A member not heard from for this long leaves its group (default 45 s). */
  sessionTimeoutMs: number;
  /** How often an idle member should heartbeat, as told on join (default 5 s). */
  heartbeatMs: number;
  /** Longest long-poll a fetch may ask for. */
  maxWaitMsMax: number;
  /** Soft limit on the bytes one fetch reads, over all partitions. */
  fetchBytesMax: number;
}

/** Shortest session timeout a member may ask for. */
export const sessionTimeoutMsMin = 100;

/** Pause before a failed or cut-short long-poll read is tried again. */
const retryMs = 100;

/** Most records one fetch returns. */
export const fetchRecordsMax = 10_000;

/** What `POST /groups/:group/members` answers. */
export interface HttpJoinResult {
  memberId: string;
  generation: number;
  topic: string;
  partitions: PartitionAssignment[];
  sessionTimeoutMs: number;
  heartbeatMs: number;
}

/** A fetched record, as in the read route plus its partition. */
export type HttpMemberRecord = ConsumerJsonRecord & { partition: number };

/** What a member fetch answers. */
export interface HttpFetchResult {
  generation: number;
  records: HttpMemberRecord[];
  /** Owned partitions and the next offset each fetch continues from. */
  assignment: PartitionAssignment[];
}

/** Options of one fetch. */
export interface HttpFetchOptions {
  maxRecords: number;
  maxWaitMs: number;
  encoding: ReadEncoding;
}

/** One HTTP member's state; the broker holds it through its handle. */
class HttpMember {
  readonly handle: MemberHandle;
  generation = 0;
  /** partition → next offset to fetch. */
  readonly positions = new Map<number, number>();
  expired = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** Fetches and commits in progress; the member cannot expire meanwhile. */
  #busy = 0;
  /** Wakes a waiting fetch when the assignment changes. */
  #changed = new AbortController();
  /** Serializes fetches: positions move in one order. */
  #fetching: Promise<unknown> = Promise.resolve();
  /** Ends the fetch in progress when another one starts. */
  #current: AbortController | undefined;
  /** Partition to read first next time, so none starves. */
  #next = 0;
  /** Counts revocations, so a waiting fetch returns when partitions go. */
  #revocations = 0;

  constructor(
    readonly group: string,
    readonly topic: string,
    readonly id: string,
    readonly owner: HttpMembers,
    readonly sessionTimeoutMs: number,
    /** When the member's topic was created: a topic of that name made later is another topic. */
    readonly topicCreatedAt: number | undefined,
  ) {
    // deno-lint-ignore no-this-alias
    const member = this;
    this.handle = {
      id,
      onAssignment({ generation, partitions }) {
        member.generation = generation;
        for (const { partition, offset } of partitions) {
          member.positions.set(partition, offset);
        }
        member.#wake();
      },
      onRevocation({ partitions }) {
        for (const partition of partitions) member.positions.delete(partition);
        member.#revocations++;
        member.#wake();
      },
      onSeek({ generation, partition, offset }) {
        member.generation = Math.max(member.generation, generation);
        if (member.positions.has(partition)) {
          member.positions.set(partition, offset);
        }
        member.#wake();
      },
    };
  }

  get assignment(): PartitionAssignment[] {
    return [...this.positions].sort(([a], [b]) => a - b).map((
      [partition, offset],
    ) => ({ partition, offset }));
  }

  /** Restarts the session timeout; a busy member is timed from its last call. */
  touch(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.expired || this.#busy > 0) return;
    this.#timer = setTimeout(
      () => this.owner.expire(this),
      this.sessionTimeoutMs,
    );
    unrefTimer(this.#timer);
  }

  /** Runs `work` with the member held alive, then restarts its timeout. */
  async busy<T>(work: () => Promise<T>): Promise<T> {
    this.#busy++;
    this.touch();
    try {
      return await work();
    } finally {
      this.#busy--;
      this.touch();
    }
  }

  stop(): void {
    this.expired = true;
    clearTimeout(this.#timer);
    this.#current?.abort();
    this.#wake();
  }

  #wake(): void {
    this.#changed.abort();
    this.#changed = new AbortController();
  }

  /** Fetches after the previous fetch, which is cut short. */
  fetch(broker: Broker, options: HttpFetchOptions): Promise<HttpFetchResult> {
    this.#current?.abort();
    const cancel = new AbortController();
    this.#current = cancel;
    const run = this.#fetching.then(() =>
      this.#fetchNow(broker, options, cancel.signal)
    );
    this.#fetching = run.catch(() => {});
    return run;
  }

  async #fetchNow(
    broker: Broker,
    options: HttpFetchOptions,
    cancel: AbortSignal,
  ): Promise<HttpFetchResult> {
    const deadline = Date.now() + options.maxWaitMs;
    const revocations = this.#revocations;
    for (;;) {
      const records = await this.#readAvailable(broker, options);
      const left = deadline - Date.now();
      if (
        records.length > 0 || left <= 0 || cancel.aborted || this.expired ||
        this.#revocations !== revocations
      ) {
        return {
          generation: this.generation,
          records,
          assignment: this.assignment,
        };
      }
      await this.#waitForData(broker, left, cancel);
    }
  }

  /** Reads what is there now from the owned partitions, round robin. */
  async #readAvailable(
    broker: Broker,
    options: HttpFetchOptions,
  ): Promise<HttpMemberRecord[]> {
    const records: HttpMemberRecord[] = [];
    const partitions = [...this.positions.keys()].sort((a, b) => a - b);
    if (partitions.length === 0) return records;
    const start = partitions.findIndex((p) => p >= this.#next);
    const order = [
      ...partitions.slice(Math.max(start, 0)),
      ...(start <= 0 ? [] : partitions.slice(0, start)),
    ];
    let bytesLeft = this.owner.options.fetchBytesMax;
    // A stream group created with a filter reads only what matches it.
    const filter = broker.groupSettings(this.group)?.filter ?? undefined;
    for (const partition of order) {
      if (records.length >= options.maxRecords || bytesLeft <= 0) break;
      const offset = this.positions.get(partition);
      if (offset === undefined) continue; // revoked meanwhile
      let result;
      try {
        result = await broker.read(this.topic, partition, offset, {
          maxBytes: bytesLeft,
          maxWaitMs: 0,
          ...(filter === undefined ? {} : { filter }),
        });
      } catch (error) {
        this.#readFailed(partition, offset, error);
        continue;
      }
      // The partition may have been revoked or sought during the read.
      if (this.positions.get(partition) !== offset) continue;
      if (result.bytes.length === 0) {
        // A filtered read moves past records that do not match.
        if (result.nextOffset !== undefined && result.nextOffset > offset) {
          this.positions.set(partition, result.nextOffset);
        }
        continue;
      }
      const wanted = options.maxRecords - records.length;
      const slice = sliceBatches(result.bytes, offset, wanted);
      if (slice.records === 0) continue;
      bytesLeft -= slice.bytes.length;
      this.positions.set(
        partition,
        slice.records < wanted && result.nextOffset !== undefined
          ? Math.max(slice.nextOffset, result.nextOffset)
          : slice.nextOffset,
      );
      this.#next = partition + 1;
      for (
        const record of toConsumerRecords(
          decodeBatches(slice.bytes),
          options.encoding,
        )
      ) {
        records.push({ partition, ...record });
      }
    }
    return records;
  }

  /**
   * Moves a position that fell out of the log back into it, as the
   * WebSocket fetch does; other errors are left for the next fetch.
   */
  #readFailed(partition: number, offset: number, error: unknown): void {
    const { code, details } = errorToData(error);
    const { logStartOffset, logEndOffset } = details;
    if (
      code === "offset_out_of_range" && typeof logStartOffset === "number" &&
      typeof logEndOffset === "number" &&
      this.positions.get(partition) === offset
    ) {
      this.positions.set(
        partition,
        Math.min(Math.max(offset, logStartOffset), logEndOffset),
      );
      return;
    }
    this.owner.log.warn("member fetch failed", {
      group: this.group,
      member: this.id,
      partition,
      code,
    });
  }

  /**
   * Waits until a partition has data, the assignment changes, the fetch is
   * cut short or `ms` pass. Reads are long-polls the broker ends early.
   */
  async #waitForData(
    broker: Broker,
    ms: number,
    cancel: AbortSignal,
  ): Promise<void> {
    const done = new AbortController();
    const stop = () => done.abort();
    const changed = this.#changed.signal;
    changed.addEventListener("abort", stop);
    cancel.addEventListener("abort", stop);
    const timer = setTimeout(stop, ms);
    let retry: ReturnType<typeof setTimeout> | undefined;
    // A read that fails or ends early (its partition closing, the topic
    // being deleted) reads again after a pause: retrying at once would spin
    // without yielding to the event loop, stalling the whole broker.
    const retryLater = () => {
      retry ??= setTimeout(stop, Math.min(retryMs, ms));
    };
    try {
      for (const [partition, offset] of this.positions) {
        broker.read(this.topic, partition, offset, {
          maxBytes: 1,
          maxWaitMs: ms,
          signal: done.signal,
        }).then((result) => {
          if (result.bytes.length > 0) stop();
          else retryLater();
        }, (error) => {
          // A position out of the log is repaired by the next read.
          if (errorToData(error).code === "offset_out_of_range") stop();
          else retryLater();
        });
      }
      if (!done.signal.aborted) {
        await new Promise((resolve) =>
          done.signal.addEventListener("abort", resolve)
        );
      }
    } finally {
      clearTimeout(timer);
      clearTimeout(retry);
      done.abort();
      changed.removeEventListener("abort", stop);
      cancel.removeEventListener("abort", stop);
    }
  }
}

/**
 * Every HTTP member of one broker, by group and member id. The routes in
 * `app.ts` call it.
 */
export class HttpMembers {
  readonly #members = new Map<string, HttpMember>();
  #closed = false;

  constructor(
    readonly broker: Broker,
    readonly options: HttpMemberOptions,
    readonly log: Logger,
  ) {}

  /**
   * Joins `group` reading `topic`; with a `memberId` already in the group,
   * takes that member over (it keeps its partitions, in a new generation).
   * A member may ask for a session timeout shorter than the broker's, as a
   * Kafka consumer does. Resolves once the partitions free to hand out are
   * assigned.
   *
   * @throws UnknownTopicError, DakgharError bad_request, shutting_down
   */
  async join(
    group: string,
    topic: string,
    from: StartPosition,
    memberId?: string,
    sessionTimeoutMs?: number,
  ): Promise<HttpJoinResult> {
    this.#checkOpen();
    const id = memberId ?? `http-${nanoid(12)}`;
    const key = memberKey(group, id);
    const timeout = Math.min(
      Math.max(sessionTimeoutMs ?? Infinity, sessionTimeoutMsMin),
      this.options.sessionTimeoutMs,
    );
    const member = new HttpMember(
      group,
      topic,
      id,
      this,
      timeout,
      this.#topicCreatedAt(topic),
    );
    await this.broker.joinGroup(group, topic, member.handle, from);
    this.#checkOpen();
    const previous = this.#members.get(key);
    if (previous !== undefined) previous.stop();
    this.#members.set(key, member);
    member.touch();
    return {
      memberId: id,
      generation: member.generation,
      topic,
      partitions: member.assignment,
      sessionTimeoutMs: timeout,
      heartbeatMs: Math.min(this.options.heartbeatMs, Math.floor(timeout / 3)),
    };
  }

  /**
   * Long-polls the member's partitions; counts as a heartbeat.
   *
   * @throws DakgharError bad_request for `maxRecords` below 1, not_found for
   *   an unknown or expired member,
   *   shutting_down once {@linkcode HttpMembers.close} was called
   */
  fetch(
    group: string,
    memberId: string,
    options: HttpFetchOptions,
  ): Promise<HttpFetchResult> {
    if (!Number.isSafeInteger(options.maxRecords) || options.maxRecords < 1) {
      throw new DakgharError(
        "bad_request",
        `maxRecords: expected an integer ≥ 1, got ${options.maxRecords}`,
        { field: "maxRecords" },
      );
    }
    const member = this.#get(group, memberId);
    return member.busy(async () => {
      const result = await member.fetch(this.broker, {
        ...options,
        maxRecords: Math.min(options.maxRecords, fetchRecordsMax),
        maxWaitMs: Math.min(
          Math.max(options.maxWaitMs, 0),
          this.options.maxWaitMsMax,
        ),
      });
      // Removed while the fetch waited (its topic deleted, or the broker
      // stopping): join again.
      this.#get(group, memberId);
      return result;
    });
  }

  /**
   * Commits offsets (each the next offset to consume) under `generation`,
   * the member's current one when absent; counts as a heartbeat.
   *
   * @throws DakgharError not_found, stale_generation, not_assigned, shutting_down
   */
  commit(
    group: string,
    memberId: string,
    offsets: PartitionAssignment[],
    generation?: number,
  ): Promise<{ generation: number }> {
    const member = this.#get(group, memberId);
    const at = generation ?? member.generation;
    return member.busy(async () => {
      const writes: Promise<void>[] = [];
      for (const { partition, offset } of offsets) {
        writes.push(
          this.broker.commit(
            group,
            member.topic,
            partition,
            offset,
            memberId,
            at,
          ),
        );
      }
      await Promise.all(writes);
      return { generation: member.generation };
    });
  }

  /**
   * Keeps the member alive and tells it its assignment.
   *
   * @throws DakgharError not_found, shutting_down
   */
  heartbeat(
    group: string,
    memberId: string,
  ): { generation: number; assignment: PartitionAssignment[] } {
    const member = this.#get(group, memberId);
    member.touch();
    return { generation: member.generation, assignment: member.assignment };
  }

  /**
   * Leaves at once; the partitions move to the others.
   *
   * @throws DakgharError not_found, shutting_down
   */
  leave(group: string, memberId: string): void {
    const member = this.#get(group, memberId);
    this.#drop(member);
    this.broker.leaveGroup(group, memberId, member.handle);
  }

  /** Session timeout: the member leaves and its partitions move. */
  expire(member: HttpMember): void {
    if (member.expired) return;
    this.#drop(member);
    this.log.info("http member session timed out", {
      group: member.group,
      member: member.id,
    });
    try {
      this.broker.leaveGroup(member.group, member.id, member.handle);
    } catch (error) {
      this.log.warn("leave after session timeout failed", { error });
    }
  }

  /**
   * The broker is stopping: waiting fetches end at once and answer, like
   * every later call, `shutting_down`. Members stay in their groups, which
   * the broker's own close takes care of.
   */
  close(): void {
    this.#closed = true;
    for (const member of this.#members.values()) member.stop();
    this.#members.clear();
  }

  #drop(member: HttpMember): void {
    member.stop();
    const key = memberKey(member.group, member.id);
    if (this.#members.get(key) === member) this.#members.delete(key);
  }

  #get(group: string, memberId: string): HttpMember {
    this.#checkOpen();
    const member = this.#members.get(memberKey(group, memberId));
    if (member !== undefined && !member.expired && this.#removed(member)) {
      this.#drop(member);
    }
    if (member === undefined || member.expired) {
      throw new DakgharError(
        "not_found",
        `Member not found: ${memberId} in group ${group} (it left, its session timed out or its topic was deleted; join again)`,
        { group, member: memberId },
      );
    }
    return member;
  }

  #checkOpen(): void {
    if (this.#closed) {
      throw new DakgharError("shutting_down", "The broker is shutting down");
    }
  }

  /**
   * True when the group no longer has the member although it never left:
   * the router removes the members of a deleted topic, and the group with
   * them when nothing else is left in it, without telling an HTTP member
   * that owned no partition.
   */
  #removed(member: HttpMember): boolean {
    if (this.#topicCreatedAt(member.topic) !== member.topicCreatedAt) {
      return true;
    }
    const summary = this.broker.listGroups().find((g) =>
      g.name === member.group
    );
    return summary === undefined || summary.members === 0;
  }

  #topicCreatedAt(topic: string): number | undefined {
    return this.broker.listTopics().find((t) => t.name === topic)?.createdAt;
  }
}

function memberKey(group: string, memberId: string): string {
  return `${group}\u0000${memberId}`;
}

/** Lets the process exit with a session timeout pending (Node and Deno). */
function unrefTimer(timer: ReturnType<typeof setTimeout>): void {
  if (typeof timer === "object" && timer !== null && "unref" in timer) {
    (timer as { unref(): void }).unref();
    return;
  }
  const deno = (globalThis as {
    Deno?: { unrefTimer?(id: number): void };
  }).Deno;
  deno?.unrefTimer?.(timer as unknown as number);
}
