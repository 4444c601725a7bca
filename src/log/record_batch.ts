/**
 * The record batch: the unit from producer to disk to consumer. The same
 * bytes a producer sends are validated, stamped with offsets and append time,
 * written to a segment and served back. Little-endian; 64-bit fields hold
 * values below 2^53 and are read as two 32-bit halves.
 *
 * ```
 * Batch header, 40 bytes
 *  0  8 baseOffset     stamped on append     24  1 magic          1
 *  8  4 batchLength    header included       25  1 attributes     0
 * 12  8 appendTime     stamped on append     26  2 reserved       0
 * 20  4 crc            CRC-32C of [24, len)  28  4 recordCount    ≥ 1
 *                                            32  8 baseTimestamp  ms
 * Record
 *  0  4 recordLength   bytes after this field
 *  4  4 timestampDelta int32, ms from baseTimestamp
 *  8  4 offsetDelta    uint32, the record's index in the batch
 * 12  4 keyLength      int32, -1 null       then key bytes
 *     4 valueLength    int32, -1 null       then value bytes
 *     2 headerCount    then each: u16 nameLength, UTF-8 name,
 *                                 i32 valueLength (-1 null), value bytes
 * ```
 *
 * baseOffset and appendTime lie outside the CRC, so stamping a batch never
 * recomputes it. Everything here works on raw bytes at a position, so the
 * append and read paths create no object per record.
 */
import { crc32c } from "./_crc32c.ts";
import { MalformedBatchError, RecordTooLargeError } from "../errors.ts";
import {
  readI32,
  readI64,
  readU16,
  readU32,
  writeI64,
  writeU16,
  writeU32,
} from "./_bytes.ts";

/** Size of the batch header in bytes. */
export const BATCH_HEADER_BYTES = 40;

/** The only magic value this version writes and accepts. */
export const BATCH_MAGIC = 1;

/** Bytes of a record's fixed fields after recordLength, without key, value and headers. */
const RECORD_FIXED_BYTES = 12 + 4 + 2;

const INT32_MIN = -0x8000_0000;
const INT32_MAX = 0x7fff_ffff;

/** One record as a producer hands it in. */
export interface BatchRecord {
  key: Uint8Array | null;
  value: Uint8Array | null;
  headers: [string, Uint8Array | null][];
  /** Producer's create time, ms since epoch. */
  timestamp: number;
}

/**
 * A record read back from a batch. `key`, `value` and header values are
 * views into the decoded bytes, not copies.
 */
export interface DecodedRecord extends BatchRecord {
  offset: number;
  /** The broker's append time of the batch holding the record. */
  appendTime: number;
}

// ---------------------------------------------------------------------------
// Header fields of the batch starting at `position`

/** The batch's first offset. */
export function batchBaseOffset(bytes: Uint8Array, position = 0): number {
  return readI64(bytes, position);
}

/** The batch's total size in bytes, header included. */
export function batchLength(bytes: Uint8Array, position = 0): number {
  return readU32(bytes, position + 8);
}

/** The broker's append time, ms since epoch. */
export function batchAppendTime(bytes: Uint8Array, position = 0): number {
  return readI64(bytes, position + 12);
}

/** The stored CRC-32C. */
export function batchCrc(bytes: Uint8Array, position = 0): number {
  return readU32(bytes, position + 20);
}

/** Number of records in the batch. */
export function batchRecordCount(bytes: Uint8Array, position = 0): number {
  return readU32(bytes, position + 28);
}

/** The offset of the batch's last record. */
export function batchLastOffset(bytes: Uint8Array, position = 0): number {
  return readI64(bytes, position) + readU32(bytes, position + 28) - 1;
}

/** The producer's create time of the first record, ms since epoch. */
export function batchBaseTimestamp(bytes: Uint8Array, position = 0): number {
  return readI64(bytes, position + 32);
}

/**
 * Writes baseOffset and appendTime into the batch at `position`. Both lie
 * outside the CRC, which stays valid.
 */
export function stampBatch(
  bytes: Uint8Array,
  position: number,
  baseOffset: number,
  appendTime: number,
): void {
  writeI64(bytes, position, baseOffset);
  writeI64(bytes, position + 12, appendTime);
}

