/** An in-memory record source for cursor tests: stamped batches in a list. */
import {
  batchLength,
  type BatchRecord,
  batchRecordCount,
  decodeBatches,
  type DecodedRecord,
  encodeBatch,
  stampBatch,
} from "../../src/log/record_batch.ts";
import type { RecordSource } from "../../src/queue/queue_cursor.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A record with a text value and optional text key and headers. */
export function textRecord(
  value: string,
  key: string | null = null,
  headers: [string, string][] = [],
): BatchRecord {
  return {
    key: key === null ? null : encoder.encode(key),
    value: encoder.encode(value),
    headers: headers.map(([name, text]) => [name, encoder.encode(text)]),
    timestamp: 5000,
  };
}

/** Batches appended in order, read back as PartitionLog.read does. */
export class MemoryLog implements RecordSource {
  logStartOffset = 0;
  highWatermark = 0;
  batches: Uint8Array[] = [];
  reads = 0;

  /** Appends one batch of `records`; returns its base offset. */
  append(records: BatchRecord[]): number {
    const batch = encodeBatch(records);
    const base = this.highWatermark;
    stampBatch(batch, 0, base, 7000);
    this.batches.push(batch);
    this.highWatermark += records.length;
    return base;
  }

  /** Appends `count` keyless records valued `${label}-${i}`, `perBatch` to a batch. */
  appendMany(count: number, perBatch = count, label = "r"): void {
    for (let i = 0; i < count; i += perBatch) {
      const records: BatchRecord[] = [];
      for (let j = i; j < Math.min(count, i + perBatch); j++) {
        records.push(textRecord(`${label}-${j}`));
      }
      this.append(records);
    }
  }

  /** Appends `copies` stamped copies of `batch`. */
  appendCopies(batch: Uint8Array, copies: number): void {
    for (let i = 0; i < copies; i++) {
      const copy = batch.slice();
      stampBatch(copy, 0, this.highWatermark, 7000);
      this.batches.push(copy);
      this.highWatermark += batchRecordCount(copy);
    }
  }

  read(offset: number, maxBytes: number): Uint8Array {
    this.reads++;
    const picked: Uint8Array[] = [];
    let total = 0;
    let base = 0;
    for (const batch of this.batches) {
      const count = batchRecordCount(batch);
      const holds = base + count > offset;
      base += count;
      if (!holds || base <= this.logStartOffset) continue;
      if (picked.length > 0 && total + batch.length > maxBytes) break;
      picked.push(batch);
      total += batchLength(batch);
    }
    const bytes = new Uint8Array(total);
    let o = 0;
    for (const batch of picked) {
      bytes.set(batch, o);
      o += batch.length;
    }
    return bytes;
  }
}

/** The records in `bytes` with their values as text. */
export function valuesOf(bytes: Uint8Array): string[] {
  return decodeBatches(bytes).map((record) => decoder.decode(record.value!));
}

/** The offsets of the records in `bytes`. */
export function offsetsOf(bytes: Uint8Array): number[] {
  return decodeBatches(bytes).map((record: DecodedRecord) => record.offset);
}
