/**
 * The Hono front end: HTTP routes over the `Broker` interface. Records are
 * turned from JSON into batches (and back) here, once; everything behind
 * the broker sees bytes. Routes are documented in docs/protocol.md.
 */
import { Hono } from "hono";
import type { Context } from "hono";
import { bearerAuth } from "hono/bearer-auth";
import { bodyLimit } from "hono/body-limit";
import { cors } from "hono/cors";
import { validator } from "hono/validator";
import type {
  Broker,
  PartitionAssignment,
  SeekTarget,
  StartPosition,
  TopicConfig,
} from "../broker.ts";
import { DakgharError } from "../errors.ts";
import {
  decodeBatches,
  encodeBatch,
  sliceBatches,
} from "../log/record_batch.ts";
import type { Logger } from "../logger.ts";
import type { UpgradeWebSocket } from "../runtime/types.ts";
import { createErrorHandler, notFound } from "./errors.ts";
import { HttpMembers } from "./http_members.ts";
import { createQueueRoutes } from "./queue_routes.ts";
import {
  parseKeyEncoding,
  parseProducerBody,
  parseValueEncoding,
  type ReadEncoding,
  toConsumerRecords,
} from "./json_records.ts";
import { createStaticRoutes } from "./static.ts";
import { createWebSocketRoute, type WebSocketOptions } from "./websocket.ts";

/** Media type of pre-framed record batches, in requests and responses. */
export const BATCH_MEDIA_TYPE = "application/vnd.dakghar.batch";

/** Options for {@linkcode createApp}. */
export interface AppOptions {
  log: Logger;
  /** When set, every route but `/health` needs `Authorization: Bearer <token>`. */
  token?: string;
  /** Largest request body accepted, in bytes (default 64 MiB). */
  maxBodyBytes?: number;
  /** Origins allowed by CORS (default "*"). */
  corsOrigin?: string | string[];
  /** Longest long-poll a read may ask for (default 30 s). */
  maxWaitMsMax?: number;
  /** Most bytes one read fetches from a partition (default 1 MiB). */
  readBytesMax?: number;
  /** The runtime's WebSocket helper; without it `/ws` is not served. */
  webSocketFor?: (app: Hono) => UpgradeWebSocket;
  /** Tuning for WebSocket sessions. */
  webSocket?: Partial<WebSocketOptions>;
  /** How long an HTTP group member lives unheard (default 45 s). */
  sessionTimeoutMs?: number;
  /** How often an idle HTTP group member is told to heartbeat (default 5 s). */
  heartbeatMs?: number;
  /**
   * Aborted when the broker starts to stop: waiting HTTP member fetches
   * answer `503 shutting_down` at once instead of holding the shutdown.
   */
  shutdown?: AbortSignal;
}

const MiB = 1024 * 1024;

/**
 * Creates the Hono app serving `broker`.
 *
 * @param broker what the routes call
 * @param options logging, auth, limits and the WebSocket helper
 * @returns the app, ready for `runtime.serve`
 */
