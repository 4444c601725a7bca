/**
 * The log of one partition: a directory of segments named by base offset,
 * appended to at the end, read from anywhere, trimmed from the front by
 * retention. Synchronous except {@linkcode PartitionLog.flush}; its only
 * user is the partition actor, alone on its thread.
 *
 * Files besides the segments:
 *
 * - `clean-shutdown`: `{"logEndOffset":N}`, written by `close()`, removed
 *   by `open()`. Its presence means every segment was synced and closed.
 * - `recovery-point`: `{"logEndOffset":N}`, written by `open()` after
 *   recovery. Everything below N was verified then, so after a crash only
 *   the segments reaching N or beyond need a full check.
 *
 * Recovery on open. "Full" checks every batch's CRC, framing, offset
 * sequence and appendTime order and rebuilds both indexes; "quick" checks
 * the indexes' shape and completeness and the last batch, and falls back to
 * full when either is wrong.
 *
 * | found on disk                                  | check | outcome                                                      |
 * | ---------------------------------------------- | ----- | ------------------------------------------------------------ |
 * | clean-shutdown marker                          | quick | every segment                                                |
 * | no marker (crash)                              | full  | segments reaching the recovery point; quick for older ones   |
 * | no marker, no recovery point                   | full  | every segment                                                |
 * | torn or garbled batch in a segment             | full  | cut at that batch (warn, path + position); later segments    |
 * |                                                |       | deleted                                                      |
 * | index or time index missing, torn, unsorted,   | quick | falls back to full; index rewritten from the log             |
 * | past the log end or incomplete                 |       |                                                              |
 * | index file with no `.log`                      | —     | deleted; its base offset still bounds the log end (below)    |
 * | `.log` of a middle segment missing             | —     | gap in offsets kept; reads skip it (warn)                    |
 * | active `.log` lost, or offsets named on disk   | —     | log end raised to them; a new segment starts there (warn)    |
 * | past the recovered end                         |       |                                                              |
 * | segment starting below the previous one's end  | —     | it and all later segments deleted (warn)                     |
 * | leftover `*.tmp`                               | —     | deleted                                                      |
 * | nothing                                        | —     | empty segment at offset 0                                    |
 *
 * Offsets are never reused: the log end after recovery is the largest of
 * the recovered end, every base offset named by a file seen, and the marker
 * or recovery point. When that is past the last segment's end a new empty
 * segment starts there, leaving a gap that reads step over. Only offsets
 * given out since the last open can come back: after a crash that took every
 * file naming them, the recovery point is the last record of them.
 */
import type { FileSystem } from "../runtime/types.ts";
import type { Logger } from "../logger.ts";
import {
  DakgharError,
  OffsetOutOfRangeError,
  PartitionClosedError,
} from "../errors.ts";
import {
  batchLength,
  batchRecordCount,
  stampBatch,
  validateBatches,
} from "./record_batch.ts";
import {
  Segment,
  SEGMENT_U32_LIMIT,
  segmentFileName,
  type SegmentOptions,
  type SegmentRecovery,
} from "./segment.ts";

/** A partition's storage settings. */
export interface PartitionLogConfig {
  /** Roll when the active segment would pass it. */
  segmentBytes: number;
  /** Roll when the active segment's first batch is older. */
  segmentMs: number;
  /** Delete closed segments whose newest batch is older; -1 keeps forever. */
  retentionMs: number;
  /** Delete the oldest closed segments while the log is larger; -1 for no limit. */
  retentionBytes: number;
  /** Largest record, its length field included. */
  maxMessageBytes: number;
  /** "sync": fsync before ack, group commit; "interval": the caller flushes on a timer. */
  flush: "sync" | "interval";
  /** Timer period for "interval". */
  flushIntervalMs: number;
  /** Bytes of log between offset index entries. */
  indexIntervalBytes: number;
  /**
   * Retention may delete records some queue group has not settled (default
   * false: it stops at the lowest ack floor passed to maybeApplyRetention).
   */
  retentionDropsUnsettled?: boolean;
}

/** The defaults from the architecture notes. */
export const defaultPartitionLogConfig: PartitionLogConfig = {
  segmentBytes: 128 * 1024 * 1024,
  segmentMs: 7 * 24 * 60 * 60 * 1000,
  retentionMs: 7 * 24 * 60 * 60 * 1000,
  retentionBytes: -1,
  maxMessageBytes: 1024 * 1024,
  flush: "sync",
  flushIntervalMs: 1000,
  indexIntervalBytes: 4096,
};

