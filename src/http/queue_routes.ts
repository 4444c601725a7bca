/**
 * HTTP routes for queue and key_shared groups, dead-letter redrive and
 * delayed records: create and delete groups, long-poll receive, settle by
 * receipt. Documented in docs/protocol.md ("Queue groups over HTTP").
 *
 * An HTTP receiver is anonymous: what `receive` hands out is in flight for
 * the group until it is settled by receipt or its ack timeout passes, so a
 * consumer that dies simply lets its records time out.
 */
import { Hono } from "hono";
import type { Context, MiddlewareHandler } from "hono";
import { validator } from "hono/validator";
import type {
  Broker,
  GroupCreateRequest,
  GroupMode,
  QueueSettings,
  RecordFilter,
  RedriveOptions,
  SettleAction,
  Settlement,
  SettleResult,
} from "../broker.ts";
import { DakgharError } from "../errors.ts";
import {
  delayMsMax,
  type DeliveryJsonRecord,
  type ReadEncoding,
  toDeliveryRecords,
} from "./json_records.ts";
import { formatReceipt, parseReceipt } from "./receipt.ts";
import { parseRecordFilter } from "./record_filter.ts";
import { QUEUE_LIMITS } from "../broker.ts";

/** Options for {@linkcode createQueueRoutes}. */
export interface QueueRouteOptions {
  /** Body size limit shared with the other routes. */
  limitBody: MiddlewareHandler;
  /** Longest long-poll a receive may ask for. */
  maxWaitMsMax: number;
  /** Soft limit on the bytes one receive returns. */
  receiveBytesMax: number;
  /** Aborted when the broker starts to stop: waiting receives answer 503. */
  shutdown?: AbortSignal;
}

/** Most records one receive returns. */
export const receiveRecordsMax = QUEUE_LIMITS.receiveRecordsMax;
/** Most receipts one settle request takes. */
export const receiptsMax = 10_000;
/** Longest `extend` a member may ask for: 12 hours. */
export const extendMsMax = QUEUE_LIMITS.extendMsMax;
/** Longest reason text kept with a nack or reject. */
export const reasonLengthMax = QUEUE_LIMITS.reasonLengthMax;

/** A received record: a JSON consumer record plus where it came from. */
export type ReceivedRecord = DeliveryJsonRecord & {
  topic: string;
  partition: number;
  /** Names the delivery in ack, nack, extend and reject. */
  receipt: string;
};

/** What a settle route answers when at least one receipt was taken. */
export interface SettleAnswer {
  settled: number;
  refused: { receipt: string; code: string; message: string }[];
}

const groupModes: GroupMode[] = ["stream", "queue", "key_shared"];
const queueSettingFields: (keyof QueueSettings)[] = [
  "ackTimeoutMs",
  "maxDeliveries",
  "backoffInitialMs",
  "backoffMaxMs",
  "deadLetterTopic",
  "maxUnsettled",
];

/**
 * Creates the queue routes, to be mounted at `/` of the app.
 *
 * @param broker what the routes call
 * @param options body limit, long-poll bound and the shutdown signal
 * @returns a Hono app holding the routes
 */