export function createApp(broker: Broker, options: AppOptions): Hono {
  const log = options.log.scope("http");
  const maxBodyBytes = options.maxBodyBytes ?? 64 * MiB;
  const maxWaitMsMax = options.maxWaitMsMax ?? 30_000;
  const readBytesMax = options.readBytesMax ?? MiB;
  const app = new Hono();
  // The helper must exist before routes are added (see Runtime.webSocketFor).
  const upgradeWebSocket = options.webSocketFor?.(app);

  app.onError(createErrorHandler(log));
  app.notFound(notFound);
  app.use(
    "*",
    cors({
      origin: options.corsOrigin ?? "*",
      allowHeaders: ["Authorization", "Content-Type", "Accept"],
      exposeHeaders: [
        "X-Dakghar-Next-Offset",
        "X-Dakghar-High-Watermark",
        "X-Dakghar-Log-Start-Offset",
      ],
    }),
  );
  if (options.token !== undefined) {
    app.use("*", authorize(options.token));
  }
  const limitBody = bodyLimit({
    maxSize: maxBodyBytes,
    onError: () => {
      throw new DakgharError(
        "body_too_large",
        `Request body too large: the limit is ${maxBodyBytes} bytes`,
        { maxBytes: maxBodyBytes },
      );
    },
  });

  app.get("/health", (c) => c.json({ status: "ok" }));

  app.route("/", createStaticRoutes());

  app.get("/topics", (c) => c.json({ topics: broker.listTopics() }));

  app.post(
    "/topics",
    limitBody,
    validator("json", (body) => parseCreateTopic(body)),
    async (c) => {
      const { name, config } = c.req.valid("json");
      return c.json(await broker.createTopic(name, config), 201);
    },
  );

  app.get(
    "/topics/:topic",
    async (c) => c.json(await broker.describeTopic(c.req.param("topic"))),
  );

  app.delete("/topics/:topic", async (c) => {
    await broker.deleteTopic(c.req.param("topic"));
    return c.body(null, 204);
  });

  app.post("/topics/:topic/records", limitBody, async (c) => {
    const topic = c.req.param("topic");
    const mediaType = (c.req.header("Content-Type") ?? "").split(";")[0]
      .trim().toLowerCase();
    if (mediaType === "application/json") {
      const body = await readJson(c);
      const records = parseProducerBody(body, {
        keyEncoding: parseKeyEncoding(
          c.req.query("keyEncoding"),
          "keyEncoding",
        ),
        valueEncoding: parseValueEncoding(
          c.req.query("valueEncoding"),
          "valueEncoding",
        ),
      }, Date.now());
      return c.json({ offsets: await broker.publishRecords(topic, records) });
    }
    if (
      mediaType === BATCH_MEDIA_TYPE || mediaType === "application/octet-stream"
    ) {
      const bytes = new Uint8Array(await c.req.arrayBuffer());
      const partition = optionalInteger(
        c.req.query("partition"),
        "partition",
        0,
      );
      const keyText = c.req.query("key");
      const key = keyText === undefined
        ? null
        : new TextEncoder().encode(keyText);
      const batch = mediaType === BATCH_MEDIA_TYPE ? bytes : encodeBatch([
        { key, value: bytes, headers: [], timestamp: Date.now() },
      ]);
      const result = await broker.publish(topic, batch, { partition, key });
      return c.json({
        offsets: [{ partition: result.partition, offset: result.baseOffset }],
        lastOffset: result.lastOffset,
      });
    }
    throw new DakgharError(
      "bad_request",
      `Unsupported content type: ${mediaType || "(none)"}`,
      {
        supported: [
          "application/json",
          BATCH_MEDIA_TYPE,
          "application/octet-stream",
        ],
      },
    );
  });

  app.get(
    "/topics/:topic/partitions/:partition/records",
    validator("query", (query) => parseReadQuery(query, maxWaitMsMax)),
    async (c) => {
      const topic = c.req.param("topic");
      const partition = requiredInteger(
        c.req.param("partition"),
        "partition",
        0,
      );
      const query = c.req.valid("query");
      const offset = query.offset ??
        await broker.offsetForTime(topic, partition, 0);
      const result = await broker.read(topic, partition, offset, {
        maxBytes: readBytesMax,
        maxWaitMs: query.maxWaitMs,
        // Only a long-poll needs to hear that its client went away; reading
        // the signal at all makes Deno warn about its legacy abort semantics.
        signal: query.maxWaitMs > 0 ? c.req.raw.signal : undefined,
      });
      const slice = sliceBatches(result.bytes, offset, query.maxRecords);
      const positions = {
        nextOffset: slice.nextOffset,
        highWatermark: result.highWatermark,
        logStartOffset: result.logStartOffset,
      };
      if ((c.req.header("Accept") ?? "").includes(BATCH_MEDIA_TYPE)) {
        c.header("Content-Type", BATCH_MEDIA_TYPE);
        c.header("X-Dakghar-Next-Offset", String(positions.nextOffset));
        c.header("X-Dakghar-High-Watermark", String(positions.highWatermark));
        c.header(
          "X-Dakghar-Log-Start-Offset",
          String(positions.logStartOffset),
        );
        return c.body(slice.bytes.slice());
      }
      const records = toConsumerRecords(
        decodeBatches(slice.bytes),
        query.encoding,
      );
      return c.json({ records, ...positions });
    },
  );

  app.get(
    "/groups",
    async (c) => c.json({ groups: await broker.listGroups() }),
  );

  // GET, PUT and DELETE /groups/:group, receive and settle by receipt,
  // redrive, delayed records.
  app.route(
    "/",
    createQueueRoutes(broker, {
      limitBody,
      maxWaitMsMax,
      receiveBytesMax: readBytesMax,
      shutdown: options.shutdown,
    }),
  );

  app.post("/groups/:group/seek", limitBody, async (c) => {
    const { topic, partitions, to } = parseGroupSeek(await readJson(c));
    if (broker.seekGroup === undefined) {
      throw new DakgharError("bad_request", "This broker cannot seek groups");
    }
    return c.json(
      await broker.seekGroup(c.req.param("group"), topic, to, partitions),
    );
  });

  const members = new HttpMembers(broker, {
    sessionTimeoutMs: options.sessionTimeoutMs ?? 45_000,
    heartbeatMs: options.heartbeatMs ?? 5_000,
    maxWaitMsMax,
    fetchBytesMax: readBytesMax,
  }, log);
  if (options.shutdown?.aborted) members.close();
  options.shutdown?.addEventListener("abort", () => members.close(), {
    once: true,
  });

  app.post("/groups/:group/members", limitBody, async (c) => {
    const body = parseMemberJoin(await readJson(c));
    return c.json(
      await members.join(
        c.req.param("group"),
        body.topic,
        body.from,
        body.memberId,
        body.sessionTimeoutMs,
      ),
      201,
    );
  });

  app.post("/groups/:group/members/:member/fetch", limitBody, async (c) => {
    const body = parseMemberFetch(await readJsonOrEmpty(c));
    return c.json(
      await members.fetch(c.req.param("group"), c.req.param("member"), body),
    );
  });

  app.post("/groups/:group/members/:member/commit", limitBody, async (c) => {
    const { offsets, generation } = parseMemberCommit(await readJson(c));
    return c.json(
      await members.commit(
        c.req.param("group"),
        c.req.param("member"),
        offsets,
        generation,
      ),
    );
  });

  app.post(
    "/groups/:group/members/:member/heartbeat",
    (c) =>
      c.json(members.heartbeat(c.req.param("group"), c.req.param("member"))),
  );

  app.delete("/groups/:group/members/:member", (c) => {
    members.leave(c.req.param("group"), c.req.param("member"));
    return c.body(null, 204);
  });

  if (upgradeWebSocket) {
    app.get(
      "/ws",
      createWebSocketRoute(broker, upgradeWebSocket, {
        log,
        readBytesMax,
        ...options.webSocket,
      }),
    );
  }
  return app;
}

