/**
 * WebSocket sessions on `GET /ws`: subscriptions pushed with credit-based
 * flow control, publishing, and commits. Frames are documented in
 * docs/protocol.md.
 *
 * A frame is a map with an `op` field, sent as JSON text or as a msgpack
 * binary message; the server answers in the encoding the client used last.
 * Records reach a subscription as `records` frames (JSON objects) or, with
 * `format: "batch"`, as `batch` frames carrying the raw record batch bytes
 * (always msgpack, since JSON cannot hold bytes).
 *
 * Flow control: a subscription holds credit, the number of records the
 * client may still receive. Each (subscription, partition) runs a fetch
 * loop that long-polls `broker.read` only while credit is left, slices what
 * came back to the credit with `sliceBatches` and subtracts what it sends
 * before it sends it, so the count is exact across partitions. A socket
 * whose outgoing buffer is above `bufferedBytesMax` pauses every loop of the
 * session. Each loop holds at most one read at a time, and the loops of a
 * session share `sessionReadBytesMax` between them (each asks for at least
 * 64 KiB, at most `readBytesMax`), so a session holds about that much read
 * data plus its socket buffer, whatever its credit. A read still returns
 * one whole batch when that batch alone is larger.
 *
 * A subscription to a queue or key_shared group is a `QueueSubscription`
 * (queue_subscription.ts): no credit, its prefetch bounds what it holds.
 */
import { nanoid } from "nanoid";
import { Packr } from "msgpackr";
import type { Context } from "hono";
import type { WSContext, WSEvents, WSMessageReceive } from "hono/ws";
import type {
  Broker,
  MemberHandle,
  PartitionAssignment,
  RecordFilter,
  SeekTarget,
  StartPosition,
} from "../broker.ts";
import { DakgharError, errorToData } from "../errors.ts";
import { decodeBatches, sliceBatches } from "../log/record_batch.ts";
import type { Logger } from "../logger.ts";
import type { UpgradeWebSocket } from "../runtime/types.ts";
import { sameFilter } from "../queue/filter.ts";
import {
  parseProducerBody,
  type ReadEncoding,
  toConsumerRecords,
} from "./json_records.ts";
import { BadFrame } from "./bad_frame.ts";
import {
  parseQueueSubscribe,
  parseSettleFrame,
  type QueueSubscribeChoice,
  QueueSubscription,
  subscriptionMode,
} from "./queue_subscription.ts";
import { parseRecordFilter } from "./record_filter.ts";

/** Tuning for WebSocket sessions. */
export interface WebSocketOptions {
  log: Logger;
  /** Most bytes one fetch reads from a partition. */
  readBytesMax: number;
  /** Bytes the fetches of one session ask for together, split evenly. */
  sessionReadBytesMax: number;
  /** Long-poll wait of one fetch; a fetch is cancelled early on stop. */
  fetchWaitMs: number;
  /** Fetches pause while the socket has more than this many bytes queued. */
  bufferedBytesMax: number;
  /** How often a paused session looks at its socket buffer again. */
  drainCheckMs: number;
  /** Bad frames tolerated within `badFrameWindowMs` before closing with 1008. */
  badFramesMax: number;
  badFrameWindowMs: number;
  /** Most subscriptions one session may hold. */
  subscriptionsMax: number;
  /** Back-off after a failed fetch that may succeed later. */
  retryMs: number;
  /**
   * Bytes of publish frames one session may have waiting for acks. A
   * publisher that does not wait for acks gets `too_many_requests` past it,
   * so it cannot make the broker queue appends without bound.
   */
  publishBytesInFlightMax: number;
}

const defaults: Omit<WebSocketOptions, "log"> = {
  readBytesMax: 1024 * 1024,
  sessionReadBytesMax: 16 * 1024 * 1024,
  fetchWaitMs: 5_000,
  bufferedBytesMax: 4 * 1024 * 1024,
  drainCheckMs: 10,
  badFramesMax: 100,
  badFrameWindowMs: 10_000,
  subscriptionsMax: 100,
  retryMs: 1_000,
  publishBytesInFlightMax: 64 * 1024 * 1024,
};

/** Encoding of a frame on the wire. */
type FrameEncoding = "json" | "msgpack";
/** A frame as decoded: a map with an `op`. */
type Frame = Record<string, unknown>;

const packr = new Packr({ useRecords: false });
const fetchBytesMin = 64 * 1024;

/**
 * Creates the `/ws` route handler.
 *
 * @param broker what sessions call
 * @param upgradeWebSocket the runtime's upgrade helper for the app
 * @param options tuning; `log` is required
 * @returns a Hono handler that upgrades the request
 */
