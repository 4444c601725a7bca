/**
 * One segment of a partition log: `<base>.log` holds stamped record batches
 * back to back (the format is in `record_batch.ts`), beside its sparse
 * offset index `<base>.index` and time index `<base>.timeindex`. `<base>`
 * is the offset of the segment's first record as 20 zero-padded digits.
 *
 * Invariants of a recovered segment: batches follow one another without a
 * gap, the first has baseOffset = base, each next one starts at the
 * previous lastOffset + 1, and appendTime never decreases. Batch headers
 * are walked, never the records inside them, except when verifying CRCs.
 */
import type { FileHandle, FileSystem } from "../runtime/types.ts";
import type { Logger } from "../logger.ts";
import { DakgharError, MalformedBatchError } from "../errors.ts";
import {
  BATCH_HEADER_BYTES,
  batchAppendTime,
  batchBaseOffset,
  batchLastOffset,
  batchLength,
  batchRecordCount,
  checkBatch,
} from "./record_batch.ts";
import { OffsetIndex } from "./offset_index.ts";
import { TimeIndex } from "./time_index.ts";

/** What a segment needs from the partition's configuration. */
export interface SegmentOptions {
  /** Bytes of log between offset index entries. */
  indexIntervalBytes: number;
}

/** What opening a segment found and repaired. */
export interface SegmentRecovery {
  /** Every batch's CRC was checked (else only the indexes and the last batch). */
  verified: boolean;
  /** Bytes cut from the end of `.log`, the torn or garbled batch and all after it. */
  truncatedBytes: number;
  /** Byte position of the first bad batch, or -1. */
  corruptPosition: number;
  /** Why the batch at `corruptPosition` was rejected, or "". */
  reason: string;
  /** Index files (offset and time) rewritten from the log. */
  indexesRebuilt: number;
}

/** The largest relative offset and byte position a segment's indexes can hold. */
export const SEGMENT_U32_LIMIT = 0xffff_ffff;

/**
 * The file name of a segment's part: `00000000000000001200.log`.
 *
 * @param baseOffset the segment's first offset
 * @param extension which file
 */
export function segmentFileName(
  baseOffset: number,
  extension: "log" | "index" | "timeindex",
): string {
  return `${String(baseOffset).padStart(20, "0")}.${extension}`;
}

/** Reads a file in chunks and keeps the bytes a caller asks for in memory. */
class ChunkReader {
  bytes: Uint8Array = new Uint8Array(0);
  /** File position of `bytes[0]`. */
  start = 0;
  #buffer = new Uint8Array(0);

  constructor(
    readonly file: FileHandle,
    readonly end: number,
    readonly chunkBytes: number,
  ) {}

  /** Makes [position, position + length) available; false when the file ends first. */
  ensure(position: number, length: number): boolean {
    if (position + length > this.end) return false;
    if (
      position >= this.start &&
      position + length <= this.start + this.bytes.length
    ) return true;
    const size = Math.max(
      length,
      Math.min(this.chunkBytes, this.end - position),
    );
    if (this.#buffer.length < size) this.#buffer = new Uint8Array(size);
    this.bytes = this.#buffer.subarray(0, size);
    this.start = position;
    if (this.file.read(this.bytes, position) < size) {
      this.bytes = this.bytes.subarray(0, 0);
      return false;
    }
    return true;
  }

  /** Index into `bytes` of file position `position`. */
  at(position: number): number {
    return position - this.start;
  }
}

/** A segment's `.log` file with its two indexes. */
export class Segment {
  readonly baseOffset: number;
  /** Path of the `.log` file. */
  readonly path: string;
  #fs: FileSystem;
  #log: FileHandle;
  #index: OffsetIndex;
  #timeIndex: TimeIndex;
  #options: SegmentOptions;
  #sizeBytes = 0;
  #nextOffset: number;
  #firstAppendTime = -1;
  #lastAppendTime = -1;
  #bytesSinceIndexEntry = 0;
  #header = new Uint8Array(BATCH_HEADER_BYTES);
  #logger: Logger;
  #indexMismatchSeen = false;

