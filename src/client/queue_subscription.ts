/**
 * A member of a queue or key_shared group over its own WebSocket, as an
 * async iterator of messages that each settle themselves.
 *
 * Flow: the broker bounds what is in flight to this member by its prefetch
 * (records and bytes); a delivery stops counting once it is settled, so the
 * subscription takes no credit frames. Deliveries arrive as whole record
 * batches per partition plus the attempts above 1 (docs/queues.md).
 *
 * Settling: `ack()`, `nack()`, `reject()` and `extend()` queue a settlement
 * and return its promise. Queued settlements leave together in one `settle`
 * frame once the current task is done (or at once when `settleBatchMax` are
 * queued), with runs of consecutive acks of one partition and one attempt
 * sent as one range `[partition, offset, count, attempt]`. The broker's
 * `settled` reply names the refused ones; their promises reject with the
 * refusal's code (`stale_receipt`). Every promise is marked handled when it
 * is made, so a caller that ignores it never sees an unhandled rejection.
 *
 * Reconnect: a dropped connection releases this member's deliveries on the
 * broker (their attempts stay counted) and the subscription joins again.
 * Settlements queued meanwhile, and those for messages yielded before the
 * drop, go out on the new connection and the broker decides: refused as
 * stale once the record was redelivered, taken while it is still current.
 * A settle frame in flight when the connection dropped fails with
 * `connection_closed`: whether the broker took it is unknown.
 */
import type { RecordFilter } from "../broker.ts";
import { PullBuffer } from "./pull_buffer.ts";
import { type ReconnectOptions, Reconnector } from "./reconnector.ts";
import { DakgharClientError, errorFromBody } from "./errors.ts";
import { ConsumedRecord, recordsFromBatches } from "./records.ts";
import type { Frame, WebSocketTransport } from "./websocket_transport.ts";

/** Options for a queue or key_shared member: {@linkcode DakgharClient.subscribe} with `mode`. */
export interface QueueSubscribeOptions {
  topic: string;
  group: string;
  /**
   * The group's mode. A group that does not exist yet is created with it
   * and default settings; an existing group must have this mode.
   */
  mode: "queue" | "key_shared";
  /** Most deliveries in flight to this member (default 1000 records, 1 MiB). */
  prefetch?: { records?: number; bytes?: number };
  /** Exact filter; must equal the group's when it has one (omit to use it). */
  filter?: RecordFilter;
  /** Member id (default: the broker picks one). */
  memberId?: string;
  /** Most settlements in one `settle` frame before it leaves (default 4096). */
  settleBatchMax?: number;
  /** Reconnect after the connection drops (default true). */
  reconnect?: boolean | ReconnectOptions;
  /** Told about disconnects, reconnects and refusals nobody awaited. */
  onEvent?: (event: QueueSubscriptionEvent) => void;
}

/** What happened to a queue subscription. */
export type QueueSubscriptionEvent =
  | { type: "disconnected"; error: DakgharClientError }
  | { type: "reconnected" }
  | { type: "error"; error: DakgharClientError };

/** Options for {@linkcode QueueMessage.nack}. */
export interface NackOptions {
  /** Redeliver after this long; default: the group's backoff. */
  delayMs?: number;
  /** Error text kept for dead letters. */
  reason?: string;
}

/** One queued settlement and the promise it answers. */
interface PendingSettlement {
  partition: number;
  offset: number;
  attempt: number;
  action: "ack" | "nack" | "reject" | "extend";
  delayMs?: number;
  reason?: string;
  resolve(): void;
  reject(error: DakgharClientError): void;
}

/** A delivery of a queue or key_shared group, settled by its verbs. */
export class QueueMessage extends ConsumedRecord {
  /** Delivery count: 1 the first time, up by one per redelivery. */
  readonly attempt: number;
  readonly #subscription: QueueSubscription;
  #settledWith: string | undefined;

  constructor(
    record: ConsumedRecord,
    attempt: number,
    subscription: QueueSubscription,
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
    this.attempt = attempt;
    this.#subscription = subscription;
  }

  /**
   * Done: the record is never delivered to the group again.
   * @throws {DakgharClientError} `stale_receipt` when the broker refused it
   *   (redelivered meanwhile, or already settled)
   */
  ack(): Promise<void> {
    return this.#final("ack", {});
  }