/**
 * Bearer auth for every route but `/health`. Browsers cannot set headers on
 * a WebSocket, so `/ws` also takes the token as `?token=`.
 */
function authorize(token: string) {
  const checkHeader = bearerAuth({ token });
  return async (c: Context, next: () => Promise<void>) => {
    if (c.req.path === "/health") return await next();
    if (c.req.path === "/ws" && c.req.query("token") !== undefined) {
      if (!(await sameToken(c.req.query("token")!, token))) {
        throw new DakgharError("unauthorized", "Invalid token");
      }
      return await next();
    }
    return await checkHeader(c, next);
  };
}

async function sameToken(given: string, expected: string): Promise<boolean> {
  // Compare digests so that the time taken says nothing about the token.
  const digest = async (text: string) =>
    new Uint8Array(
      await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)),
    );
  const [a, b] = await Promise.all([digest(given), digest(expected)]);
  let difference = 0;
  for (let i = 0; i < a.length; i++) difference |= a[i] ^ b[i];
  return difference === 0;
}

async function readJson(c: Context): Promise<unknown> {
  return parseJson(await c.req.text());
}

/** A body that may be empty, as `{}`. */
async function readJsonOrEmpty(c: Context): Promise<unknown> {
  const text = await c.req.text();
  return text.trim() === "" ? {} : parseJson(text);
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new DakgharError(
      "malformed_body",
      `body: invalid JSON: ${(error as Error).message}`,
      { field: "body" },
    );
  }
}