/** What `open()` found and repaired. */
export interface RecoveryReport {
  /** A clean-shutdown marker was found. */
  clean: boolean;
  /** Segments opened. */
  segments: number;
  /** Segments whose every batch was verified. */
  segmentsChecked: number;
  /** Bytes cut from segment tails, deleted segments included. */
  bytesTruncated: number;
  /** Index files rewritten from the log. */
  indexesRebuilt: number;
  /** Segments and orphan files deleted. */
  filesDeleted: number;
  /** Each bad batch found: file, byte position and reason. */
  corruptions: { path: string; position: number; reason: string }[];
  /** The log end offset after recovery. */
  logEndOffset: number;
}

/** Sizes and offsets of a partition. */
export interface PartitionStats {
  logStartOffset: number;
  logEndOffset: number;
  highWatermark: number;
  bytes: number;
  segments: number;
}

const CLEAN_SHUTDOWN = "clean-shutdown";
const RECOVERY_POINT = "recovery-point";
const SEGMENT_FILE = /^(\d{20})\.(log|index|timeindex)$/;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The segmented, indexed, recoverable log of one partition. */
export class PartitionLog {
  readonly dir: string;
  readonly recovery: RecoveryReport;
  logStartOffset = 0;
  logEndOffset = 0;
  highWatermark = 0;
  #fs: FileSystem;
  #config: PartitionLogConfig;
  #log: Logger;
  #topic: string;
  #partition: number;
  #segments: Segment[];
  #bytes = 0;
  #lastAppendTime = -1;
  /** The first write or fsync failure; set, the log takes no more writes. */
  #failure: unknown = null;
  #closed = false;
  #syncing: Promise<number> | null = null;
  #queued: Promise<number> | null = null;
  /** Log end offset covered by the last completed fsync. */
  #durableOffset = 0;

  private constructor(
    fs: FileSystem,
    dir: string,
    config: PartitionLogConfig,
    log: Logger,
    segments: Segment[],
    recovery: RecoveryReport,
  ) {
    this.#fs = fs;
    this.dir = dir;
    this.#config = config;
    this.#log = log;
    this.#segments = segments;
    this.recovery = recovery;
    // The partition directory is data/topics/<topic>/<partition>.
    const parts = dir.split("/").filter((part) => part !== "");
    this.#topic = parts.at(-2) ?? "";
    this.#partition = Number(parts.at(-1) ?? -1);
    const active = segments[segments.length - 1];
    this.logStartOffset = segments[0].baseOffset;
    this.logEndOffset = active.nextOffset;
    this.highWatermark = this.logEndOffset;
    this.#durableOffset = this.logEndOffset;
    for (const segment of segments) this.#bytes += segment.sizeBytes;
    this.#lastAppendTime = Math.max(...segments.map((s) => s.lastAppendTime));
  }

  /**
   * Opens the partition directory `dir`, creating it when missing, and
   * recovers it (see the table at the top of this file).
   *
   * @param fs the file system
   * @param dir the partition directory, "/"-joined; its last two parts name topic and partition
   * @param config storage settings
   * @param log scoped by the caller; recovery repairs are logged at info and warn
   * @returns the open log; its `recovery` says what was found
   */
  static open(
    fs: FileSystem,
    dir: string,
    config: PartitionLogConfig,
    log: Logger,
  ): PartitionLog {
    fs.mkdirs(dir);
    const report: RecoveryReport = {
      clean: false,
      segments: 0,
      segmentsChecked: 0,
      bytesTruncated: 0,
      indexesRebuilt: 0,
      filesDeleted: 0,
      corruptions: [],
      logEndOffset: 0,
    };
    const found = scanDirectory(fs, dir, report, log);
    const options = { indexIntervalBytes: config.indexIntervalBytes };
    const segments = openSegments(fs, dir, options, found, report, log);
    startActiveSegment(fs, dir, options, segments, found.floor, log);

    // Recovered bytes may sit only in the page cache after a process crash.
    if (!report.clean) segments[segments.length - 1].syncNow();
    const partitionLog = new PartitionLog(
      fs,
      dir,
      config,
      log,
      segments,
      report,
    );
    report.logEndOffset = partitionLog.logEndOffset;
    writeOffsetFile(fs, `${dir}/${RECOVERY_POINT}`, partitionLog.logEndOffset);
    if (report.clean) {
      fs.remove(`${dir}/${CLEAN_SHUTDOWN}`);
      fs.syncDirectory(dir);
    }
    log.info("partition log opened", {
      dir,
      clean: report.clean,
      segments: segments.length,
      logStartOffset: partitionLog.logStartOffset,
      logEndOffset: partitionLog.logEndOffset,
      bytesTruncated: report.bytesTruncated,
      indexesRebuilt: report.indexesRebuilt,
    });
    return partitionLog;
  }

