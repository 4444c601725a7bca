/**
 * JSON ⇄ record batch, once, at the edge. Producers send records as JSON;
 * they become `BatchRecord`s here and travel as bytes from then on. Reads
 * come back as batches and become JSON here, for clients that asked for it.
 *
 * Producer record:
 *
 *   { "key"?: string | null, "value": <any JSON>, "headers"?: { name: string | null },
 *     "partition"?: int, "timestamp"?: int, "tags"?: string[],
 *     "delayMs"?: int, "deliverAt"?: int | ISO-8601 string,
 *     "keyEncoding"?: "utf8" | "base64", "valueEncoding"?: "utf8" | "base64" | "json" }
 *
 * Each tag is stored as a header named `dakghar.tag` (TAG_HEADER). A record
 * with `delayMs` or `deliverAt` (epoch ms or ISO-8601; it wins over
 * `delayMs`) is held back by the broker until due, at most 90 days ahead.
 *
 * Without a value encoding a string value is stored as its UTF-8 bytes, null
 * as a null value, anything else as its JSON text. "json" stores the JSON text
 * of any value, strings included; "utf8" and "base64" need a string.
 *
 * Consumer record:
 *
 *   { "offset": 7, "timestamp": 1733300000000, "key": "k" | null, "value": "v" | null,
 *     "headers": { name: string | null }, "tags"?: string[] }
 *
 * Tag headers are listed in `tags` (present only when the record has any)
 * and left out of `headers`. A record carries `"keyEncoding": "base64"`,
 * `"valueEncoding": "base64"` or `"headersEncoding": "base64"` for each
 * field sent as base64 — because the
 * client asked, or because its bytes are not valid UTF-8.
 */
import { Buffer } from "node:buffer";
import { QUEUE_LIMITS, type QueueDelivery, TAG_HEADER } from "../broker.ts";
import { DakgharError } from "../errors.ts";
import {
  type BatchRecord,
  decodeBatches,
  type DecodedRecord,
} from "../log/record_batch.ts";

/** How a producer's key is written in JSON. */
export type KeyEncoding = "utf8" | "base64";
/** How a producer's value is written in JSON. */
export type ValueEncoding = "utf8" | "base64" | "json";
/** How a consumer wants keys and values written. */
export type ReadEncoding = "utf8" | "base64";

/**
 * A producer's record after parsing: batch fields (tags already turned
 * into headers) plus an optional partition and delay, as
 * `ProducerRecord` takes them.
 */
export interface ParsedRecord extends BatchRecord {
  partition?: number;
  /** Broker time the record becomes due, ms since epoch; wins over `delayMs`. */
  deliverAt?: number;
  /** Hold the record back this long from its arrival at the broker. */
  delayMs?: number;
}

/** Longest a record may be held back: 90 days. */
export const delayMsMax = QUEUE_LIMITS.delayMsMax;

/** Request-level defaults for records that name no encoding themselves. */
export interface EncodingDefaults {
  keyEncoding?: KeyEncoding;
  valueEncoding?: ValueEncoding;
}

/** A record as a JSON consumer receives it. */
export interface ConsumerJsonRecord {
  offset: number;
  timestamp: number;
  key: string | null;
  value: string | null;
  headers: Record<string, string | null>;
  keyEncoding?: "base64";
  valueEncoding?: "base64";
  headersEncoding?: "base64";
  /** Values of the record's `dakghar.tag` headers, in order; absent when none. */
  tags?: string[];
}

