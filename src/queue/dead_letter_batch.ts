/**
 * Turns records a queue cursor gave up on into dead letters: the record's
 * key, value, headers and timestamp, plus the provenance headers named in
 * DEAD_LETTER_HEADERS, framed as batches ready to append.
 *
 * The provenance headers are bounded (DEAD_LETTER_PROVENANCE_MAX_BYTES):
 * the error text is cut to DEAD_LETTER_ERROR_MAX_BYTES, so a dead-letter
 * topic that allows that much more than its source takes every letter.
 */
import { DEAD_LETTER_HEADERS } from "../broker.ts";
import {
  type BatchRecord,
  decodeBatches,
  type DecodedRecord,
  encodeRecords,
} from "../log/record_batch.ts";
import type { DeadLetterNote, RecordSource } from "./queue_cursor.ts";

/** Where the letters come from. */
export interface DeadLetterOrigin {
  topic: string;
  partition: number;
  group: string;
}

const encoder = new TextEncoder();

/** Most UTF-8 bytes of a member's error text kept in a letter. */
export const DEAD_LETTER_ERROR_MAX_BYTES = 1024;

/** Longest topic and group name (topic_store, group_coordinator). */
const NAME_MAX_CHARS = 200;
/** Longest decimal text of a safe integer. */
const NUMBER_MAX_CHARS = 16;
/** Per header: name length (2) and value length (4) fields. */
const HEADER_FIELD_BYTES = 6;

/**
 * Most bytes the provenance headers add to a record, with the longest
 * names, numbers, reason and error text: what a dead-letter topic's
 * maxMessageBytes needs beyond its source's.
 */
export const DEAD_LETTER_PROVENANCE_MAX_BYTES = Object.values(
  DEAD_LETTER_HEADERS,
).reduce((total, name) => total + HEADER_FIELD_BYTES + name.length, 0) +
  2 * NAME_MAX_CHARS + // topic, group
  4 * NUMBER_MAX_CHARS + // partition, offset, deliveries, firstFailedAt
  "max_deliveries".length +
  DEAD_LETTER_ERROR_MAX_BYTES;

/**
 * `text` cut to at most `maxBytes` UTF-8 bytes at a character boundary.
 *
 * @example
 * ```ts
 * capUtf8("héllo", 2); // "h"
 * ```
 */
export function capUtf8(text: string, maxBytes: number): string {
  // A UTF-16 unit takes at most 3 UTF-8 bytes (a pair takes 4 for 2 units).
  if (text.length * 3 <= maxBytes) return text;
  const bytes = encoder.encode(text);
  if (bytes.length <= maxBytes) return text;
  let end = maxBytes;
  // Back off continuation bytes (10xxxxxx) to the start of a character.
  while (end > 0 && (bytes[end] & 0xc0) === 0x80) end--;
  return new TextDecoder().decode(bytes.subarray(0, end));
}

/**
 * Reads each noted record from `source` and frames its letter.
 *
 * @param notes in offset order, as QueueCursor.takeDeadLetters returns them
 * @returns the letters as batches and how many; records the log no longer
 *   holds are left out and listed in `missing`
 */
export function buildDeadLetters(
  source: RecordSource,
  notes: DeadLetterNote[],
  origin: DeadLetterOrigin,
): { bytes: Uint8Array; records: number; missing: number[] } {
  const letters: BatchRecord[] = [];
  const missing: number[] = [];
  let decoded: DecodedRecord[] = [];
  for (const note of notes) {
    let record = findRecord(decoded, note.offset);
    if (record === undefined && note.offset >= source.logStartOffset) {
      decoded = decodeBatches(source.read(note.offset, 64 * 1024));
      record = findRecord(decoded, note.offset);
    }
    if (record === undefined) {
      missing.push(note.offset);
      continue;
    }
    letters.push({
      key: record.key,
      value: record.value,
      headers: [...record.headers, ...provenance(note, origin)],
      timestamp: record.timestamp,
    });
  }
  if (letters.length === 0) {
    return { bytes: new Uint8Array(0), records: 0, missing };
  }
  return { bytes: encodeRecords(letters), records: letters.length, missing };
}

function findRecord(
  records: DecodedRecord[],
  offset: number,
): DecodedRecord | undefined {
  if (records.length === 0) return undefined;
  const index = offset - records[0].offset;
  // Stored batches hold consecutive offsets, so the index is usually exact.
  if (records[index]?.offset === offset) return records[index];
  return records.find((record) => record.offset === offset);
}

function provenance(
  note: DeadLetterNote,
  origin: DeadLetterOrigin,
): [string, Uint8Array | null][] {
  const headers: [string, string | null][] = [
    [DEAD_LETTER_HEADERS.topic, origin.topic],
    [DEAD_LETTER_HEADERS.partition, String(origin.partition)],
    [DEAD_LETTER_HEADERS.offset, String(note.offset)],
    [DEAD_LETTER_HEADERS.group, origin.group],
    [DEAD_LETTER_HEADERS.deliveries, String(note.deliveries)],
    [DEAD_LETTER_HEADERS.reason, note.reason],
    [DEAD_LETTER_HEADERS.firstFailedAt, String(note.firstFailedAt)],
  ];
  if (note.error !== null) {
    headers.push([
      DEAD_LETTER_HEADERS.error,
      capUtf8(note.error, DEAD_LETTER_ERROR_MAX_BYTES),
    ]);
  }
  return headers.map(([name, value]) => [
    name,
    value === null ? null : encoder.encode(value),
  ]);
}