  /**
   * Failed: redelivered after `delayMs`, or after the group's backoff; the
   * delivery that reaches the group's limit goes to dead letters instead.
   * @throws {DakgharClientError} `stale_receipt`
   */
  nack(options: NackOptions = {}): Promise<void> {
    return this.#final("nack", options);
  }

  /**
   * Failed for good: straight to the dead-letter topic with `reason`.
   * @throws {DakgharClientError} `stale_receipt`
   */
  reject(reason?: string): Promise<void> {
    return this.#final("reject", reason === undefined ? {} : { reason });
  }

  /**
   * Still working: the ack deadline becomes now + `ms` (at most 12 h).
   * @throws {DakgharClientError} `stale_receipt`
   */
  extend(ms: number): Promise<void> {
    if (this.#settledWith !== undefined) return this.#refusedLocally();
    const invalid = checkSettleFields({ ms });
    if (invalid !== undefined) return invalid;
    return this.#subscription.queueSettlement(this, "extend", { delayMs: ms });
  }

  #final(
    action: "ack" | "nack" | "reject",
    fields: { delayMs?: number; reason?: string },
  ): Promise<void> {
    if (this.#settledWith !== undefined) return this.#refusedLocally();
    // Checked here, so one bad argument cannot fail the other settlements
    // that would share its frame.
    const invalid = checkSettleFields(fields);
    if (invalid !== undefined) return invalid;
    this.#settledWith = action;
    return this.#subscription.queueSettlement(this, action, fields);
  }

  #refusedLocally(): Promise<void> {
    return handled(Promise.reject(
      new DakgharClientError(
        "stale_receipt",
        `Delivery ${this.partition}/${this.offset} (attempt ${this.attempt}) was already settled with ${this.#settledWith}`,
        {
          context: {
            partition: this.partition,
            offset: this.offset,
            attempt: this.attempt,
          },
        },
      ),
    ));
  }
}

// The broker's QUEUE_LIMITS (src/broker.ts), repeated: the client loads in
// browsers without the broker's modules.
/** Longest nack delay the broker takes: 90 days. */
const nackDelayMsMax = 90 * 86_400_000;
/** Longest extension the broker takes: 12 hours. */
const extendMsMax = 12 * 3_600_000;
/** Longest error text the broker takes with a nack or reject. */
const reasonLengthMax = 4096;

/**
 * A rejected promise (`invalid_argument`) when a verb's arguments are out
 * of the broker's range, else undefined.
 */
function checkSettleFields(
  fields: { delayMs?: number; ms?: number; reason?: string },
): Promise<never> | undefined {
  const { delayMs, ms, reason } = fields;
  let problem: string | undefined;
  if (
    delayMs !== undefined &&
    !(Number.isInteger(delayMs) && delayMs >= 0 && delayMs <= nackDelayMsMax)
  ) {
    problem = `delayMs must be an integer from 0 to ${nackDelayMsMax}`;
  } else if (
    ms !== undefined &&
    !(Number.isInteger(ms) && ms >= 1 && ms <= extendMsMax)
  ) {
    problem = `ms must be an integer from 1 to ${extendMsMax}`;
  } else if (
    reason !== undefined &&
    (typeof reason !== "string" || reason.length > reasonLengthMax)
  ) {
    problem =
      `reason must be a string of at most ${reasonLengthMax} characters`;
  }
  if (problem === undefined) return undefined;
  return handled(
    Promise.reject(new DakgharClientError("invalid_argument", problem)),
  );
}

/** Codes after which joining again cannot help. */
const fatalCodes = new Set([
  "unknown_topic",
  "unknown_group",
  "unauthorized",
  "bad_frame",
  "bad_request",
  "group_exists",
]);

/**
 * Deliveries of a queue or key_shared group, as an async iterator. Create
 * with {@linkcode DakgharClient.subscribe} and a `mode`.
 */
export class QueueSubscription implements AsyncIterableIterator<QueueMessage> {
  readonly topic: string;
  readonly group: string;
  /** The group's mode as the broker confirmed it. */
  mode: "queue" | "key_shared";
  /** Called once the subscription is closed (the client forgets it then). */
  onClose: () => void = () => {};

