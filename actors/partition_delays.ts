/**
 * Delayed records of one partition (docs/queues.md, "Delayed records"): a
 * record scheduled for later waits in the delay journal and is appended to
 * the partition's log when due, so it gets its offset then.
 *
 * Firing is crash-safe. Before appending due records the journal gets an
 * intent entry (fsynced) with their ids and the log end offset; once the
 * append is durable a fired entry closes it. On open, an intent without a
 * fired entry is resolved by reading the log from its offset:
 *
 * | crash point                      | log holds the records | on restart            |
 * | -------------------------------- | --------------------- | --------------------- |
 * | before the intent is durable     | no                    | still pending         |
 * | after the intent, before append  | no                    | pending, fire at once |
 * | during the append                | some or all           | found ones are done   |
 * | after the append, before fired   | all                   | all done              |
 *
 * Nothing is fired before its due time on the broker's clock, restart or
 * not; records overdue after a restart fire at once.
 */
import { nanoid } from "nanoid";
import { DELAY_ID_HEADER, type FlushPolicy } from "../src/broker.ts";
import { DueQueue } from "../src/delay/due_queue.ts";
import {
  cancelEntry,
  DelayJournal,
  firedEntry,
  intentEntry,
  type JournalEntry,
  readScheduleEntry,
  scheduleEntry,
} from "../src/delay/delay_journal.ts";
import {
  DakgharError,
  OffsetOutOfRangeError,
  RecordTooLargeError,
} from "../src/errors.ts";
import {
  BATCH_HEADER_BYTES,
  encodeBatch,
  forEachRecord,
} from "../src/log/record_batch.ts";
import {
  forEachRecordStart,
  joinBatches,
  recordHeaderAt,
} from "../src/log/record_pick.ts";
import type { Logger } from "../src/logger.ts";
import type { FileSystem } from "../src/runtime/types.ts";

/** Journal entries this close together are read in one span when firing. */
const READ_GAP_MAX = 4096;
/** The longest span read at once when firing. */
const READ_SPAN_MAX = 8 * 1024 * 1024;

/** What {@linkcode PartitionDelays} needs from its partition's log. */
export interface DelayHost {
  /** Appends producer-framed batches now; resolves once durable and visible, with the offsets. */
  append(
    batches: Uint8Array,
  ): Promise<{ baseOffset: number; lastOffset: number }>;
  /** Whole batches from `offset`, as PartitionLog.read. */
  read(offset: number, maxBytes: number): Uint8Array;
  logEndOffset(): number;
}

/** Options of {@linkcode PartitionDelays.open}. */
export interface PartitionDelaysOptions {
  partition: number;
  /** "sync": a schedule or cancel is fsynced before it resolves; "interval": fsynced each second. */
  flush: FlushPolicy;
  /**
   * The topic's largest record. A record that would pass it once the
   * delay-id header is added is refused at schedule, since its append
   * would fail when due (default: no check).
   */
  maxMessageBytes?: number;
  /** Broker clock, ms since epoch (default Date.now). */
  now?: () => number;
  /** Most records appended by one firing (default 10,000). */
  fireRecordsMax?: number;
  /** Most journal bytes read back for one firing (default 4 MiB). */
  fireBytesMax?: number;
  /** Compact once the journal is this large and more than half dead (default 8 MiB). */
  compactBytesMin?: number;
  /** Wait before firing again after a failed append (default 1,000 ms). */
  retryMs?: number;
}

const delayIdName = new TextEncoder().encode(DELAY_ID_HEADER);
const encoder = new TextEncoder();
const decoder = new TextDecoder();
/** Longest wait armed at once, so that a clock jump is noticed. */
const TIMER_MS_MAX = 60_000;
const INTERVAL_SYNC_MS = 1_000;

