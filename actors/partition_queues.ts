/**
 * The queue groups of one partition actor: a QueueCursor per group, its
 * state file, its timers and the unsolicited messages it sends
 * (docs/queues.md). Everything runs on the actor's thread.
 *
 * State files, `<partition dir>/queues/<group>.state`, are written like the
 * log's group commit: a `qsettle` (or `qdeadDone`, or a new cursor's
 * `qconfig`) is answered once a write that started after it has finished;
 * requests arriving during a write share the next one. Deliveries and
 * expiries only mark the state dirty; it is written by the next write.
 *
 * A `qsettle` that made dead letters (a reject, or a nack at the delivery
 * limit) is answered once those letters are appended as well (their
 * `qdeadDone` and its write), so a reader of the dead-letter topic right
 * after finds them; after SETTLE_WAITS_MS it is answered anyway, so a
 * broken dead-letter topic cannot hang the caller (the letters stay
 * pending and the router keeps retrying them).
 *
 * Before a group's `qconfig` arrives (after a restart), its state file's
 * floor still holds back retention.
 */
import type {
  PartitionMessage,
  QueueCursorConfig,
  QueueSettleItem,
  RouterMessage,
} from "../src/envelope.ts";
import { DakgharError } from "../src/errors.ts";
import type { Logger } from "../src/logger.ts";
import { buildDeadLetters } from "../src/queue/dead_letter_batch.ts";
import { compileFilter, type RecordMatcher } from "../src/queue/filter.ts";
import { QueueCursor, type RecordSource } from "../src/queue/queue_cursor.ts";
import {
  decodeQueueState,
  encodeQueueState,
  type QueueCursorState,
} from "../src/queue/queue_state.ts";
import type { FileSystem } from "../src/runtime/types.ts";

/** A partition log as the queues use it. */
export interface QueueLog extends RecordSource {
  readonly logEndOffset: number;
}

/** What the queues need from their actor. */
export interface QueuesHost {
  fs: FileSystem;
  /** The partition directory. */
  dir: string;
  topic: string;
  partition: number;
  log: Logger;
  partitionLog(): QueueLog;
  send(message: PartitionMessage): void;
  /** A state write failed: the actor stops and the router restarts it. */
  fatal(error: unknown): void;
  /** Longest a `qsettle` answer waits for its dead letters (default 10 s). */
  settleWaitsMs?: number;
}

type QueueRequest = Extract<
  RouterMessage,
  {
    type:
      | "qconfig"
      | "qfetch"
      | "qsettle"
      | "qrelease"
      | "qdescribe"
      | "qdeadDone";
  }
>;

interface Waiter {
  resolve: () => void;
  reject: (error: unknown) => void;
}

/** A `qsettled` held until its dead letters are appended. */
interface HeldAnswer {
  reply: PartitionMessage;
  /** Dead-letter sequences not yet done. */
  letters: Set<number>;
  /** The settlement's state write finished. */
  written: boolean;
  timer: ReturnType<typeof setTimeout> | undefined;
}

interface Group {
  name: string;
  path: string;
  cursor: QueueCursor;
  /** A `deliveries` said `more: false`; the next deliverable record sends `qready`. */
  idle: boolean;
  writing: boolean;
  dirty: boolean;
  dropped: boolean;
  /** Requests answered by the next write to start. */
  waiters: Waiter[];
  /** Dead-letter sequence → the offsets it carries. */
  dead: Map<number, number[]>;
  /** Settle answers waiting for dead letters. */
  held: Set<HeldAnswer>;
  /** `deliveries` answers waiting for a write; later ones queue behind them. */
  heldDeliveries: number;
}

/** Expiries are checked at most this often, so `qfreed` comes in batches. */
const TIMER_SPACING_MS = 25;
const TIMER_MS_MAX = 2_000_000_000;
/** Letters per `qdead` message. */
const LETTERS_PER_MESSAGE = 500;
/** Longest a `qsettle` answer waits for the dead letters it made. */
const SETTLE_WAITS_MS = 10_000;