  readonly #options: QueueSubscribeOptions;
  readonly #connect: () => Promise<WebSocketTransport>;
  readonly #settleBatchMax: number;
  #transport: WebSocketTransport | undefined;
  #sub: string | undefined;
  #memberId: string | undefined;
  #early: Frame[] = [];
  readonly #buffer = new PullBuffer<QueueMessage>();
  #queued: PendingSettlement[] = [];
  #flushScheduled = false;
  #inFlight = new Set<Promise<void>>();
  #failure: Error | undefined;
  #closed = false;
  readonly #reconnector: Reconnector;

  /** Use {@linkcode DakgharClient.subscribe}. */
  constructor(
    options: QueueSubscribeOptions,
    connect: () => Promise<WebSocketTransport>,
  ) {
    const settleBatchMax = options.settleBatchMax ?? 4096;
    if (!Number.isInteger(settleBatchMax) || settleBatchMax < 1) {
      throw new RangeError(
        `settleBatchMax must be a positive integer: ${settleBatchMax}`,
      );
    }
    this.topic = options.topic;
    this.group = options.group;
    this.mode = options.mode;
    this.#options = options;
    this.#connect = connect;
    this.#memberId = options.memberId;
    this.#reconnector = new Reconnector(options.reconnect, fatalCodes, {
      open: () => this.#open(),
      closed: () => this.#closed,
      reconnected: () => this.#emit({ type: "reconnected" }),
      failed: (error) => this.#fail(error),
    });
    this.#settleBatchMax = settleBatchMax;
  }

  /** Joins the group; rejects with the broker's error. */
  async start(): Promise<void> {
    await this.#open();
  }

  /** The member id the broker confirmed. */
  get memberId(): string | undefined {
    return this.#memberId;
  }

  /** Deliveries received and not yet yielded. */
  get buffered(): number {
    return this.#buffer.size;
  }

  /** Settlements queued and not yet sent. */
  get queuedSettlements(): number {
    return this.#queued.length;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /** The next delivery; waits for one, and ends once the subscription closes. */
  async next(): Promise<IteratorResult<QueueMessage, undefined>> {
    while (true) {
      if (this.#closed) return { done: true, value: undefined };
      const message = this.#buffer.take();
      if (message !== undefined) {
        return { done: false, value: message };
      }
      if (this.#failure) throw this.#failure;
      await this.#buffer.wait();
    }
  }

  /** Ends the iteration (a `break` in `for await` calls it). */
  async return(): Promise<IteratorResult<QueueMessage, undefined>> {
    await this.close();
    return { done: true, value: undefined };
  }

  /**
   * Sends the queued settlements now and waits for the broker's answers to
   * every settle frame sent so far. Never rejects: each settlement's own
   * promise carries its outcome.
   */
  async flush(): Promise<void> {
    this.#flushScheduled = false;
    this.#sendQueued();
    await Promise.all([...this.#inFlight]);
  }

  /**
   * Stops receiving: sends the queued settlements and waits for their
   * answers, then leaves the group. Deliveries not settled go back to the
   * group at once; settlements still queued (the connection is down) fail
   * with `connection_closed`.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#reconnector.cancel();
    await this.flush();
    this.#closed = true;
    this.#buffer.clear();
    this.#failQueued(
      new DakgharClientError("connection_closed", "Subscription closed"),
    );
    const transport = this.#transport;
    const sub = this.#sub;
    this.#transport = undefined;
    if (transport?.isOpen && sub !== undefined) {
      await transport.request({ op: "unsubscribe", sub }, "msgpack")
        .catch(() => {});
    }
    transport?.close();
    this.#buffer.wake();
    this.onClose();
  }

  /** @internal Queues one settlement of `message`; its verbs call this. */
  queueSettlement(
    message: QueueMessage,
    action: PendingSettlement["action"],
    fields: { delayMs?: number; reason?: string },
  ): Promise<void> {
    if (this.#closed || this.#failure) {
      const failure = this.#failure;
      return handled(Promise.reject(
        failure instanceof DakgharClientError
          ? failure
          : new DakgharClientError("connection_closed", "Subscription closed"),
      ));
    }
    const promise = new Promise<void>((resolve, reject) => {
      this.#queued.push({
        partition: message.partition,
        offset: message.offset,
        attempt: message.attempt,
        action,
        ...fields,
        resolve,
        reject,
      });
    });
    if (this.#queued.length >= this.#settleBatchMax) this.#sendQueued();
    else if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      // One frame per task: every verb called in this task shares it.
      setTimeout(() => {
        if (!this.#flushScheduled) return;
        this.#flushScheduled = false;
        this.#sendQueued();
      }, 0);
    }
    return handled(promise);
  }

  /** Sends what is queued as one settle frame, when connected. */
  #sendQueued(): void {
    const transport = this.#transport;
    const sub = this.#sub;
    if (this.#queued.length === 0) return;
    if (!transport?.isOpen || sub === undefined) return;
    const batch = this.#queued;
    this.#queued = [];
    const answered = transport.request(
      { op: "settle", sub, ...settleFields(batch) },
      "msgpack",
    ).then(
      (reply) => answerBatch(batch, reply),
      (error: DakgharClientError) => {
        for (const entry of batch) entry.reject(error);
      },
    );
    this.#inFlight.add(answered);
    answered.finally(() => this.#inFlight.delete(answered));
  }

  #failQueued(error: DakgharClientError): void {
    const queued = this.#queued;
    this.#queued = [];
    for (const entry of queued) entry.reject(error);
  }

  /** Connects and joins the group. */
  async #open(): Promise<void> {
    const transport = await this.#connect();
    if (this.#closed) {
      transport.close();
      return;
    }
    this.#transport = transport;
    this.#sub = undefined;
    this.#early = [];
    this.#buffer.clear();
    transport.onFrame = (frame) => {
      if (transport === this.#transport) this.#receive(frame);
    };
    transport.onClose = (error) => {
      if (transport === this.#transport) this.#disconnected(error);
    };

    const { topic, group, mode, prefetch, filter } = this.#options;
    const memberId = this.#memberId;
    let reply: Frame;
    try {
      reply = await transport.request(
        {
          op: "subscribe",
          topic,
          group,
          mode,
          format: "batch",
          ...(prefetch === undefined ? {} : { prefetch }),
          ...(filter === undefined ? {} : { filter }),
          ...(memberId === undefined ? {} : { memberId }),
        },
        "msgpack",
      );
      if (
        reply.mode !== undefined && reply.mode !== "queue" &&
        reply.mode !== "key_shared"
      ) {
        throw new DakgharClientError(
          "bad_request",
          `Group ${group} is a ${reply.mode} group: subscribe without mode`,
        );
      }
    } catch (error) {
      this.#transport = undefined;
      transport.close();
      throw error;
    }
    this.#sub = String(reply.sub);
    if (typeof reply.memberId === "string") this.#memberId = reply.memberId;
    if (reply.mode === "queue" || reply.mode === "key_shared") {
      this.mode = reply.mode;
    }
    const early = this.#early.filter((frame) =>
      String(frame.sub) === this.#sub
    );
    this.#early = [];
    for (const frame of early) this.#receive(frame);
    // Settlements queued while disconnected go out on this connection.
    this.#sendQueued();
  }

  #receive(frame: Frame): void {
    if (this.#sub === undefined || String(frame.sub) !== this.#sub) {
      if (this.#sub === undefined && frame.sub !== undefined) {
        this.#early.push(frame);
      }
      return;
    }
    switch (frame.op) {
      case "deliveries":
        this.#receiveDeliveries(frame);
        break;
      case "settled":
        // Refusals of a settle frame sent without an id; ours carry one.
        for (const refused of (frame.refused ?? []) as Frame[]) {
          this.#emit({
            type: "error",
            error: refusalError(refused as unknown as Refusal),
          });
        }
        break;
      case "error": {
        const { op: _op, ...body } = frame;
        const error = errorFromBody(body);
        this.#emit({ type: "error", error });
        // The broker ended the membership (group or topic deleted).
        if (
          error.code === "unknown_group" || error.code === "unknown_topic" ||
          error.code === "member_replaced"
        ) {
          this.#fail(error);
        }
        break;
      }
    }
  }

  #receiveDeliveries(frame: Frame): void {
    const partition = frame.partition as number;
    const topic = typeof frame.topic === "string" ? frame.topic : this.topic;
    const attempts = new Map<number, number>();
    const redelivered = (frame.redelivered ?? []) as number[];
    for (let i = 0; i + 1 < redelivered.length; i += 2) {
      attempts.set(redelivered[i], redelivered[i + 1]);
    }
    const records = recordsFromBatches(
      topic,
      partition,
      frame.bytes as Uint8Array,
    );
    for (const record of records) {
      this.#buffer.push(
        new QueueMessage(record, attempts.get(record.offset) ?? 1, this),
      );
    }
    this.#buffer.wake();
  }

  #disconnected(error: DakgharClientError): void {
    this.#transport = undefined;
    this.#sub = undefined;
    this.#early = [];
    // Deliveries not yet yielded were released by the broker: it sends them
    // again, to this member or another.
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
    this.#failQueued(
      error instanceof DakgharClientError
        ? error
        : new DakgharClientError("connection_closed", error.message),
    );
    this.#buffer.wake();
  }

  #emit(event: QueueSubscriptionEvent): void {
    this.#options.onEvent?.(event);
  }
}