  /** The current settings. */
  get config(): PartitionLogConfig {
    return this.#config;
  }

  /** Replaces the settings; they apply from the next append, roll or retention pass. */
  configure(config: PartitionLogConfig): void {
    this.#config = config;
    for (const segment of this.#segments) {
      segment.options = { indexIntervalBytes: config.indexIntervalBytes };
    }
  }

  /**
   * Validates, stamps and writes one or several concatenated batches. The
   * bytes are stamped in place. With flush "sync" the records become
   * visible (highWatermark) only after a {@linkcode flush} covering them.
   *
   * @param batches record batches as a producer sends them
   * @param now the broker clock, ms; appendTime = max(now, the last appendTime)
   * @returns the offsets given and the appendTime stamped
   * @throws {MalformedBatchError} or {RecordTooLargeError} for bad input; the log is unchanged
   * @throws {PartitionClosedError} when the log is closed or blocked by a failed write
   */
  append(
    batches: Uint8Array,
    now: number,
  ): { baseOffset: number; lastOffset: number; appendTime: number } {
    this.#ensureWritable();
    const { recordCount } = validateBatches(
      batches,
      this.#config.maxMessageBytes,
    );

    try {
      this.#maybeRollFor(batches.length, recordCount, now);
      const baseOffset = this.logEndOffset;
      const appendTime = Math.max(now, this.#lastAppendTime);
      let offset = baseOffset;
      for (let p = 0; p < batches.length; p += batchLength(batches, p)) {
        stampBatch(batches, p, offset, appendTime);
        offset += batchRecordCount(batches, p);
      }

      this.#active.append(batches, appendTime);

      this.#bytes += batches.length;
      this.#lastAppendTime = appendTime;
      this.logEndOffset = offset;
      if (this.#config.flush === "interval") this.highWatermark = offset;
      return { baseOffset, lastOffset: offset - 1, appendTime };
    } catch (error) {
      throw this.#block(error);
    }
  }

  /**
   * Group commit: makes every append written before the call durable with
   * one fdatasync, shared by all callers that arrive while it runs; calls
   * during an fsync share the next one. At most one fsync runs and one
   * waits.
   *
   * @returns the high watermark after the fsync covering this call
   * @throws {PartitionClosedError} when the fsync fails; the log is then blocked
   */
  flush(): Promise<number> {
    if (this.#failure !== null || this.#closed) {
      return Promise.reject(this.#closedError());
    }
    // A queued fsync has not started yet, so it covers this call too.
    if (this.#queued !== null) return this.#queued;
    if (this.#syncing === null) {
      if (this.#durableOffset === this.logEndOffset) {
        return Promise.resolve(this.highWatermark);
      }
      this.#syncing = this.#sync();
      return this.#syncing;
    }
    this.#queued = this.#syncing.catch(() => {}).then(() => {
      this.#queued = null;
      if (this.#failure !== null || this.#closed) {
        throw this.#closedError();
      }
      this.#syncing = this.#sync();
      return this.#syncing;
    });
    return this.#queued;
  }

  /**
   * Whole batches starting with the one holding `offset`, across segments
   * while `maxBytes` allows: at least one batch even if larger, none that
   * reaches `upTo`.
   *
   * @param offset first offset wanted
   * @param maxBytes soft limit on the bytes returned
   * @param upTo offsets from here on are not returned (default highWatermark)
   * @returns a fresh array (safe to transfer); empty when offset ≥ upTo
   * @throws {OffsetOutOfRangeError} when offset is outside [logStartOffset, logEndOffset]
   */
  read(
    offset: number,
    maxBytes: number,
    upTo: number = this.highWatermark,
  ): Uint8Array {
    if (offset < this.logStartOffset || offset > this.logEndOffset) {
      throw new OffsetOutOfRangeError(
        this.#topic,
        this.#partition,
        offset,
        this.logStartOffset,
        this.logEndOffset,
      );
    }
    if (offset >= upTo) return new Uint8Array(0);

    // Byte ranges first, so that the result is one exact allocation.
    const ranges: { segment: Segment; start: number; end: number }[] = [];
    let total = 0;
    for (
      let i = this.#segmentIndexFor(offset);
      i < this.#segments.length;
      i++
    ) {
      const segment = this.#segments[i];
      if (segment.baseOffset >= upTo) break;
      if (offset >= segment.nextOffset) continue;
      const { start, end } = segment.locate(
        offset,
        maxBytes - total,
        upTo,
        ranges.length === 0,
      );
      if (end > start) {
        ranges.push({ segment, start, end });
        total += end - start;
      }
      if (end < segment.sizeBytes || total >= maxBytes) break;
    }

    const bytes = new Uint8Array(total);
    let o = 0;
    for (const { segment, start, end } of ranges) {
      segment.readInto(bytes, o, start, end);
      o += end - start;
    }
    return bytes;
  }

  /**
   * The first offset whose batch was appended at or after `timestamp`.
   *
   * @param timestamp ms since epoch, compared with appendTime
   * @returns that offset, or logEndOffset when every batch is older
   */
  offsetForTime(timestamp: number): number {
    for (const segment of this.#segments) {
      if (segment.lastAppendTime < timestamp) continue;
      const offset = segment.offsetForTime(timestamp);
      if (offset >= 0) return offset;
    }
    return this.logEndOffset;
  }

  /**
   * Rolls a new segment when the active one's first batch is segmentMs old.
   * Does nothing on a closed or blocked log, whose appends report the failure.
   */
  maybeRoll(now: number): void {
    if (this.#failure !== null || this.#closed) return;
    try {
      this.#maybeRollFor(0, 0, now);
    } catch (error) {
      throw this.#block(error);
    }
  }

  /**
   * Deletes the oldest closed segments whose newest batch is older than
   * retentionMs, then while the log is larger than retentionBytes. The
   * active segment always stays; logStartOffset moves forward.
   *
   * @param now the broker clock, ms
   * @param unsettledFloor the lowest queue ack floor: unless the config has
   *   retentionDropsUnsettled, no segment holding an offset at or above it
   *   is deleted
   */
  maybeApplyRetention(now: number, unsettledFloor = Infinity): void {
    if (this.#closed) return;
    const { retentionMs, retentionBytes } = this.#config;
    const guarded = this.#config.retentionDropsUnsettled !== true;
    while (this.#segments.length > 1) {
      const oldest = this.#segments[0];
      if (guarded && this.#segments[1].baseOffset > unsettledFloor) break;
      let reason = "";
      if (retentionMs >= 0 && now - oldest.lastAppendTime > retentionMs) {
        reason = "time";
      } else if (retentionBytes >= 0 && this.#bytes > retentionBytes) {
        reason = "bytes";
      }
      if (!reason) break;
      this.#segments.shift();
      this.#bytes -= oldest.sizeBytes;
      oldest.delete();
      this.logStartOffset = this.#segments[0].baseOffset;
      if (this.highWatermark < this.logStartOffset) {
        this.highWatermark = this.logStartOffset;
      }
      this.#log.info("segment deleted by retention", {
        baseOffset: oldest.baseOffset,
        reason,
        logStartOffset: this.logStartOffset,
      });
    }
  }

  /** Offsets, bytes and segment count. */
  stats(): PartitionStats {
    return {
      logStartOffset: this.logStartOffset,
      logEndOffset: this.logEndOffset,
      highWatermark: this.highWatermark,
      bytes: this.#bytes,
      segments: this.#segments.length,
    };
  }

  /**
   * Syncs and closes every segment and writes the clean-shutdown marker,
   * unless a failed write blocked the log (it then needs a full recovery).
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    let clean = this.#failure === null;
    try {
      if (clean) this.#active.syncNow();
    } catch (error) {
      clean = false;
      this.#log.error("sync on close failed", { dir: this.dir, error });
    }
    for (const segment of this.#segments) segment.close();
    if (!clean) return;
    try {
      writeOffsetFile(
        this.#fs,
        `${this.dir}/${CLEAN_SHUTDOWN}`,
        this.logEndOffset,
      );
    } catch (error) {
      this.#log.error("clean-shutdown marker not written", {
        dir: this.dir,
        error,
      });
    }
  }

  /** Closes the log, without a marker, and removes its directory. */
  delete(): void {
    if (!this.#closed) {
      this.#closed = true;
      for (const segment of this.#segments) segment.close();
    }
    this.#fs.remove(this.dir);
  }

  get #active(): Segment {
    return this.#segments[this.#segments.length - 1];
  }

  #ensureWritable(): void {
    if (this.#failure !== null || this.#closed) throw this.#closedError();
  }

  #closedError(): PartitionClosedError {
    if (this.#failure !== null) {
      return new PartitionClosedError(
        this.#topic,
        this.#partition,
        "a write or fsync failed; the log needs recovery",
        { cause: this.#failure },
      );
    }
    return new PartitionClosedError(this.#topic, this.#partition, "log closed");
  }

  /** Records the first storage failure and returns the error to throw. */
  #block(error: unknown): unknown {
    if (error instanceof DakgharError && error.code !== "storage_error") {
      return error;
    }
    if (this.#failure === null) {
      this.#failure = error;
      this.#log.error("partition log blocked", { dir: this.dir, error });
    }
    return this.#closedError();
  }

  async #sync(): Promise<number> {
    const target = this.logEndOffset;
    try {
      await this.#active.sync();
    } catch (error) {
      this.#syncing = null;
      throw this.#block(error);
    }
    this.#syncing = null;
    if (target > this.#durableOffset) this.#durableOffset = target;
    if (this.#config.flush === "sync" && target > this.highWatermark) {
      this.highWatermark = target;
    }
    return this.highWatermark;
  }

  #maybeRollFor(bytes: number, records: number, now: number): void {
    const active = this.#active;
    if (active.sizeBytes === 0) return;
    const full = active.sizeBytes + bytes > this.#config.segmentBytes ||
      active.sizeBytes + bytes > SEGMENT_U32_LIMIT ||
      this.logEndOffset + records - active.baseOffset > SEGMENT_U32_LIMIT;
    const old = now - active.firstAppendTime >= this.#config.segmentMs;
    if (!full && !old) return;

    // The closed segment is synced here, so flushes only sync the active one.
    active.syncNow();
    const segment = Segment.create(
      this.#fs,
      this.dir,
      this.logEndOffset,
      { indexIntervalBytes: this.#config.indexIntervalBytes },
      this.#log,
    );
    this.#segments.push(segment);
    this.#fs.syncDirectory(this.dir);
    this.#log.info("segment rolled", {
      baseOffset: segment.baseOffset,
      reason: full ? "size" : "age",
      previousBytes: active.sizeBytes,
    });
  }

  /** Index of the last segment whose base offset is ≤ `offset`, or 0. */
  #segmentIndexFor(offset: number): number {
    let low = 0;
    let high = this.#segments.length - 1;
    let found = 0;
    while (low <= high) {
      const middle = (low + high) >>> 1;
      if (this.#segments[middle].baseOffset <= offset) {
        found = middle;
        low = middle + 1;
      } else high = middle - 1;
    }
    return found;
  }
}