const recordFields = new Set([
  "key",
  "value",
  "headers",
  "partition",
  "timestamp",
  "keyEncoding",
  "valueEncoding",
  "tags",
  "delayMs",
  "deliverAt",
]);
const bodyFields = new Set(["records", "keyEncoding", "valueEncoding"]);
const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });
const base64Pattern =
  /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function malformed(field: string, message: string): DakgharError {
  return new DakgharError("malformed_body", `${field}: ${message}`, { field });
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Parses a producer's JSON body: one record object, or
 * `{ records: [...], keyEncoding?, valueEncoding? }`.
 *
 * @param body the parsed JSON body
 * @param defaults encodings from the query string, overridden by the body's and each record's
 * @param now create time for records that carry no timestamp
 * @returns the records, in order
 * @throws {DakgharError} `malformed_body` naming the first bad field, e.g. `records[3].value`
 */
export function parseProducerBody(
  body: unknown,
  defaults: EncodingDefaults,
  now: number,
): ParsedRecord[] {
  if (!isObject(body)) {
    throw malformed("body", "expected a record object or { records: [...] }");
  }
  if (!("records" in body)) {
    return [parseProducerRecord(body, "", defaults, now)];
  }

  for (const name of Object.keys(body)) {
    if (!bodyFields.has(name)) throw malformed(name, "unknown field");
  }
  const bodyDefaults: EncodingDefaults = {
    keyEncoding: parseKeyEncoding(body.keyEncoding, "keyEncoding") ??
      defaults.keyEncoding,
    valueEncoding: parseValueEncoding(body.valueEncoding, "valueEncoding") ??
      defaults.valueEncoding,
  };
  const records = body.records;
  if (!Array.isArray(records)) throw malformed("records", "expected an array");
  if (records.length === 0) {
    throw malformed("records", "expected at least one record");
  }
  return records.map((record, index) =>
    parseProducerRecord(record, `records[${index}].`, bodyDefaults, now)
  );
}

/**
 * Parses one producer record.
 *
 * @param record the JSON value
 * @param prefix prepended to field names in errors, e.g. `records[3].`
 * @param defaults encodings used when the record names none
 * @param now create time when the record carries no timestamp
 * @returns the record
 * @throws {DakgharError} `malformed_body` naming the bad field
 */
export function parseProducerRecord(
  record: unknown,
  prefix: string,
  defaults: EncodingDefaults,
  now: number,
): ParsedRecord {
  const at = (field: string) => `${prefix}${field}`;
  if (!isObject(record)) {
    throw malformed(
      prefix ? prefix.slice(0, -1) : "body",
      "expected an object",
    );
  }
  for (const name of Object.keys(record)) {
    if (!recordFields.has(name)) throw malformed(at(name), "unknown field");
  }
  if (!("value" in record)) throw malformed(at("value"), "missing");

  const keyEncoding = parseKeyEncoding(record.keyEncoding, at("keyEncoding")) ??
    defaults.keyEncoding ?? "utf8";
  const valueEncoding = parseValueEncoding(
    record.valueEncoding,
    at("valueEncoding"),
  ) ?? defaults.valueEncoding;

  const parsed: ParsedRecord = {
    key: parseKey(record.key, keyEncoding, at("key")),
    value: parseValue(record.value, valueEncoding, at("value")),
    headers: [
      ...parseHeaders(record.headers, at("headers")),
      ...parseTags(record.tags, at("tags")),
    ],
    timestamp: record.timestamp === undefined
      ? now
      : parseInteger(record.timestamp, at("timestamp"), 0),
  };
  if (record.partition !== undefined) {
    parsed.partition = parseInteger(record.partition, at("partition"), 0);
  }
  if (record.delayMs !== undefined) {
    parsed.delayMs = parseInteger(record.delayMs, at("delayMs"), 0);
    if (parsed.delayMs > delayMsMax) {
      throw malformed(at("delayMs"), `at most ${delayMsMax} (90 days)`);
    }
  }
  if (record.deliverAt !== undefined) {
    parsed.deliverAt = parseDeliverAt(record.deliverAt, at("deliverAt"), now);
  }
  return parsed;
}

/** Tags as `dakghar.tag` headers. */
function parseTags(
  tags: unknown,
  field: string,
): [string, Uint8Array][] {
  if (tags === undefined) return [];
  if (
    !Array.isArray(tags) ||
    !tags.every((tag) => typeof tag === "string" && tag !== "")
  ) {
    throw malformed(field, "expected an array of non-empty strings");
  }
  return tags.map((tag) => [TAG_HEADER, encoder.encode(tag)]);
}

// A zone is required: without one, Date.parse reads local time.
const isoDatePattern =
  /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:\d{2})$/;

/**
 * A due time as epoch ms: an integer, or an ISO-8601 date-time. A time in
 * the past is due at once; one more than 90 days past `now` is refused.
 */
