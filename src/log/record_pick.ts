/**
 * Picking single records out of stored batches: the queue cursor keeps the
 * records it delivers, a filtered read keeps the ones that match. The
 * result is again valid batches (layout in record_batch.ts): a batch kept
 * whole passes through byte for byte; each run of consecutive kept records
 * inside a batch is re-framed as a batch of its own, with offsetDelta and
 * timestampDelta rewritten and a fresh CRC.
 *
 * Records are addressed by `recordStart`, the position of a record's
 * recordLength field in the array, so callers look at fields in place and
 * nothing is decoded into objects.
 */
import { crc32c } from "./_crc32c.ts";
import { BATCH_HEADER_BYTES } from "./record_batch.ts";
import { readI32, readI64, readU32, writeI64, writeU32 } from "./_bytes.ts";

const INT32_MIN = -0x8000_0000;
const INT32_MAX = 0x7fff_ffff;

/**
 * Decisions of the current pick, one byte per record examined. Shared
 * between calls (each runs to completion on one thread) so that a pick
 * allocates only its result.
 */
let decisions = new Uint8Array(4096);

/** Result of {@linkcode pickRecords}. */
export interface PickedRecords {
  /** Valid batches holding the kept records; empty when none was kept. */
  bytes: Uint8Array;
  /** Records kept. */
  records: number;
  /** Offset of the last record kept, -1 when none. */
  lastOffset: number;
  /** Offset after the last record examined, kept or not (0 for no input). */
  nextOffset: number;
}

/**
 * Keeps the records `keep` chooses from whole stamped batches, as valid
 * batches: one per run of consecutive kept records within a stored batch
 * (runs never merge across stored batches); a batch kept whole is copied
 * untouched. When every record is kept the input itself is returned.
 * `keep` is called once per record, in offset order.
 *
 * @param bytes whole stamped batches in offset order, for example a partition read
 * @param keep receives the record's offset, `bytes` and the record's recordStart
 * @returns the kept records and where the examination ended
 * @throws {RangeError} when a batch or record length points outside `bytes`
 * @example
 * ```ts
 * const matches = compileFilter(filter)!;
 * const picked = pickRecords(read, (_offset, bytes, at) => matches(bytes, at));
 * ```
 */
export function pickRecords(
  bytes: Uint8Array,
  keep: (offset: number, bytes: Uint8Array, recordStart: number) => boolean,
): PickedRecords {
  // Ask about every record, and size the result.
  let examined = 0;
  let kept = 0;
  let lastOffset = -1;
  let nextOffset = 0;
  let size = 0;
  for (let p = 0; p < bytes.length;) {
    const end = batchEnd(bytes, p);
    const base = readI64(bytes, p);
    let runOpen = false;
    let index = 0;
    for (let r = p + BATCH_HEADER_BYTES; r < end; index++) {
      const recordEnd = r + 4 + readU32(bytes, r);
      if (recordEnd > end) throw outside("record", r);
      if (examined === decisions.length) {
        const grown = new Uint8Array(decisions.length * 2);
        grown.set(decisions);
        decisions = grown;
      }
      const offset = base + index;
      const yes = keep(offset, bytes, r);
      decisions[examined++] = yes ? 1 : 0;
      if (yes) {
        if (!runOpen) size += BATCH_HEADER_BYTES;
        size += recordEnd - r;
        kept++;
        lastOffset = offset;
      }
      runOpen = yes;
      r = recordEnd;
    }
    nextOffset = base + index;
    p = end;
  }

  if (kept === examined) {
    return { bytes, records: kept, lastOffset, nextOffset };
  }
  const out = new Uint8Array(size);
  if (kept === 0) return { bytes: out, records: 0, lastOffset, nextOffset };

  // Copy whole batches, re-frame runs.
  let o = 0;
  let d = 0;
  for (let p = 0; p < bytes.length;) {
    const end = p + readU32(bytes, p + 8);
    const count = readU32(bytes, p + 28);
    let all = true;
    for (let i = 0; i < count; i++) {
      if (decisions[d + i] === 0) {
        all = false;
        break;
      }
    }
    if (all) {
      out.set(bytes.subarray(p, end), o);
      o += end - p;
    } else {
      o = writeRuns(bytes, p, end, d, out, o);
    }
    d += count;
    p = end;
  }
  return { bytes: out, records: kept, lastOffset, nextOffset };
}

/** The end of the batch at `p`, checked so that a bad length cannot loop. */
function batchEnd(bytes: Uint8Array, p: number): number {
  if (bytes.length - p < BATCH_HEADER_BYTES) throw outside("batch", p);
  const length = readU32(bytes, p + 8);
  if (length < BATCH_HEADER_BYTES || length > bytes.length - p) {
    throw outside("batch", p);
  }
  return p + length;
}