/** The delayed records of one partition; see the file comment. */
export class PartitionDelays {
  readonly #journal: DelayJournal;
  readonly #queue = new DueQueue();
  readonly #host: DelayHost;
  readonly #log: Logger;
  readonly #partition: number;
  readonly #flush: FlushPolicy;
  readonly #now: () => number;
  readonly #fireRecordsMax: number;
  readonly #fireBytesMax: number;
  readonly #compactBytesMin: number;
  readonly #retryMs: number;
  readonly #maxMessageBytes: number;
  #intentSeq = 0;
  #started = false;
  #closed = false;
  #failure: Error | null = null;
  #firing: Promise<void> | null = null;
  #timer: ReturnType<typeof setTimeout> | null = null;
  #timerDue = Infinity;
  #retryUntil = 0;
  #syncTimer: ReturnType<typeof setInterval> | null = null;
  #dirty = false;

  private constructor(
    journal: DelayJournal,
    host: DelayHost,
    log: Logger,
    options: PartitionDelaysOptions,
  ) {
    this.#journal = journal;
    this.#host = host;
    this.#log = log;
    this.#partition = options.partition;
    this.#flush = options.flush;
    this.#now = options.now ?? Date.now;
    this.#fireRecordsMax = options.fireRecordsMax ?? 10_000;
    this.#fireBytesMax = options.fireBytesMax ?? 4 << 20;
    this.#compactBytesMin = options.compactBytesMin ?? 8 << 20;
    this.#retryMs = options.retryMs ?? 1_000;
    this.#maxMessageBytes = options.maxMessageBytes ?? Infinity;
  }

  /**
   * Opens the journal under `<partitionDir>/delayed/`, replays it and
   * resolves unfinished intents against the log. Nothing fires before
   * {@linkcode start}.
   *
   * @param fs the runtime's file system
   * @param partitionDir the partition's directory
   * @param host the partition's log
   * @param log scoped logger
   * @param options partition, flush policy and tuning
   * @throws when the journal cannot be read or the log cannot be read back
   */
  static open(
    fs: FileSystem,
    partitionDir: string,
    host: DelayHost,
    log: Logger,
    options: PartitionDelaysOptions,
  ): PartitionDelays {
    const journal = DelayJournal.open(fs, `${partitionDir}/delayed`, log);
    const delays = new PartitionDelays(journal, host, log, options);
    try {
      delays.#recover();
    } catch (error) {
      journal.close();
      throw error;
    }
    return delays;
  }

  /** Records scheduled and not yet appended (firing ones included). */
  get pending(): number {
    return this.#queue.size;
  }

