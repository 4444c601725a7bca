/**
 * One queue or key_shared group's progress on one partition
 * (docs/queues.md, "Where the state lives"): pure logic over a record
 * source and a clock passed in, so it runs without workers or timers.
 *
 * Per-record state lives in a RecordRing (record_ring.ts), typed arrays
 * covering the window [floor, end): the delivery state, the attempt
 * (deliveries so far), the member and deadline of the current delivery, and
 * the record's bytes. Heaps of number tuples order deadlines, nack delays
 * and redeliveries; only failures (a Map) and key_shared keys
 * (key_parking.ts) allocate per record.
 *
 * | state     | meaning                                             | settle with its attempt |
 * | --------- | --------------------------------------------------- | ----------------------- |
 * | FREE      | not delivered since the cursor was loaded           | refused                 |
 * | PENDING   | never delivered, its key just came free (in ready)  | refused                 |
 * | IN_FLIGHT | delivered, deadline running                         | taken                   |
 * | EXPIRED   | deadline passed or member released (in ready)       | taken (not extend)      |
 * | NACKED    | nacked, waiting for its delay (waiting, then ready) | refused                 |
 * | PARKED    | key_shared: an earlier record of its key unsettled  | refused                 |
 * | DEAD      | its dead letter is on its way                       | refused                 |
 * | SETTLED   | acked, filtered out, or dead letter appended        | refused                 |
 */
import type { QueueCursorConfig, QueueCursorStats } from "../envelope.ts";
import {
  BATCH_HEADER_BYTES,
  batchBaseOffset,
  batchLength,
  batchRecordCount,
  sliceBatches,
} from "../log/record_batch.ts";
import { FreedTally } from "./freed_tally.ts";
import { KeyParking } from "./key_parking.ts";
import { NumberHeap } from "./number_heap.ts";
import { RecordRing, RecordState } from "./record_ring.ts";
import { capUtf8, DEAD_LETTER_ERROR_MAX_BYTES } from "./dead_letter_batch.ts";
import type {
  DeadReason,
  FailureState,
  QueueCursorState,
} from "./queue_state.ts";
import { readU32 } from "../log/_bytes.ts";
import { recordKeyStringAt } from "../log/record_pick.ts";
import { QUEUE_LIMITS } from "../broker.ts";

/** True when the record whose recordLength field is at `recordStart` passes the filter. */
export type RecordMatcher = (bytes: Uint8Array, recordStart: number) => boolean;

/** Where a cursor reads records: a PartitionLog fits. */
export interface RecordSource {
  readonly logStartOffset: number;
  /** Offsets below it are visible. */
  readonly highWatermark: number;
  /** Whole batches from the one holding `offset`, at least one when any is visible. */
  read(offset: number, maxBytes: number): Uint8Array;
}

/** What `fetch` hands out: the fields of a `deliveries` message. */
export interface QueueFetch {
  bytes: Uint8Array;
  records: number;
  /** Flat [offset, attempt] pairs for attempts above 1. */
  redelivered: number[];
  /** Records were still deliverable afterwards. */
  more: boolean;
  /**
   * The deliveries must not leave before a state write that starts now has
   * finished: they carry attempts above 1, or reach past the delivered
   * mark already on disk. Otherwise a crash could hand out their receipts
   * again.
   */
  persist: boolean;
}

/** What `settle` did: the fields of a `qsettled` message. */
export interface QueueSettleOutcome {
  settled: number;
  refused: { offset: number; attempt: number; code: "stale_receipt" }[];
  /** Flat [member, records, bytes] triples of in-flight deliveries ended. */
  freed: number[];
}

/** A record to dead-letter, with what its provenance headers need. */
export interface DeadLetterNote {
  offset: number;
  deliveries: number;
  reason: Exclude<DeadReason, "">;
  error: string | null;
  firstFailedAt: number;
}

/** A nack delay or extension is at most this long. */
export const EXTEND_MAX_MS = QUEUE_LIMITS.extendMsMax;

/**
 * How far past the read offset a state write marks records as delivered.
 * Fetches below that mark on disk leave without waiting for a write; after
 * a crash, up to this many records never delivered count one delivery.
 */
const DELIVERY_RESERVE = 4096;
/** A fetch examines at most this many log bytes, so a filter skipping most records cannot stall the actor. */
const EXAMINE_BYTES_MAX = 4 * 1024 * 1024;
const READ_BYTES_MIN = 64 * 1024;