/** A refusal as the `settled` reply lists it. */
interface Refusal {
  partition: number;
  offset: number;
  attempt: number;
  code: string;
  message?: string;
}

/**
 * The `settle` frame's lists for a batch. Acks are sorted and runs of
 * consecutive offsets with one attempt become one range.
 */
function settleFields(batch: PendingSettlement[]): Record<string, unknown> {
  const acks: [number, number, number, number][] = [];
  const nacks: unknown[][] = [];
  const rejects: unknown[][] = [];
  const extends_: [number, number, number, number][] = [];
  const acked = batch.filter((entry) => entry.action === "ack")
    .sort((a, b) => a.partition - b.partition || a.offset - b.offset);
  for (const entry of acked) {
    const last = acks[acks.length - 1];
    if (
      last !== undefined && last[0] === entry.partition &&
      last[1] + last[2] === entry.offset && last[3] === entry.attempt
    ) {
      last[2]++;
    } else acks.push([entry.partition, entry.offset, 1, entry.attempt]);
  }
  for (const entry of batch) {
    const { partition, offset, attempt } = entry;
    if (entry.action === "nack") {
      const nack: unknown[] = [
        partition,
        offset,
        attempt,
        entry.delayMs ?? null,
      ];
      if (entry.reason !== undefined) nack.push(entry.reason);
      nacks.push(nack);
    } else if (entry.action === "reject") {
      const reject: unknown[] = [partition, offset, attempt];
      if (entry.reason !== undefined) reject.push(entry.reason);
      rejects.push(reject);
    } else if (entry.action === "extend") {
      extends_.push([partition, offset, attempt, entry.delayMs ?? 0]);
    }
  }
  return {
    ...(acks.length ? { acks } : {}),
    ...(nacks.length ? { nacks } : {}),
    ...(rejects.length ? { rejects } : {}),
    ...(extends_.length ? { extends: extends_ } : {}),
  };
}