// ---------------------------------------------------------------------------
// Encoding

/** UTF-8 length of `text` without encoding it. */
function utf8Length(text: string): number {
  let length = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x80) length += 1;
    else if (code < 0x800) length += 2;
    else if (code >= 0xd800 && code <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      // A valid pair is one 4-byte sequence; a lone surrogate becomes U+FFFD.
      if (next >= 0xdc00 && next <= 0xdfff) {
        length += 4;
        i++;
      } else length += 3;
    } else length += 3;
  }
  return length;
}

function recordBodyBytes(record: BatchRecord): number {
  let size = RECORD_FIXED_BYTES + (record.key?.length ?? 0) +
    (record.value?.length ?? 0);
  for (const [name, value] of record.headers) {
    size += 2 + utf8Length(name) + 4 + (value?.length ?? 0);
  }
  return size;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Encodes records as one batch with baseOffset 0 and appendTime 0, the form
 * a producer sends. baseTimestamp is the first record's timestamp.
 *
 * @param records at least one
 * @returns the batch, CRC filled in
 * @throws {RangeError} with no records, more than 65535 headers on a record,
 *   a header name over 65535 UTF-8 bytes, or timestamps more than 2^31 ms
 *   from the first record's
 * @example
 * ```ts
 * const batch = encodeBatch([{ key: null, value: bytes, headers: [], timestamp: Date.now() }]);
 * ```
 */
export function encodeBatch(records: BatchRecord[]): Uint8Array {
  if (records.length === 0) {
    throw new RangeError("Cannot encode a batch: no records");
  }
  const baseTimestamp = records[0].timestamp;

  let size = BATCH_HEADER_BYTES;
  for (const record of records) size += 4 + recordBodyBytes(record);
  const bytes = new Uint8Array(size);

  writeU32(bytes, 8, size);
  bytes[24] = BATCH_MAGIC;
  writeU32(bytes, 28, records.length);
  writeI64(bytes, 32, baseTimestamp);

  let p = BATCH_HEADER_BYTES;
  for (let index = 0; index < records.length; index++) {
    const record = records[index];
    const delta = record.timestamp - baseTimestamp;
    if (!(delta >= INT32_MIN && delta <= INT32_MAX)) {
      throw new RangeError(
        `Cannot encode a batch: timestamp ${record.timestamp} is too far from the first record's ${baseTimestamp}`,
      );
    }
    if (record.headers.length > 0xffff) {
      throw new RangeError(
        `Cannot encode a batch: too many headers: ${record.headers.length}`,
      );
    }
    const start = p;
    p += 4;
    writeU32(bytes, p, delta | 0);
    writeU32(bytes, p + 4, index);
    p = writeField(bytes, p + 8, record.key);
    p = writeField(bytes, p, record.value);
    writeU16(bytes, p, record.headers.length);
    p += 2;
    for (const [name, value] of record.headers) {
      const written = encoder.encodeInto(name, bytes.subarray(p + 2)).written;
      if (written > 0xffff) {
        throw new RangeError(
          `Cannot encode a batch: header name too long: ${written} bytes`,
        );
      }
      writeU16(bytes, p, written);
      p = writeField(bytes, p + 2 + written, value);
    }
    writeU32(bytes, start, p - start - 4);
  }

  writeU32(bytes, 20, crc32c(bytes, 24, size));
  return bytes;
}

function writeField(
  bytes: Uint8Array,
  position: number,
  value: Uint8Array | null,
): number {
  if (value === null) {
    writeU32(bytes, position, -1);
    return position + 4;
  }
  writeU32(bytes, position, value.length);
  bytes.set(value, position + 4);
  return position + 4 + value.length;
}

// ---------------------------------------------------------------------------
// Validation

function malformed(
  reason: string,
  position: number,
  details: Record<string, unknown> = {},
): MalformedBatchError {
  return new MalformedBatchError(
    `Malformed record batch at byte ${position}: ${reason}`,
    { position, reason, ...details },
  );
}

/**
 * Checks the batch at `position` in full: framing, magic, attributes, CRC,
 * every record's layout, the count, each offsetDelta and each record's size.
 *
 * @param bytes holds the batch
 * @param position where the batch starts
 * @param end where the available bytes end
 * @param maxMessageBytes largest allowed record, recordLength field included
 * @returns the batch's length in bytes
 * @throws {MalformedBatchError} on any fault, with `position` and `reason` in details
 * @throws {RecordTooLargeError} when a well-formed record is over `maxMessageBytes`
 */
export function checkBatch(
  bytes: Uint8Array,
  position: number,
  end: number,
  maxMessageBytes: number,
): number {
  if (end - position < BATCH_HEADER_BYTES) {
    throw malformed("truncated header", position, { bytes: end - position });
  }
  const length = readU32(bytes, position + 8);
  if (length < BATCH_HEADER_BYTES) {
    throw malformed("batchLength below 40", position, { batchLength: length });
  }
  if (length > end - position) {
    throw malformed("batchLength past the end of the data", position, {
      batchLength: length,
      available: end - position,
    });
  }
  if (bytes[position + 24] !== BATCH_MAGIC) {
    throw malformed("unknown magic", position, { magic: bytes[position + 24] });
  }
  if (bytes[position + 25] !== 0) {
    throw malformed("unsupported attributes", position, {
      attributes: bytes[position + 25],
    });
  }
  if (readU16(bytes, position + 26) !== 0) {
    throw malformed("reserved bytes not zero", position);
  }
  const batchEnd = position + length;
  const storedCrc = readU32(bytes, position + 20);
  const actualCrc = crc32c(bytes, position + 24, batchEnd);
  if (storedCrc !== actualCrc) {
    throw malformed("crc mismatch", position, {
      crc: storedCrc,
      expected: actualCrc,
    });
  }
  const recordCount = readU32(bytes, position + 28);
  if (recordCount === 0) throw malformed("recordCount is 0", position);

  let index = 0;
  let r = position + BATCH_HEADER_BYTES;
  while (r < batchEnd) {
    if (index === recordCount) {
      throw malformed("more records than recordCount", position, {
        recordCount,
      });
    }
    if (batchEnd - r < 4) {
      throw malformed("truncated record length", position, { record: index });
    }
    const recordEnd = r + 4 + readU32(bytes, r);
    if (recordEnd > batchEnd) {
      throw malformed("record past the end of the batch", position, {
        record: index,
      });
    }
    if (recordEnd - r > maxMessageBytes) {
      throw new RecordTooLargeError(recordEnd - r, maxMessageBytes);
    }
    if (!recordLayoutFits(bytes, r + 4, recordEnd)) {
      throw malformed("record fields do not match recordLength", position, {
        record: index,
      });
    }
    if (readU32(bytes, r + 8) !== index) {
      throw malformed("offsetDelta differs from record index", position, {
        record: index,
        offsetDelta: readU32(bytes, r + 8),
      });
    }
    r = recordEnd;
    index++;
  }
  if (index !== recordCount) {
    throw malformed("fewer records than recordCount", position, {
      recordCount,
      records: index,
    });
  }
  return length;
}

/** True when the record body in [p, end) is laid out exactly as the format says. */
function recordLayoutFits(bytes: Uint8Array, p: number, end: number): boolean {
  if (end - p < RECORD_FIXED_BYTES) return false;
  p += 8;
  for (let field = 0; field < 2; field++) {
    if (end - p < 4) return false;
    const length = readI32(bytes, p);
    if (length < -1 || length > end - p - 4) return false;
    p += 4 + (length > 0 ? length : 0);
  }
  if (end - p < 2) return false;
  const headerCount = readU16(bytes, p);
  p += 2;
  for (let h = 0; h < headerCount; h++) {
    if (end - p < 6) return false;
    p += 2 + readU16(bytes, p);
    if (end - p < 4) return false;
    const length = readI32(bytes, p);
    if (length < -1 || length > end - p - 4) return false;
    p += 4 + (length > 0 ? length : 0);
  }
  return p === end;
}

/**
 * Validates one or several concatenated batches, as a producer sends them.
 *
 * @param bytes the batches, filling the array exactly
 * @param maxMessageBytes largest allowed record, its length field included
 * @returns how many batches and records `bytes` holds
 * @throws {MalformedBatchError} on empty input or any fault in any batch
 * @throws {RecordTooLargeError} when a record is over `maxMessageBytes`
 */
export function validateBatches(
  bytes: Uint8Array,
  maxMessageBytes: number,
): { batchCount: number; recordCount: number } {
  if (bytes.length === 0) throw malformed("no batches", 0);
  let batchCount = 0;
  let recordCount = 0;
  let position = 0;
  while (position < bytes.length) {
    const length = checkBatch(bytes, position, bytes.length, maxMessageBytes);
    batchCount++;
    recordCount += readU32(bytes, position + 28);
    position += length;
  }
  return { batchCount, recordCount };
}

// ---------------------------------------------------------------------------
// Decoding

/**
 * Calls `visit` with each record of the concatenated batches in `bytes`, in
 * offset order. Checks bounds but not CRCs: validate untrusted input first.
 *
 * @param bytes whole batches
 * @param visit receives each record; key, value and header values are views into `bytes`
 * @throws {MalformedBatchError} when a length points outside its batch
 */
export function forEachRecord(
  bytes: Uint8Array,
  visit: (record: DecodedRecord) => void,
): void {
  let position = 0;
  while (position < bytes.length) {
    if (bytes.length - position < BATCH_HEADER_BYTES) {
      throw malformed("truncated header", position);
    }
    const length = readU32(bytes, position + 8);
    const end = position + length;
    if (length < BATCH_HEADER_BYTES || end > bytes.length) {
      throw malformed("batchLength out of bounds", position);
    }
    const baseOffset = readI64(bytes, position);
    const appendTime = readI64(bytes, position + 12);
    const baseTimestamp = readI64(bytes, position + 32);
    let r = position + BATCH_HEADER_BYTES;
    while (r < end) {
      const recordEnd = r + 4 + readU32(bytes, r);
      if (recordEnd > end || !recordLayoutFits(bytes, r + 4, recordEnd)) {
        throw malformed("record out of bounds", position);
      }
      visit(decodeRecord(bytes, r, baseOffset, baseTimestamp, appendTime));
      r = recordEnd;
    }
    position = end;
  }
}

function decodeRecord(
  bytes: Uint8Array,
  r: number,
  baseOffset: number,
  baseTimestamp: number,
  appendTime: number,
): DecodedRecord {
  const timestamp = baseTimestamp + readI32(bytes, r + 4);
  const offset = baseOffset + readU32(bytes, r + 8);
  let p = r + 12;
  const key = readField(bytes, p);
  p += 4 + (key?.length ?? 0);
  const value = readField(bytes, p);
  p += 4 + (value?.length ?? 0);
  const headerCount = readU16(bytes, p);
  p += 2;
  const headers: [string, Uint8Array | null][] = [];
  for (let h = 0; h < headerCount; h++) {
    const nameLength = readU16(bytes, p);
    const name = decoder.decode(bytes.subarray(p + 2, p + 2 + nameLength));
    p += 2 + nameLength;
    const headerValue = readField(bytes, p);
    p += 4 + (headerValue?.length ?? 0);
    headers.push([name, headerValue]);
  }
  return { offset, timestamp, appendTime, key, value, headers };
}

function readField(bytes: Uint8Array, position: number): Uint8Array | null {
  const length = readI32(bytes, position);
  if (length < 0) return null;
  return bytes.subarray(position + 4, position + 4 + length);
}

/**
 * Decodes every record of the concatenated batches in `bytes`.
 *
 * @param bytes whole batches, for example a partition read
 * @returns the records in offset order; byte fields are views into `bytes`
 * @throws {MalformedBatchError} when a length points outside its batch
 */
export function decodeBatches(bytes: Uint8Array): DecodedRecord[] {
  const records: DecodedRecord[] = [];
  forEachRecord(bytes, (record) => records.push(record));
  return records;
}

/**
 * Encodes any number of records as concatenated batches, the form an append
 * takes: one batch, unless the records' timestamps lie too far apart for one
 * batch's 32-bit deltas, in which case a new batch starts at each record that
 * does not fit. Every record is checked against `maxRecordBytes` before
 * anything is encoded, so a request with one oversize record writes nothing.
 *
 * @param records at least one
 * @param maxRecordBytes largest record allowed, its length field included
 * @returns the batches, back to back
 * @throws {RecordTooLargeError} when a record is larger than `maxRecordBytes`
 * @throws {RangeError} as {@linkcode encodeBatch} does for other faults
 * @example
 * ```ts
 * const bytes = encodeRecords(records, 1024 * 1024);
 * ```
 */
export function encodeRecords(
  records: BatchRecord[],
  maxRecordBytes = Number.MAX_SAFE_INTEGER,
): Uint8Array {
  const starts = [0];
  for (let index = 0; index < records.length; index++) {
    const recordBytes = 4 + recordBodyBytes(records[index]);
    if (recordBytes > maxRecordBytes) {
      throw new RecordTooLargeError(recordBytes, maxRecordBytes);
    }
    const first = records[starts[starts.length - 1]].timestamp;
    const delta = records[index].timestamp - first;
    if (!(delta >= INT32_MIN && delta <= INT32_MAX)) starts.push(index);
  }
  if (starts.length === 1) return encodeBatch(records);

  const batches = starts.map((start, i) =>
    encodeBatch(records.slice(start, starts[i + 1] ?? records.length))
  );
  const bytes = new Uint8Array(
    batches.reduce((total, batch) => total + batch.length, 0),
  );
  let position = 0;
  for (const batch of batches) {
    bytes.set(batch, position);
    position += batch.length;
  }
  return bytes;
}

// ---------------------------------------------------------------------------
// Slicing

/**
 * Picks the records with offset ≥ `fromOffset`, at most `maxRecords` of
 * them, from concatenated valid batches, as valid batches. Whole batches
 * pass through untouched; a batch cut at either edge is re-framed with a
 * fresh header (baseOffset, count, baseTimestamp) and CRC. When nothing is
 * cut the result is a view into `bytes`; otherwise it is one new array.
 *
 * @param bytes whole stamped batches in offset order
 * @param fromOffset first offset wanted
 * @param maxRecords most records returned, ≥ 0
 * @param searchFrom position of a batch at or before the one holding
 *   `fromOffset`, where the search starts (a caller walking the batches
 *   passes where it is, so slicing many runs stays linear)
 * @returns the batches, how many records they hold and the offset after the last one
 *   (`fromOffset` when none)
 */
export function sliceBatches(
  bytes: Uint8Array,
  fromOffset: number,
  maxRecords: number,
  searchFrom = 0,
): { bytes: Uint8Array; records: number; nextOffset: number } {
  // Find the first batch holding an offset ≥ fromOffset.
  let start = searchFrom;
  while (
    start < bytes.length && batchLastOffset(bytes, start) < fromOffset
  ) {
    start += framedLength(bytes, start);
  }
  if (start >= bytes.length || maxRecords <= 0) {
    return { bytes: bytes.subarray(0, 0), records: 0, nextOffset: fromOffset };
  }

  // Walk whole batches until the budget runs out inside one or the data ends.
  const skipFirst = Math.max(0, fromOffset - batchBaseOffset(bytes, start));
  let records = 0;
  let end = start;
  let lastCut = false;
  let nextOffset = fromOffset;
  while (end < bytes.length && records < maxRecords) {
    const skip = end === start ? skipFirst : 0;
    const available = batchRecordCount(bytes, end) - skip;
    const take = Math.min(available, maxRecords - records);
    lastCut = take < available;
    records += take;
    nextOffset = batchBaseOffset(bytes, end) + skip + take;
    end += framedLength(bytes, end);
  }

  if (skipFirst === 0 && !lastCut) {
    return { bytes: bytes.subarray(start, end), records, nextOffset };
  }
  return {
    bytes: reframeRange(bytes, start, end, fromOffset, nextOffset),
    records,
    nextOffset,
  };
}

/** The batch length at `p`, checked against the array so that a bad one cannot loop. */
function framedLength(bytes: Uint8Array, p: number): number {
  const length = bytes.length - p >= BATCH_HEADER_BYTES
    ? readU32(bytes, p + 8)
    : 0;
  if (length < BATCH_HEADER_BYTES || length > bytes.length - p) {
    throw malformed("batchLength out of bounds", p);
  }
  return length;
}

/**
 * Copies the batches in [start, end) keeping only offsets in
 * [fromOffset, toOffset), re-framing the (at most two) cut batches.
 */
function reframeRange(
  bytes: Uint8Array,
  start: number,
  end: number,
  fromOffset: number,
  toOffset: number,
): Uint8Array {
  // Sizes first, so the result is one allocation.
  let size = 0;
  for (let p = start; p < end; p += batchLength(bytes, p)) {
    size += keptBytes(bytes, p, fromOffset, toOffset);
  }
  const out = new Uint8Array(size);

  let o = 0;
  for (let p = start; p < end; p += batchLength(bytes, p)) {
    const base = batchBaseOffset(bytes, p);
    const count = batchRecordCount(bytes, p);
    if (base >= fromOffset && base + count <= toOffset) {
      out.set(bytes.subarray(p, p + batchLength(bytes, p)), o);
      o += batchLength(bytes, p);
    } else {
      o = writeCutBatch(bytes, p, fromOffset, toOffset, out, o);
    }
  }
  return out;
}

/** Bytes the batch at `p` contributes when cut to [fromOffset, toOffset). */
function keptBytes(
  bytes: Uint8Array,
  p: number,
  fromOffset: number,
  toOffset: number,
): number {
  const base = batchBaseOffset(bytes, p);
  const count = batchRecordCount(bytes, p);
  if (base >= fromOffset && base + count <= toOffset) {
    return batchLength(bytes, p);
  }
  let size = BATCH_HEADER_BYTES;
  let r = p + BATCH_HEADER_BYTES;
  for (let i = 0; i < count; i++) {
    const recordBytes = 4 + readU32(bytes, r);
    if (base + i >= fromOffset && base + i < toOffset) size += recordBytes;
    r += recordBytes;
  }
  return size;
}

/**
 * Writes the records of the batch at `p` with offsets in [fromOffset,
 * toOffset) to `out` at `o` as a new batch; returns the position after it.
 * The new baseTimestamp is the first kept record's timestamp when every
 * kept delta still fits in an int32, else the old one.
 */
function writeCutBatch(
  bytes: Uint8Array,
  p: number,
  fromOffset: number,
  toOffset: number,
  out: Uint8Array,
  o: number,
): number {
  const base = batchBaseOffset(bytes, p);
  const count = batchRecordCount(bytes, p);
  const first = Math.max(0, fromOffset - base);
  const last = Math.min(count, toOffset - base);

  // Locate the kept records and their timestamp deltas.
  let r = p + BATCH_HEADER_BYTES;
  for (let i = 0; i < first; i++) r += 4 + readU32(bytes, r);
  const keptStart = r;
  let minDelta = INT32_MAX;
  let maxDelta = INT32_MIN;
  for (let i = first; i < last; i++) {
    const delta = readI32(bytes, r + 4);
    if (delta < minDelta) minDelta = delta;
    if (delta > maxDelta) maxDelta = delta;
    r += 4 + readU32(bytes, r);
  }
  const keptEnd = r;
  const firstDelta = readI32(bytes, keptStart + 4);
  const shift = maxDelta - firstDelta <= INT32_MAX &&
      minDelta - firstDelta >= INT32_MIN
    ? firstDelta
    : 0;

  // Header, then the records with offsetDelta and timestampDelta rewritten.
  const length = BATCH_HEADER_BYTES + keptEnd - keptStart;
  out.set(bytes.subarray(p, p + BATCH_HEADER_BYTES), o);
  writeI64(out, o, base + first);
  writeU32(out, o + 8, length);
  writeU32(out, o + 28, last - first);
  writeI64(out, o + 32, batchBaseTimestamp(bytes, p) + shift);
  out.set(bytes.subarray(keptStart, keptEnd), o + BATCH_HEADER_BYTES);
  let w = o + BATCH_HEADER_BYTES;
  for (let i = 0; i < last - first; i++) {
    writeU32(out, w + 4, readI32(out, w + 4) - shift);
    writeU32(out, w + 8, i);
    w += 4 + readU32(out, w);
  }
  writeU32(out, o + 20, crc32c(out, o + 24, o + length));
  return o + length;
}