export function createWebSocketRoute(
  broker: Broker,
  upgradeWebSocket: UpgradeWebSocket,
  options: Partial<WebSocketOptions> & { log: Logger },
): ReturnType<UpgradeWebSocket> {
  const settings: WebSocketOptions = { ...defaults, ...options };
  return upgradeWebSocket((_c: Context): WSEvents => {
    const session = new Session(broker, settings);
    return {
      onOpen: (_event, ws) => session.open(ws),
      onMessage: (event, ws) => session.receive(event.data, ws),
      onClose: () => session.close(),
      onError: () => session.close(),
    };
  });
}

/** One WebSocket connection and its subscriptions. */
class Session {
  readonly id = nanoid(10);
  readonly log: Logger;
  ws: WSContext | undefined;
  encoding: FrameEncoding = "json";
  closed = false;
  /** Fetch loops running in this session, across subscriptions. */
  fetchCount = 0;
  readonly subscriptions = new Map<string, Subscription | QueueSubscription>();
  #subscriptionCount = 0;
  #badFrameTimes: number[] = [];
  #drainWaiters: (() => void)[] = [];
  #drainTimer: ReturnType<typeof setInterval> | undefined;
  #publishBytesInFlight = 0;
  /** Size of the frame being dispatched (UTF-16 units for text). */
  #frameBytes = 0;

  constructor(readonly broker: Broker, readonly options: WebSocketOptions) {
    this.log = options.log.scope("ws", { session: this.id });
  }

  open(ws: WSContext): void {
    this.ws = ws;
    // Deno hands binary messages over as Blobs unless told otherwise.
    const raw = ws.raw as { binaryType?: string } | undefined;
    if (raw?.binaryType === "blob") raw.binaryType = "arraybuffer";
    this.log.debug("open");
  }

  /** Decodes and dispatches one incoming message. */
  receive(data: WSMessageReceive, ws: WSContext): void {
    this.ws ??= ws;
    if (this.closed) return;
    if (typeof Blob !== "undefined" && data instanceof Blob) {
      data.arrayBuffer().then((buffer) => this.receive(buffer, ws));
      return;
    }

    let frame: Frame;
    try {
      this.#frameBytes = typeof data === "string"
        ? data.length
        : (data as ArrayBuffer).byteLength;
      frame = this.decode(data);
    } catch (error) {
      this.badFrame(error as BadFrame);
      return;
    }
    try {
      this.dispatch(frame);
    } catch (error) {
      if (error instanceof BadFrame) this.badFrame(error);
      else this.sendError(frame.id, error);
    }
  }

  decode(data: WSMessageReceive): Frame {
    let frame: unknown;
    if (typeof data === "string") {
      this.encoding = "json";
      try {
        frame = JSON.parse(data);
      } catch {
        throw new BadFrame("Frame is not valid JSON");
      }
    } else {
      this.encoding = "msgpack";
      try {
        frame = packr.unpack(new Uint8Array(data as ArrayBuffer));
      } catch {
        throw new BadFrame("Frame is not valid msgpack");
      }
    }
    if (typeof frame !== "object" || frame === null || Array.isArray(frame)) {
      throw new BadFrame("Frame is not a map");
    }
    return frame as Frame;
  }

  dispatch(frame: Frame): void {
    switch (frame.op) {
      case "subscribe":
        return this.subscribe(frame);
      case "credit":
        return this.credit(frame);
      case "commit":
        return this.commit(frame);
      case "settle":
        return this.settle(frame);
      case "publish":
        return this.publish(frame);
      case "unsubscribe":
        return this.unsubscribe(frame);
      case "seek":
        return this.seek(frame);
      case "ping":
        this.send({
          op: "pong",
          ...(frame.id === undefined ? {} : { id: frame.id }),
        });
        return;
      default:
        throw new BadFrame(
          typeof frame.op === "string"
            ? `Unknown op: ${frame.op}`
            : "Frame has no op",
          frame.id,
        );
    }
  }