export function createQueueRoutes(
  broker: Broker,
  options: QueueRouteOptions,
): Hono {
  const routes = new Hono();
  const { limitBody } = options;

  routes.put(
    "/groups/:group",
    limitBody,
    jsonBody(parseGroupCreate),
    async (c) => {
      const name = c.req.param("group");
      const settings = await broker.createGroup(name, c.req.valid("json"));
      return c.json({ name, ...settings });
    },
  );

  routes.delete("/groups/:group", async (c) => {
    await broker.deleteGroup(c.req.param("group"));
    return c.body(null, 204);
  });

  routes.get("/groups/:group", async (c) => {
    const name = c.req.param("group");
    return c.json(await broker.describeGroup(name));
  });

  routes.post(
    "/groups/:group/receive",
    limitBody,
    emptyBodyAsObject,
    jsonBody((body) => parseReceive(body, options.maxWaitMsMax)),
    async (c) => {
      const group = c.req.param("group");
      const { maxRecords, maxWaitMs, encoding } = c.req.valid("json");
      return c.json({
        records: await receive(broker, group, {
          maxRecords,
          maxWaitMs,
          encoding,
          maxBytes: options.receiveBytesMax,
          // As for reads: only a long-poll listens for the client leaving.
          client: maxWaitMs > 0 ? c.req.raw.signal : undefined,
          shutdown: options.shutdown,
        }),
      });
    },
  );

  for (const action of ["ack", "nack", "extend", "reject"] as const) {
    routes.post(
      `/groups/:group/${action}`,
      limitBody,
      emptyBodyAsObject,
      jsonBody((body) => parseSettle(body, action)),
      async (c) => {
        const settlements = c.req.valid("json");
        const result = await broker.settle(c.req.param("group"), settlements);
        return c.json(settleAnswer(result));
      },
    );
  }

  routes.post(
    "/groups/:group/dead-letters/redrive",
    limitBody,
    emptyBodyAsObject,
    jsonBody(parseRedrive),
    async (c) =>
      c.json(await broker.redrive(c.req.param("group"), c.req.valid("json"))),
  );

  routes.delete("/topics/:topic/delayed/:delayId", async (c) => {
    const topic = c.req.param("topic");
    const delayId = c.req.param("delayId");
    if (!(await broker.cancelDelayed(topic, delayId))) {
      throw new DakgharError(
        "not_found",
        `No delayed record ${delayId} pending in ${topic} (it fired, was cancelled or never existed)`,
        { topic, delayId },
      );
    }
    return c.body(null, 204);
  });

  return routes;
}

interface ReceiveRequest {
  maxRecords: number;
  maxWaitMs: number;
  maxBytes: number;
  encoding: ReadEncoding;
  /** The HTTP request's signal: the client went away. */
  client?: AbortSignal;
  shutdown?: AbortSignal;
}

/** Long-polls the group and turns what it hands out into JSON records. */
async function receive(
  broker: Broker,
  group: string,
  request: ReceiveRequest,
): Promise<ReceivedRecord[]> {
  const { shutdown, client } = request;
  if (shutdown?.aborted) throw shuttingDown();
  const cancel = new AbortController();
  const stop = () => cancel.abort();
  shutdown?.addEventListener("abort", stop, { once: true });
  client?.addEventListener("abort", stop, { once: true });
  try {
    const deliveries = await broker.receive(group, {
      maxRecords: request.maxRecords,
      maxBytes: request.maxBytes,
      maxWaitMs: request.maxWaitMs,
      signal: request.maxWaitMs > 0 ? cancel.signal : undefined,
    });
    // Records handed out while stopping still go to the client, which can
    // settle them; only an empty answer becomes the shutdown error.
    if (deliveries.length === 0 && shutdown?.aborted) throw shuttingDown();
    return deliveries.flatMap((delivery) =>
      toDeliveryRecords(delivery, request.encoding).map((record) => ({
        topic: delivery.topic,
        partition: delivery.partition,
        ...record,
        receipt: formatReceipt({
          partition: delivery.partition,
          offset: record.offset,
          attempt: record.attempt,
        }),
      }))
    );
  } finally {
    shutdown?.removeEventListener("abort", stop);
    client?.removeEventListener("abort", stop);
  }
}

function shuttingDown(): DakgharError {
  return new DakgharError("shutting_down", "The broker is shutting down");
}

/**
 * The answer to a settle request: the count and the refused receipts, or,
 * when nothing was taken, an error carrying the refusals.
 */
