/**
 * The Dakghar client: admin calls, publishing and reading over HTTP with
 * `fetch`, publishing over a WebSocket once connected, and subscriptions as
 * async iterators. Runs unchanged in browsers, Deno, Node 20+ (pass `ws` as
 * the WebSocket) and edge functions (HTTP only).
 */
import type {
  GroupDescription,
  GroupSummary,
  RedriveOptions,
  RedriveResult,
  TopicConfig,
  TopicDescription,
} from "../broker.ts";
import { encodeBatch } from "../log/record_batch.ts";
import { DakgharClientError } from "./errors.ts";
import {
  type CreatedGroup,
  type GroupCreateOptions,
  HttpApi,
  type JoinOptions,
  type MemberFetchOptions,
  type MemberFetchResult,
  type PartitionReadResult,
  type ReadOptions,
  type ReceiptSettleResult,
  type ReceiveOptions,
  type SeekResult,
  type SeekTarget,
  type TopicDetails,
} from "./http.ts";
import {
  type NackOptions,
  type QueueSubscribeOptions,
  QueueSubscription,
} from "./queue_subscription.ts";
import { ReceivedMessage } from "./received_message.ts";
import {
  type ConsumedRecord,
  isDelayed,
  type OutgoingRecord,
  type RecordPosition,
  toBatchRecord,
  toJsonRecord,
} from "./records.ts";
import { type SubscribeOptions, Subscription } from "./subscription.ts";
import {
  type WebSocketConstructor,
  WebSocketTransport,
} from "./websocket_transport.ts";

/** Options for {@linkcode DakgharClient}. */
export interface DakgharClientOptions {
  /** The broker's base URL, e.g. `http://127.0.0.1:8080`. */
  url: string;
  /** Bearer token, when the broker runs with `--token`. */
  token?: string;
  /**
   * WebSocket class for subscriptions and WebSocket publishing; defaults to
   * the global one. Node 20 has none: pass `(await import("ws")).default`.
   */
  WebSocket?: WebSocketConstructor;
  /** `fetch` to use (default: the global one). */
  fetch?: typeof fetch;
}

/** How a publish travels. */
export interface PublishOptions {
  /**
   * "http" or "websocket"; by default the WebSocket once
   * {@linkcode DakgharClient.connect} was called, else HTTP.
   */
  via?: "http" | "websocket";
}

/**
 * A client for one broker.
 *
 * @example
 * ```ts
 * import { DakgharClient } from "dakghar";
 *
 * const client = new DakgharClient({ url: "http://127.0.0.1:8080" });
 * await client.createTopic("orders", { partitions: 3 });
 * const { partition, offset } = await client.publish("orders", {
 *   key: "customer-42",
 *   value: { total: 12.5 },
 * });
 * const subscription = await client.subscribe({
 *   topic: "orders",
 *   group: "billing",
 *   from: "earliest",
 * });
 * for await (const message of subscription) {
 *   console.log(message.partition, message.offset, message.json());
 * }
 * ```
 */
export class DakgharClient {
  readonly url: string;
  readonly #http: HttpApi;
  readonly #token: string | undefined;
  readonly #WebSocket: WebSocketConstructor | undefined;
  #publisher: Promise<WebSocketTransport> | undefined;
  #connected = false;
  readonly #subscriptions = new Set<Subscription | QueueSubscription>();