/** The queue cursors of one partition. */
export class PartitionQueues {
  readonly #host: QueuesHost;
  readonly #groups = new Map<string, Group>();
  /** Floors of state files whose group has not been configured since the start. */
  readonly #dormant = new Map<string, number>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt = Infinity;
  #lastTimerRun = 0;
  #deadSeq = 0;
  #closed = false;

  /** Reads the floors of the state files present, so retention respects them. */
  constructor(host: QueuesHost) {
    this.#host = host;
    const dir = this.#queuesDir;
    if (!host.fs.exists(dir)) return;
    for (const entry of host.fs.list(dir)) {
      if (entry.isFile && entry.name.endsWith(".tmp")) {
        // Left by a state write that a crash cut short; the state file
        // itself is whole (written by rename).
        host.fs.remove(`${dir}/${entry.name}`);
        continue;
      }
      if (!entry.isFile || !entry.name.endsWith(".state")) continue;
      const group = decodeURIComponent(entry.name.slice(0, -".state".length));
      try {
        const state = decodeQueueState(
          host.fs.readFile(`${dir}/${entry.name}`),
          `${dir}/${entry.name}`,
        );
        this.#dormant.set(group, state.floor);
      } catch (error) {
        host.log.warn("queue state unreadable", { group, error });
      }
    }
  }

