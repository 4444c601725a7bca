/**
 * The broker's HTTP routes, called with `fetch` alone so that the same code
 * runs in browsers, Deno, Node 20+ and edge functions.
 */
import type {
  GroupDescription,
  GroupMode,
  GroupSettings,
  GroupSummary,
  PartitionStats,
  QueueSettings,
  RecordFilter,
  RedriveOptions,
  RedriveResult,
  StartPosition,
  TopicConfig,
  TopicDescription,
} from "../broker.ts";
import { DakgharClientError, errorFromBody } from "./errors.ts";
import {
  ConsumedRecord,
  type OutgoingRecord,
  type RecordPosition,
  recordsFromBatches,
  TAG_HEADER,
  toJsonRecord,
} from "./records.ts";

const BATCH_MEDIA_TYPE = "application/vnd.dakghar.batch";

/** A topic with live statistics per partition (`GET /topics/:topic`). */
export interface TopicDetails extends TopicDescription {
  partitions: PartitionStats[];
}

/** Options for reading a partition over HTTP. */
export interface ReadOptions {
  /** First offset wanted (default: the log start offset). */
  offset?: number;
  /** Most records returned (default 100, at most 10000). */
  maxRecords?: number;
  /** Long-poll: wait this long for records when there are none yet. */
  maxWaitMs?: number;
}

/** Where {@linkcode HttpApi.seekGroup} moves a group. */
export type SeekTarget =
  | "earliest"
  | "latest"
  | { offset: number }
  | { timestamp: number };

/** The answer to a group seek: the generation and each partition's offset. */
export interface SeekResult {
  group: string;
  topic: string;
  generation: number;
  partitions: { partition: number; offset: number }[];
}

/** What a read of one partition returned. */
export interface PartitionReadResult {
  records: ConsumedRecord[];
  /** Where the next read starts; equal to the offset asked for when empty. */
  nextOffset: number;
  highWatermark: number;
  logStartOffset: number;
}

/** Options for {@linkcode DakgharClient.joinGroup}. */
export interface JoinOptions {
  topic: string;
  /** Where partitions the group never committed start (default "latest"). */
  from?: "earliest" | "latest";
  /** Resume as this member (e.g. stored by an earlier invocation). */
  memberId?: string;
  /** A session timeout shorter than the broker's, at least 100 ms. */
  sessionTimeoutMs?: number;
}

/** What joining a group over HTTP answers. */
export interface MemberJoined {
  memberId: string;
  generation: number;
  topic: string;
  /** Partitions owned, each with the offset the next fetch reads from. */
  partitions: { partition: number; offset: number }[];
  /** The member leaves when not heard from for this long. */
  sessionTimeoutMs: number;
  /** Heartbeat this often while not fetching. */
  heartbeatMs: number;
}

/** Options for {@linkcode GroupMember.fetch}. */
export interface MemberFetchOptions {
  /** Most records returned (default 100, at most 10 000). */
  maxRecords?: number;
  /** How long to wait when there are none (default 0, at most 30 s). */
  maxWaitMs?: number;
}

/** What a member fetch returns. */
export interface MemberFetchResult {
  /** Commit these records under this generation. */
  generation: number;
  records: ConsumedRecord[];
  /** Partitions owned now, each with the offset the next fetch reads from. */
  assignment: { partition: number; offset: number }[];
}

/**
 * What {@linkcode DakgharClient.createGroup} takes: the topic and mode, and
 * any queue settings to change from the broker's defaults.
 */
export interface GroupCreateOptions extends Partial<QueueSettings> {
  topic: string;
  mode: GroupMode;
  /** Where the group starts on a partition it has no state for (default "earliest"). */
  from?: StartPosition;
  /** Exact filter applied to every delivery; fixed at creation. */
  filter?: RecordFilter | null;
}

/** A group's settings as created, with its name. */
export interface CreatedGroup extends GroupSettings {
  name: string;
}

/** Options for {@linkcode DakgharClient.receive}. */
export interface ReceiveOptions {
  /** Most records returned (default 10, at most 1000). */
  maxRecords?: number;
  /** Long-poll: wait this long when nothing is ready (default 0, at most 30 s). */
  maxWaitMs?: number;
}

/** A record handed out by an HTTP receive, before it gets its verbs. */
export interface ReceivedRecord {
  record: ConsumedRecord;
  attempt: number;
  receipt: string;
}

/** How a settlement by receipts was taken. */
export interface ReceiptSettleResult {
  settled: number;
  refused: { receipt: string; code: string; message: string }[];
}

/** The settlement verbs of the receipt routes. */
export type ReceiptAction = "ack" | "nack" | "extend" | "reject";

/** Extra fields of a settlement by receipts: nack's delay and reason, extend's ms. */
export interface ReceiptSettleFields {
  delayMs?: number;
  reason?: string;
  ms?: number;
}