const { FREE, PENDING, IN_FLIGHT, EXPIRED, NACKED, PARKED, DEAD, SETTLED } =
  RecordState;

interface Failure {
  firstFailedAt: number;
  error: string | null;
  dead: DeadReason;
}

/** A group's cursor on one partition. */
export class QueueCursor {
  #config: QueueCursorConfig;
  readonly #matcher: RecordMatcher | null;
  /** Log bytes per record in the last chunk read, to size the next read. */
  #bytesPerRecord = 256;
  readonly #random: () => number;

  /** Every offset below is settled. */
  #floor: number;
  /** The lowest offset never examined. */
  #readOffset: number;
  /** Offsets from here on have no state in the ring. */
  #end: number;
  readonly #ring = new RecordRing();

  readonly #failures = new Map<number, Failure>();
  #pendingDead: number[] = [];
  /** (due, offset) of nacked records. */
  readonly #waiting = new NumberHeap(2);
  /** Offsets deliverable again, lowest first. */
  readonly #ready = new NumberHeap(1);
  /** (deadline, first offset, count) per delivered run. */
  readonly #deadlines = new NumberHeap(3);
  readonly #parking = new KeyParking();
  #deadLettered = 0;
  #lostToRetention = 0;
  /** Offsets below it were delivered at least once, in this life or before. */
  #deliveredMark = 0;
  /**
   * The delivered mark the next state write records: ahead of the read
   * offset by up to DELIVERY_RESERVE, so that most fetches find their
   * records below a mark already on disk and need not wait for a write.
   */
  #reserved = 0;
  /** The delivered mark of the last state write that finished. */
  #durable = 0;
  /**
   * After a restart: the read offset the state file recorded. Records from
   * it up to the delivered mark were reserved, perhaps never delivered:
   * their one counted delivery does not use up a limit of one.
   */
  #reservedFrom = Infinity;
  readonly #entry = [0, 0, 0];

  /**
   * @param config the group's settings on this partition
   * @param matcher the compiled filter, or null for none
   * @param start the state file's content, or where to start without one
   * @param random for the backoff jitter
   */
  constructor(
    config: QueueCursorConfig,
    matcher: RecordMatcher | null,
    start: QueueCursorState | { floor: number },
    random: () => number = Math.random,
  ) {
    this.#config = config;
    this.#matcher = matcher;
    this.#random = random;
    this.#floor = start.floor;
    this.#readOffset = start.floor;
    this.#end = start.floor;
    if ("settled" in start) this.#load(start);
  }

  /** The group's settings. */
  get config(): QueueCursorConfig {
    return this.#config;
  }

  /** Every offset below it is settled. */
  get floor(): number {
    return this.#floor;
  }

  /** The lowest offset never examined. */
  get readOffset(): number {
    return this.#readOffset;
  }

  /** Takes new settings; mode and filter stay as created. */
  configure(config: QueueCursorConfig): void {
    this.#config = config;
  }