  get #queuesDir(): string {
    return `${this.#host.dir}/queues`;
  }

  /** The lowest ack floor of every cursor, or Infinity with none. */
  lowestFloor(): number {
    let floor = Infinity;
    for (const group of this.#groups.values()) {
      floor = Math.min(floor, group.cursor.floor);
    }
    for (const dormant of this.#dormant.values()) {
      floor = Math.min(floor, dormant);
    }
    return floor;
  }

  /** Handles one queue message; errors are thrown for the actor to answer. */
  handle(message: QueueRequest): void {
    if (message.type === "qconfig") {
      return this.#configure(message.id, message.group, message.config);
    }
    const group = this.#group(message.group);
    const now = Date.now();
    switch (message.type) {
      case "qfetch":
        return this.#fetch(group, message, now);
      case "qsettle":
        return this.#settle(group, message.id, message.acks, message.items);
      case "qrelease": {
        const freed = group.cursor.release(message.member, now);
        this.#afterChange(group, now);
        return this.#host.send({
          type: "qsettled",
          id: message.id,
          settled: 0,
          refused: [],
          freed,
        });
      }
      case "qdescribe":
        return this.#host.send({
          type: "qstats",
          id: message.id,
          stats: group.cursor.stats(this.#host.partitionLog().logEndOffset),
        });
      case "qdeadDone": {
        const offsets = group.dead.get(message.seq) ?? [];
        group.dead.delete(message.seq);
        const settled = group.cursor.deadDone(offsets);
        this.#afterChange(group, now);
        this.#answerAfterWrite(group, message.id, {
          type: "qsettled",
          id: message.id,
          settled,
          refused: [],
          freed: [],
        });
        const seq = message.seq;
        group.waiters.push({
          resolve: () => this.#lettersDone(group, seq),
          // The actor stops (fatal); held answers go with it.
          reject: () => {},
        });
      }
    }
  }

  /** New records are visible: idle groups with work get `qready`. */
  wake(): void {
    const now = Date.now();
    for (const group of this.#groups.values()) this.#maybeReady(group, now);
  }

  /** Retention moved the log start: cursors below it lose those records. */
  afterRetention(): void {
    const log = this.#host.partitionLog();
    for (const group of this.#groups.values()) {
      if (group.cursor.floor >= log.logStartOffset) continue;
      const freed = group.cursor.dropBelow(log.logStartOffset);
      if (freed.length > 0) {
        this.#host.send({ type: "qfreed", group: group.name, freed });
      }
      this.#afterChange(group, Date.now());
    }
  }

  /** Stops the timer and waits for every state write to finish. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    const writes: Promise<void>[] = [];
    for (const group of this.#groups.values()) {
      if (group.writing || group.dirty) {
        writes.push(
          new Promise((resolve, reject) => {
            group.waiters.push({ resolve, reject });
            this.#maybeWrite(group);
          }),
        );
      }
    }
    await Promise.all(writes);
    for (const group of this.#groups.values()) this.#releaseAll(group);
  }

  // -------------------------------------------------------------------------

  #group(name: string): Group {
    const group = this.#groups.get(name);
    if (group === undefined) {
      throw new DakgharError(
        "unknown_group",
        `Queue group not configured on this partition: ${name}`,
        { group: name, partition: this.#host.partition },
      );
    }
    return group;
  }

  #configure(
    id: number,
    name: string,
    config: QueueCursorConfig | null,
  ): void {
    const host = this.#host;
    const log = host.partitionLog();
    const path = `${this.#queuesDir}/${encodeURIComponent(name)}.state`;
    const existing = this.#groups.get(name);
    if (config === null) {
      if (existing !== undefined) {
        existing.dropped = true;
        // Settlements waiting for a write of a dropped cursor are answered now.
        for (const waiter of existing.waiters.splice(0)) waiter.resolve();
        this.#releaseAll(existing);
      }
      this.#groups.delete(name);
      this.#dormant.delete(name);
      host.fs.remove(path);
      host.send({
        type: "qconfigured",
        id,
        stats: {
          ackFloor: 0,
          readOffset: 0,
          logEndOffset: log.logEndOffset,
          unsettled: 0,
          inFlight: 0,
          waiting: 0,
          deadLettered: 0,
          lostToRetention: 0,
        },
      });
      return;
    }
    if (existing !== undefined) {
      existing.cursor.configure(config);
      host.send({
        type: "qconfigured",
        id,
        stats: existing.cursor.stats(log.logEndOffset),
      });
      this.#afterChange(existing, Date.now());
      return;
    }

    let matcher: RecordMatcher | null;
    try {
      matcher = compileFilter(config.filter);
    } catch (error) {
      throw new DakgharError("invalid_config", `Invalid filter: ${error}`, {
        group: name,
      });
    }
    host.fs.mkdirs(this.#queuesDir);
    let start: QueueCursorState | { floor: number } = {
      floor: config.from === "latest" ? log.logEndOffset : log.logStartOffset,
    };
    if (host.fs.exists(path)) {
      try {
        start = decodeQueueState(host.fs.readFile(path), path);
      } catch (error) {
        // Atomic writes make this unlikely; redelivering everything beats
        // a partition that fails on every restart.
        host.log.error("queue state unreadable; group restarts at log start", {
          group: name,
          path,
          error,
        });
        host.fs.rename(path, `${path}.corrupt`);
        start = { floor: log.logStartOffset };
      }
    }
    const cursor = new QueueCursor(config, matcher, start);
    cursor.dropBelow(log.logStartOffset);
    const group: Group = {
      name,
      path,
      cursor,
      idle: false,
      writing: false,
      dirty: true,
      dropped: false,
      waiters: [],
      dead: new Map(),
      held: new Set(),
      heldDeliveries: 0,
    };
    this.#groups.set(name, group);
    this.#dormant.delete(name);
    // Dead letters pending before the restart go out again.
    this.#sendDeadLetters(group);
    this.#answerAfterWrite(group, id, {
      type: "qconfigured",
      id,
      stats: cursor.stats(log.logEndOffset),
    });
    this.#armTimer();
  }

  #fetch(
    group: Group,
    message: Extract<QueueRequest, { type: "qfetch" }>,
    now: number,
  ): void {
    const readOffset = group.cursor.readOffset;
    const fetched = group.cursor.fetch(
      message.member,
      Math.max(1, message.maxRecords),
      message.maxBytes,
      now,
      this.#host.partitionLog(),
    );
    group.idle = !fetched.more;
    if (fetched.records > 0 || group.cursor.readOffset !== readOffset) {
      group.dirty = true;
    }
    const { persist, ...fields } = fetched;
    const reply = { type: "deliveries" as const, id: message.id, ...fields };
    if (!persist && group.heldDeliveries === 0) {
      this.#host.send(reply);
    } else {
      // Answers leave in order, so one that needs no write still waits
      // behind an earlier one that does.
      group.heldDeliveries++;
      // Deliveries leave once their attempts are on disk: after a crash a
      // record comes back with its attempt counted on, so no receipt given
      // out before the crash can be handed out again.
      group.waiters.push({
        resolve: () => {
          group.heldDeliveries--;
          // A `qready` sent while this waited (a release, a settlement)
          // went out first: `more` must not undo it.
          if (!group.idle) reply.more = true;
          this.#host.send(reply);
        },
        reject: (error) => {
          group.heldDeliveries--;
          this.#host.send({
            type: "error",
            id: message.id,
            ...errorData(error),
          });
        },
      });
    }
    this.#sendDeadLetters(group);
    this.#maybeWrite(group);
    this.#armTimer();
  }

  #settle(
    group: Group,
    id: number,
    acks: number[],
    items: QueueSettleItem[],
  ): void {
    const now = Date.now();
    const outcome = group.cursor.settle(acks, items, now);
    // Prefetch comes back now; only the answer waits for the state write
    // (and for the dead letters this made).
    if (outcome.freed.length > 0) {
      this.#host.send({
        type: "qfreed",
        group: group.name,
        freed: outcome.freed,
      });
    }
    const letters = this.#sendDeadLetters(group);
    this.#afterChange(group, now);
    const reply: PartitionMessage = {
      type: "qsettled",
      id,
      ...outcome,
      freed: [],
    };
    if (letters.length === 0) return this.#answerAfterWrite(group, id, reply);
    const held: HeldAnswer = {
      reply,
      letters: new Set(letters),
      written: false,
      timer: undefined,
    };
    held.timer = setTimeout(() => {
      held.timer = undefined;
      held.letters.clear();
      if (held.written) this.#release(group, held);
    }, this.#host.settleWaitsMs ?? SETTLE_WAITS_MS);
    group.held.add(held);
    group.waiters.push({
      resolve: () => {
        held.written = true;
        if (held.letters.size === 0) this.#release(group, held);
      },
      reject: (error) => {
        clearTimeout(held.timer);
        group.held.delete(held);
        this.#host.send({ type: "error", id, ...errorData(error) });
      },
    });
    this.#maybeWrite(group);
  }

  /** The letters of `seq` are appended and settled: answers waiting on them go. */
  #lettersDone(group: Group, seq: number): void {
    for (const held of group.held) {
      if (!held.letters.delete(seq)) continue;
      if (held.letters.size === 0 && held.written) this.#release(group, held);
    }
  }

  #release(group: Group, held: HeldAnswer): void {
    if (!group.held.delete(held)) return;
    clearTimeout(held.timer);
    this.#host.send(held.reply);
  }

  /** Sends every held answer now (the group is dropped or the actor closes). */
  #releaseAll(group: Group): void {
    for (const held of [...group.held]) this.#release(group, held);
  }

  /** After any change: dead letters out, `qready` if due, state dirty, timer armed. */
  #afterChange(group: Group, now: number): void {
    group.dirty = true;
    this.#sendDeadLetters(group);
    this.#maybeReady(group, now);
    this.#maybeWrite(group);
    this.#armTimer();
  }

  #maybeReady(group: Group, now: number): void {
    if (!group.idle) return;
    const log = this.#host.partitionLog();
    if (group.cursor.hasDeliverable(now, log.highWatermark)) {
      group.idle = false;
      this.#host.send({ type: "qready", group: group.name });
    }
  }

  /** Sends the cursor's new dead letters; returns their `seq`s. */
  #sendDeadLetters(group: Group): number[] {
    const notes = group.cursor.takeDeadLetters();
    const sent: number[] = [];
    if (notes.length === 0) return sent;
    const log = this.#host.partitionLog();
    for (let i = 0; i < notes.length; i += LETTERS_PER_MESSAGE) {
      const slice = notes.slice(i, i + LETTERS_PER_MESSAGE);
      const letters = buildDeadLetters(log, slice, {
        topic: this.#host.topic,
        partition: this.#host.partition,
        group: group.name,
      });
      const seq = ++this.#deadSeq;
      const offsets = slice.map((note) => note.offset);
      if (letters.missing.length > 0) {
        // Retention took them first: nothing to append, settle them now.
        group.cursor.deadDone(letters.missing);
      }
      if (letters.records === 0) continue;
      group.dead.set(
        seq,
        offsets.filter((offset) => !letters.missing.includes(offset)),
      );
      this.#host.send({
        type: "qdead",
        group: group.name,
        seq,
        bytes: letters.bytes,
        records: letters.records,
      });
      sent.push(seq);
    }
    return sent;
  }

  // -------------------------------------------------------------------------
  // Timers

  #armTimer(): void {
    if (this.#closed) return;
    let next = Infinity;
    for (const group of this.#groups.values()) {
      next = Math.min(next, group.cursor.nextTimerAt());
    }
    if (next === Infinity) return;
    const at = Math.max(next, this.#lastTimerRun + TIMER_SPACING_MS);
    if (at >= this.#timerAt) return;
    clearTimeout(this.#timer);
    this.#timerAt = at;
    // setTimeout fires at once past 2^31 − 1 ms; a later check re-arms.
    const delay = Math.min(Math.max(0, at - Date.now()), TIMER_MS_MAX);
    this.#timer = setTimeout(() => this.#onTimer(), delay);
  }

  #onTimer(): void {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    if (this.#closed) return;
    const now = Date.now();
    this.#lastTimerRun = now;
    for (const group of this.#groups.values()) {
      const freed = group.cursor.expire(now);
      if (freed.length > 0) {
        this.#host.send({ type: "qfreed", group: group.name, freed });
        group.dirty = true;
      }
      this.#sendDeadLetters(group);
      this.#maybeReady(group, now);
      this.#maybeWrite(group);
    }
    this.#armTimer();
  }

  // -------------------------------------------------------------------------
  // State files

  #answerAfterWrite(group: Group, id: number, reply: PartitionMessage): void {
    group.waiters.push({
      resolve: () => this.#host.send(reply),
      reject: (error) =>
        this.#host.send({ type: "error", id, ...errorData(error) }),
    });
    this.#maybeWrite(group);
  }

  #maybeWrite(group: Group): void {
    if (group.dropped) {
      for (const waiter of group.waiters.splice(0)) waiter.resolve();
      return;
    }
    if (group.writing) return;
    if (group.waiters.length === 0 && !group.dirty) return;
    const waiters = group.waiters;
    group.waiters = [];
    group.dirty = false;
    group.writing = true;
    const snapshot = group.cursor.snapshot();
    const bytes = encodeQueueState(snapshot);
    this.#host.fs.writeFileAtomicAsync(group.path, bytes).then(() => {
      group.writing = false;
      group.cursor.markDurable(snapshot.delivered);
      // Dropped while writing: the write put the file back.
      if (group.dropped && !this.#groups.has(group.name)) {
        this.#host.fs.remove(group.path);
      }
      for (const waiter of waiters) waiter.resolve();
      this.#maybeWrite(group);
    }, (error) => {
      group.writing = false;
      for (const waiter of waiters) waiter.reject(error);
      this.#host.fatal(error);
    });
  }
}

function errorData(error: unknown): {
  code: "storage_error";
  message: string;
  details: Record<string, unknown>;
} {
  const message = error instanceof Error ? error.message : String(error);
  return {
    code: "storage_error",
    message: `Queue state write failed: ${message}`,
    details: {},
  };
}
