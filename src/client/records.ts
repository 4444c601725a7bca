/**
 * Records as the client's users see them: what a producer passes in, where
 * it landed, and what a consumer gets back. Conversions to the broker's JSON
 * records (HTTP and JSON WebSocket publishes) and to record batches (msgpack
 * WebSocket publishes) live here, as does decoding batches into records.
 */
import {
  type BatchRecord,
  decodeBatches,
  type DecodedRecord,
} from "../log/record_batch.ts";

/**
 * The header carrying one tag (`TAG_HEADER` in src/broker.ts). Spelled out
 * here because the browser page serves only the client's and the log's
 * modules, not broker.js.
 */
export const TAG_HEADER = "dakghar.tag";

/**
 * A value to publish: a string is stored as its UTF-8 bytes, a Uint8Array as
 * is, `null` as a tombstone, anything else as its JSON text.
 */
export type RecordValue = string | Uint8Array | null | unknown;

/** One record to publish. */
export interface OutgoingRecord {
  value: RecordValue;
  /** Picks the partition by hash (Kafka's murmur2) unless `partition` is set. */
  key?: string | Uint8Array | null;
  headers?: Record<string, string | null>;
  /** Explicit partition; wins over the key. */
  partition?: number;
  /** Producer's create time, ms since epoch; the broker's clock when absent. */
  timestamp?: number;
  /** Tags a filter can select on; each is stored as a `dakghar.tag` header. */
  tags?: string[];
  /**
   * Hold the record back this long after it reaches the broker; it gets its
   * offset, and becomes visible to every group, when due.
   */
  delayMs?: number;
  /**
   * Hold the record back until this broker time (ms since epoch, an ISO
   * 8601 string or a Date); wins over `delayMs`. The broker's clock decides:
   * with a skewed clock, prefer `delayMs`.
   */
  deliverAt?: number | string | Date;
}

/**
 * Where a published record landed. A delayed record has no offset yet:
 * `offset` is -1 and `delayId` cancels it before `dueAt`.
 */
export interface RecordPosition {
  partition: number;
  offset: number;
  /** Set for a delayed record: pass it to `cancelDelayed`. */
  delayId?: string;
  /** Broker time the delayed record becomes due, ms since epoch. */
  dueAt?: number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A record read from a partition, with its bytes and helpers to read them. */
export class ConsumedRecord {
  /** The key as UTF-8 text (invalid sequences replaced), or null. */
  readonly key: string | null;
  /**
   * Header values as UTF-8 text, or null; tag headers (`dakghar.tag`) are
   * listed in `tags` instead.
   */
  readonly headers: Record<string, string | null>;
  /** The record's tags, in order; empty when it has none. */
  readonly tags: string[];

  constructor(
    readonly topic: string,
    readonly partition: number,
    readonly offset: number,
    /** Producer's create time, ms since epoch. */
    readonly timestamp: number,
    /** The key's bytes, or null. */
    readonly keyBytes: Uint8Array | null,
    /** The value's bytes, or null for a tombstone. */
    readonly value: Uint8Array | null,
    /** Header names and raw values, in order. */
    readonly headerBytes: [string, Uint8Array | null][],
  ) {
    this.key = keyBytes === null ? null : decoder.decode(keyBytes);
    this.headers = {};
    this.tags = [];
    for (const [name, bytes] of headerBytes) {
      const text = bytes === null ? null : decoder.decode(bytes);
      if (name === TAG_HEADER) {
        if (text !== null) this.tags.push(text);
      } else this.headers[name] = text;
    }
  }

  /** The value as UTF-8 text, or null for a tombstone. */
  text(): string | null {
    return this.value === null ? null : decoder.decode(this.value);
  }

  /**
   * The value parsed as JSON, or null for a tombstone.
   * @throws {SyntaxError} when the value is not JSON
   */
  json<T = unknown>(): T {
    const text = this.text();
    return (text === null ? null : JSON.parse(text)) as T;
  }
}

/** Decodes raw record batches of one partition into consumed records. */
export function recordsFromBatches(
  topic: string,
  partition: number,
  bytes: Uint8Array,
): ConsumedRecord[] {
  return decodeBatches(bytes).map((record: DecodedRecord) =>
    new ConsumedRecord(
      topic,
      partition,
      record.offset,
      record.timestamp,
      record.key,
      record.value,
      record.headers,
    )
  );
}

/** The broker's JSON producer record for `record` (docs/protocol.md). */
export function toJsonRecord(record: OutgoingRecord): Record<string, unknown> {
  if (record === null || typeof record !== "object" || !("value" in record)) {
    throw new TypeError("Cannot publish a record without a value");
  }
  const json: Record<string, unknown> = {};
  const { key, value } = record;
  if (key instanceof Uint8Array) {
    json.key = toBase64(key);
    json.keyEncoding = "base64";
  } else if (key !== undefined) json.key = key;

  if (value instanceof Uint8Array) {
    json.value = toBase64(value);
    json.valueEncoding = "base64";
  } else if (value === undefined) {
    throw new TypeError("Cannot publish a record whose value is undefined");
  } else json.value = value;

  if (record.headers !== undefined) json.headers = record.headers;
  if (record.partition !== undefined) json.partition = record.partition;
  if (record.timestamp !== undefined) json.timestamp = record.timestamp;
  if (record.tags !== undefined) json.tags = record.tags;
  if (record.deliverAt !== undefined) {
    json.deliverAt = record.deliverAt instanceof Date
      ? record.deliverAt.getTime()
      : record.deliverAt;
  } else if (record.delayMs !== undefined) json.delayMs = record.delayMs;
  return json;
}

/** Whether the broker holds the record back rather than appending it now. */
export function isDelayed(record: OutgoingRecord): boolean {
  return record.delayMs !== undefined || record.deliverAt !== undefined;
}

/** The record as it goes into a record batch. */
export function toBatchRecord(
  record: OutgoingRecord,
  now: number,
): BatchRecord {
  if (record === null || typeof record !== "object" || !("value" in record)) {
    throw new TypeError("Cannot publish a record without a value");
  }
  const headers = Object.entries(record.headers ?? {}).map((
    [name, value],
  ): [string, Uint8Array | null] => [
    name,
    value === null ? null : encoder.encode(value),
  ]);
  for (const tag of record.tags ?? []) {
    headers.push([TAG_HEADER, encoder.encode(tag)]);
  }
  return {
    key: toBytes(record.key ?? null),
    value: valueBytes(record.value),
    headers,
    timestamp: record.timestamp ?? now,
  };
}

function valueBytes(value: RecordValue): Uint8Array | null {
  if (value === undefined) {
    throw new TypeError("Cannot publish a record whose value is undefined");
  }
  if (value === null || value instanceof Uint8Array) return value;
  if (typeof value === "string") return encoder.encode(value);
  return encoder.encode(JSON.stringify(value));
}

function toBytes(key: string | Uint8Array | null): Uint8Array | null {
  return typeof key === "string" ? encoder.encode(key) : key;
}

/** Base64 without Node's Buffer, in chunks to stay under argument limits. */
export function toBase64(bytes: Uint8Array): string {
  let binary = "";
  for (let start = 0; start < bytes.length; start += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(start, start + 0x8000));
  }
  return btoa(binary);
}