function settleAnswer(result: SettleResult): SettleAnswer {
  const refused = result.refused.map((r) => ({
    receipt: formatReceipt(r),
    code: r.code,
    message: r.code === "stale_receipt"
      ? `Receipt ${
        formatReceipt(r)
      } is stale: the record was redelivered or already settled`
      : `Partition ${r.partition} not found`,
  }));
  if (result.settled === 0 && refused.length > 0) {
    const stale = refused.some((r) => r.code === "stale_receipt");
    throw new DakgharError(
      stale ? "stale_receipt" : "unknown_partition",
      refused.length === 1
        ? refused[0].message
        : `None of the ${refused.length} receipts was taken`,
      { refused },
    );
  }
  return { settled: result.settled, refused };
}

/**
 * Makes an empty body read as `{}` even when it claims to be JSON (a
 * `fetch` with a JSON content type and no body): Hono's JSON validator
 * parses the cached text, so an empty text is cached as "{}" first.
 */
const emptyBodyAsObject: MiddlewareHandler = async (c, next) => {
  if ((await c.req.text()).trim() === "") {
    // Hono keeps the promise of each body form it read in bodyCache.
    (c.req.bodyCache as Record<string, unknown>).text = Promise.resolve("{}");
  }
  await next();
};

/**
 * Hono's JSON validator, made to read a body sent without a JSON content
 * type too (curl's `-d` sends form encoding), and an empty body as `{}`.
 */
function jsonBody<T>(parse: (body: unknown) => T) {
  return validator("json", async (value, c: Context) => {
    const mediaType = (c.req.header("Content-Type") ?? "").split(";")[0]
      .trim().toLowerCase();
    if (/^application\/([\w.-]+\+)?json$/.test(mediaType)) return parse(value);
    const text = await c.req.text();
    if (text.trim() === "") return parse({});
    try {
      return parse(JSON.parse(text));
    } catch (error) {
      if (error instanceof DakgharError) throw error;
      throw malformed("body", `invalid JSON: ${(error as Error).message}`);
    }
  });
}

function malformed(field: string, message: string): DakgharError {
  return new DakgharError("malformed_body", `${field}: ${message}`, { field });
}

function bodyObject(body: unknown): Record<string, unknown> {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw malformed("body", "expected an object");
  }
  return body as Record<string, unknown>;
}

function checkFields(body: Record<string, unknown>, known: string[]): void {
  for (const name of Object.keys(body)) {
    if (!known.includes(name)) throw malformed(name, "unknown field");
  }
}

function integerIn(
  value: unknown,
  field: string,
  min: number,
  max: number,
): number {
  if (
    typeof value !== "number" || !Number.isSafeInteger(value) ||
    value < min || value > max
  ) {
    throw malformed(field, `expected an integer from ${min} to ${max}`);
  }
  return value;
}

function filterField(value: unknown, field: string): RecordFilter | undefined {
  const filter = parseRecordFilter(value);
  if (typeof filter === "string") throw malformed(field, filter);
  return filter ?? undefined;
}

function reasonField(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "string" || value.length > reasonLengthMax) {
    throw malformed(
      "reason",
      `expected a string of at most ${reasonLengthMax}`,
    );
  }
  return value;
}

/** Checks a `PUT /groups/:group` body. */
export function parseGroupCreate(body: unknown): GroupCreateRequest {
  const fields = bodyObject(body);
  checkFields(fields, [
    "topic",
    "mode",
    "from",
    "filter",
    ...queueSettingFields,
  ]);
  const { topic, mode, from, filter } = fields;
  if (typeof topic !== "string" || topic === "") {
    throw malformed("topic", "expected a non-empty string");
  }
  if (!groupModes.includes(mode as GroupMode)) {
    throw malformed("mode", 'expected "stream", "queue" or "key_shared"');
  }
  if (from !== undefined && from !== "earliest" && from !== "latest") {
    throw malformed("from", 'expected "earliest" or "latest"');
  }
  const request: GroupCreateRequest = { topic, mode: mode as GroupMode };
  if (from !== undefined) request.from = from;
  const parsedFilter = filterField(filter, "filter");
  if (parsedFilter !== undefined) request.filter = parsedFilter;

  const queue: Partial<QueueSettings> = {};
  for (const name of queueSettingFields) {
    const value = fields[name];
    if (value === undefined) continue;
    if (name === "deadLetterTopic") {
      if (typeof value !== "string" || value === "") {
        throw malformed(name, "expected a non-empty string");
      }
      queue.deadLetterTopic = value;
    } else {
      // The broker checks each bound and answers bad_request.
      queue[name] = integerIn(
        value,
        name,
        name === "maxDeliveries" ? 1 : 0,
        Number.MAX_SAFE_INTEGER,
      );
    }
  }
  if (Object.keys(queue).length > 0) {
    if (mode === "stream") {
      throw malformed(
        Object.keys(queue)[0],
        "queue settings are for queue and key_shared groups",
      );
    }
    request.queue = queue;
  }
  return request;
}