function outside(what: string, position: number): RangeError {
  return new RangeError(
    `Cannot pick records: ${what} length out of bounds at byte ${position}`,
  );
}

/**
 * Writes each run of kept records of the batch [p, end) as a batch of its
 * own to `out` at `o`; `d` indexes the batch's first decision. Returns the
 * position after the last batch written.
 */
function writeRuns(
  bytes: Uint8Array,
  p: number,
  end: number,
  d: number,
  out: Uint8Array,
  o: number,
): number {
  const base = readI64(bytes, p);
  let index = 0;
  let r = p + BATCH_HEADER_BYTES;
  while (r < end) {
    if (decisions[d + index] === 0) {
      r += 4 + readU32(bytes, r);
      index++;
      continue;
    }

    // A run: its records, count and timestamp delta range.
    const runStart = r;
    const first = index;
    let minDelta = INT32_MAX;
    let maxDelta = INT32_MIN;
    while (r < end && decisions[d + index] === 1) {
      const delta = readI32(bytes, r + 4);
      if (delta < minDelta) minDelta = delta;
      if (delta > maxDelta) maxDelta = delta;
      r += 4 + readU32(bytes, r);
      index++;
    }
    o = writeRun(
      bytes,
      p,
      base + first,
      runStart,
      r,
      index - first,
      {
        minDelta,
        maxDelta,
      },
      out,
      o,
    );
  }
  return o;
}

/**
 * Writes the records in [runStart, runEnd) of the batch at `p` as one new
 * batch. Its baseTimestamp is the first record's timestamp when every
 * delta still fits an int32 from it, else the old one.
 */
function writeRun(
  bytes: Uint8Array,
  p: number,
  baseOffset: number,
  runStart: number,
  runEnd: number,
  count: number,
  deltas: { minDelta: number; maxDelta: number },
  out: Uint8Array,
  o: number,
): number {
  const firstDelta = readI32(bytes, runStart + 4);
  const shift = deltas.maxDelta - firstDelta <= INT32_MAX &&
      deltas.minDelta - firstDelta >= INT32_MIN
    ? firstDelta
    : 0;
  const length = BATCH_HEADER_BYTES + runEnd - runStart;

  out.set(bytes.subarray(p, p + BATCH_HEADER_BYTES), o);
  writeI64(out, o, baseOffset);
  writeU32(out, o + 8, length);
  writeU32(out, o + 28, count);
  writeI64(out, o + 32, readI64(bytes, p + 32) + shift);
  out.set(bytes.subarray(runStart, runEnd), o + BATCH_HEADER_BYTES);

  let w = o + BATCH_HEADER_BYTES;
  for (let i = 0; i < count; i++) {
    if (shift !== 0) writeU32(out, w + 4, readI32(out, w + 4) - shift);
    writeU32(out, w + 8, i);
    w += 4 + readU32(out, w);
  }
  writeU32(out, o + 20, crc32c(out, o + 24, o + length));
  return o + length;
}

// ---------------------------------------------------------------------------
// Record fields in place

/**
 * Calls `visit` with every record of whole batches: its offset, its
 * recordStart and the start of its batch. Checks batch bounds only.
 *
 * @param bytes whole stamped batches
 * @param visit receives each record in offset order
 * @throws {RangeError} when a batch length points outside `bytes`
 */
export function forEachRecordStart(
  bytes: Uint8Array,
  visit: (offset: number, recordStart: number, batchStart: number) => void,
): void {
  for (let p = 0; p < bytes.length;) {
    const end = batchEnd(bytes, p);
    const base = readI64(bytes, p);
    let index = 0;
    for (let r = p + BATCH_HEADER_BYTES; r < end; index++) {
      visit(base + index, r, p);
      r += 4 + readU32(bytes, r);
    }
    p = end;
  }
}

/**
 * The offset of a record: its batch's baseOffset plus its offsetDelta.
 *
 * @param bytes holds the batch
 * @param batchStart where the batch starts
 * @param recordStart where the record starts
 */
export function recordOffsetAt(
  bytes: Uint8Array,
  batchStart: number,
  recordStart: number,
): number {
  return readI64(bytes, batchStart) + readU32(bytes, recordStart + 8);
}

/**
 * The position after the record at `recordStart`.
 *
 * @param bytes holds the record
 * @param recordStart where the record starts
 */