  /**
   * Keeps records until due. Durable per the flush policy when it resolves.
   *
   * @param records producer-framed batches (validated by the caller)
   * @param due one due time per record, broker ms since epoch
   * @returns one id per record, in order, and the due times
   * @throws {RangeError} when `due` does not hold one finite time per record
   * @throws {RecordTooLargeError} when a record with its delay-id header
   *   would pass `maxMessageBytes`; nothing is scheduled
   * @throws {DakgharError} `storage_error` when the journal cannot be written
   */
  async schedule(
    records: Uint8Array,
    due: number[],
  ): Promise<{ ids: string[]; due: number[] }> {
    this.#checkOpen();

    // One entry per record: the record re-framed alone, its delay id added
    // in place of any it had (a republished record may carry an old one,
    // and recovery looks at the first).
    const entries: Uint8Array[] = [];
    const ids: string[] = [];
    let size = 0;
    forEachRecord(records, (record) => {
      const index = ids.length;
      if (index >= due.length || !Number.isFinite(due[index])) {
        throw new RangeError(
          `Cannot schedule: no due time for record ${index} (${due.length} given)`,
        );
      }
      const id = `${this.#partition}-${nanoid()}`;
      const batch = encodeBatch([{
        key: record.key,
        value: record.value,
        headers: [
          ...record.headers.filter(([name]) => name !== DELAY_ID_HEADER),
          [DELAY_ID_HEADER, encoder.encode(id)],
        ],
        timestamp: record.timestamp,
      }]);
      const recordBytes = batch.length - BATCH_HEADER_BYTES;
      if (recordBytes > this.#maxMessageBytes) {
        throw new RecordTooLargeError(recordBytes, this.#maxMessageBytes);
      }
      const entry = scheduleEntry(id, due[index], batch);
      entries.push(entry);
      ids.push(id);
      size += entry.length;
    });
    if (ids.length !== due.length) {
      throw new RangeError(
        `Cannot schedule: ${due.length} due times for ${ids.length} records`,
      );
    }

    // One write, then the records join the queue at their positions.
    const bytes = new Uint8Array(size);
    let p = 0;
    for (const entry of entries) {
      bytes.set(entry, p);
      p += entry.length;
    }
    const position = this.#write(bytes);
    p = position;
    for (let i = 0; i < ids.length; i++) {
      this.#queue.add(ids[i], due[i], p, entries[i].length);
      p += entries[i].length;
    }

    await this.#maybeSync();
    this.#arm();
    return { ids, due: due.slice() };
  }

  /**
   * Cancels a pending record. Durable per the flush policy when it
   * resolves.
   *
   * @param delayId an id {@linkcode schedule} returned
   * @returns false when the id is unknown, already appended or firing
   * @throws {DakgharError} `storage_error` when the journal cannot be written
   */
  async cancel(delayId: string): Promise<boolean> {
    this.#checkOpen();
    if (!this.#queue.isPending(delayId)) return false;
    this.#write(cancelEntry(delayId));
    this.#queue.remove(delayId);
    await this.#maybeSync();
    return true;
  }

  /** Starts firing due records, overdue ones at once. */
  start(): void {
    if (this.#started || this.#closed) return;
    this.#started = true;
    if (this.#flush === "interval") {
      this.#syncTimer = setInterval(() => {
        if (!this.#dirty || this.#failure) return;
        this.#dirty = false;
        this.#journal.sync().catch((error) => this.#fail(error));
      }, INTERVAL_SYNC_MS);
    }
    this.#arm();
  }

  /** Stops firing, waits for a firing in progress and closes the journal durably. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    if (this.#syncTimer !== null) clearInterval(this.#syncTimer);
    this.#timer = null;
    this.#syncTimer = null;
    await this.#firing;
    try {
      if (this.#failure === null) this.#journal.syncNow();
    } finally {
      this.#journal.close();
    }
  }

  // -------------------------------------------------------------------------
  // Recovery

  #recover(): void {
    const intents = new Map<number, { logEndOffset: number; ids: string[] }>();
    this.#journal.replay((entry: JournalEntry) => {
      switch (entry.type) {
        case 1:
          this.#queue.add(entry.id, entry.due, entry.position, entry.length);
          break;
        case 2:
          this.#queue.remove(entry.id);
          break;
        case 3:
          intents.set(entry.seq, entry);
          if (entry.seq > this.#intentSeq) this.#intentSeq = entry.seq;
          break;
        case 4: {
          const ids = entry.ids.length > 0
            ? entry.ids
            : intents.get(entry.seq)?.ids ?? [];
          for (const id of ids) this.#queue.remove(id);
          intents.delete(entry.seq);
          break;
        }
      }
    });

    // An intent without its fired entry: look for its records in the log.
    for (const [seq, intent] of intents) {
      const wanted = new Set(
        intent.ids.filter((id) => this.#queue.slotOf(id) >= 0),
      );
      const found = this.#findAppended(wanted, intent.logEndOffset);
      this.#journal.append(firedEntry(seq, [...found]));
      for (const id of found) this.#queue.remove(id);
      this.#log.info("delayed records recovered after a crash while firing", {
        appended: found.size,
        pending: wanted.size - found.size,
      });
    }
    if (intents.size > 0) this.#journal.syncNow();
    this.#maybeCompact();
  }

  /** The ids of `wanted` that the log holds from `fromOffset` on. */
  #findAppended(wanted: Set<string>, fromOffset: number): Set<string> {
    const found = new Set<string>();
    let offset = fromOffset;
    while (found.size < wanted.size && offset < this.#host.logEndOffset()) {
      let bytes: Uint8Array;
      try {
        bytes = this.#host.read(offset, 1 << 20);
      } catch (error) {
        // Retention removed the start: records appended there are gone
        // anyway, so look on from the log start.
        if (
          !(error instanceof OffsetOutOfRangeError) ||
          error.logStartOffset <= offset
        ) throw error;
        this.#log.warn("delayed records intent older than the log start", {
          offset,
          logStartOffset: error.logStartOffset,
        });
        offset = error.logStartOffset;
        continue;
      }
      if (bytes.length === 0) break;
      let next = offset;
      forEachRecordStart(bytes, (recordOffset, at) => {
        next = recordOffset + 1;
        if (recordOffset < offset) return;
        const value = recordHeaderAt(bytes, at, delayIdName);
        if (value === null) return;
        const id = decoder.decode(value);
        if (wanted.has(id)) found.add(id);
      });
      if (next <= offset) break;
      offset = next;
    }
    return found;
  }

  // -------------------------------------------------------------------------
  // Firing

  /** Sets the timer for the earliest due record, or fires now. */
  #arm(): void {
    if (!this.#started || this.#closed || this.#failure) return;
    if (this.#firing !== null) return;
    const due = Math.max(this.#queue.nextDue(), this.#retryUntil);
    if (due === Infinity) {
      if (this.#timer !== null) clearTimeout(this.#timer);
      this.#timer = null;
      this.#timerDue = Infinity;
      return;
    }
    if (this.#timer !== null && this.#timerDue <= due) return;
    if (this.#timer !== null) clearTimeout(this.#timer);
    const wait = Math.min(Math.max(0, due - this.#now()), TIMER_MS_MAX);
    this.#timerDue = due;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#timerDue = Infinity;
      this.#fire();
    }, wait);
  }

  #fire(): void {
    if (this.#firing !== null || this.#closed || this.#failure) return;
    this.#firing = this.#fireDue()
      .catch((error) => {
        this.#fail(error);
      })
      .finally(() => {
        this.#firing = null;
        this.#maybeCompact();
        this.#arm();
      });
  }

  /** Appends due records, a firing at a time, until none is due. */
  async #fireDue(): Promise<void> {
    while (!this.#closed && this.#failure === null) {
      if (this.#now() < this.#retryUntil) return;
      const { slots } = this.#queue.takeDue(
        this.#now(),
        this.#fireRecordsMax,
        this.#fireBytesMax,
      );
      if (slots.length === 0) return;

      // Read the records back from the journal.
      const entries = this.#readEntries(slots);
      const ids = entries.map((entry) => entry.id);
      // Each entry holds a batch stamped with its delay id: join their
      // records into one batch; when timestamps lie too far apart for one,
      // append them back to back as they are.
      const parts = entries.map((entry) => entry.batch);
      const batches = joinBatches(parts) ?? concatenate(parts);

      // Intent first, durable; then the append; then close the intent.
      const seq = ++this.#intentSeq;
      const logEndOffset = this.#host.logEndOffset();
      this.#write(intentEntry(seq, logEndOffset, ids));
      await this.#journal.sync();
      let appended: Set<string>;
      try {
        await this.#host.append(batches);
        appended = new Set(ids);
      } catch (error) {
        this.#log.warn("delayed records append failed", {
          records: ids.length,
          error: String(error),
        });
        appended = this.#findAppended(new Set(ids), logEndOffset);
      }
      this.#write(
        firedEntry(seq, appended.size === ids.length ? [] : [...appended]),
      );
      for (let i = 0; i < slots.length; i++) {
        if (appended.has(ids[i])) this.#queue.remove(ids[i]);
        else this.#queue.restore(slots[i]);
      }
      if (appended.size < ids.length) {
        this.#retryUntil = this.#now() + this.#retryMs;
        return;
      }
    }
  }

  /**
   * The schedule entries of `slots`, in slot order. Entries scheduled
   * together lie side by side in the journal, so they are read in spans:
   * one read covers neighbours with less than {@linkcode READ_GAP_MAX}
   * bytes between them, instead of one read per record.
   */
  #readEntries(slots: number[]): ReturnType<typeof readScheduleEntry>[] {
    const entries = slots.map((slot) => this.#queue.entryOf(slot));
    const order = entries.map((_, index) => index).sort((a, b) =>
      entries[a].position - entries[b].position
    );
    const result: ReturnType<typeof readScheduleEntry>[] = new Array(
      entries.length,
    );
    for (let i = 0; i < order.length;) {
      const start = entries[order[i]].position;
      let end = start + entries[order[i]].length;
      let j = i + 1;
      while (
        j < order.length &&
        entries[order[j]].position - end < READ_GAP_MAX &&
        entries[order[j]].position + entries[order[j]].length - start <=
          READ_SPAN_MAX
      ) {
        end = Math.max(
          end,
          entries[order[j]].position + entries[order[j]].length,
        );
        j++;
      }
      const span = this.#journal.read(start, end - start);
      for (let k = i; k < j; k++) {
        const { position, length } = entries[order[k]];
        result[order[k]] = readScheduleEntry(
          span.subarray(position - start, position - start + length),
        );
      }
      i = j;
    }
    return result;
  }

  // -------------------------------------------------------------------------
  // Journal writes

  #write(bytes: Uint8Array): number {
    try {
      const position = this.#journal.append(bytes);
      this.#dirty = true;
      return position;
    } catch (error) {
      throw this.#fail(error);
    }
  }

  async #maybeSync(): Promise<void> {
    if (this.#flush !== "sync") return;
    try {
      await this.#journal.sync();
    } catch (error) {
      throw this.#fail(error);
    }
  }

  #maybeCompact(): void {
    const size = this.#journal.size;
    if (this.#failure || this.#firing !== null || this.#journal.syncing) return;
    if (size < this.#compactBytesMin || this.#queue.liveBytes * 2 > size) {
      return;
    }
    try {
      this.#journal.compact(
        (id, position) => {
          const slot = this.#queue.slotOf(id);
          return slot >= 0 && this.#queue.entryOf(slot).position === position;
        },
        (id, position) => this.#queue.move(this.#queue.slotOf(id), position),
      );
    } catch (error) {
      this.#log.warn("delay journal compaction failed", {
        error: String(error),
      });
    }
  }

  #checkOpen(): void {
    if (this.#failure) {
      throw new DakgharError(
        "storage_error",
        `Delay journal unavailable for partition ${this.#partition}: ${this.#failure.message}`,
        { partition: this.#partition },
        { cause: this.#failure },
      );
    }
    if (this.#closed) {
      throw new DakgharError("shutting_down", "Delayed records are closed");
    }
  }

  /** Blocks the journal after a failed write or read: every later call fails. */
  #fail(error: unknown): DakgharError {
    if (this.#failure === null) {
      this.#failure = error instanceof Error ? error : new Error(String(error));
      this.#log.error("delay journal failed", { error: String(error) });
      if (this.#timer !== null) clearTimeout(this.#timer);
      this.#timer = null;
    }
    return new DakgharError(
      "storage_error",
      `Delay journal unavailable for partition ${this.#partition}: ${this.#failure.message}`,
      { partition: this.#partition },
      { cause: error },
    );
  }
}

/** The arrays back to back, in one new array. */
function concatenate(parts: Uint8Array[]): Uint8Array {
  const bytes = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
  let at = 0;
  for (const part of parts) {
    bytes.set(part, at);
    at += part.length;
  }
  return bytes;
}