function parseDeliverAt(value: unknown, field: string, now: number): number {
  let at: number;
  if (typeof value === "number") {
    at = parseInteger(value, field, 0);
  } else if (typeof value === "string" && isCalendarDateTime(value)) {
    at = Date.parse(value);
  } else {
    throw malformed(
      field,
      "expected epoch ms or an ISO-8601 date-time with a zone",
    );
  }
  if (!Number.isSafeInteger(at)) {
    throw malformed(field, "expected epoch ms or an ISO-8601 date-time");
  }
  if (at > now + delayMsMax) {
    throw malformed(field, "at most 90 days ahead");
  }
  return at;
}

/**
 * True for an ISO-8601 date-time with a zone whose date exists and whose
 * time is in range: Date.parse rolls 2027-02-29 over to March 1st instead
 * of refusing it.
 */
function isCalendarDateTime(text: string): boolean {
  if (!isoDatePattern.test(text)) return false;
  const [year, month, day, hour, minute, second] = text.split(/[-T:.Z+]/, 6)
    .map(Number);
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate();
  return month >= 1 && month <= 12 && day >= 1 && day <= daysInMonth &&
    hour <= 23 && minute <= 59 && (Number.isNaN(second) || second <= 59);
}

/**
 * Parses an encoding name for keys, as found in a body or a query string.
 *
 * @returns the encoding, or undefined when `value` is undefined
 * @throws {DakgharError} `malformed_body` for anything but "utf8" or "base64"
 */
export function parseKeyEncoding(
  value: unknown,
  field: string,
): KeyEncoding | undefined {
  if (value === undefined) return undefined;
  if (value === "utf8" || value === "base64") return value;
  throw malformed(field, 'expected "utf8" or "base64"');
}

/**
 * Parses an encoding name for values, as found in a body or a query string.
 *
 * @returns the encoding, or undefined when `value` is undefined
 * @throws {DakgharError} `malformed_body` for anything but "utf8", "base64" or "json"
 */
export function parseValueEncoding(
  value: unknown,
  field: string,
): ValueEncoding | undefined {
  if (value === undefined) return undefined;
  if (value === "utf8" || value === "base64" || value === "json") return value;
  throw malformed(field, 'expected "utf8", "base64" or "json"');
}

function parseKey(
  key: unknown,
  encoding: KeyEncoding,
  field: string,
): Uint8Array | null {
  if (key === undefined || key === null) return null;
  if (typeof key !== "string") {
    throw malformed(field, "expected a string or null");
  }
  return encoding === "base64" ? decodeBase64(key, field) : encoder.encode(key);
}

function parseValue(
  value: unknown,
  encoding: ValueEncoding | undefined,
  field: string,
): Uint8Array | null {
  if (encoding === "json") return encoder.encode(JSON.stringify(value));
  if (value === null) return null;
  if (typeof value === "string") {
    return encoding === "base64"
      ? decodeBase64(value, field)
      : encoder.encode(value);
  }
  if (encoding !== undefined) {
    throw malformed(field, `expected a string for valueEncoding "${encoding}"`);
  }
  return encoder.encode(JSON.stringify(value));
}

function parseHeaders(
  headers: unknown,
  field: string,
): [string, Uint8Array | null][] {
  if (headers === undefined) return [];
  if (!isObject(headers)) {
    throw malformed(field, "expected an object of strings");
  }
  const parsed: [string, Uint8Array | null][] = [];
  for (const [name, value] of Object.entries(headers)) {
    if (encoder.encode(name).length > 0xffff) {
      throw malformed(
        `${field}.${name.slice(0, 32)}`,
        "name longer than 65535 bytes",
      );
    }
    if (value !== null && typeof value !== "string") {
      throw malformed(`${field}.${name}`, "expected a string or null");
    }
    parsed.push([name, value === null ? null : encoder.encode(value)]);
  }
  return parsed;
}

function parseInteger(value: unknown, field: string, min: number): number {
  if (
    typeof value !== "number" || !Number.isSafeInteger(value) || value < min
  ) {
    throw malformed(field, `expected an integer ≥ ${min}`);
  }
  return value;
}