/** What the partition directory holds before any segment is opened. */
interface DirectoryScan {
  /** Base offsets that have a `.log` file, ascending. */
  bases: number[];
  /** Everything below it was verified at the last open or clean close. */
  recoveryPoint: number;
  /** The least log end offset allowed: no offset named on disk is reused. */
  floor: number;
}

/**
 * Lists segment files, reads the marker and recovery point, and deletes
 * temporary files and indexes whose `.log` is gone.
 */
function scanDirectory(
  fs: FileSystem,
  dir: string,
  report: RecoveryReport,
  log: Logger,
): DirectoryScan {
  const logBases = new Set<number>();
  const indexPaths = new Map<number, string[]>();
  let floor = 0;
  for (const entry of fs.list(dir)) {
    const match = SEGMENT_FILE.exec(entry.name);
    if (match && entry.isFile) {
      const base = Number(match[1]);
      floor = Math.max(floor, base);
      if (match[2] === "log") logBases.add(base);
      else indexPaths.set(base, [...indexPaths.get(base) ?? [], entry.name]);
    } else if (entry.name.endsWith(".tmp")) {
      fs.remove(`${dir}/${entry.name}`);
      report.filesDeleted++;
    }
  }

  for (const [base, names] of indexPaths) {
    if (logBases.has(base)) continue;
    for (const name of names) {
      fs.remove(`${dir}/${name}`);
      report.filesDeleted++;
      log.warn("index without a segment deleted", { path: `${dir}/${name}` });
    }
  }

  const marker = readOffsetFile(fs, `${dir}/${CLEAN_SHUTDOWN}`);
  const recoveryPoint = marker ??
    readOffsetFile(fs, `${dir}/${RECOVERY_POINT}`) ?? 0;
  report.clean = marker !== null;
  return {
    bases: [...logBases].sort((a, b) => a - b),
    recoveryPoint,
    floor: Math.max(floor, recoveryPoint),
  };
}