/** Checks a receive body; every field may be left out. */
export function parseReceive(
  body: unknown,
  maxWaitMsMax: number,
): { maxRecords: number; maxWaitMs: number; encoding: ReadEncoding } {
  const fields = bodyObject(body);
  checkFields(fields, ["maxRecords", "maxWaitMs", "encoding"]);
  const { maxRecords, maxWaitMs, encoding } = fields;
  if (
    encoding !== undefined && encoding !== "utf8" && encoding !== "base64"
  ) {
    throw malformed("encoding", 'expected "utf8" or "base64"');
  }
  return {
    maxRecords: maxRecords === undefined
      ? 10
      : integerIn(maxRecords, "maxRecords", 1, receiveRecordsMax),
    maxWaitMs: maxWaitMs === undefined
      ? 0
      : Math.min(integerIn(maxWaitMs, "maxWaitMs", 0, 30_000), maxWaitMsMax),
    encoding: encoding ?? "utf8",
  };
}

/** Checks an ack, nack, extend or reject body. */
export function parseSettle(
  body: unknown,
  action: SettleAction,
): Settlement[] {
  const fields = bodyObject(body);
  const extra = action === "nack"
    ? ["delayMs", "reason"]
    : action === "extend"
    ? ["ms"]
    : action === "reject"
    ? ["reason"]
    : [];
  checkFields(fields, ["receipts", ...extra]);
  const { receipts } = fields;
  if (
    !Array.isArray(receipts) || receipts.length === 0 ||
    receipts.length > receiptsMax
  ) {
    throw malformed(
      "receipts",
      `expected an array of 1 to ${receiptsMax} receipts`,
    );
  }

  const common: Partial<Settlement> = {};
  if (action === "nack" && fields.delayMs !== undefined) {
    common.delayMs = integerIn(fields.delayMs, "delayMs", 0, delayMsMax);
  }
  if (action === "extend") {
    common.delayMs = integerIn(fields.ms, "ms", 1, extendMsMax);
  }
  const reason = reasonField(fields.reason);
  if (reason !== undefined) common.reason = reason;

  return receipts.map((receipt, index) => {
    const target = parseReceipt(receipt);
    if (target === undefined) {
      throw malformed(
        "receipts",
        `receipts[${index}] is not a receipt: ${
          JSON.stringify(receipt)?.slice(0, 64)
        }`,
      );
    }
    return { ...target, action, ...common };
  });
}

/** Checks a redrive body; every field may be left out. */
export function parseRedrive(body: unknown): RedriveOptions {
  const fields = bodyObject(body);
  checkFields(fields, ["toTopic", "filter", "fromStart"]);
  const { toTopic, filter, fromStart } = fields;
  const options: RedriveOptions = {};
  if (toTopic !== undefined) {
    if (typeof toTopic !== "string" || toTopic === "") {
      throw malformed("toTopic", "expected a non-empty string");
    }
    options.toTopic = toTopic;
  }
  const parsedFilter = filterField(filter, "filter");
  if (parsedFilter !== undefined) options.filter = parsedFilter;
  if (fromStart !== undefined) {
    if (typeof fromStart !== "boolean") {
      throw malformed("fromStart", "expected true or false");
    }
    options.fromStart = fromStart;
  }
  return options;
}