/** Resolves or rejects each settlement of a batch from the broker's reply. */
function answerBatch(batch: PendingSettlement[], reply: Frame): void {
  const refusedList = (reply.refused ?? []) as Refusal[];
  if (refusedList.length === 0) {
    // The usual case: no key per settlement to look up.
    for (const entry of batch) entry.resolve();
    return;
  }
  const refusals = new Map<string, Refusal>();
  for (const refused of refusedList) {
    refusals.set(
      `${refused.partition}/${refused.offset}/${refused.attempt}`,
      refused,
    );
  }
  for (const entry of batch) {
    const refused = refusals.get(
      `${entry.partition}/${entry.offset}/${entry.attempt}`,
    );
    if (refused === undefined) entry.resolve();
    else entry.reject(refusalError(refused));
  }
}

function refusalError(refused: Refusal): DakgharClientError {
  const { partition, offset, attempt } = refused;
  const code = String(refused.code ?? "stale_receipt");
  return errorFromBody({
    code,
    message: refused.message ??
      `Settlement of ${partition}/${offset} (attempt ${attempt}) refused: ${code}`,
    partition,
    offset,
    attempt,
  });
}

/**
 * Marks a promise as handled so that ignoring it raises no unhandled
 * rejection; whoever awaits it still gets the rejection.
 */
export function handled<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => {});
  return promise;
}