function decodeBase64(text: string, field: string): Uint8Array {
  if (!base64Pattern.test(text)) throw malformed(field, "invalid base64");
  return new Uint8Array(Buffer.from(text, "base64"));
}

function encodeBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    .toString("base64");
}

/** UTF-8 text of `bytes`, or undefined when they are not valid UTF-8. */
function decodeUtf8(bytes: Uint8Array): string | undefined {
  try {
    return strictDecoder.decode(bytes);
  } catch {
    return undefined;
  }
}

/**
 * Turns decoded records into the JSON a consumer receives.
 *
 * @param records records from `decodeBatches`
 * @param encoding "utf8" writes keys and values as text where they are valid UTF-8; "base64" always base64
 * @returns one JSON object per record
 */
export function toConsumerRecords(
  records: DecodedRecord[],
  encoding: ReadEncoding = "utf8",
): ConsumerJsonRecord[] {
  return records.map((record) => toConsumerRecord(record, encoding));
}

function toConsumerRecord(
  record: DecodedRecord,
  encoding: ReadEncoding,
): ConsumerJsonRecord {
  const json: ConsumerJsonRecord = {
    offset: record.offset,
    timestamp: record.timestamp,
    key: null,
    value: null,
    headers: {},
  };

  // Tags that are text go to `tags`; a tag header that is not stays a header.
  const tags: string[] = [];
  const headers = !record.headers.some(([name]) => name === TAG_HEADER)
    ? record.headers
    : record.headers.filter(([name, bytes]) => {
      if (name !== TAG_HEADER || bytes === null) return true;
      const tag = decodeUtf8(bytes);
      if (tag === undefined) return true;
      tags.push(tag);
      return false;
    });

  const key = encodeField(record.key, encoding);
  json.key = key.text;
  if (key.base64) json.keyEncoding = "base64";

  const value = encodeField(record.value, encoding);
  json.value = value.text;
  if (value.base64) json.valueEncoding = "base64";

  // Header values are text by convention; all go base64 if any is not, or
  // when the client asked for base64.
  const texts = headers.map(([, bytes]) =>
    bytes === null || encoding === "base64" ? null : decodeUtf8(bytes)
  );
  const headersBase64 = headers.length > 0 &&
    (encoding === "base64" || texts.some((text) => text === undefined));
  headers.forEach(([name, bytes], index) => {
    json.headers[name] = bytes === null
      ? null
      : headersBase64
      ? encodeBase64(bytes)
      : texts[index]!;
  });
  if (headersBase64) json.headersEncoding = "base64";
  if (tags.length > 0) json.tags = tags;
  return json;
}

function encodeField(
  bytes: Uint8Array | null,
  encoding: ReadEncoding,
): { text: string | null; base64: boolean } {
  if (bytes === null) return { text: null, base64: false };
  if (encoding === "utf8") {
    const text = decodeUtf8(bytes);
    if (text !== undefined) return { text, base64: false };
  }
  return { text: encodeBase64(bytes), base64: true };
}

/** A queue delivery's record as a JSON consumer receives it. */
export interface DeliveryJsonRecord extends ConsumerJsonRecord {
  /** Delivery count: 1 the first time, more after redeliveries. */
  attempt: number;
}

/**
 * Turns a queue delivery into JSON records, each with its attempt.
 *
 * @param delivery what the broker handed out
 * @param encoding as for {@linkcode toConsumerRecords}
 * @returns one JSON object per record, in offset order
 */
export function toDeliveryRecords(
  delivery: QueueDelivery,
  encoding: ReadEncoding = "utf8",
): DeliveryJsonRecord[] {
  const records = toConsumerRecords(decodeBatches(delivery.bytes), encoding);
  const { redelivered } = delivery;
  const attempts = new Map<number, number>();
  for (let i = 0; i + 1 < redelivered.length; i += 2) {
    attempts.set(redelivered[i], redelivered[i + 1]);
  }
  // The records are fresh objects: the attempt is set on them in place.
  for (const record of records as DeliveryJsonRecord[]) {
    record.attempt = attempts.get(record.offset) ?? 1;
  }
  return records as DeliveryJsonRecord[];
}