/**
 * Opens the segments in offset order, each checked as deeply as the table
 * at the top says. After a segment cut at a bad batch, or one overlapping
 * its predecessor, every later segment is deleted.
 */
function openSegments(
  fs: FileSystem,
  dir: string,
  options: SegmentOptions,
  found: DirectoryScan,
  report: RecoveryReport,
  log: Logger,
): Segment[] {
  const { bases, recoveryPoint } = found;
  const segments: Segment[] = [];
  let cut = false;
  try {
    for (let i = 0; i < bases.length; i++) {
      const base = bases[i];
      const previous = segments.at(-1);
      if (!cut && previous && previous.nextOffset > base) {
        log.warn("segment overlaps the previous one", { base });
        cut = true;
      }
      if (cut) {
        const path = `${dir}/${segmentFileName(base, "log")}`;
        report.bytesTruncated += Math.max(0, fs.sizeOf(path));
        deleteSegmentFiles(fs, dir, base);
        report.filesDeleted++;
        log.warn("segment after a truncation deleted", { path });
        continue;
      }
      if (previous && previous.nextOffset < base) {
        log.warn("offsets missing between segments", {
          from: previous.nextOffset,
          to: base,
        });
      }

      const reachesPoint = i === bases.length - 1 ||
        bases[i + 1] > recoveryPoint;
      const verify = !report.clean && reachesPoint;
      const { segment, recovery } = Segment.open(
        fs,
        dir,
        base,
        options,
        verify,
        log,
      );
      segments.push(segment);
      addSegmentRecovery(report, segment, recovery);
      if (recovery.corruptPosition >= 0) cut = true;
    }
  } catch (error) {
    for (const segment of segments) segment.close();
    throw error;
  }
  return segments;
}

