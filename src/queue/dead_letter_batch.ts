/**
 * Turns records a queue cursor gave up on into dead letters: the record's
 * key, value, headers and timestamp, plus the provenance headers named in
 * DEAD_LETTER_HEADERS, framed as batches ready to append.
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
    headers.push([DEAD_LETTER_HEADERS.error, note.error]);
  }
  return headers.map(([name, value]) => [
    name,
    value === null ? null : encoder.encode(value),
  ]);
}