interface Base64Record {
  topic?: string;
  partition: number;
  offset: number;
  timestamp: number;
  key: string | null;
  value: string | null;
  headers: Record<string, string | null>;
  /** Tags stay text whatever the encoding. */
  tags?: string[];
  attempt?: number;
  receipt?: string;
}

function fromBase64(text: string | null): Uint8Array | null {
  if (text === null) return null;
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function fromBase64Record(topic: string, record: Base64Record): ConsumedRecord {
  return new ConsumedRecord(
    topic,
    record.partition,
    record.offset,
    record.timestamp,
    fromBase64(record.key),
    fromBase64(record.value),
    [
      ...Object.entries(record.headers).map((
        [name, value],
      ): [string, Uint8Array | null] => [name, fromBase64(value)]),
      ...(record.tags ?? []).map((tag): [string, Uint8Array | null] => [
        TAG_HEADER,
        encoder.encode(tag),
      ]),
    ],
  );
}

const encoder = new TextEncoder();

function groupPath(group: string): string {
  return `/groups/${encodeURIComponent(group)}`;
}

function memberPath(group: string, memberId: string): string {
  return `${groupPath(group)}/members/${encodeURIComponent(memberId)}`;
}

/** Calls the broker's HTTP routes; every failure is a DakgharClientError. */
export class HttpApi {
  readonly #baseUrl: string;
  readonly #token: string | undefined;
  readonly #fetch: typeof fetch;

  constructor(baseUrl: string, token?: string, fetchImpl?: typeof fetch) {
    this.#baseUrl = baseUrl.replace(/\/+$/, "");
    this.#token = token;
    this.#fetch = fetchImpl ?? ((input, init) => fetch(input, init));
  }

  async publish(
    topic: string,
    records: OutgoingRecord[],
  ): Promise<RecordPosition[]> {
    const body = await this.#json<{ offsets: RecordPosition[] }>(
      "POST",
      `/topics/${encodeURIComponent(topic)}/records`,
      { records: records.map(toJsonRecord) },
    );
    return body.offsets;
  }

  createTopic(
    name: string,
    config: Partial<TopicConfig> = {},
  ): Promise<TopicDescription> {
    return this.#json("POST", "/topics", { ...config, name });
  }

  async listTopics(): Promise<TopicDescription[]> {
    return (await this.#json<{ topics: TopicDescription[] }>("GET", "/topics"))
      .topics;
  }

  describeTopic(name: string): Promise<TopicDetails> {
    return this.#json("GET", `/topics/${encodeURIComponent(name)}`);
  }

  async deleteTopic(name: string): Promise<void> {
    await this.#request("DELETE", `/topics/${encodeURIComponent(name)}`);
  }

  async listGroups(): Promise<GroupSummary[]> {
    return (await this.#json<{ groups: GroupSummary[] }>("GET", "/groups"))
      .groups;
  }

  describeGroup(name: string): Promise<GroupDescription> {
    return this.#json("GET", `/groups/${encodeURIComponent(name)}`);
  }

  seekGroup(
    group: string,
    topic: string,
    to: SeekTarget,
    partitions?: number[],
  ): Promise<SeekResult> {
    return this.#json("POST", `/groups/${encodeURIComponent(group)}/seek`, {
      topic,
      to,
      ...(partitions === undefined ? {} : { partitions }),
    });
  }

  /** Joins a group as an HTTP member. */
  joinMember(group: string, options: JoinOptions): Promise<MemberJoined> {
    return this.#json("POST", `${groupPath(group)}/members`, options);
  }

  /** Long-polls a member's partitions; records come as base64 to keep their bytes. */
  async fetchMember(
    group: string,
    memberId: string,
    topic: string,
    options: MemberFetchOptions = {},
  ): Promise<MemberFetchResult> {
    const body = await this.#json<{
      generation: number;
      records: Base64Record[];
      assignment: { partition: number; offset: number }[];
    }>("POST", `${memberPath(group, memberId)}/fetch`, {
      ...options,
      encoding: "base64",
    });
    return {
      generation: body.generation,
      records: body.records.map((record) => fromBase64Record(topic, record)),
      assignment: body.assignment,
    };
  }

  commitMember(
    group: string,
    memberId: string,
    offsets: { partition: number; offset: number }[],
    generation?: number,
  ): Promise<{ generation: number }> {
    return this.#json("POST", `${memberPath(group, memberId)}/commit`, {
      offsets,
      ...(generation === undefined ? {} : { generation }),
    });
  }

  heartbeatMember(
    group: string,
    memberId: string,
  ): Promise<
    { generation: number; assignment: { partition: number; offset: number }[] }
  > {
    return this.#json("POST", `${memberPath(group, memberId)}/heartbeat`);
  }

  async leaveMember(group: string, memberId: string): Promise<void> {
    await this.#request("DELETE", memberPath(group, memberId));
  }

  createGroup(
    name: string,
    options: GroupCreateOptions,
  ): Promise<CreatedGroup> {
    return this.#json("PUT", groupPath(name), options);
  }

  async deleteGroup(name: string): Promise<void> {
    await this.#request("DELETE", groupPath(name));
  }

  /** Long-polls a queue group; records come as base64 to keep their bytes. */
  async receive(
    group: string,
    options: ReceiveOptions = {},
  ): Promise<ReceivedRecord[]> {
    const body = await this.#json<{ records: Base64Record[] }>(
      "POST",
      `${groupPath(group)}/receive`,
      { ...options, encoding: "base64" },
    );
    return body.records.map((record) => ({
      record: fromBase64Record(record.topic ?? "", record),
      attempt: record.attempt ?? 1,
      receipt: String(record.receipt),
    }));
  }

  /**
   * Settles deliveries by receipt. A 409 `stale_receipt` (none taken, some
   * refused) throws; a partial refusal is in the answer's `refused`.
   */
  settleReceipts(
    group: string,
    action: ReceiptAction,
    receipts: string[],
    fields: ReceiptSettleFields = {},
  ): Promise<ReceiptSettleResult> {
    return this.#json("POST", `${groupPath(group)}/${action}`, {
      receipts,
      ...fields,
    });
  }

  redrive(group: string, options: RedriveOptions = {}): Promise<RedriveResult> {
    return this.#json(
      "POST",
      `${groupPath(group)}/dead-letters/redrive`,
      options,
    );
  }

  /** False when no such delayed record is pending (404 `not_found`). */
  async cancelDelayed(topic: string, delayId: string): Promise<boolean> {
    try {
      await this.#request(
        "DELETE",
        `/topics/${encodeURIComponent(topic)}/delayed/${
          encodeURIComponent(delayId)
        }`,
      );
      return true;
    } catch (error) {
      if (error instanceof DakgharClientError && error.code === "not_found") {
        return false;
      }
      throw error;
    }
  }

  /** Reads raw record batches and decodes them, keeping the exact bytes. */
  async read(
    topic: string,
    partition: number,
    options: ReadOptions = {},
  ): Promise<PartitionReadResult> {
    const query = new URLSearchParams();
    if (options.offset !== undefined) query.set("offset", `${options.offset}`);
    if (options.maxRecords !== undefined) {
      query.set("maxRecords", `${options.maxRecords}`);
    }
    if (options.maxWaitMs !== undefined) {
      query.set("maxWaitMs", `${options.maxWaitMs}`);
    }
    const path =
      `/topics/${encodeURIComponent(topic)}/partitions/${partition}` +
      `/records?${query}`;
    const response = await this.#request("GET", path, undefined, {
      accept: BATCH_MEDIA_TYPE,
    });
    const bytes = new Uint8Array(await response.arrayBuffer());
    const position = (name: string) => {
      const value = Number(response.headers.get(`x-dakghar-${name}`));
      if (!Number.isInteger(value)) {
        throw new DakgharClientError(
          "invalid_response",
          `Read answered without X-Dakghar-${name}`,
        );
      }
      return value;
    };
    return {
      records: recordsFromBatches(topic, partition, bytes),
      nextOffset: position("next-offset"),
      highWatermark: position("high-watermark"),
      logStartOffset: position("log-start-offset"),
    };
  }

  async #json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const response = await this.#request(method, path, body);
    try {
      return await response.json() as T;
    } catch (error) {
      throw new DakgharClientError(
        "invalid_response",
        `${method} ${path} answered a body that is not JSON`,
        { status: response.status, cause: error },
      );
    }
  }

  /** Sends one request; a non-2xx answer becomes its DakgharClientError. */
  async #request(
    method: string,
    path: string,
    body?: unknown,
    extraHeaders: Record<string, string> = {},
  ): Promise<Response> {
    const headers: Record<string, string> = { ...extraHeaders };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (this.#token !== undefined) {
      headers.authorization = `Bearer ${this.#token}`;
    }
    let text: string | undefined;
    try {
      text = body === undefined ? undefined : JSON.stringify(body);
    } catch (error) {
      throw new DakgharClientError(
        "invalid_argument",
        `Cannot encode the request as JSON: ${(error as Error).message}`,
        { cause: error },
      );
    }
    let response: Response;
    try {
      response = await this.#fetch(`${this.#baseUrl}${path}`, {
        method,
        headers,
        body: text,
      });
    } catch (error) {
      throw new DakgharClientError(
        "network_error",
        `Cannot reach the broker at ${this.#baseUrl}: ${
          (error as Error).message
        }`,
        { cause: error },
      );
    }
    if (response.ok) return response;

    let data: unknown;
    try {
      data = (await response.json() as { error?: unknown }).error;
    } catch {
      data = undefined;
    }
    throw errorFromBody(data ?? {}, response.status);
  }
}
