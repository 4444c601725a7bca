/**
 * A subscription to a topic over its own WebSocket, as an async iterator of
 * messages.
 *
 * Flow control: the subscription owns `bufferSize` records of credit. Each
 * record is always in exactly one place: granted to the broker and not yet
 * received, received and buffered, or yielded and waiting to be granted
 * again. Credit goes back to the broker as the iterator is consumed, so the
 * buffer never holds more than `bufferSize` records.
 *
 * Positions: `#positions` holds, per partition, the offset after the last
 * record the iterator yielded (or the start the broker assigned). A group
 * member commits these; an ungrouped subscription resumes from them after a
 * reconnect. A group member that comes back resumes from the group's
 * committed offsets, which may lag what it already yielded; records below
 * its own positions are skipped, so nothing is yielded twice and nothing is
 * skipped that was not yielded before.
 */
import type { RecordFilter } from "../broker.ts";
import { PullBuffer } from "./pull_buffer.ts";
import { type ReconnectOptions, Reconnector } from "./reconnector.ts";
import { DakgharClientError, errorFromBody } from "./errors.ts";
import {
  ConsumedRecord,
  type RecordPosition,
  recordsFromBatches,
} from "./records.ts";
import type { Frame, WebSocketTransport } from "./websocket_transport.ts";

export type { ReconnectOptions };

/** Where a subscription without a group starts; groups take the first two. */
export type SubscribeFrom =
  | "earliest"
  | "latest"
  | { offset: number }
  | { timestamp: number };

/** Options for {@linkcode DakgharClient.subscribe}. */
export interface SubscribeOptions {
  topic: string;
  /** Join this consumer group; the broker assigns partitions. */
  group?: string;
  /**
   * With a group: the member id (default: the broker picks one). Reconnects
   * reuse the id either way, so the member gets its partitions back.
   */
  memberId?: string;
  /**
   * Without a group: where to start (default "latest"). With a group: where
   * to start in partitions the group never committed.
   */
  from?: SubscribeFrom;
  /** Without a group: the partitions to read (default: all). */
  partitions?: number[];
  /**
   * Exact broker-side filter on tags and header values: records that do not
   * match never cross the wire (a group member moves past them). With a
   * group that has a filter, it must equal it, or be left out.
   */
  filter?: RecordFilter;
  /** Most records received and not yet yielded (default 500). */
  bufferSize?: number;
  /** Commit what the iterator has yielded periodically (default true). */
  autoCommit?: boolean;
  /** Auto-commit period (default 1000 ms). */
  autoCommitIntervalMs?: number;
  /** Reconnect after the connection drops (default true). */
  reconnect?: boolean | ReconnectOptions;
  /** Told about assignments, resets, disconnects and fetch errors. */
  onEvent?: (event: SubscriptionEvent) => void;
}

/** What happened to a subscription, for {@linkcode SubscribeOptions.onEvent}. */
export type SubscriptionEvent =
  | {
    type: "assigned";
    generation: number;
    partitions: { partition: number; offset: number }[];
  }
  | { type: "revoked"; generation: number; partitions: number[] }
  | { type: "seeked"; partition: number; offset: number; generation: number }
  | {
    type: "reset";
    partition: number;
    offset: number;
    previousOffset: number;
    reason: string;
  }
  | { type: "disconnected"; error: DakgharClientError }
  | { type: "reconnected" }
  | { type: "error"; error: DakgharClientError };

/** A consumed record that can commit itself. */
export class Message extends ConsumedRecord {
  #subscription: Subscription;

  /** Generation of the assignment or seek this record was fetched under. */
  readonly generation: number;

  constructor(
    record: ConsumedRecord,
    subscription: Subscription,
    generation: number,
  ) {
    super(
      record.topic,
      record.partition,
      record.offset,
      record.timestamp,
      record.keyBytes,
      record.value,
      record.headerBytes,
    );
    this.#subscription = subscription;
    this.generation = generation;
  }

  /**
   * Commits the group's position in this partition to just after this record.
   * @throws {DakgharClientError} e.g. `not_assigned` after a rebalance
   */
  commit(): Promise<void> {
    return this.#subscription.commitOffset(
      this.partition,
      this.offset + 1,
      this.generation,
    );
  }
}