  private constructor(
    fs: FileSystem,
    dir: string,
    baseOffset: number,
    options: SegmentOptions,
    logger: Logger,
  ) {
    this.#fs = fs;
    this.#logger = logger;
    this.baseOffset = baseOffset;
    this.#nextOffset = baseOffset;
    this.#options = options;
    this.path = `${dir}/${segmentFileName(baseOffset, "log")}`;
    this.#log = fs.open(this.path, "readWrite");
    try {
      this.#index = OffsetIndex.open(
        fs,
        `${dir}/${segmentFileName(baseOffset, "index")}`,
      );
      this.#timeIndex = TimeIndex.open(
        fs,
        `${dir}/${segmentFileName(baseOffset, "timeindex")}`,
      );
    } catch (error) {
      this.#log.close();
      throw error;
    }
  }

  /**
   * Creates a new, empty segment, replacing any files of the same name.
   *
   * @param fs where the files live
   * @param dir the partition directory
   * @param baseOffset the offset its first record will get
   * @param options index spacing
   * @param logger receives a warning when an index entry proves wrong
   */
  static create(
    fs: FileSystem,
    dir: string,
    baseOffset: number,
    options: SegmentOptions,
    logger: Logger,
  ): Segment {
    const segment = new Segment(fs, dir, baseOffset, options, logger);
    segment.#log.truncate(0);
    segment.#index.rewrite([]);
    segment.#timeIndex.rewrite([]);
    return segment;
  }

  /**
   * Opens an existing segment and recovers it. With `verify` every batch is
   * checked; without, only the indexes' shape and the last batch, falling
   * back to the full check when either is wrong. A bad batch and everything
   * after it is cut off; indexes that differ from the log are rewritten.
   *
   * @param fs where the files live
   * @param dir the partition directory
   * @param baseOffset from the file name
   * @param options index spacing
   * @param verify check every batch's CRC
   * @param log receives a warning for each repair
   * @returns the segment and what was repaired
   */
  static open(
    fs: FileSystem,
    dir: string,
    baseOffset: number,
    options: SegmentOptions,
    verify: boolean,
    log: Logger,
  ): { segment: Segment; recovery: SegmentRecovery } {
    const indexesMissing =
      (fs.exists(`${dir}/${segmentFileName(baseOffset, "index")}`) ? 0 : 1) +
      (fs.exists(`${dir}/${segmentFileName(baseOffset, "timeindex")}`) ? 0 : 1);
    const segment = new Segment(fs, dir, baseOffset, options, log);
    const recovery: SegmentRecovery = {
      verified: false,
      truncatedBytes: 0,
      corruptPosition: -1,
      reason: "",
      indexesRebuilt: 0,
    };
    try {
      if (verify || !segment.#checkQuickly()) segment.#verify(recovery, log);
    } catch (error) {
      segment.close();
      throw error;
    }
    recovery.indexesRebuilt = Math.max(recovery.indexesRebuilt, indexesMissing);
    if (recovery.indexesRebuilt > 0) {
      log.info("segment indexes rebuilt", {
        path: segment.path,
        rebuilt: recovery.indexesRebuilt,
      });
    }
    return { segment, recovery };
  }

  /** Bytes in `.log`, including batches not yet synced. */
  get sizeBytes(): number {
    return this.#sizeBytes;
  }

  /** The offset after the segment's last record; `baseOffset` when empty. */
  get nextOffset(): number {
    return this.#nextOffset;
  }

  /** appendTime of the first batch, or -1 when empty. */
  get firstAppendTime(): number {
    return this.#firstAppendTime;
  }

  /** appendTime of the last (and latest) batch, or -1 when empty. */
  get lastAppendTime(): number {
    return this.#lastAppendTime;
  }

  /** Changes the index spacing for batches appended from now on. */
  set options(options: SegmentOptions) {
    this.#options = options;
  }

  /**
   * Writes validated, stamped batches at the end of the log and indexes them.
   *
   * @param bytes whole batches whose first baseOffset is `nextOffset`
   * @param appendTime the time stamped into every batch in `bytes`
   * @throws {Error} from the file system; the segment is then unusable
   */
  append(bytes: Uint8Array, appendTime: number): void {
    const start = this.#sizeBytes;
    this.#log.write(bytes, start);
    this.#sizeBytes += bytes.length;

    let p = 0;
    while (p < bytes.length) {
      const length = batchLength(bytes, p);
      this.#indexBatch(
        batchBaseOffset(bytes, p) - this.baseOffset,
        start + p,
        appendTime,
        length,
      );
      this.#nextOffset = batchLastOffset(bytes, p) + 1;
      p += length;
    }

    if (this.#firstAppendTime < 0) this.#firstAppendTime = appendTime;
    this.#lastAppendTime = appendTime;
  }

  /**
   * Finds the byte range to read: whole batches from the one holding
   * `offset` (the first batch when `offset` is below the segment), ending
   * before the first batch that reaches `upTo` or would pass `maxBytes`.
   * With `atLeastOne`, the first batch is taken whatever its size.
   *
   * @returns [start, end) byte positions; end = sizeBytes when the segment was read to its end
   */
  locate(
    offset: number,
    maxBytes: number,
    upTo: number,
    atLeastOne: boolean,
  ): { start: number; end: number } {
    const reader = new ChunkReader(
      this.#log,
      this.#sizeBytes,
      Math.max(4096, Math.min(maxBytes, 64 * 1024)),
    );
    let p = offset <= this.baseOffset ? 0 : Math.max(
      0,
      this.#checkedEntryPosition(
        reader,
        this.#index.floorEntry(offset - this.baseOffset),
      ),
    );

    while (p < this.#sizeBytes) {
      const at = this.#readHeader(reader, p);
      if (batchLastOffset(reader.bytes, at) >= offset) break;
      p += batchLength(reader.bytes, at);
    }

    const start = p;
    while (p < this.#sizeBytes) {
      const at = this.#readHeader(reader, p);
      if (batchLastOffset(reader.bytes, at) >= upTo) break;
      const length = batchLength(reader.bytes, at);
      if (p + length - start > maxBytes && !(atLeastOne && p === start)) break;
      p += length;
    }
    return { start, end: p };
  }

  /** Copies log bytes [start, end) into `into` at `intoOffset`. */
  readInto(
    into: Uint8Array,
    intoOffset: number,
    start: number,
    end: number,
  ): void {
    const target = into.subarray(intoOffset, intoOffset + end - start);
    if (this.#log.read(target, start) !== end - start) {
      throw this.#corrupt("log ended before the requested range", start);
    }
  }

  /**
   * The base offset of the first batch with appendTime ≥ `timestamp`:
   * a binary search in the time index, one in the offset index reading
   * the batch headers it points at, then a scan of at most about
   * `indexIntervalBytes` of headers.
   *
   * @returns the offset, or -1 when every batch here is older
   */
  offsetForTime(timestamp: number): number {
    if (this.#sizeBytes === 0 || this.#lastAppendTime < timestamp) return -1;
    if (this.#firstAppendTime >= timestamp) return this.baseOffset;

    // Time index: the last entry older than `timestamp` bounds the search below.
    const entry = this.#timeIndex.lastEntryBefore(timestamp);
    let low = entry < 0
      ? -1
      : this.#index.floorEntry(this.#timeIndex.relativeOffsetAt(entry));
    let high = entry + 1 < this.#timeIndex.count
      ? this.#index.floorEntry(this.#timeIndex.relativeOffsetAt(entry + 1))
      : this.#index.count;

    // Offset index: entry `low` is older than `timestamp`, entry `high` is not.
    const reader = new ChunkReader(this.#log, this.#sizeBytes, 4096);
    while (high - low > 1) {
      const middle = (low + high) >>> 1;
      const position = this.#checkedEntryPosition(reader, middle);
      if (position < 0) {
        low = -1;
        break;
      }
      const at = this.#readHeader(reader, position);
      if (batchAppendTime(reader.bytes, at) < timestamp) low = middle;
      else high = middle;
    }

    let p = Math.max(0, this.#checkedEntryPosition(reader, low));
    while (p < this.#sizeBytes) {
      const at = this.#readHeader(reader, p);
      if (batchAppendTime(reader.bytes, at) >= timestamp) {
        return batchBaseOffset(reader.bytes, at);
      }
      p += batchLength(reader.bytes, at);
    }
    return -1;
  }

  /** Starts an fdatasync of `.log`. */
  sync(): Promise<void> {
    return this.#log.sync();
  }

  /** fdatasync of `.log`, blocking. */
  syncNow(): void {
    this.#log.syncNow();
  }

  close(): void {
    this.#log.close();
    this.#index.close();
    this.#timeIndex.close();
  }

  /** Closes and removes the three files, indexes first so that a crash leaves the log. */
  delete(): void {
    this.close();
    this.#fs.remove(this.#index.path);
    this.#fs.remove(this.#timeIndex.path);
    this.#fs.remove(this.path);
  }

  #indexBatch(
    relativeOffset: number,
    position: number,
    appendTime: number,
    length: number,
  ): void {
    if (
      this.#bytesSinceIndexEntry >= this.#options.indexIntervalBytes
    ) {
      this.#index.append(relativeOffset, position);
      if (appendTime > this.#timeIndex.lastTime) {
        this.#timeIndex.append(appendTime, relativeOffset);
      }
      this.#bytesSinceIndexEntry = 0;
    }
    this.#bytesSinceIndexEntry += length;
  }

  /**
   * Position of index entry `entry` when the batch there has the offset the
   * entry names; 0 for entry -1 (the implicit first entry); -1 when the
   * entry is wrong, so that a damaged index costs a scan, not wrong data.
   */
  #checkedEntryPosition(reader: ChunkReader, entry: number): number {
    if (entry < 0) return 0;
    const position = this.#index.positionAt(entry);
    if (
      position + BATCH_HEADER_BYTES <= this.#sizeBytes &&
      reader.ensure(position, BATCH_HEADER_BYTES) &&
      batchBaseOffset(reader.bytes, reader.at(position)) ===
        this.baseOffset + this.#index.relativeOffsetAt(entry)
    ) return position;
    if (!this.#indexMismatchSeen) {
      this.#indexMismatchSeen = true;
      this.#logger.warn("index entry does not match the log; scanning", {
        path: this.#index.path,
        position,
      });
    }
    return -1;
  }

  /** Reads the header at `position` through `reader`; returns its index in `reader.bytes`. */
  #readHeader(reader: ChunkReader, position: number): number {
    if (!reader.ensure(position, BATCH_HEADER_BYTES)) {
      throw this.#corrupt("truncated batch header", position);
    }
    const at = reader.at(position);
    const length = batchLength(reader.bytes, at);
    if (length < BATCH_HEADER_BYTES || position + length > this.#sizeBytes) {
      throw this.#corrupt("batchLength out of bounds", position);
    }
    return at;
  }

  #corrupt(reason: string, position: number): DakgharError {
    return new DakgharError(
      "storage_error",
      `Corrupt segment ${this.path} at byte ${position}: ${reason}`,
      { path: this.path, position, reason },
    );
  }

  /**
   * The cheap check after a clean shutdown: the indexes have a sane shape
   * and are complete up to the last batch, the headers after the last index
   * entry chain up to the end of the file, and the last batch's CRC holds.
   * Sets the segment's state and returns true; false means verify instead.
   */
  #checkQuickly(): boolean {
    const size = this.#log.size();
    this.#sizeBytes = size;
    if (size === 0) {
      return this.#index.count === 0 && this.#timeIndex.count === 0;
    }
    if (!this.#index.isSane(size, SEGMENT_U32_LIMIT)) return false;

    // Walk the headers from the last index entry to the end of the file.
    const reader = new ChunkReader(this.#log, size, 64 * 1024);
    const first = this.#index.lastPosition;
    let expected = this.baseOffset + this.#index.lastRelativeOffset;
    let p = first;
    let last = -1;
    let bytesSinceIndexEntry = 0;
    let previousTime = -Infinity;
    let firstTime = -Infinity;
    while (p < size) {
      if (!reader.ensure(p, BATCH_HEADER_BYTES)) return false;
      const at = reader.at(p);
      const length = batchLength(reader.bytes, at);
      const time = batchAppendTime(reader.bytes, at);
      if (length < BATCH_HEADER_BYTES || p + length > size) return false;
      if (batchBaseOffset(reader.bytes, at) !== expected) return false;
      if (time < previousTime) return false;
      // An entry was due here but the index ends earlier: it is incomplete.
      const indexed = p === first && this.#index.count > 0;
      if (
        !indexed && bytesSinceIndexEntry >= this.#options.indexIntervalBytes
      ) return false;
      bytesSinceIndexEntry += length;
      expected = batchLastOffset(reader.bytes, at) + 1;
      if (p === first) firstTime = time;
      previousTime = time;
      last = p;
      p += length;
    }

    const lastLength = size - last;
    if (!reader.ensure(last, lastLength)) return false;
    try {
      checkBatch(reader.bytes, reader.at(last), reader.at(size), Infinity);
    } catch {
      return false;
    }
    // The time index is complete when its last entry has the time of the
    // last indexed batch: a later, newer indexed batch would have added one.
    if (!this.#timeIndex.isSane(expected - this.baseOffset)) return false;
    const lastIndexedTime = this.#index.count === 0 ? -Infinity : firstTime;
    if (this.#timeIndex.lastTime !== lastIndexedTime) return false;

    this.#nextOffset = expected;
    this.#lastAppendTime = previousTime;
    this.#firstAppendTime = this.#appendTimeAt(0);
    this.#bytesSinceIndexEntry = bytesSinceIndexEntry;
    return true;
  }

  /**
   * The full check: every batch from the start, CRC included; rebuilds both
   * indexes on the way and cuts the log at the first bad batch.
   */
  #verify(recovery: SegmentRecovery, log: Logger): void {
    const size = this.#log.size();
    const reader = new ChunkReader(this.#log, size, 1 << 20);
    const offsetPairs: number[] = [];
    const timePairs: number[] = [];
    let lastIndexedTime = -Infinity;
    let bytesSinceIndexEntry = 0;
    let expected = this.baseOffset;
    let previousTime = -Infinity;
    let firstTime = -1;
    let p = 0;
    let fault = "";

    while (p < size) {
      fault = this.#batchFault(reader, p, size, expected, previousTime);
      if (fault) break;
      const at = reader.at(p);
      const length = batchLength(reader.bytes, at);
      const time = batchAppendTime(reader.bytes, at);
      const relative = expected - this.baseOffset;
      if (bytesSinceIndexEntry >= this.#options.indexIntervalBytes) {
        offsetPairs.push(relative, p);
        if (time > lastIndexedTime) {
          timePairs.push(time, relative);
          lastIndexedTime = time;
        }
        bytesSinceIndexEntry = 0;
      }
      bytesSinceIndexEntry += length;
      if (firstTime < 0) firstTime = time;
      previousTime = time;
      expected = batchLastOffset(reader.bytes, at) + 1;
      p += length;
    }

    recovery.verified = true;
    if (p < size) {
      log.warn("segment truncated at a bad batch", {
        path: this.path,
        position: p,
        reason: fault,
        bytesTruncated: size - p,
      });
      this.#log.truncate(p);
      recovery.truncatedBytes = size - p;
      recovery.corruptPosition = p;
      recovery.reason = fault;
    }
    if (!this.#index.equals(offsetPairs)) {
      this.#index.rewrite(offsetPairs);
      recovery.indexesRebuilt++;
    }
    if (!this.#timeIndex.equals(timePairs)) {
      this.#timeIndex.rewrite(timePairs);
      recovery.indexesRebuilt++;
    }

    this.#sizeBytes = p;
    this.#nextOffset = expected;
    this.#firstAppendTime = firstTime;
    this.#lastAppendTime = p === 0 ? -1 : previousTime;
    this.#bytesSinceIndexEntry = bytesSinceIndexEntry;
  }

  /** Why the batch at `p` cannot be kept, or "" when it is whole and in sequence. */
  #batchFault(
    reader: ChunkReader,
    p: number,
    size: number,
    expected: number,
    previousTime: number,
  ): string {
    if (!reader.ensure(p, BATCH_HEADER_BYTES)) return "truncated batch header";
    const length = batchLength(reader.bytes, reader.at(p));
    if (length < BATCH_HEADER_BYTES) return "batchLength below 40";
    if (p + length > size) return "batch runs past the end of the segment";
    if (!reader.ensure(p, length)) {
      return "batch runs past the end of the segment";
    }
    const at = reader.at(p);
    try {
      checkBatch(reader.bytes, at, at + length, Infinity);
    } catch (error) {
      if (error instanceof MalformedBatchError) {
        return String(error.context.reason);
      }
      throw error;
    }
    if (batchBaseOffset(reader.bytes, at) !== expected) {
      return `baseOffset ${
        batchBaseOffset(reader.bytes, at)
      } where ${expected} was due`;
    }
    if (batchAppendTime(reader.bytes, at) < previousTime) {
      return "appendTime earlier than the previous batch's";
    }
    if (
      batchRecordCount(reader.bytes, at) + expected - this.baseOffset >
        SEGMENT_U32_LIMIT
    ) {
      return "relative offset past the index limit";
    }
    return "";
  }

  #appendTimeAt(position: number): number {
    if (this.#log.read(this.#header, position) < BATCH_HEADER_BYTES) {
      throw this.#corrupt("truncated batch header", position);
    }
    return batchAppendTime(this.#header, 0);
  }
}