export function recordEndAt(bytes: Uint8Array, recordStart: number): number {
  return recordStart + 4 + readU32(bytes, recordStart);
}

/**
 * A record's key as a view into `bytes`, or null for a record without a
 * key. Two records have the same key when these views hold the same bytes.
 *
 * @param bytes holds the record
 * @param recordStart where the record starts
 * @returns the key bytes (not a copy), or null
 */
export function recordKeyAt(
  bytes: Uint8Array,
  recordStart: number,
): Uint8Array | null {
  const length = readI32(bytes, recordStart + 12);
  if (length < 0) return null;
  return bytes.subarray(recordStart + 16, recordStart + 16 + length);
}

/**
 * A record's key as a string usable as a Map key: one char per byte
 * (latin1), so distinct byte strings give distinct strings; null for a
 * record without a key.
 *
 * @param bytes holds the record
 * @param recordStart where the record starts
 */
export function recordKeyStringAt(
  bytes: Uint8Array,
  recordStart: number,
): string | null {
  const key = recordKeyAt(bytes, recordStart);
  if (key === null) return null;
  let text = "";
  for (let i = 0; i < key.length; i += 4096) {
    text += String.fromCharCode(...key.subarray(i, i + 4096));
  }
  return text;
}

/**
 * The value of the first header named `name` (UTF-8 bytes) as a view into
 * `bytes`; null when the record has no such header or its value is null.
 *
 * @param bytes holds the record
 * @param recordStart where the record starts
 * @param name the header name's UTF-8 bytes
 */
export function recordHeaderAt(
  bytes: Uint8Array,
  recordStart: number,
  name: Uint8Array,
): Uint8Array | null {
  let p = recordStart + 12;
  const keyLength = readI32(bytes, p);
  p += 4 + (keyLength > 0 ? keyLength : 0);
  const valueLength = readI32(bytes, p);
  p += 4 + (valueLength > 0 ? valueLength : 0);
  const headerCount = bytes[p] | (bytes[p + 1] << 8);
  p += 2;
  for (let h = 0; h < headerCount; h++) {
    const nameLength = bytes[p] | (bytes[p + 1] << 8);
    const nameStart = p + 2;
    p = nameStart + nameLength;
    const length = readI32(bytes, p);
    p += 4;
    if (nameLength === name.length) {
      let same = true;
      for (let i = 0; i < nameLength && same; i++) {
        same = bytes[nameStart + i] === name[i];
      }
      if (same) return length < 0 ? null : bytes.subarray(p, p + length);
    }
    p += length > 0 ? length : 0;
  }
  return null;
}

/**
 * Joins the records of several valid batches into one batch, copying each
 * record's bytes and rewriting only its timestampDelta and offsetDelta; the
 * header is the first batch's with a new count, length and CRC. Returns
 * null when the records' timestamps lie too far apart for one batch's
 * 32-bit deltas (the caller then frames them another way).
 *
 * @param batches valid batches, each with at least one record
 * @returns one batch holding every record, in order, or null
 */
export function joinBatches(batches: Uint8Array[]): Uint8Array | null {
  if (batches.length === 0) throw new RangeError("No batches to join");
  const baseTimestamp = readI64(batches[0], 32);
  let size = BATCH_HEADER_BYTES;
  let count = 0;
  for (const batch of batches) {
    const shift = readI64(batch, 32) - baseTimestamp;
    const end = readU32(batch, 8);
    for (let r = BATCH_HEADER_BYTES; r < end; r += 4 + readU32(batch, r)) {
      const delta = readI32(batch, r + 4) + shift;
      if (delta < -0x8000_0000 || delta > 0x7fff_ffff) return null;
      count++;
    }
    size += end - BATCH_HEADER_BYTES;
  }
  const out = new Uint8Array(size);
  out.set(batches[0].subarray(0, BATCH_HEADER_BYTES), 0);
  writeI64(out, 0, 0);
  writeU32(out, 8, size);
  writeU32(out, 28, count);
  let o = BATCH_HEADER_BYTES;
  let index = 0;
  for (const batch of batches) {
    const shift = readI64(batch, 32) - baseTimestamp;
    const end = readU32(batch, 8);
    out.set(batch.subarray(BATCH_HEADER_BYTES, end), o);
    const stop = o + end - BATCH_HEADER_BYTES;
    for (let r = o; r < stop; r += 4 + readU32(out, r)) {
      writeU32(out, r + 4, (readI32(out, r + 4) + shift) >>> 0);
      writeU32(out, r + 8, index++);
    }
    o = stop;
  }
  writeU32(out, 20, crc32c(out, 24, size));
  return out;
}