  subscribe(frame: Frame): void {
    const id = requestId(frame);
    const group = optionalString(frame, "group");
    const topic = group === undefined
      ? requiredString(frame, "topic")
      : optionalString(frame, "topic");
    const filter = parseRecordFilter(frame.filter);
    if (typeof filter === "string") {
      throw new BadFrame(`filter: ${filter}`, id);
    }
    const askedMode = frame.mode;
    if (
      askedMode !== undefined && askedMode !== "stream" &&
      askedMode !== "queue" && askedMode !== "key_shared"
    ) {
      throw new BadFrame(
        'mode: expected "stream", "queue" or "key_shared"',
        id,
      );
    }
    if (askedMode !== undefined && group === undefined) {
      throw new BadFrame("mode: with a group only", id);
    }
    const settings = group === undefined
      ? undefined
      : this.broker.groupSettings(group);
    const mode = subscriptionMode(group, settings, askedMode);
    if (mode === "queue" || mode === "key_shared") {
      return this.subscribeQueue(frame, id, {
        group: group!,
        topic,
        mode,
        filter,
        settings,
      });
    }
    if (topic === undefined) {
      throw new BadFrame("topic: expected a non-empty string", id);
    }
    if (
      settings?.filter && filter !== null &&
      !sameFilter(settings.filter, filter)
    ) {
      throw new DakgharError(
        "bad_request",
        `filter: group ${group} reads with another filter; omit it to use the group's`,
        { group, filter: settings.filter },
      );
    }
    const from = parseFrom(frame.from, group !== undefined, id);
    const format = frame.format ??
      (this.encoding === "msgpack" ? "batch" : "json");
    if (format !== "json" && format !== "batch") {
      throw new BadFrame('format: expected "json" or "batch"', id);
    }
    const encoding = frame.encoding ?? "utf8";
    if (encoding !== "utf8" && encoding !== "base64") {
      throw new BadFrame('encoding: expected "utf8" or "base64"', id);
    }
    const partitions = parsePartitions(frame.partitions, id);
    const memberId = optionalString(frame, "memberId");
    if (
      memberId !== undefined && (group === undefined || memberId.length > 200)
    ) {
      throw new BadFrame(
        "memberId: at most 200 characters, with a group only",
        id,
      );
    }
    if (group !== undefined && partitions !== undefined) {
      throw new BadFrame("partitions: a group assigns partitions itself", id);
    }
    const initialCredit = frame.credit === undefined
      ? 0
      : nonNegativeInteger(frame.credit, "credit", id);
    if (this.subscriptions.size >= this.options.subscriptionsMax) {
      throw new DakgharError(
        "too_many_requests",
        `Too many subscriptions: at most ${this.options.subscriptionsMax} per connection`,
      );
    }

    const sub = `s${++this.#subscriptionCount}`;
    const subscription = new Subscription(this, sub, {
      topic,
      group,
      format,
      encoding,
      memberId,
      filter: filter ?? settings?.filter ?? undefined,
    });
    subscription.credit = initialCredit;
    this.subscriptions.set(sub, subscription);
    subscription.start(id, from, partitions).catch((error) => {
      if (this.subscriptions.get(sub) !== subscription) return;
      this.subscriptions.delete(sub);
      subscription.stop();
      this.sendError(id, error);
    });
  }

  /**
   * Joins a queue or key_shared group, creating it first with default
   * settings when it does not exist (a frame with `mode` and `topic`).
   */
  subscribeQueue(
    frame: Frame,
    id: unknown,
    choice: QueueSubscribeChoice,
  ): void {
    const { settings, create } = parseQueueSubscribe(frame, id, {
      ...choice,
      defaultFormat: this.encoding === "msgpack" ? "batch" : "json",
    });
    if (this.subscriptions.size >= this.options.subscriptionsMax) {
      throw new DakgharError(
        "too_many_requests",
        `Too many subscriptions: at most ${this.options.subscriptionsMax} per connection`,
      );
    }

    const sub = `s${++this.#subscriptionCount}`;
    const subscription = new QueueSubscription(this, sub, {
      ...settings,
      memberId: settings.memberId ?? `${this.id}-${sub}`,
    });
    this.subscriptions.set(sub, subscription);
    const creating = create === undefined
      ? Promise.resolve()
      : this.broker.createGroup(settings.group, create);
    creating.then(() => subscription.start(id)).catch((error) => {
      if (this.subscriptions.get(sub) !== subscription) return;
      this.subscriptions.delete(sub);
      subscription.stop();
      this.sendError(id, error);
    });
  }

  /** Settles deliveries of a queue subscription; answers `settled`. */
  settle(frame: Frame): void {
    const id = frame.id;
    const subscription = this.subscriptionFor(frame);
    const settlements = parseSettleFrame(frame);
    if (typeof settlements === "string") throw new BadFrame(settlements, id);
    if (!(subscription instanceof QueueSubscription)) {
      throw new DakgharError(
        "bad_request",
        "Only queue and key_shared subscriptions settle; commit instead",
        { sub: subscription.sub },
      );
    }
    subscription.settle(settlements).then(
      (result) => {
        if (id === undefined && result.refused.length === 0) return;
        this.send({
          op: "settled",
          ...(id === undefined ? {} : { id }),
          sub: subscription.sub,
          settled: result.settled,
          refused: result.refused,
        });
      },
      (error) => this.sendError(id, error, { sub: subscription.sub }),
    );
  }