function malformedField(field: string, message: string): DakgharError {
  return new DakgharError("malformed_body", `${field}: ${message}`, { field });
}

function bodyObject(body: unknown): Record<string, unknown> {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw malformedField("body", "expected an object");
  }
  return body as Record<string, unknown>;
}

function optionalWhole(
  value: unknown,
  field: string,
  min = 0,
): number | undefined {
  if (value === undefined) return undefined;
  if (
    typeof value !== "number" || !Number.isSafeInteger(value) || value < min
  ) {
    throw malformedField(field, `expected an integer ≥ ${min}`);
  }
  return value;
}

const memberIdPattern = /^[A-Za-z0-9._:-]{1,200}$/;

/** Checks a `POST /groups/:group/members` body. */
function parseMemberJoin(body: unknown): {
  topic: string;
  from: StartPosition;
  memberId?: string;
  sessionTimeoutMs?: number;
} {
  const { topic, from, memberId, sessionTimeoutMs } = bodyObject(body);
  if (typeof topic !== "string" || topic === "") {
    throw malformedField("topic", "expected a non-empty string");
  }
  if (from !== undefined && from !== "earliest" && from !== "latest") {
    throw malformedField("from", 'expected "earliest" or "latest"');
  }
  if (
    memberId !== undefined &&
    (typeof memberId !== "string" || !memberIdPattern.test(memberId))
  ) {
    throw malformedField(
      "memberId",
      "expected 1 to 200 of A-Z a-z 0-9 . _ : -",
    );
  }
  return {
    topic,
    from: from ?? "latest",
    memberId,
    sessionTimeoutMs: optionalWhole(sessionTimeoutMs, "sessionTimeoutMs"),
  };
}

/** Checks a member fetch body; every field may be left out. */
function parseMemberFetch(
  body: unknown,
): { maxRecords: number; maxWaitMs: number; encoding: ReadEncoding } {
  const { maxRecords, maxWaitMs, encoding } = bodyObject(body);
  if (
    encoding !== undefined && encoding !== "utf8" && encoding !== "base64"
  ) {
    throw malformedField("encoding", 'expected "utf8" or "base64"');
  }
  return {
    // As in the read route: a fetch of no records would still consume one.
    maxRecords: optionalWhole(maxRecords, "maxRecords", 1) ?? 100,
    maxWaitMs: optionalWhole(maxWaitMs, "maxWaitMs") ?? 0,
    encoding: encoding ?? "utf8",
  };
}

/** Checks a member commit body. */
function parseMemberCommit(
  body: unknown,
): { offsets: PartitionAssignment[]; generation?: number } {
  const { offsets, generation } = bodyObject(body);
  if (!Array.isArray(offsets)) {
    throw malformedField("offsets", "expected an array");
  }
  const parsed = offsets.map((entry, index) => {
    const { partition, offset } = bodyObject(entry);
    return {
      partition: optionalWhole(partition, `offsets[${index}].partition`) ??
        (() => {
          throw malformedField(`offsets[${index}].partition`, "required");
        })(),
      offset: optionalWhole(offset, `offsets[${index}].offset`) ??
        (() => {
          throw malformedField(`offsets[${index}].offset`, "required");
        })(),
    };
  });
  return {
    offsets: parsed,
    generation: optionalWhole(generation, "generation"),
  };
}

