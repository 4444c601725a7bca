/**
 * The broker's HTTP routes, called with `fetch` alone so that the same code
 * runs in browsers, Deno, Node 20+ and edge functions.
 */
import type {
  GroupDescription,
  GroupSummary,
  PartitionStats,
  TopicConfig,
  TopicDescription,
} from "../broker.ts";
import { DakgharClientError, errorFromBody } from "./errors.ts";
import {
  type ConsumedRecord,
  type OutgoingRecord,
  type RecordPosition,
  recordsFromBatches,
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