  constructor(options: DakgharClientOptions) {
    this.url = options.url.replace(/\/+$/, "");
    this.#token = options.token;
    this.#http = new HttpApi(this.url, options.token, options.fetch);
    this.#WebSocket = options.WebSocket ??
      (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  }

  /**
   * Creates a topic; settings left out take the broker's defaults.
   * @throws {DakgharClientError} `topic_exists`, `invalid_topic_name`, `invalid_config`
   */
  createTopic(
    name: string,
    config: Partial<TopicConfig> = {},
  ): Promise<TopicDescription> {
    return this.#http.createTopic(name, config);
  }

  /** Every topic with its settings. */
  listTopics(): Promise<TopicDescription[]> {
    return this.#http.listTopics();
  }

  /**
   * A topic with live statistics per partition.
   * @throws {DakgharClientError} `unknown_topic`
   */
  describeTopic(name: string): Promise<TopicDetails> {
    return this.#http.describeTopic(name);
  }

  /**
   * Deletes a topic and its files.
   * @throws {DakgharClientError} `unknown_topic`
   */
  deleteTopic(name: string): Promise<void> {
    return this.#http.deleteTopic(name);
  }

  /** Every consumer group, with its generation and member count. */
  listGroups(): Promise<GroupSummary[]> {
    return this.#http.listGroups();
  }

  /**
   * A group's members, assignment, committed offsets and lag.
   * @throws {DakgharClientError} `unknown_group`
   */
  describeGroup(name: string): Promise<GroupDescription> {
    return this.#http.describeGroup(name);
  }

  /**
   * Moves a group's committed offsets on a topic, also while members consume:
   * each partition's owner gets a `seeked` event and continues from there.
   * @param partitions default: all of the topic's partitions
   * @throws {DakgharClientError} `unknown_topic`, `unknown_partition`
   */
  seekGroup(
    group: string,
    topic: string,
    to: SeekTarget,
    partitions?: number[],
  ): Promise<SeekResult> {
    return this.#http.seekGroup(group, topic, to, partitions);
  }

  /**
   * Creates a group with a mode (`stream`, `queue` or `key_shared`), or
   * changes the queue settings of an existing one; mode, topic and filter
   * are fixed at creation.
   * @throws {DakgharClientError} `unknown_topic`, `group_exists` (another
   *   mode, topic or filter), `bad_request`
   * @example
   * ```ts
   * await client.createGroup("mailer", {
   *   topic: "emails",
   *   mode: "queue",
   *   ackTimeoutMs: 60_000,
   *   maxDeliveries: 3,
   * });
   * ```
   */
  createGroup(
    name: string,
    options: GroupCreateOptions,
  ): Promise<CreatedGroup> {
    return this.#http.createGroup(name, options);
  }

  /**
   * Deletes a group: members are removed and its state is dropped.
   * @throws {DakgharClientError} `unknown_group`
   */
  deleteGroup(name: string): Promise<void> {
    return this.#http.deleteGroup(name);
  }

  /**
   * Receives deliveries of a queue or key_shared group over HTTP alone,
   * waiting up to `maxWaitMs` when none is ready. Each is in flight until
   * settled with its verbs or until the group's ack timeout.
   * @throws {DakgharClientError} `unknown_group`, `bad_request` (a stream group)
   * @example
   * ```ts
   * const messages = await client.receive("mailer", { maxWaitMs: 10_000 });
   * for (const message of messages) {
   *   await send(message.json());
   *   await message.ack();
   * }
   * ```
   */
  async receive(
    group: string,
    options: ReceiveOptions = {},
  ): Promise<ReceivedMessage[]> {
    const received = await this.#http.receive(group, options);
    return received.map(({ record, attempt, receipt }) =>
      new ReceivedMessage(record, group, attempt, receipt, this.#http)
    );
  }

  /**
   * Acks received messages (or receipts) in one request. Refusals of some
   * are in the answer; when every one was refused it throws.
   * @throws {DakgharClientError} `stale_receipt` when none was taken
   */
  ack(
    group: string,
    messages: (ReceivedMessage | string)[],
  ): Promise<ReceiptSettleResult> {
    return this.#http.settleReceipts(group, "ack", receipts(messages));
  }

  /**
   * Nacks received messages (or receipts) in one request.
   * @throws {DakgharClientError} `stale_receipt` when none was taken
   */
  nack(
    group: string,
    messages: (ReceivedMessage | string)[],
    options: NackOptions = {},
  ): Promise<ReceiptSettleResult> {
    return this.#http.settleReceipts(
      group,
      "nack",
      receipts(messages),
      options,
    );
  }

  /**
   * Extends the ack deadline of received messages (or receipts) to now + `ms`.
   * @throws {DakgharClientError} `stale_receipt` when none was taken
   */
  extend(
    group: string,
    messages: (ReceivedMessage | string)[],
    ms: number,
  ): Promise<ReceiptSettleResult> {
    return this.#http.settleReceipts(group, "extend", receipts(messages), {
      ms,
    });
  }

  /**
   * Sends received messages (or receipts) to dead letters at once.
   * @throws {DakgharClientError} `stale_receipt` when none was taken
   */
  reject(
    group: string,
    messages: (ReceivedMessage | string)[],
    reason?: string,
  ): Promise<ReceiptSettleResult> {
    return this.#http.settleReceipts(
      group,
      "reject",
      receipts(messages),
      reason === undefined ? {} : { reason },
    );
  }

  /**
   * Republishes a queue group's dead letters not redriven before (or all,
   * with `fromStart`) to their source topic or `toTopic`, optionally only
   * those matching `filter`.
   * @throws {DakgharClientError} `unknown_group`, `unknown_topic`
   */
  redrive(group: string, options: RedriveOptions = {}): Promise<RedriveResult> {
    return this.#http.redrive(group, options);
  }

  /**
   * Cancels a delayed record before it is due.
   * @returns false when no record with that id is pending (fired, cancelled or never)
   * @throws {DakgharClientError} `unknown_topic`
   */
  cancelDelayed(topic: string, delayId: string): Promise<boolean> {
    return this.#http.cancelDelayed(topic, delayId);
  }

  /**
   * Publishes one record; resolves once it is durable, with where it landed.
   * @throws {DakgharClientError} `unknown_topic`, `record_too_large`, …
   */
  async publish(
    topic: string,
    record: OutgoingRecord,
    options: PublishOptions = {},
  ): Promise<RecordPosition> {
    const [position] = await this.publishBatch(topic, [record], options);
    return position;
  }

  /**
   * Publishes records in one request; resolves with where each landed, in
   * order. Over the WebSocket, records bound for one partition (same
   * `partition`, or same key and none) go as one pre-framed record batch in
   * a msgpack frame; others go as JSON records.
   * @throws {DakgharClientError} `unknown_topic`, `record_too_large`, …
   */
  async publishBatch(
    topic: string,
    records: OutgoingRecord[],
    options: PublishOptions = {},
  ): Promise<RecordPosition[]> {
    if (records.length === 0) return [];
    const via = options.via ?? (this.#connected ? "websocket" : "http");
    if (via === "http") return this.#http.publish(topic, records);

    const transport = await this.#publisherTransport();
    // A record batch has no place for a delay: delayed records go as JSON.
    const batch = records.some(isDelayed)
      ? undefined
      : singlePartitionBatch(records);
    if (batch) {
      const ack = await transport.request(
        { op: "publish", topic, ...batch },
        "msgpack",
      );
      const [{ partition, offset }] = ack.offsets as RecordPosition[];
      return records.map((_, index) => ({ partition, offset: offset + index }));
    }
    const ack = await transport.request(
      { op: "publish", topic, records: records.map(toJsonRecord) },
      "json",
    );
    return ack.offsets as RecordPosition[];
  }

  /**
   * Reads records of one partition from an offset, over HTTP.
   * @throws {DakgharClientError} `offset_out_of_range`, `unknown_partition`, …
   */
  read(
    topic: string,
    partition: number,
    options: ReadOptions = {},
  ): Promise<PartitionReadResult> {
    return this.#http.read(topic, partition, options);
  }

  /**
   * Joins a consumer group over HTTP alone, for code that cannot hold a
   * socket (edge functions): the member lives while it fetches, commits or
   * heartbeats within its session timeout. With `memberId` it takes that
   * member over, keeping its partitions.
   * @throws {DakgharClientError} `unknown_topic`, `malformed_body`
   */
  async joinGroup(group: string, options: JoinOptions): Promise<GroupMember> {
    const joined = await this.#http.joinMember(group, options);
    const member = new GroupMember(
      this.#http,
      group,
      joined.topic,
      joined.memberId,
    );
    member.generation = joined.generation;
    member.assignment = joined.partitions;
    member.sessionTimeoutMs = joined.sessionTimeoutMs;
    member.heartbeatMs = joined.heartbeatMs;
    return member;
  }

  /**
   * Opens a WebSocket for publishing: later publishes go over it. A dropped
   * connection is opened again by the next publish.
   * @throws {DakgharClientError} `network_error`
   */
  async connect(): Promise<void> {
    await this.#publisherTransport();
    this.#connected = true;
  }

  /**
   * Joins a queue or key_shared group (with `mode`), creating it with
   * default settings when it does not exist; resolves once joined. Each
   * message is settled with `ack()`, `nack()`, `reject()` or `extend()`.
   * @throws {DakgharClientError} `unknown_topic`, `bad_request` (a stream
   *   group), `group_exists` (another mode or topic)
   * @example
   * ```ts
   * const queue = await client.subscribe({
   *   topic: "emails",
   *   group: "mailer",
   *   mode: "queue",
   * });
   * for await (const message of queue) {
   *   try {
   *     await send(message.json());
   *     message.ack();
   *   } catch (error) {
   *     message.nack({ reason: String(error) });
   *   }
   * }
   * ```
   */
  subscribe(options: QueueSubscribeOptions): Promise<QueueSubscription>;
  /**
   * Subscribes to a topic, as a stream group member or on its own;
   * resolves once the broker confirmed the subscription.
   * @throws {DakgharClientError} `unknown_topic`, `unauthorized`,
   *   `bad_request` (a queue group: pass its `mode`), …
   */
  subscribe(options: SubscribeOptions): Promise<Subscription>;
  async subscribe(
    options: SubscribeOptions | QueueSubscribeOptions,
  ): Promise<Subscription | QueueSubscription> {
    const queued = "mode" in options &&
      (options.mode === "queue" || options.mode === "key_shared");
    const subscription = queued
      ? new QueueSubscription(
        options as QueueSubscribeOptions,
        () => this.#openSocket(),
      )
      : new Subscription(options as SubscribeOptions, () => this.#openSocket());
    await subscription.start();
    this.#subscriptions.add(subscription);
    subscription.onClose = () => this.#subscriptions.delete(subscription);
    return subscription;
  }

  /** Closes every subscription and the publishing WebSocket. */
  async close(): Promise<void> {
    const subscriptions = [...this.#subscriptions];
    this.#subscriptions.clear();
    await Promise.all(subscriptions.map((s) => s.close()));
    const publisher = this.#publisher;
    this.#publisher = undefined;
    this.#connected = false;
    if (publisher) (await publisher.catch(() => undefined))?.close();
  }

  #publisherTransport(): Promise<WebSocketTransport> {
    const current = this.#publisher;
    if (current) {
      return current.then(
        (transport) =>
          transport.isOpen ? transport : this.#replacePublisher(current),
        () => this.#replacePublisher(current),
      );
    }
    return this.#replacePublisher(undefined);
  }

  #replacePublisher(
    stale: Promise<WebSocketTransport> | undefined,
  ): Promise<WebSocketTransport> {
    if (this.#publisher !== stale) return this.#publisherTransport();
    this.#publisher = this.#openSocket();
    return this.#publisher;
  }

  #openSocket(): Promise<WebSocketTransport> {
    if (!this.#WebSocket) {
      return Promise.reject(
        new DakgharClientError(
          "network_error",
          "No WebSocket: pass one as the WebSocket option (on Node: the ws package)",
        ),
      );
    }
    const url = new URL(`${this.url}/ws`);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    if (this.#token !== undefined) url.searchParams.set("token", this.#token);
    return WebSocketTransport.open(url.href, this.#WebSocket);
  }
}

/**
 * A consumer group member over HTTP, from {@linkcode DakgharClient.joinGroup}.
 * The broker keeps its assignment and fetch positions between requests; a
 * member it has not heard from within `sessionTimeoutMs` is gone (calls fail
 * with `not_found`: join again, with the same `memberId` to resume).
 *
 * @example
 * ```ts
 * const member = await client.joinGroup("billing", { topic: "orders" });
 * const { records } = await member.fetch({ maxRecords: 50, maxWaitMs: 10_000 });
 * for (const record of records) console.log(record.json());
 * await member.commit(records);
 * await member.leave();
 * ```
 */
export class GroupMember {
  /** Generation of the latest fetch, join or heartbeat. */
  generation = 0;
  /** Partitions owned as last heard, with the next offset each fetch reads. */
  assignment: { partition: number; offset: number }[] = [];
  /** The member is gone when not heard from for this long. */
  sessionTimeoutMs = 0;
  /** Heartbeat this often while not fetching. */
  heartbeatMs = 0;

  /** @internal Use {@linkcode DakgharClient.joinGroup}. */
  constructor(
    readonly http: HttpApi,
    readonly group: string,
    readonly topic: string,
    readonly memberId: string,
  ) {}

  /**
   * Returns records from the owned partitions, waiting up to `maxWaitMs`
   * when there are none; the next fetch continues after them. Counts as a
   * heartbeat.
   * @throws {DakgharClientError} `not_found`
   */
  async fetch(options: MemberFetchOptions = {}): Promise<MemberFetchResult> {
    const result = await this.http.fetchMember(
      this.group,
      this.memberId,
      this.topic,
      options,
    );
    this.generation = result.generation;
    this.assignment = result.assignment;
    return result;
  }

  /**
   * Commits records as processed (per partition, past the highest offset
   * given), or explicit next offsets, under the generation of the latest
   * fetch unless `generation` is given.
   * @throws {DakgharClientError} `stale_generation`, `not_assigned`, `not_found`
   */
  async commit(
    processed: ConsumedRecord[] | { partition: number; offset: number }[],
    generation: number = this.generation,
  ): Promise<void> {
    const next = new Map<number, number>();
    for (const item of processed) {
      const offset = "value" in item ? item.offset + 1 : item.offset;
      next.set(item.partition, Math.max(next.get(item.partition) ?? 0, offset));
    }
    if (next.size === 0) return;
    await this.http.commitMember(
      this.group,
      this.memberId,
      [...next].map(([partition, offset]) => ({ partition, offset })),
      generation,
    );
  }

  /**
   * Keeps the member alive while it does not fetch.
   * @throws {DakgharClientError} `not_found`
   */
  async heartbeat(): Promise<void> {
    const answer = await this.http.heartbeatMember(this.group, this.memberId);
    this.generation = answer.generation;
    this.assignment = answer.assignment;
  }

  /**
   * Leaves the group at once; its partitions move to the others.
   * @throws {DakgharClientError} `not_found`
   */
  leave(): Promise<void> {
    return this.http.leaveMember(this.group, this.memberId);
  }
}

/**
 * Creates a {@linkcode DakgharClient}.
 *
 * @example
 * ```ts
 * import { createClient } from "dakghar";
 *
 * const client = createClient({ url: "http://127.0.0.1:8080" });
 * const { records } = await client.read("orders", 0, { offset: 0 });
 * for (const record of records) console.log(record.offset, record.text());
 * ```
 */
export function createClient(options: DakgharClientOptions): DakgharClient {
  return new DakgharClient(options);
}

function receipts(messages: (ReceivedMessage | string)[]): string[] {
  return messages.map((message) =>
    typeof message === "string" ? message : message.receipt
  );
}

/** The msgpack publish fields when every record goes to one partition. */
function singlePartitionBatch(
  records: OutgoingRecord[],
): Record<string, unknown> | undefined {
  const [first] = records;
  const partition = first.partition;
  const key = first.key ?? null;
  for (const record of records) {
    if (record.partition !== partition) return undefined;
    if (partition === undefined && !sameKey(record.key ?? null, key)) {
      return undefined;
    }
  }
  let batch: Uint8Array;
  try {
    const now = Date.now();
    batch = encodeBatch(records.map((record) => toBatchRecord(record, now)));
  } catch (error) {
    // Timestamps too far apart for one batch: the JSON path splits them.
    if (error instanceof RangeError) return undefined;
    throw error;
  }
  return partition !== undefined
    ? { batch, partition }
    : key === null
    ? { batch }
    : { batch, key };
}

function sameKey(
  a: string | Uint8Array | null,
  b: string | Uint8Array | null,
): boolean {
  if (
    typeof a === "string" || typeof b === "string" || a === null || b === null
  ) {
    return a === b;
  }
  return a.length === b.length && a.every((byte, index) => byte === b[index]);
}