/** Checks a `POST /groups/:group/seek` body. */
function parseGroupSeek(
  body: unknown,
): { topic: string; partitions?: number[]; to: SeekTarget } {
  const malformed = (field: string, message: string) =>
    new DakgharError("malformed_body", `${field}: ${message}`, { field });
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw malformed("body", "expected an object");
  }
  const { topic, partitions, to } = body as Record<string, unknown>;
  if (typeof topic !== "string" || topic === "") {
    throw malformed("topic", "expected a non-empty string");
  }
  const isOffset = (n: unknown): n is number =>
    typeof n === "number" && Number.isSafeInteger(n) && n >= 0;
  if (
    partitions !== undefined &&
    (!Array.isArray(partitions) || partitions.length === 0 ||
      !partitions.every(isOffset))
  ) {
    throw malformed("partitions", "expected a non-empty array of integers ≥ 0");
  }
  let target: SeekTarget | undefined;
  if (to === "earliest" || to === "latest") target = to;
  else if (typeof to === "object" && to !== null) {
    const { offset, timestamp } = to as Record<string, unknown>;
    if (isOffset(offset)) target = { offset };
    else if (typeof timestamp === "number" && Number.isSafeInteger(timestamp)) {
      target = { timestamp };
    }
  }
  if (target === undefined) {
    throw malformed(
      "to",
      'expected "earliest", "latest", {"offset": n} or {"timestamp": ms}',
    );
  }
  return {
    topic,
    ...(partitions === undefined
      ? {}
      : { partitions: [...new Set(partitions as number[])] }),
    to: target,
  };
}

function parseCreateTopic(
  body: unknown,
): { name: string; config: Partial<TopicConfig> } {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new DakgharError("malformed_body", "body: expected an object", {
      field: "body",
    });
  }
  const { name, ...config } = body as Record<string, unknown>;
  if (typeof name !== "string") {
    throw new DakgharError("malformed_body", "name: expected a string", {
      field: "name",
    });
  }
  // The router checks each setting and answers invalid_config.
  return { name, config: config as Partial<TopicConfig> };
}

interface ReadQuery {
  offset: number | undefined;
  maxRecords: number;
  maxWaitMs: number;
  encoding: ReadEncoding;
}

function parseReadQuery(
  query: Record<string, string | string[]>,
  maxWaitMsMax: number,
): ReadQuery {
  const single = (name: string) => {
    const value = query[name];
    return Array.isArray(value) ? value[value.length - 1] : value;
  };
  const encoding = single("encoding") ?? "utf8";
  if (encoding !== "utf8" && encoding !== "base64") {
    throw new DakgharError(
      "bad_request",
      'encoding: expected "utf8" or "base64"',
      {
        field: "encoding",
      },
    );
  }
  return {
    offset: optionalInteger(single("offset"), "offset", 0),
    maxRecords: Math.min(
      optionalInteger(single("maxRecords"), "maxRecords", 1) ?? 100,
      10_000,
    ),
    maxWaitMs: Math.min(
      optionalInteger(single("maxWaitMs"), "maxWaitMs", 0) ?? 0,
      maxWaitMsMax,
    ),
    encoding,
  };
}

function optionalInteger(
  text: string | undefined,
  field: string,
  min: number,
): number | undefined {
  return text === undefined ? undefined : requiredInteger(text, field, min);
}

function requiredInteger(text: string, field: string, min: number): number {
  const value = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(value) || value < min) {
    throw new DakgharError(
      "bad_request",
      `${field}: expected an integer ≥ ${min}`,
      {
        field,
      },
    );
  }
  return value;
}