  credit(frame: Frame): void {
    const subscription = this.subscriptionFor(frame);
    if (subscription instanceof QueueSubscription) {
      throw new DakgharError(
        "bad_request",
        "A queue subscription takes no credit: its prefetch bounds deliveries",
        { sub: subscription.sub },
      );
    }
    const records = nonNegativeInteger(frame.records, "records", frame.id);
    subscription.addCredit(records);
  }

  commit(frame: Frame): void {
    const id = requestId(frame);
    const subscription = this.subscriptionFor(frame);
    if (subscription instanceof QueueSubscription) {
      throw new DakgharError(
        "bad_request",
        "A queue subscription settles instead of committing",
        { sub: subscription.sub },
      );
    }
    const partition = nonNegativeInteger(frame.partition, "partition", id);
    const offset = nonNegativeInteger(frame.offset, "offset", id);
    const generation = frame.generation === undefined
      ? undefined
      : nonNegativeInteger(frame.generation, "generation", id);
    subscription.commit(partition, offset, generation).then(
      () => this.send({ op: "committed", id }),
      (error) => this.sendError(id, error),
    );
  }

  publish(frame: Frame): void {
    const id = requestId(frame);
    const topic = requiredString(frame, "topic");
    const bytes = this.#frameBytes;
    if (
      this.#publishBytesInFlight > 0 &&
      this.#publishBytesInFlight + bytes > this.options.publishBytesInFlightMax
    ) {
      throw new DakgharError(
        "too_many_requests",
        `Too many publish bytes waiting for acks: ${this.#publishBytesInFlight}`,
        { maxBytes: this.options.publishBytesInFlightMax },
      );
    }
    // Counted from the broker call on, so a frame rejected below costs nothing.
    const inFlight = <T>(publishing: Promise<T>): Promise<T> => {
      this.#publishBytesInFlight += bytes;
      return publishing.finally(() => this.#publishBytesInFlight -= bytes);
    };
    if (frame.batch instanceof Uint8Array) {
      const partition = frame.partition === undefined
        ? undefined
        : nonNegativeInteger(frame.partition, "partition", id);
      const key = typeof frame.key === "string"
        ? new TextEncoder().encode(frame.key)
        : frame.key instanceof Uint8Array
        ? frame.key
        : null;
      inFlight(this.broker.publish(topic, frame.batch, { partition, key }))
        .then(
          (result) =>
            this.send({
              op: "ack",
              id,
              offsets: [{
                partition: result.partition,
                offset: result.baseOffset,
              }],
              lastOffset: result.lastOffset,
            }),
          (error) => this.sendError(id, error),
        );
      return;
    }
    if (!Array.isArray(frame.records)) {
      throw new BadFrame("records: expected an array, or batch: bytes", id);
    }
    const records = parseProducerBody(
      {
        records: frame.records,
        ...(frame.keyEncoding === undefined
          ? {}
          : { keyEncoding: frame.keyEncoding }),
        ...(frame.valueEncoding === undefined
          ? {}
          : { valueEncoding: frame.valueEncoding }),
      },
      {},
      Date.now(),
    );
    inFlight(this.broker.publishRecords(topic, records)).then(
      (offsets) => this.send({ op: "ack", id, offsets }),
      (error) => this.sendError(id, error),
    );
  }

  /** Moves a group's positions; its members hear `seeked`. */
  seek(frame: Frame): void {
    const id = requestId(frame);
    const group = requiredString(frame, "group");
    const topic = requiredString(frame, "topic");
    const to = parseSeekTarget(frame.to, id);
    const partitions = parsePartitions(frame.partitions, id);
    if (this.broker.seekGroup === undefined) {
      throw new DakgharError("bad_request", "This broker cannot seek groups");
    }
    this.broker.seekGroup(group, topic, to, partitions).then(
      (result) => this.send({ op: "moved", id, ...result }),
      (error) => this.sendError(id, error),
    );
  }

  unsubscribe(frame: Frame): void {
    const subscription = this.subscriptionFor(frame);
    this.subscriptions.delete(subscription.sub);
    if (subscription instanceof QueueSubscription) subscription.stop();
    else subscription.stop("leave");
    this.send({ op: "unsubscribed", id: frame.id, sub: subscription.sub });
  }

  subscriptionFor(frame: Frame): Subscription | QueueSubscription {
    if (typeof frame.sub !== "string") {
      throw new BadFrame("sub: expected a subscription id", frame.id);
    }
    const subscription = this.subscriptions.get(frame.sub);
    if (!subscription) {
      throw new DakgharError(
        "not_found",
        `Unknown subscription: ${frame.sub}`,
        {
          sub: frame.sub,
        },
      );
    }
    return subscription;
  }

  /** Sends a frame in the session's current encoding; false once closed. */
  send(frame: Frame, encoding: FrameEncoding = this.encoding): boolean {
    if (this.closed || !this.ws || this.ws.readyState !== 1) return false;
    if (encoding === "json") this.ws.send(JSON.stringify(frame));
    else this.ws.send(packr.pack(frame) as Uint8Array<ArrayBuffer>);
    return true;
  }

  sendError(id: unknown, error: unknown, fields: Frame = {}): void {
    const data = errorToData(error);
    if (data.code === "internal") {
      this.log.error("request failed", {
        error: error instanceof Error ? error.stack ?? error.message : error,
      });
      data.message = "Internal error";
    }
    this.send({
      op: "error",
      ...(id === undefined ? {} : { id }),
      ...fields,
      code: data.code,
      message: data.message,
      ...data.details,
    });
  }

  badFrame(error: BadFrame): void {
    const now = Date.now();
    const times = this.#badFrameTimes;
    times.push(now);
    while (
      times.length > 0 && times[0] <= now - this.options.badFrameWindowMs
    ) {
      times.shift();
    }
    if (times.length > this.options.badFramesMax) {
      this.log.warn("closing after a flood of bad frames", {
        count: times.length,
      });
      this.ws?.close(1008, "too many bad frames");
      this.close();
      return;
    }
    this.send({
      op: "error",
      ...(error.id === undefined ? {} : { id: error.id }),
      code: "bad_frame",
      message: error.message,
    });
  }

  /** Drops a subscription the broker ended; later frames for it get `not_found`. */
  forget(sub: string): void {
    this.subscriptions.delete(sub);
  }

  /** True while the socket has more queued than the bound allows. */
  isCongested(): boolean {
    const raw = this.ws?.raw as { bufferedAmount?: number } | undefined;
    return (raw?.bufferedAmount ?? 0) > this.options.bufferedBytesMax;
  }

  /** Resolves once the socket buffer is below the bound, or on close. */
  drained(): Promise<void> {
    if (!this.isCongested() || this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      this.#drainWaiters.push(resolve);
      // Neither runtime raises an event when a WebSocket's buffer drains.
      this.#drainTimer ??= setInterval(() => {
        if (this.isCongested() && !this.closed) return;
        clearInterval(this.#drainTimer);
        this.#drainTimer = undefined;
        for (const waiter of this.#drainWaiters.splice(0)) waiter();
      }, this.options.drainCheckMs);
    });
  }