/** Codes after which reconnecting cannot help. */
const fatalCodes = new Set([
  "unknown_topic",
  "unknown_partition",
  "unknown_group",
  "unauthorized",
  "bad_frame",
  "bad_request",
  "invalid_topic_name",
]);

/** One broker subscription id on the current connection, with its credit. */
interface SubState {
  sub: string;
  /** Credit granted and not yet used by records. */
  outstanding: number;
}

/**
 * Messages of a topic, as an async iterator. Create with
 * {@linkcode DakgharClient.subscribe}.
 */
export class Subscription implements AsyncIterableIterator<Message> {
  readonly topic: string;
  readonly group: string | undefined;
  readonly bufferSize: number;
  /** Called once the subscription is closed (the client forgets it then). */
  onClose: () => void = () => {};

  readonly #options: SubscribeOptions;
  readonly #connect: () => Promise<WebSocketTransport>;
  #transport: WebSocketTransport | undefined;
  #subs = new Map<string, SubState>();
  /**
   * Frames that arrived before their `subscribed` reply was handled: a
   * socket may deliver `subscribed`, `assigned` and records in one task.
   */
  #early: Frame[] = [];
  readonly #buffer = new PullBuffer<Message>();
  #bufferedPeak = 0;
  /** Credit taken back from yielded or dropped records, not yet granted. */
  #free = 0;
  #positions = new Map<number, number>();
  /** Per partition, the generation the position in `#positions` came from. */
  #generations = new Map<number, number>();
  #memberId: string | undefined;
  #skipBelow = new Map<number, number>();
  #committed = new Map<number, number>();
  #owned = new Set<number>();
  /** Per owned partition, the generation records now arriving belong to. */
  #fetchGenerations = new Map<number, number>();
  #failure: Error | undefined;
  #closed = false;
  readonly #reconnector: Reconnector;
  #autoCommitTimer: ReturnType<typeof setInterval> | undefined;