  /**
   * Hands out up to `maxRecords` records to `member`: due redeliveries
   * first (lowest offset first), then new records from the read offset.
   * Records not matching the filter are settled on the way.
   *
   * @param maxBytes soft: at least one record goes out when any is ready
   * @param now the broker clock, ms
   */
  fetch(
    member: number,
    maxRecords: number,
    maxBytes: number,
    now: number,
    source: RecordSource,
  ): QueueFetch {
    this.dropBelow(source.logStartOffset);
    this.#promoteDue(now);
    const delivery = {
      pieces: [] as Uint8Array[],
      records: 0,
      bytes: 0,
      redelivered: [] as number[],
      deadline: now + this.#config.ackTimeoutMs,
      member,
    };
    this.#fetchReady(delivery, maxRecords, maxBytes, now, source);
    // Records from the ready heap (redeliveries, and key_shared records
    // whose key came free) were passed by the read offset before: the
    // delivered mark on disk does not count them, so their attempts must be
    // written before they leave.
    const fromReady = delivery.records;
    this.#fetchNew(delivery, maxRecords, maxBytes, now, source);
    this.#advanceFloor();
    const persist = delivery.records > 0 &&
      (fromReady > 0 || delivery.redelivered.length > 0 ||
        this.#readOffset > this.#durable);
    // Renewed halfway, so the next state write (settlements cause them
    // anyway) puts the new mark on disk before reads get there.
    if (this.#readOffset > this.#reserved - DELIVERY_RESERVE / 2) {
      this.#reserved = Math.max(
        this.#reserved,
        this.#readOffset,
        Math.min(this.#readOffset + DELIVERY_RESERVE, source.highWatermark),
      );
    }

    let bytes: Uint8Array;
    const only = delivery.pieces[0];
    if (
      delivery.pieces.length === 1 && only.byteOffset === 0 &&
      only.length === only.buffer.byteLength
    ) {
      bytes = only;
    } else {
      bytes = new Uint8Array(delivery.bytes);
      let o = 0;
      for (const piece of delivery.pieces) {
        bytes.set(piece, o);
        o += piece.length;
      }
    }
    return {
      bytes,
      records: delivery.records,
      redelivered: delivery.redelivered,
      more: this.hasDeliverable(now, source.highWatermark),
      persist,
    };
  }

  /**
   * Settles deliveries: `acks` as flat [offset, count, attempt] triples,
   * `items` one nack, reject or extend each. A settlement whose attempt is
   * not the record's current delivery is refused.
   */
  settle(
    acks: number[],
    items: {
      offset: number;
      attempt: number;
      action: "nack" | "reject" | "extend";
      delayMs?: number;
      reason?: string;
    }[],
    now: number,
  ): QueueSettleOutcome {
    const tally = new FreedTally();
    const refused: QueueSettleOutcome["refused"] = [];
    let settled = 0;
    for (let i = 0; i + 2 < acks.length; i += 3) {
      const first = acks[i], count = acks[i + 1], attempt = acks[i + 2];
      for (let offset = first; offset < first + count; offset++) {
        const slot = this.#receipt(offset, attempt);
        if (slot < 0) {
          refused.push({ offset, attempt, code: "stale_receipt" });
          continue;
        }
        if (this.#ring.state[slot] === IN_FLIGHT) {
          tally.add(this.#ring.member[slot], this.#ring.bytes[slot]);
        }
        this.#settleRecord(offset, slot);
        settled++;
      }
    }

    for (const item of items) {
      const { offset, attempt } = item;
      const slot = this.#receipt(offset, attempt);
      const state = slot < 0 ? FREE : this.#ring.state[slot];
      if (slot < 0 || (item.action === "extend" && state !== IN_FLIGHT)) {
        refused.push({ offset, attempt, code: "stale_receipt" });
        continue;
      }
      settled++;
      if (item.action === "extend") {
        const deadline = now +
          clampDelay(item.delayMs, this.#config.ackTimeoutMs);
        this.#ring.deadline[slot] = deadline;
        this.#deadlines.push(deadline, offset, 1);
        continue;
      }
      if (state === IN_FLIGHT) {
        tally.add(this.#ring.member[slot], this.#ring.bytes[slot]);
      }
      if (item.action === "reject") {
        this.#failure(offset, now, item.reason ?? null);
        this.#deadLetter(offset, slot, "rejected");
      } else if (state === EXPIRED) {
        // The expiry counted as the failed delivery; the nack sets its delay.
        this.#failure(offset, now, item.reason ?? null);
        this.#delay(offset, slot, now, item.delayMs);
      } else {
        this.#fail(offset, slot, now, item.reason ?? null, true, item.delayMs);
      }
    }
    this.#advanceFloor();
    return { settled, refused, freed: tally.triples() };
  }

  /**
   * Makes `member`'s in-flight records deliverable again at once; each
   * counts as a failed delivery.
   *
   * @returns flat [member, records, bytes] triples of what was released
   */
  release(member: number, now: number): number[] {
    const tally = new FreedTally();
    for (let offset = this.#floor; offset < this.#readOffset; offset++) {
      const slot = offset & this.#ring.mask;
      if (
        this.#ring.state[slot] === IN_FLIGHT &&
        this.#ring.member[slot] === member
      ) {
        tally.add(member, this.#ring.bytes[slot]);
        this.#fail(offset, slot, now, null, false);
      }
    }
    return tally.triples();
  }

  /**
   * Ends every delivery whose ack deadline has passed; each counts as a
   * failed delivery and becomes deliverable again (or a dead letter).
   * Nacked records whose delay has passed become deliverable too.
   *
   * @returns flat [member, records, bytes] triples of what expired
   */
  expire(now: number): number[] {
    const tally = new FreedTally();
    const entry = this.#entry;
    while ((this.#deadlines.peek() ?? Infinity) <= now) {
      this.#deadlines.pop(entry);
      const first = Math.max(entry[1], this.#floor);
      const last = Math.min(entry[1] + entry[2], this.#end);
      for (let offset = first; offset < last; offset++) {
        const slot = offset & this.#ring.mask;
        if (
          this.#ring.state[slot] !== IN_FLIGHT ||
          this.#ring.deadline[slot] > now
        ) {
          continue;
        }
        tally.add(this.#ring.member[slot], this.#ring.bytes[slot]);
        this.#fail(offset, slot, now, null, false);
      }
    }
    this.#promoteDue(now);
    return tally.triples();
  }

  /** When `expire` or a nack delay next has work, or Infinity. */
  nextTimerAt(): number {
    return Math.min(
      this.#deadlines.peek() ?? Infinity,
      this.#waiting.peek() ?? Infinity,
    );
  }

  /** True when a fetch now would hand out (or settle by filter) something. */
  hasDeliverable(now: number, highWatermark: number): boolean {
    this.#promoteDue(now);
    while (this.#ready.size > 0) {
      if (this.#isReady(this.#ready.peek()!, now)) return true;
      this.#ready.pop();
    }
    return this.#readOffset < highWatermark &&
      this.#readOffset - this.#floor < this.#config.maxUnsettled;
  }

  /** Records that became dead letters since the last call, in offset order. */
  takeDeadLetters(): DeadLetterNote[] {
    const notes: DeadLetterNote[] = [];
    const offsets = this.#pendingDead.sort((a, b) => a - b);
    this.#pendingDead = [];
    for (const offset of offsets) {
      if (offset < this.#floor || offset >= this.#end) continue;
      const slot = offset & this.#ring.mask;
      const failure = this.#failures.get(offset);
      if (this.#ring.state[slot] !== DEAD || failure === undefined) continue;
      notes.push({
        offset,
        deliveries: this.#ring.attempt[slot],
        reason: failure.dead as Exclude<DeadReason, "">,
        error: failure.error,
        firstFailedAt: failure.firstFailedAt,
      });
    }
    return notes;
  }

  /**
   * The dead letters of `offsets` are appended: those records are settled.
   *
   * @returns how many were settled
   */
  deadDone(offsets: number[]): number {
    let settled = 0;
    for (const offset of offsets) {
      if (offset < this.#floor || offset >= this.#end) continue;
      const slot = offset & this.#ring.mask;
      if (this.#ring.state[slot] !== DEAD) continue;
      this.#settleRecord(offset, slot);
      this.#deadLettered++;
      settled++;
    }
    this.#advanceFloor();
    return settled;
  }

  /**
   * Retention removed the offsets below `logStart`: unsettled ones among
   * them are counted lost and the floor moves there.
   *
   * @returns flat [member, records, bytes] triples of in-flight records lost
   */
  dropBelow(logStart: number): number[] {
    const tally = new FreedTally();
    if (logStart <= this.#floor) return tally.triples();
    const stop = Math.min(logStart, this.#end);
    for (let offset = this.#floor; offset < stop; offset++) {
      const slot = offset & this.#ring.mask;
      const state = this.#ring.state[slot];
      if (state !== SETTLED) {
        this.#lostToRetention++;
        if (state === IN_FLIGHT) {
          tally.add(this.#ring.member[slot], this.#ring.bytes[slot]);
        }
        this.#failures.delete(offset);
        this.#releaseKey(offset);
      }
      this.#ring.clear(slot);
    }
    if (logStart > this.#end) {
      this.#lostToRetention += logStart - Math.max(this.#end, this.#floor);
    }
    this.#floor = logStart;
    if (this.#end < logStart) this.#end = logStart;
    if (this.#readOffset < logStart) this.#readOffset = logStart;
    this.#advanceFloor();
    return tally.triples();
  }

  /** Progress for `qstats`. */
  stats(logEndOffset: number): QueueCursorStats {
    const counts = this.#ring.counts;
    return {
      ackFloor: this.#floor,
      readOffset: this.#readOffset,
      logEndOffset,
      unsettled: Math.max(0, logEndOffset - this.#floor - counts[SETTLED]),
      inFlight: counts[IN_FLIGHT],
      waiting: counts[PENDING] + counts[EXPIRED] + counts[NACKED] +
        counts[PARKED],
      deadLettered: this.#deadLettered,
      lostToRetention: this.#lostToRetention,
    };
  }

  /** What the state file keeps (see src/queue/queue_state.ts). */
  /** A state write recording `delivered` (from {@linkcode snapshot}) finished. */
  markDurable(delivered: number): void {
    if (delivered > this.#durable) this.#durable = delivered;
  }

  snapshot(): QueueCursorState {
    const settled: number[] = [];
    const failures: FailureState[] = [];
    const delivered = Math.max(
      this.#readOffset,
      this.#deliveredMark,
      this.#reserved,
    );
    let runStart = -1;
    for (let offset = this.#floor; offset < this.#end; offset++) {
      const slot = offset & this.#ring.mask;
      const state = this.#ring.state[slot];
      if (state === SETTLED) {
        if (runStart < 0) runStart = offset;
        continue;
      }
      if (runStart >= 0) {
        settled.push(runStart, offset);
        runStart = -1;
      }
      // The state file implies 1 delivery below `delivered` and 0 above;
      // other counts without a failure (never delivered yet, or delivered
      // again after a restart) are kept as count-only entries.
      // Records reserved but not read yet (attempt 0 below `delivered`)
      // come back from a crash counted as delivered once: the price of
      // not writing before every fetch (see DELIVERY_RESERVE).
      const attempt = this.#ring.attempt[slot];
      if (
        state !== DEAD && attempt !== (offset < delivered ? 1 : 0) &&
        !(attempt === 0 && offset >= this.#readOffset) &&
        !this.#failures.has(offset)
      ) {
        failures.push({
          offset,
          deliveries: attempt,
          firstFailedAt: 0,
          error: null,
          dead: "",
          retryAt: 0,
        });
      }
    }
    if (runStart >= 0) settled.push(runStart, this.#end);
    for (const [offset, failure] of this.#failures) {
      const slot = offset & this.#ring.mask;
      failures.push({
        offset,
        deliveries: this.#ring.attempt[slot],
        firstFailedAt: failure.firstFailedAt,
        error: failure.error,
        dead: failure.dead,
        // A nack delay outlives a restart.
        retryAt: this.#ring.state[slot] === NACKED
          ? this.#ring.deadline[slot]
          : 0,
      });
    }
    // Where records "delivered" only by the reservation begin: not below
    // the point a previous life recorded, since records a restart made the
    // read offset pass again were really delivered before it.
    const read = this.#reservedFrom === Infinity
      ? this.#readOffset
      : Math.max(this.#readOffset, Math.min(this.#reservedFrom, delivered));
    return {
      floor: this.#floor,
      read,
      delivered,
      settled,
      failures,
      deadLettered: this.#deadLettered,
      lostToRetention: this.#lostToRetention,
    };
  }

  // -------------------------------------------------------------------------
  // Delivering

  #fetchReady(
    delivery: Delivery,
    maxRecords: number,
    maxBytes: number,
    now: number,
    source: RecordSource,
  ): void {
    const ready = this.#ready;
    while (
      delivery.records < maxRecords &&
      (delivery.records === 0 || delivery.bytes < maxBytes) &&
      ready.size > 0
    ) {
      const first = ready.peek()!;
      ready.pop();
      if (!this.#isReady(first, now)) continue;
      let count = 1;
      let bytes = this.#ring.bytes[first & this.#ring.mask];
      while (
        delivery.records + count < maxRecords &&
        delivery.bytes + bytes < maxBytes &&
        ready.peek() === first + count && this.#isReady(first + count, now)
      ) {
        bytes += this.#ring.bytes[(first + count) & this.#ring.mask];
        ready.pop();
        count++;
      }
      this.#deliverRun(delivery, source, first, count, bytes);
    }
  }

  #fetchNew(
    delivery: Delivery,
    maxRecords: number,
    maxBytes: number,
    now: number,
    source: RecordSource,
  ): void {
    const keyShared = this.#config.mode === "key_shared";
    const matcher = this.#matcher;
    let examined = 0;
    let done = false;
    while (
      !done && examined < EXAMINE_BYTES_MAX &&
      this.#readOffset < source.highWatermark &&
      this.#readOffset - this.#floor < this.#config.maxUnsettled
    ) {
      // Read about what the records still wanted take, not all of maxBytes:
      // a member with a large byte prefetch would otherwise pull megabytes
      // off the log for every few hundred records.
      const wanted = (maxRecords - delivery.records) * this.#bytesPerRecord *
          1.25 + BATCH_HEADER_BYTES;
      const chunk = source.read(
        this.#readOffset,
        Math.max(
          READ_BYTES_MIN,
          Math.min(maxBytes - delivery.bytes, wanted, EXAMINE_BYTES_MAX),
        ),
      );
      if (chunk.length === 0) break;
      examined += chunk.length;
      let chunkRecords = 0;
      for (let p = 0; p < chunk.length; p += batchLength(chunk, p)) {
        chunkRecords += batchRecordCount(chunk, p);
      }
      if (chunkRecords > 0) {
        this.#bytesPerRecord = Math.max(16, chunk.length / chunkRecords);
      }
      let runStart = -1;
      let runBatch = 0;
      let runCount = 0;
      let runBytes = 0;
      const flush = () => {
        if (runCount > 0) {
          this.#deliverSlice(
            delivery,
            sliceBatches(chunk, runStart, runCount, runBatch),
          );
        }
        runCount = 0;
        runBytes = 0;
      };

      walk: for (let p = 0; p < chunk.length; p += batchLength(chunk, p)) {
        const base = batchBaseOffset(chunk, p);
        const count = batchRecordCount(chunk, p);
        let r = p + BATCH_HEADER_BYTES;
        for (let i = 0; i < count; i++) {
          const offset = base + i;
          const recordStart = r;
          const size = 4 + readU32(chunk, r);
          r += size;
          if (offset < this.#readOffset) continue;
          const taken = delivery.records + runCount;
          if (
            taken >= maxRecords ||
            (taken > 0 && delivery.bytes + runBytes >= maxBytes) ||
            offset - this.#floor >= this.#config.maxUnsettled
          ) {
            done = true;
            break walk;
          }

          // Offsets the log skips (lost to a crash) have nothing to settle.
          if (offset > this.#readOffset) flush();
          this.#reserve(offset + 1);
          for (let gap = this.#readOffset; gap < offset; gap++) {
            const gapSlot = gap & this.#ring.mask;
            if (this.#ring.state[gapSlot] !== SETTLED) {
              this.#ring.setState(gapSlot, SETTLED);
            }
          }
          this.#readOffset = offset + 1;
          const slot = offset & this.#ring.mask;
          this.#ring.bytes[slot] = size;
          const state = this.#ring.state[slot];

          if (state === NACKED && this.#ring.deadline[slot] <= now) {
            // Nacked before a restart and due by now: deliverable.
            this.#ring.setState(slot, FREE);
          } else if (state === NACKED) {
            // Nacked before a restart, its delay still running: it waits
            // (behind its key, if an earlier record holds that).
            if (
              !keyShared ||
              !this.#parkKey(
                offset,
                slot,
                recordKeyStringAt(chunk, recordStart),
              )
            ) {
              this.#waiting.push(this.#ring.deadline[slot], offset);
            }
            flush();
            continue;
          }
          if (state === SETTLED || state === DEAD) {
            if (state === DEAD && keyShared) {
              this.#parkKey(
                offset,
                slot,
                recordKeyStringAt(chunk, recordStart),
              );
            }
            flush();
            continue;
          }
          if (matcher !== null && !matcher(chunk, recordStart)) {
            this.#ring.setState(slot, SETTLED);
            flush();
            continue;
          }
          if (
            keyShared &&
            this.#parkKey(offset, slot, recordKeyStringAt(chunk, recordStart))
          ) {
            flush();
            continue;
          }
          const attempt = this.#ring.attempt[slot];
          const onlyReserved = attempt === 1 && offset >= this.#reservedFrom &&
            offset < this.#deliveredMark;
          if (attempt >= this.#config.maxDeliveries && !onlyReserved) {
            // Restarted with this record's deliveries used up.
            this.#failure(offset, now, null);
            this.#deadLetter(offset, slot, "max_deliveries");
            flush();
            continue;
          }
          if (runCount === 0) {
            runStart = offset;
            runBatch = p;
          }
          runCount++;
          runBytes += size;
        }
      }
      flush();
    }
  }

  /** Reads and delivers `count` consecutive offsets from `first`. */
  #deliverRun(
    delivery: Delivery,
    source: RecordSource,
    first: number,
    count: number,
    bytes: number,
  ): void {
    let offset = first;
    while (offset < first + count) {
      const chunk = source.read(offset, bytes + BATCH_HEADER_BYTES);
      const slice = sliceBatches(chunk, offset, first + count - offset);
      if (slice.records === 0) break;
      this.#deliverSlice(delivery, slice);
      offset = slice.nextOffset;
    }
  }

  /** Marks every record in `slice` in flight to the delivery's member. */
  #deliverSlice(
    delivery: Delivery,
    slice: { bytes: Uint8Array; records: number },
  ): void {
    const bytes = slice.bytes;
    const { member, deadline, redelivered } = delivery;
    const mask = this.#ring.mask;
    let first = -1;
    let last = -1;
    for (let p = 0; p < bytes.length; p += batchLength(bytes, p)) {
      const base = batchBaseOffset(bytes, p);
      const count = batchRecordCount(bytes, p);
      let r = p + BATCH_HEADER_BYTES;
      for (let i = 0; i < count; i++) {
        const size = 4 + readU32(bytes, r);
        r += size;
        const offset = base + i;
        const slot = offset & mask;
        const attempt = ++this.#ring.attempt[slot];
        if (attempt > 1) redelivered.push(offset, attempt);
        this.#ring.member[slot] = member;
        this.#ring.deadline[slot] = deadline;
        // The batch header is charged to its first record, so a member's
        // charges add up to the bytes it was sent.
        this.#ring.bytes[slot] = i === 0 ? size + BATCH_HEADER_BYTES : size;
        this.#ring.setState(slot, IN_FLIGHT);
        if (first < 0) first = offset;
        if (offset !== last + 1 && last >= 0) {
          this.#deadlines.push(deadline, first, last - first + 1);
          first = offset;
        }
        last = offset;
      }
    }
    if (first >= 0) this.#deadlines.push(deadline, first, last - first + 1);
    delivery.pieces.push(bytes);
    delivery.records += slice.records;
    delivery.bytes += bytes.length;
  }

  #isReady(offset: number, now: number): boolean {
    if (offset < this.#floor || offset >= this.#end) return false;
    const slot = offset & this.#ring.mask;
    const state = this.#ring.state[slot];
    return state === PENDING || state === EXPIRED ||
      (state === NACKED && this.#ring.deadline[slot] <= now);
  }

  /** Moves nacked records whose delay has passed to the ready heap. */
  #promoteDue(now: number): void {
    const entry = this.#entry;
    while ((this.#waiting.peek() ?? Infinity) <= now) {
      this.#waiting.pop(entry);
      const [due, offset] = entry;
      if (offset < this.#floor || offset >= this.#end) continue;
      const slot = offset & this.#ring.mask;
      if (
        this.#ring.state[slot] === NACKED && this.#ring.deadline[slot] === due
      ) {
        this.#ready.push(offset);
      }
    }
  }

  // -------------------------------------------------------------------------
  // Settling and failing

  /** The record's slot when `attempt` is its current, settleable delivery; else -1. */
  #receipt(offset: number, attempt: number): number {
    if (offset < this.#floor || offset >= this.#readOffset) return -1;
    const slot = offset & this.#ring.mask;
    const state = this.#ring.state[slot];
    if (state !== IN_FLIGHT && state !== EXPIRED) return -1;
    return this.#ring.attempt[slot] === attempt ? slot : -1;
  }

  #settleRecord(offset: number, slot: number): void {
    this.#ring.setState(slot, SETTLED);
    if (this.#failures.size > 0) this.#failures.delete(offset);
    if (this.#parking.size > 0) this.#releaseKey(offset);
  }

  /** Notes a failed delivery's time and error text. */
  #failure(offset: number, now: number, error: string | null): Failure {
    let failure = this.#failures.get(offset);
    if (failure === undefined) {
      failure = { firstFailedAt: now, error: null, dead: "" };
      this.#failures.set(offset, failure);
    }
    // Capped here too, so state files and memory stay bounded.
    if (error !== null) {
      failure.error = capUtf8(error, DEAD_LETTER_ERROR_MAX_BYTES);
    }
    return failure;
  }

  /** A failed delivery: redelivered later, or dead-lettered at the limit. */
  #fail(
    offset: number,
    slot: number,
    now: number,
    error: string | null,
    nack: boolean,
    delayMs?: number,
  ): void {
    this.#failure(offset, now, error);
    if (this.#ring.attempt[slot] >= this.#config.maxDeliveries) {
      this.#deadLetter(offset, slot, "max_deliveries");
    } else if (nack) {
      this.#delay(offset, slot, now, delayMs);
    } else {
      this.#ring.setState(slot, EXPIRED);
      this.#ready.push(offset);
    }
  }

  /** Waits `delayMs`, or the backoff for the record's attempt. */
  #delay(offset: number, slot: number, now: number, delayMs?: number): void {
    const { backoffInitialMs, backoffMaxMs } = this.#config;
    const backoff = Math.min(
      backoffInitialMs * 2 ** (Math.max(1, this.#ring.attempt[slot]) - 1),
      backoffMaxMs,
    );
    const due = now +
      (delayMs === undefined
        ? Math.round(backoff * (0.8 + 0.4 * this.#random()))
        : clampDelay(delayMs, 0));
    this.#ring.setState(slot, NACKED);
    this.#ring.deadline[slot] = due;
    this.#waiting.push(due, offset);
  }

  #deadLetter(offset: number, slot: number, reason: DeadReason): void {
    const failure = this.#failures.get(offset);
    if (failure !== undefined) failure.dead = reason;
    this.#ring.setState(slot, DEAD);
    this.#pendingDead.push(offset);
  }

  // -------------------------------------------------------------------------
  // key_shared

  /**
   * Queues `offset` behind its key; true when an earlier record of the key
   * is unsettled, so this one is parked. A record without a key is its own
   * key and never waits.
   */
  #parkKey(offset: number, slot: number, key: string | null): boolean {
    if (key === null || !this.#parking.park(offset, key)) return false;
    if (this.#ring.state[slot] !== DEAD) this.#ring.setState(slot, PARKED);
    return true;
  }

  /** `offset` is settled or gone: the next record of its key may go out. */
  #releaseKey(offset: number): void {
    const next = this.#parking.release(offset);
    if (next < 0) return;
    const slot = next & this.#ring.mask;
    if (this.#ring.state[slot] === PARKED) {
      this.#ring.setState(slot, PENDING);
      this.#ready.push(next);
    }
  }

  // -------------------------------------------------------------------------
  // The ring

  #advanceFloor(): void {
    const state = this.#ring.state;
    const mask = this.#ring.mask;
    let floor = this.#floor;
    const end = this.#end;
    while (floor < end && state[floor & mask] === SETTLED) {
      this.#ring.clear(floor & mask);
      floor++;
    }
    this.#floor = floor;
    if (this.#readOffset < floor) this.#readOffset = floor;
  }

  /** Grows the ring so that [floor, end) fits and moves `end` there. */
  #reserve(end: number): void {
    if (end <= this.#end) return;
    this.#ring.reserve(this.#floor, this.#end, end);
    this.#end = end;
  }

  /** Restores a state file: settled ranges, delivery counts, pending dead letters. */
  #load(state: QueueCursorState): void {
    let end = Math.max(this.#floor, state.delivered);
    for (let i = 1; i < state.settled.length; i += 2) {
      end = Math.max(end, state.settled[i]);
    }
    for (const failure of state.failures) {
      end = Math.max(end, failure.offset + 1);
    }
    this.#reserve(end);
    for (let offset = this.#floor; offset < state.delivered; offset++) {
      this.#ring.attempt[offset & this.#ring.mask] = 1;
    }
    for (let i = 0; i + 1 < state.settled.length; i += 2) {
      const from = Math.max(state.settled[i], this.#floor);
      for (let offset = from; offset < state.settled[i + 1]; offset++) {
        this.#ring.setState(offset & this.#ring.mask, SETTLED);
      }
    }
    for (const failure of state.failures) {
      if (failure.offset < this.#floor) continue;
      const slot = failure.offset & this.#ring.mask;
      this.#ring.attempt[slot] = failure.deliveries;
      // A count-only entry: no failure behind it.
      if (failure.firstFailedAt === 0 && failure.dead === "") continue;
      this.#failures.set(failure.offset, {
        firstFailedAt: failure.firstFailedAt,
        error: failure.error,
        dead: failure.dead,
      });
      if (failure.dead !== "") {
        this.#ring.setState(slot, DEAD);
        this.#pendingDead.push(failure.offset);
      } else if (failure.retryAt > 0) {
        // Nacked with a delay before the restart: the read scan finds it
        // and makes it wait out the rest.
        this.#ring.setState(slot, NACKED);
        this.#ring.deadline[slot] = failure.retryAt;
      }
    }
    this.#deliveredMark = state.delivered;
    this.#reservedFrom = Math.min(
      state.read ?? state.delivered,
      state.delivered,
    );
    this.#reserved = state.delivered;
    this.#durable = state.delivered;
    this.#deadLettered = state.deadLettered;
    this.#lostToRetention = state.lostToRetention;
    this.#advanceFloor();
  }
}

interface Delivery {
  pieces: Uint8Array[];
  records: number;
  bytes: number;
  redelivered: number[];
  deadline: number;
  member: number;
}

function clampDelay(delayMs: number | undefined, fallback: number): number {
  const delay = delayMs === undefined || !Number.isFinite(delayMs)
    ? fallback
    : delayMs;
  return Math.min(Math.max(0, delay), EXTEND_MAX_MS);
}