  /** Ends every subscription: cancels reads, leaves groups, drops buffers. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const subscription of this.subscriptions.values()) {
      // A queue member's in-flight records go back to the group at once.
      if (subscription instanceof QueueSubscription) subscription.stop();
      else subscription.stop("disconnect");
    }
    this.subscriptions.clear();
    clearInterval(this.#drainTimer);
    for (const waiter of this.#drainWaiters.splice(0)) waiter();
    this.log.debug("closed");
  }
}

interface SubscriptionSettings {
  topic: string;
  group: string | undefined;
  format: "json" | "batch";
  encoding: ReadEncoding;
  /** Group member id the client asked for; generated when absent. */
  memberId: string | undefined;
  /** Reads skip records not matching it. */
  filter: RecordFilter | undefined;
}

/** Where a subscription without a group starts. */
type From = StartPosition | { offset: number } | { timestamp: number };

/** An assignment as the group coordinator hands it to a member. */
interface Assignment {
  generation: number;
  partitions: PartitionAssignment[];
}

/** One subscription of a session: its credit and one fetch per partition. */
class Subscription {
  credit = 0;
  generation = -1;
  stopped = false;
  readonly memberId: string;
  readonly fetches = new Map<number, PartitionFetch>();
  /**
   * Partition → generation of its latest seek. A commit for such a
   * partition must carry that generation or a later one, so that a commit
   * of a position delivered before the seek cannot undo it.
   */
  readonly seekGenerations = new Map<number, number>();
  #handle: MemberHandle | undefined;
  #creditWaiters: (() => void)[] = [];
  /** False until the client has `subscribed`; assignments wait for it. */
  #announced = false;
  #pendingAssignment: Assignment | undefined;

  constructor(
    readonly session: Session,
    readonly sub: string,
    readonly settings: SubscriptionSettings,
  ) {
    this.memberId = settings.memberId ?? `${session.id}-${sub}`;
  }