  /** Use {@linkcode DakgharClient.subscribe}. */
  constructor(
    options: SubscribeOptions,
    connect: () => Promise<WebSocketTransport>,
  ) {
    const bufferSize = options.bufferSize ?? 500;
    if (!Number.isInteger(bufferSize) || bufferSize < 1) {
      throw new RangeError(
        `bufferSize must be a positive integer: ${bufferSize}`,
      );
    }
    this.topic = options.topic;
    this.group = options.group;
    this.bufferSize = bufferSize;
    this.#options = options;
    this.#connect = connect;
    this.#memberId = options.memberId;
    this.#reconnector = new Reconnector(options.reconnect, fatalCodes, {
      open: () => this.#open(),
      closed: () => this.#closed,
      reconnected: () => this.#emit({ type: "reconnected" }),
      failed: (error) => this.#fail(error),
    });
  }

  /** Opens the first connection; rejects with the broker's error. */
  async start(): Promise<void> {
    await this.#open();
    if (this.group !== undefined && this.#options.autoCommit !== false) {
      this.#autoCommitTimer = setInterval(() => {
        this.commit().catch((error) => this.#emitError(error));
      }, this.#options.autoCommitIntervalMs ?? 1000);
    }
  }

  /** The group member id the broker confirmed; undefined without a group. */
  get memberId(): string | undefined {
    return this.#memberId;
  }

  /** Records received and not yet yielded. */
  get buffered(): number {
    return this.#buffer.size;
  }

  /** Most records ever buffered at once; never above `bufferSize`. */
  get bufferedPeak(): number {
    return this.#bufferedPeak;
  }

  /** Per partition, the offset after the last record yielded (or the start). */
  positions(): Map<number, number> {
    return new Map(this.#positions);
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /** The next message; waits for one, and ends once the subscription closes. */
  async next(): Promise<IteratorResult<Message, undefined>> {
    while (true) {
      if (this.#closed) return { done: true, value: undefined };
      const message = this.#buffer.take();
      if (message !== undefined) {
        this.#positions.set(message.partition, message.offset + 1);
        this.#generations.set(message.partition, message.generation);
        this.#free++;
        this.#maybeGrant();
        return { done: false, value: message };
      }
      if (this.#failure) throw this.#failure;
      await this.#buffer.wait();
    }
  }

  /** Ends the iteration (a `break` in `for await` calls it). */
  async return(): Promise<IteratorResult<Message, undefined>> {
    await this.close();
    return { done: true, value: undefined };
  }

  /**
   * Commits, per owned partition, the offset after the last yielded record.
   * Does nothing without a group.
   * @throws {DakgharClientError} e.g. `connection_closed` while reconnecting
   */
  async commit(): Promise<void> {
    if (this.group === undefined) return;
    const commits: Promise<void>[] = [];
    for (const partition of this.#owned) {
      const offset = this.#positions.get(partition);
      if (offset === undefined) continue;
      if (offset <= (this.#committed.get(partition) ?? -1)) continue;
      commits.push(
        this.commitOffset(partition, offset, this.#generations.get(partition)),
      );
    }
    await Promise.all(commits);
  }

  /**
   * Commits `offset` (the next record to process) in `partition`, under the
   * generation the position came from (default: the partition's latest).
   * @throws {DakgharClientError} `not_assigned`, `stale_generation`, …
   */
  async commitOffset(
    partition: number,
    offset: number,
    generation: number | undefined = this.#generations.get(partition),
  ): Promise<void> {
    const [state] = this.#subs.values();
    if (this.group === undefined) {
      throw new DakgharClientError(
        "bad_request",
        "Only group subscriptions commit",
      );
    }
    const transport = this.#transport;
    if (!transport || !state) {
      throw new DakgharClientError(
        "connection_closed",
        "Cannot commit while disconnected",
      );
    }
    await transport.request(
      {
        op: "commit",
        sub: state.sub,
        partition,
        offset,
        ...(generation === undefined ? {} : { generation }),
      },
      "msgpack",
    );
    if (offset > (this.#committed.get(partition) ?? -1)) {
      this.#committed.set(partition, offset);
    }
  }

  /**
   * Moves the group's committed offsets on this topic (see
   * {@linkcode DakgharClient.seekGroup}); owned partitions then continue from
   * the new offsets, announced by `seeked` events.
   * @param partitions default: all of the topic's partitions
   * @throws {DakgharClientError} `bad_request` without a group,
   *   `unknown_partition`, `connection_closed`
   */
  async seek(
    to: SubscribeFrom,
    partitions?: number[],
  ): Promise<{ generation: number; partitions: RecordPosition[] }> {
    if (this.group === undefined) {
      throw new DakgharClientError("bad_request", "Only groups can be sought");
    }
    const transport = this.#transport;
    if (!transport) {
      throw new DakgharClientError(
        "connection_closed",
        "Cannot seek while disconnected",
      );
    }
    const moved = await transport.request(
      {
        op: "seek",
        group: this.group,
        topic: this.topic,
        to,
        ...(partitions === undefined ? {} : { partitions }),
      },
      "msgpack",
    );
    return {
      generation: moved.generation as number,
      partitions: moved.partitions as RecordPosition[],
    };
  }

  /**
   * Stops receiving: commits what was yielded (with auto-commit on), leaves
   * the group and ends the iteration.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    clearInterval(this.#autoCommitTimer);
    this.#reconnector.cancel();
    if (this.#options.autoCommit !== false) {
      await this.commit().catch(() => {});
    }
    this.#closed = true;
    this.#buffer.clear();
    const transport = this.#transport;
    this.#transport = undefined;
    // Leave the group at once rather than have it wait out the session
    // timeout for a member that is not coming back.
    if (transport?.isOpen) {
      await Promise.all(
        [...this.#subs.keys()].map((sub) =>
          transport.request({ op: "unsubscribe", sub }, "msgpack")
            .catch(() => {})
        ),
      );
    }
    transport?.close();
    this.#buffer.wake();
    this.onClose();
  }

  /** Connects and subscribes, from the positions known so far. */
  async #open(): Promise<void> {
    const transport = await this.#connect();
    if (this.#closed) {
      transport.close();
      return;
    }
    this.#transport = transport;
    this.#subs.clear();
    this.#early = [];
    this.#owned.clear();
    this.#fetchGenerations.clear();
    this.#committed.clear();
    this.#buffer.clear();
    this.#free = 0;
    transport.onFrame = (frame) => {
      if (transport === this.#transport) this.#receive(frame);
    };
    transport.onClose = (error) => {
      if (transport === this.#transport) this.#disconnected(error);
    };

    const frames = this.#subscribeFrames();
    try {
      for (const [index, frame] of frames.entries()) {
        const credit = Math.floor(this.bufferSize / frames.length) +
          (index < this.bufferSize % frames.length ? 1 : 0);
        const reply = await transport.request(
          {
            op: "subscribe",
            topic: this.topic,
            format: "batch",
            credit,
            ...frame,
          },
          "msgpack",
        );
        if (reply.mode === "queue" || reply.mode === "key_shared") {
          throw queueGroupError(this.group, reply.mode);
        }
        const sub = String(reply.sub);
        if (typeof reply.memberId === "string") this.#memberId = reply.memberId;
        this.#subs.set(sub, { sub, outstanding: credit });
        const early = this.#early.filter((frame) => frame.sub === sub);
        this.#early = this.#early.filter((frame) => frame.sub !== sub);
        for (const frame of early) this.#receive(frame);
      }
    } catch (error) {
      this.#transport = undefined;
      transport.close();
      throw queueGroupRefusal(error, this.group);
    }
  }

  /** One subscribe frame, or one per resume offset without a group. */
  #subscribeFrames(): Record<string, unknown>[] {
    const { group, from, partitions, filter } = this.#options;
    const filtered = filter === undefined ? {} : { filter };
    if (group !== undefined) {
      const memberId = this.#memberId;
      // "stream" says so explicitly: a queue group then refuses before the
      // broker hands this member any delivery (group_exists).
      return [{
        group,
        mode: "stream",
        from: from ?? "latest",
        ...filtered,
        ...(memberId === undefined ? {} : { memberId }),
      }];
    }
    if (this.#positions.size === 0) {
      return [{ from: from ?? "latest", partitions, ...filtered }];
    }
    const byOffset = new Map<number, number[]>();
    for (const [partition, offset] of this.#positions) {
      const list = byOffset.get(offset) ?? [];
      list.push(partition);
      byOffset.set(offset, list);
    }
    return [...byOffset].map(([offset, partitions]) => ({
      from: { offset },
      partitions,
      ...filtered,
    }));
  }

  #receive(frame: Frame): void {
    const state = this.#subs.get(String(frame.sub));
    if (!state) {
      if (frame.sub !== undefined) this.#early.push(frame);
      return;
    }
    switch (frame.op) {
      case "batch":
        this.#receiveBatch(state, frame);
        break;
      case "assigned":
        this.#assigned(frame);
        break;
      case "revoked":
        this.#revoked(frame);
        break;
      case "reset":
        this.#reset(frame);
        break;
      case "seeked":
        this.#seeked(frame);
        break;
      case "error": {
        const { op: _op, ...body } = frame;
        this.#emitError(errorFromBody(body));
        break;
      }
    }
  }

  #receiveBatch(state: SubState, frame: Frame): void {
    const partition = frame.partition as number;
    const records = recordsFromBatches(
      this.topic,
      partition,
      frame.bytes as Uint8Array,
    );
    state.outstanding -= records.length;
    const floor = this.#skipBelow.get(partition) ?? -1;
    for (const record of records) {
      if (record.offset < floor) this.#free++;
      else {
        this.#buffer.push(
          new Message(record, this, this.#fetchGenerations.get(partition) ?? 0),
        );
      }
    }
    this.#bufferedPeak = Math.max(this.#bufferedPeak, this.buffered);
    this.#maybeGrant();
    this.#buffer.wake();
  }

  #assigned(frame: Frame): void {
    const partitions = frame.partitions as {
      partition: number;
      offset: number;
    }[];
    const generation = frame.generation as number;
    for (const { partition, offset } of partitions) {
      this.#owned.add(partition);
      this.#fetchGenerations.set(partition, generation);
      // Counted as not yet committed: a start from "latest" exists only in
      // this assignment, and a group that loses its member before any commit
      // forgets it. The next auto-commit pins it, as a Kafka consumer's does.
      this.#committed.set(partition, offset - 1);
      const position = this.#positions.get(partition);
      // A position this member yielded past the group's commit stays, and is
      // committed under the new generation: the old one is refused now.
      this.#generations.set(partition, generation);
      if (position === undefined || position <= offset) {
        this.#positions.set(partition, offset);
        this.#skipBelow.delete(partition);
      } else this.#skipBelow.set(partition, position);
    }
    this.#emit({
      type: "assigned",
      generation: frame.generation as number,
      partitions,
    });
  }

  #revoked(frame: Frame): void {
    const partitions = frame.partitions as number[];
    // The broker refuses commits for these from now on: whatever was yielded
    // and not committed yet goes to the new owner again.
    for (const partition of partitions) {
      this.#owned.delete(partition);
      this.#fetchGenerations.delete(partition);
    }
    this.#dropBuffered(partitions);
    this.#emit({
      type: "revoked",
      generation: frame.generation as number,
      partitions,
    });
  }

  /** The group was sought: records buffered from before the seek are void. */
  #seeked(frame: Frame): void {
    const partition = frame.partition as number;
    const offset = frame.offset as number;
    const generation = frame.generation as number;
    this.#dropBuffered([partition]);
    this.#skipBelow.delete(partition);
    this.#positions.set(partition, offset);
    this.#generations.set(partition, generation);
    this.#fetchGenerations.set(partition, generation);
    this.#committed.set(partition, offset);
    this.#emit({ type: "seeked", partition, offset, generation });
  }

  #dropBuffered(partitions: number[]): void {
    const kept = this.#buffer.waiting().filter((message) =>
      !partitions.includes(message.partition)
    );
    this.#free += this.buffered - kept.length;
    this.#buffer.replace(kept);
    this.#maybeGrant();
  }

  #reset(frame: Frame): void {
    const partition = frame.partition as number;
    this.#skipBelow.delete(partition);
    const pending = this.#buffer.waiting().some((message) =>
      message.partition === partition
    );
    if (!pending) this.#positions.set(partition, frame.offset as number);
    this.#emit({
      type: "reset",
      partition,
      offset: frame.offset as number,
      previousOffset: frame.previousOffset as number,
      reason: String(frame.reason),
    });
  }

  /** Grants freed credit once a quarter of the buffer is free. */
  #maybeGrant(): void {
    const transport = this.#transport;
    if (!transport?.isOpen || this.#subs.size === 0) return;
    if (this.#free < Math.max(1, Math.floor(this.bufferSize / 4))) return;
    let neediest: SubState | undefined;
    for (const state of this.#subs.values()) {
      if (!neediest || state.outstanding < neediest.outstanding) {
        neediest = state;
      }
    }
    const records = this.#free;
    this.#free = 0;
    neediest!.outstanding += records;
    transport.send({ op: "credit", sub: neediest!.sub, records }, "msgpack");
  }

  #disconnected(error: DakgharClientError): void {
    this.#transport = undefined;
    this.#subs.clear();
    this.#early = [];
    this.#buffer.clear();
    if (this.#closed) return;
    if (this.#options.reconnect === false) {
      this.#fail(error);
      return;
    }
    this.#emit({ type: "disconnected", error });
    this.#reconnector.schedule();
  }

  #fail(error: Error): void {
    this.#failure = error;
    clearInterval(this.#autoCommitTimer);
    this.#buffer.wake();
  }

  #emit(event: SubscriptionEvent): void {
    this.#options.onEvent?.(event);
  }

  #emitError(error: unknown): void {
    if (error instanceof DakgharClientError) {
      this.#emit({ type: "error", error });
    }
  }
}

/** The error a stream subscribe to a queue or key_shared group ends with. */
function queueGroupError(
  group: string | undefined,
  mode: "queue" | "key_shared",
): DakgharClientError {
  return new DakgharClientError(
    "bad_request",
    `Group ${group} is a ${mode} group: subscribe with mode "${mode}" to settle each message`,
    { context: { mode } },
  );
}

/** The broker's `group_exists` for a queue group, as {@linkcode queueGroupError}; anything else as it is. */
function queueGroupRefusal(error: unknown, group: string | undefined): unknown {
  const mode = (error as DakgharClientError).context?.mode;
  if (
    error instanceof DakgharClientError && error.code === "group_exists" &&
    (mode === "queue" || mode === "key_shared")
  ) {
    return queueGroupError(group, mode);
  }
  return error;
}