/**
 * Makes sure the last segment ends at or after `floor`, starting a new
 * segment there when needed (replacing an empty last one).
 */
function startActiveSegment(
  fs: FileSystem,
  dir: string,
  options: SegmentOptions,
  segments: Segment[],
  floor: number,
  log: Logger,
): void {
  const active = segments.at(-1);
  if (active && active.nextOffset >= floor) return;
  if (active && active.sizeBytes === 0) {
    segments.pop()!.delete();
  } else if (active) {
    log.warn("log end raised past lost offsets", {
      from: active.nextOffset,
      to: floor,
    });
    active.syncNow();
  }
  segments.push(Segment.create(fs, dir, floor, options, log));
  fs.syncDirectory(dir);
}

function addSegmentRecovery(
  report: RecoveryReport,
  segment: Segment,
  recovery: SegmentRecovery,
): void {
  report.segments++;
  if (recovery.verified) report.segmentsChecked++;
  report.bytesTruncated += recovery.truncatedBytes;
  report.indexesRebuilt += recovery.indexesRebuilt;
  if (recovery.corruptPosition >= 0) {
    report.corruptions.push({
      path: segment.path,
      position: recovery.corruptPosition,
      reason: recovery.reason,
    });
  }
}

function deleteSegmentFiles(fs: FileSystem, dir: string, base: number): void {
  fs.remove(`${dir}/${segmentFileName(base, "index")}`);
  fs.remove(`${dir}/${segmentFileName(base, "timeindex")}`);
  fs.remove(`${dir}/${segmentFileName(base, "log")}`);
}

/** Reads `{"logEndOffset":N}`; null when missing or unreadable. */
function readOffsetFile(fs: FileSystem, path: string): number | null {
  if (!fs.exists(path)) return null;
  try {
    const value = JSON.parse(decoder.decode(fs.readFile(path))).logEndOffset;
    return Number.isSafeInteger(value) && value >= 0 ? value : null;
  } catch {
    return null;
  }
}

function writeOffsetFile(fs: FileSystem, path: string, offset: number): void {
  fs.writeFileAtomic(
    path,
    encoder.encode(JSON.stringify({ logEndOffset: offset })),
  );
}