  async start(
    id: unknown,
    from: From,
    partitions: number[] | undefined,
  ): Promise<void> {
    const { broker } = this.session;
    const { topic, group } = this.settings;
    if (group !== undefined) {
      // The join hands out the first assignment before it resolves; that
      // assignment waits so that a failed join answers with `error` alone.
      this.#handle = this.memberHandle();
      await broker.joinGroup(group, topic, this.#handle, from as StartPosition);
      if (this.stopped) return;
      this.session.send({
        op: "subscribed",
        id,
        sub: this.sub,
        memberId: this.memberId,
        mode: "stream",
      });
      this.#announced = true;
      const pending = this.#pendingAssignment;
      this.#pendingAssignment = undefined;
      if (pending !== undefined) this.assign(pending);
      return;
    }

    const description = await broker.describeTopic(topic);
    const chosen = partitions ??
      description.partitions.map((stats) => stats.partition);
    const starts: PartitionAssignment[] = [];
    for (const partition of chosen) {
      const stats = description.partitions.find((s) =>
        s.partition === partition
      );
      if (!stats) {
        throw new DakgharError(
          "unknown_partition",
          `Partition not found: ${topic}/${partition}`,
          { topic, partition },
        );
      }
      const offset = from === "earliest"
        ? stats.logStartOffset
        : from === "latest"
        ? stats.highWatermark
        : "offset" in from
        ? from.offset
        : await broker.offsetForTime(topic, partition, from.timestamp);
      starts.push({ partition, offset });
    }
    if (this.stopped) return;
    this.session.send({ op: "subscribed", id, sub: this.sub });
    this.session.send({
      op: "assigned",
      sub: this.sub,
      generation: 0,
      partitions: starts,
    });
    for (const start of starts) this.startFetch(start);
  }

  memberHandle(): MemberHandle {
    return {
      id: this.memberId,
      onAssignment: (assignment: Assignment) => {
        if (this.stopped) return;
        if (this.#announced) this.assign(assignment);
        else this.#pendingAssignment = assignment;
      },
      onRevocation: (
        revocation: { generation: number; partitions: number[] },
      ) => {
        for (const partition of revocation.partitions) {
          this.fetches.get(partition)?.stop();
          this.fetches.delete(partition);
        }
        // Fetches stop synchronously, so returning is the acknowledgement
        // that lets the coordinator hand the partitions over.
        const pending = this.#pendingAssignment;
        if (!this.#announced && pending !== undefined) {
          pending.partitions = pending.partitions.filter((p) =>
            !revocation.partitions.includes(p.partition)
          );
        }
        if (this.stopped || !this.#announced) return;
        this.session.send({
          op: "revoked",
          sub: this.sub,
          generation: revocation.generation,
          partitions: revocation.partitions,
        });
      },
      onSeek: (seek) => {
        if (this.stopped) return;
        this.generation = Math.max(this.generation, seek.generation);
        this.seekGenerations.set(seek.partition, seek.generation);
        const pending = this.#pendingAssignment?.partitions.find((p) =>
          p.partition === seek.partition
        );
        if (pending !== undefined) pending.offset = seek.offset;
        if (!this.fetches.has(seek.partition)) return;
        this.session.send({
          op: "seeked",
          sub: this.sub,
          partition: seek.partition,
          offset: seek.offset,
          generation: seek.generation,
        });
        this.startFetch({ partition: seek.partition, offset: seek.offset });
      },
    };
  }

  /** Tells the client about a group assignment and starts its fetches. */
  assign(assignment: Assignment): void {
    this.generation = Math.max(this.generation, assignment.generation);
    for (const start of assignment.partitions) {
      this.seekGenerations.delete(start.partition);
    }
    this.session.send({
      op: "assigned",
      sub: this.sub,
      generation: assignment.generation,
      partitions: assignment.partitions,
    });
    for (const start of assignment.partitions) this.startFetch(start);
  }

  startFetch(start: PartitionAssignment): void {
    this.fetches.get(start.partition)?.stop();
    const fetch = new PartitionFetch(this, start.partition, start.offset);
    this.fetches.set(start.partition, fetch);
    fetch.run().catch((error) => {
      fetch.stop();
      this.session.sendError(undefined, error, {
        sub: this.sub,
        partition: start.partition,
      });
    });
  }

  addCredit(records: number): void {
    this.credit += records;
    for (const waiter of this.#creditWaiters.splice(0)) waiter();
  }

  /** Resolves once there is credit, or the subscription stops. */
  creditAvailable(): Promise<void> {
    if (this.credit > 0 || this.stopped) return Promise.resolve();
    return new Promise((resolve) => this.#creditWaiters.push(resolve));
  }

  /**
   * Commits for a group subscription. `generation` defaults to the
   * subscription's latest, except for a sought partition, where it must be
   * given: the session cannot tell whether the offset was delivered before
   * or after the seek.
   */
  commit(
    partition: number,
    offset: number,
    generation?: number,
  ): Promise<void> {
    const { group, topic } = this.settings;
    if (group === undefined) {
      return Promise.reject(
        new DakgharError("bad_request", "Only group subscriptions commit", {
          sub: this.sub,
        }),
      );
    }
    const sought = this.seekGenerations.get(partition);
    if (generation === undefined && sought !== undefined) {
      return Promise.reject(
        new DakgharError(
          "stale_generation",
          `Partition ${partition} was sought in generation ${sought}: commit with that generation or a later one`,
          { sub: this.sub, partition, currentGeneration: sought },
        ),
      );
    }
    try {
      return this.session.broker.commit(
        group,
        topic,
        partition,
        offset,
        this.memberId,
        generation ?? this.generation,
      );
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Ends the subscription. A group member leaves at once on "leave"; on
   * "disconnect" it keeps its partitions for the session timeout.
   */
  stop(reason: "leave" | "disconnect" = "leave"): void {
    if (this.stopped) return;
    this.stopped = true;
    for (const fetch of this.fetches.values()) fetch.stop();
    this.fetches.clear();
    for (const waiter of this.#creditWaiters.splice(0)) waiter();
    const { group } = this.settings;
    if (group === undefined || this.#handle === undefined) return;
    const { broker } = this.session;
    if (reason === "disconnect" && broker.disconnectMember !== undefined) {
      broker.disconnectMember(group, this.memberId, this.#handle);
    } else {
      broker.leaveGroup(group, this.memberId, this.#handle);
    }
  }
}

/** The fetch loop of one partition of one subscription. */
class PartitionFetch {
  stopped = false;
  #abort = new AbortController();

  constructor(
    readonly subscription: Subscription,
    readonly partition: number,
    public offset: number,
  ) {}

  get active(): boolean {
    return !this.stopped && !this.subscription.stopped &&
      !this.subscription.session.closed;
  }

  async run(): Promise<void> {
    const { session } = this.subscription;
    session.fetchCount++;
    try {
      await this.loop();
    } finally {
      session.fetchCount--;
    }
  }

  async loop(): Promise<void> {
    const { session, settings } = this.subscription;
    const { broker, options } = session;
    while (this.active) {
      await this.subscription.creditAvailable();
      await session.drained();
      if (!this.active) return;

      let result;
      try {
        result = await broker.read(
          settings.topic,
          this.partition,
          this.offset,
          {
            maxBytes: Math.max(
              fetchBytesMin,
              Math.min(
                options.readBytesMax,
                Math.floor(options.sessionReadBytesMax / session.fetchCount),
              ),
            ),
            maxWaitMs: options.fetchWaitMs,
            signal: this.#abort.signal,
            ...(settings.filter === undefined
              ? {}
              : { filter: settings.filter }),
          },
        );
      } catch (error) {
        if (!this.active) return;
        if (await this.failed(error)) return;
        continue;
      }
      if (!this.active) continue;
      if (result.bytes.length === 0) {
        // A filtered read may skip records and return none.
        if (result.nextOffset !== undefined) {
          this.offset = Math.max(this.offset, result.nextOffset);
        }
        continue;
      }

      // Slice to the credit left now, not when the read began: other
      // partitions may have spent some meanwhile.
      const credit = this.subscription.credit;
      const slice = sliceBatches(result.bytes, this.offset, credit);
      if (slice.records === 0) continue;
      this.subscription.credit -= slice.records;
      // All that matched was taken: continue past what the read skipped.
      this.offset = slice.records < credit && result.nextOffset !== undefined
        ? Math.max(slice.nextOffset, result.nextOffset)
        : slice.nextOffset;
      this.send(slice.bytes);
    }
  }

  send(bytes: Uint8Array): void {
    const { session, settings, sub } = this.subscription;
    if (settings.format === "batch") {
      session.send({
        op: "batch",
        sub,
        topic: settings.topic,
        partition: this.partition,
        bytes,
      }, "msgpack");
      return;
    }
    session.send({
      op: "records",
      sub,
      topic: settings.topic,
      partition: this.partition,
      records: toConsumerRecords(decodeBatches(bytes), settings.encoding),
    });
  }

  /**
   * Handles a failed read: moves an out-of-range position into the log,
   * reports anything else and waits before the next try.
   *
   * @returns true when the loop must end: the topic or partition is gone
   */
  async failed(error: unknown): Promise<boolean> {
    const { session, sub } = this.subscription;
    const { code, details } = errorToData(error);
    if (code === "offset_out_of_range" && this.maybeReset(details)) {
      return false;
    }
    session.sendError(undefined, error, { sub, partition: this.partition });
    if (code === "unknown_topic" || code === "unknown_partition") {
      session.log.info("fetch stopped", {
        sub,
        partition: this.partition,
        code,
      });
      this.stop();
      return true;
    }
    await new Promise((resolve) =>
      setTimeout(resolve, session.options.retryMs)
    );
    return false;
  }

  /**
   * Does what a Kafka consumer with `auto.offset.reset` does: a position
   * below the log start (retention deleted it) moves to the log start, one
   * past the log end moves to the log end, and the client hears `reset`.
   *
   * @param details the error's context, which carries the log bounds
   * @returns false when the bounds are missing or do not explain the error
   */
  maybeReset(details: Record<string, unknown>): boolean {
    const { logStartOffset, logEndOffset } = details;
    if (
      typeof logStartOffset !== "number" || typeof logEndOffset !== "number"
    ) {
      return false;
    }
    const previousOffset = this.offset;
    let reason: string;
    if (previousOffset < logStartOffset) {
      this.offset = logStartOffset;
      reason = "below_log_start";
    } else if (previousOffset > logEndOffset) {
      this.offset = logEndOffset;
      reason = "above_log_end";
    } else {
      return false;
    }
    const { session, sub } = this.subscription;
    session.log.info("fetch position reset", {
      sub,
      partition: this.partition,
      offset: this.offset,
      previousOffset,
    });
    session.send({
      op: "reset",
      sub,
      partition: this.partition,
      offset: this.offset,
      previousOffset,
      reason,
    });
    return true;
  }

  stop(): void {
    this.stopped = true;
    this.#abort.abort();
  }
}

function requestId(frame: Frame): unknown {
  if (frame.id === undefined) throw new BadFrame(`${frame.op}: id is required`);
  return frame.id;
}

function requiredString(frame: Frame, field: string): string {
  const value = frame[field];
  if (typeof value !== "string" || value === "") {
    throw new BadFrame(`${field}: expected a non-empty string`, frame.id);
  }
  return value;
}

function optionalString(frame: Frame, field: string): string | undefined {
  return frame[field] === undefined ? undefined : requiredString(frame, field);
}

function nonNegativeInteger(
  value: unknown,
  field: string,
  id: unknown,
): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw new BadFrame(`${field}: expected an integer ≥ 0`, id);
  }
  return value;
}

function parseFrom(value: unknown, isGroup: boolean, id: unknown): From {
  if (value === undefined) return "latest";
  if (value === "earliest" || value === "latest") return value;
  if (!isGroup && typeof value === "object" && value !== null) {
    const from = value as Record<string, unknown>;
    if (
      typeof from.offset === "number" && Number.isSafeInteger(from.offset) &&
      from.offset >= 0
    ) {
      return { offset: from.offset };
    }
    if (
      typeof from.timestamp === "number" && Number.isSafeInteger(from.timestamp)
    ) {
      return { timestamp: from.timestamp };
    }
  }
  throw new BadFrame(
    isGroup
      ? 'from: expected "earliest" or "latest" for a group'
      : 'from: expected "earliest", "latest", {offset} or {timestamp}',
    id,
  );
}

function parseSeekTarget(value: unknown, id: unknown): SeekTarget {
  if (value === "earliest" || value === "latest") return value;
  if (typeof value === "object" && value !== null) {
    const to = value as Record<string, unknown>;
    if (
      typeof to.offset === "number" && Number.isSafeInteger(to.offset) &&
      to.offset >= 0
    ) {
      return { offset: to.offset };
    }
    if (
      typeof to.timestamp === "number" && Number.isSafeInteger(to.timestamp)
    ) {
      return { timestamp: to.timestamp };
    }
  }
  throw new BadFrame(
    'to: expected "earliest", "latest", {offset} or {timestamp}',
    id,
  );
}

function parsePartitions(value: unknown, id: unknown): number[] | undefined {
  if (value === undefined) return undefined;
  if (
    !Array.isArray(value) || value.length === 0 ||
    !value.every((p) =>
      typeof p === "number" && Number.isSafeInteger(p) && p >= 0
    )
  ) {
    throw new BadFrame(
      "partitions: expected a non-empty array of integers ≥ 0",
      id,
    );
  }
  return [...new Set(value as number[])];
}
