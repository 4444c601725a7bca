/**
 * Worker entry: one partition actor owns one PartitionLog.
 *
 * The router starts this file in a worker thread and posts an `init` with a
 * MessagePort (see src/envelope.ts); every later message, both ways, goes
 * over that port. The actor handles one message at a time on its own
 * thread, so the log needs no locking.
 *
 * Durability, per the topic's flush policy:
 * - "sync": every append asks for a flush; PartitionLog coalesces them into
 *   one fsync (group commit) and `appended` is sent when the flush covering
 *   the append resolves, which is also when its records become visible;
 * - "interval": `appended` is sent at once and a timer flushes.
 *
 * A read at the high watermark waits up to `maxWaitMs`; it is answered as
 * soon as a flush makes data visible, on `cancel`, or on timeout with no
 * bytes. A failed write or fsync blocks the log: the actor sends `fatal`
 * and stops handling messages; the router terminates and restarts it, and
 * recovery runs from disk.
 *
 * Beside the log the actor runs the partition's queue cursors
 * (actors/partition_queues.ts) and delayed records
 * (actors/partition_delays.ts); both append and read through it.
 */
import {
  decode,
  type InitMessage,
  type InitPost,
  type PartitionMessage,
  type RouterMessage,
  send,
  wrapMessagePort,
} from "../src/envelope.ts";
import { DakgharError, errorToData } from "../src/errors.ts";
import {
  PartitionLog,
  type PartitionLogConfig,
} from "../src/log/partition_log.ts";
import { createLogger, type LogFields, type Logger } from "../src/logger.ts";
import { pickRecords } from "../src/log/record_pick.ts";
import { compileFilter, type RecordMatcher } from "../src/queue/filter.ts";
import { PartitionDelays } from "./partition_delays.ts";
import { PartitionQueues } from "./partition_queues.ts";
import { runtime } from "../src/runtime/mod.ts";
import type { PortLike } from "../src/runtime/types.ts";
import type { PartitionStats, RecordFilter } from "../src/broker.ts";

/** How often segments are checked for age roll and retention. */
const MAINTENANCE_INTERVAL_MS = 5000;

/** Errors that are the request's fault; anything else blocks the actor. */
const requestErrors = new Set([
  "bad_request",
  "malformed_batch",
  "record_too_large",
  "offset_out_of_range",
  "invalid_config",
  "unknown_group",
  "not_found",
]);

interface WaitingRead {
  offset: number;
  maxBytes: number;
  /** The high watermark when the read began waiting; it wakes once it moves. */
  highWatermark: number;
  /** Only matching records are answered. */
  matcher: RecordMatcher | null;
  timer: ReturnType<typeof setTimeout>;
}

/** A filter's matcher; a filter that cannot compile is the request's fault. */
function compileRequestFilter(
  filter: RecordFilter | null | undefined,
): RecordMatcher | null {
  try {
    return compileFilter(filter ?? null);
  } catch (error) {
    throw new DakgharError("bad_request", `Invalid filter: ${error}`);
  }
}

class InvariantError extends Error {
  override name = "InvariantError";
}

function assert(condition: boolean, message: string): asserts condition {
  if (!condition) throw new InvariantError(message);
}

/** Plain-data fields: Errors cross as their message. */
function plainFields(fields: LogFields): LogFields {
  const plain: LogFields = {};
  for (const [key, value] of Object.entries(fields)) {
    plain[key] = value instanceof Error ? value.message : value;
  }
  return plain;
}

class PartitionActor {
  readonly #port: PortLike;
  readonly #topic: string;
  readonly #partition: number;
  readonly #dir: string;
  readonly #log: Logger;
  #config: PartitionLogConfig;
  #partitionLog: PartitionLog | null = null;
  #queues: PartitionQueues | null = null;
  /** Null when the delay journal could not be opened (logged). */
  #delays: PartitionDelays | null = null;
  readonly #waiting = new Map<number, WaitingRead>();
  #maintenanceTimer: ReturnType<typeof setInterval> | undefined;
  #flushTimer: ReturnType<typeof setInterval> | undefined;
  /** Segment count after the last append, to notice rolls. */
  #segments = 0;
  /** Set once fatal or closed: no further requests are served. */
  #stopped = false;

  constructor(init: InitMessage, port: PortLike) {
    this.#port = port;
    this.#topic = init.topic;
    this.#partition = init.partition;
    this.#dir = init.dir;
    this.#config = init.config;
    this.#log = createLogger((level, scope, message, fields) => {
      send(this.#port, {
        type: "log",
        level,
        message: scope ? `${scope} ${message}` : message,
        fields: plainFields(fields),
      });
    }, init.logLevel);
  }

  /** Opens (and recovers) the log, then answers `ready`. */
  start(init: InitMessage): void {
    try {
      const log = this.#openLog();
      this.#queues = this.#openQueues(log);
      this.#delays = this.#openDelays(log);
      this.#reply({
        type: "ready",
        id: init.id,
        stats: this.#stats(log),
        recovery: log.recovery,
      });
    } catch (error) {
      this.#replyError(init.id, error);
      this.#fatal(error);
      return;
    }
    this.#port.onMessage((data) => this.#handle(decode<RouterMessage>(data)));
    this.#delays?.start();
    this.#maintenanceTimer = setInterval(
      () => this.#maintain(),
      MAINTENANCE_INTERVAL_MS,
    );
  }

  #openLog(): PartitionLog {
    const log = PartitionLog.open(
      runtime.fs,
      this.#dir,
      this.#config,
      this.#log,
    );
    this.#partitionLog = log;
    this.#segments = log.stats().segments;
    this.#startFlushTimer();
    return log;
  }

  #openQueues(log: PartitionLog): PartitionQueues {
    return new PartitionQueues({
      fs: runtime.fs,
      dir: this.#dir,
      topic: this.#topic,
      partition: this.#partition,
      log: this.#log,
      partitionLog: () => log,
      send: (message) => this.#reply(message),
      fatal: (error) => this.#fatal(error),
    });
  }

  /** The delay journal; null (logged) when it cannot be opened, so the log still serves. */
  #openDelays(log: PartitionLog): PartitionDelays | null {
    try {
      return PartitionDelays.open(
        runtime.fs,
        this.#dir,
        {
          append: (batches) => this.#appendForDelays(log, batches),
          read: (offset, maxBytes) => log.read(offset, maxBytes),
          logEndOffset: () => log.logEndOffset,
        },
        this.#log,
        {
          partition: this.#partition,
          flush: this.#config.flush,
          maxMessageBytes: this.#config.maxMessageBytes,
        },
      );
    } catch (error) {
      this.#log.error("delay journal not opened", {
        topic: this.#topic,
        partition: this.#partition,
        error,
      });
      return null;
    }
  }

  #startFlushTimer(): void {
    clearInterval(this.#flushTimer);
    if (this.#config.flush === "interval") {
      this.#flushTimer = setInterval(
        () => this.#flush(),
        this.#config.flushIntervalMs,
      );
    }
  }

  #handle(message: RouterMessage): void {
    if (this.#stopped) {
      if ("id" in message) {
        this.#replyError(
          message.id,
          new DakgharError("partition_unavailable", "Partition is stopping", {
            topic: this.#topic,
            partition: this.#partition,
          }),
        );
      }
      return;
    }
    try {
      this.#dispatch(message);
    } catch (error) {
      this.#replyError(message.id, error);
      if (!(error instanceof DakgharError && requestErrors.has(error.code))) {
        this.#fatal(error);
      }
    }
  }

  #dispatch(message: RouterMessage): void {
    const log = this.#partitionLog;
    assert(log !== null, "message before the log was opened");
    switch (message.type) {
      case "append":
        return this.#append(log, message.id, message.batches);
      case "read":
        return this.#read(log, message);
      case "cancel":
        return this.#answerWaiting(message.id, true);
      case "offsetForTime":
        return this.#reply({
          type: "offset",
          id: message.id,
          offset: log.offsetForTime(message.timestamp),
        });
      case "stats":
        return this.#reply({
          type: "stats",
          id: message.id,
          stats: this.#stats(log),
        });
      case "configure":
        return this.#configure(log, message.id, message.config);
      case "close":
        return void this.#close(log, message.id, message.deleteFiles);
      case "qconfig":
      case "qfetch":
      case "qsettle":
      case "qrelease":
      case "qdescribe":
      case "qdeadDone":
        return this.#queues!.handle(message);
      case "schedule":
        return this.#schedule(message.id, message.records, message.due);
      case "unschedule":
        return this.#unschedule(message.id, message.delayId);
      case "init":
        throw new DakgharError("bad_request", "Partition already initialized");
    }
  }

  /** Appends to the log; a roll may let retention delete a segment. */
  #appendToLog(
    log: PartitionLog,
    batches: Uint8Array,
  ): { baseOffset: number; lastOffset: number; appendTime: number } {
    const now = Date.now();
    const result = log.append(batches, now);
    let segments = log.stats().segments;
    if (segments > this.#segments) {
      this.#applyRetention(log, now);
      segments = log.stats().segments;
    }
    this.#segments = segments;
    return result;
  }

  /** Retention, held back by the queue cursors' floors. */
  #applyRetention(log: PartitionLog, now: number): void {
    const logStart = log.logStartOffset;
    log.maybeApplyRetention(now, this.#queues?.lowestFloor() ?? Infinity);
    if (log.logStartOffset !== logStart) this.#queues?.afterRetention();
  }

  /** The delay journal's append: durable per the flush policy, then readers wake. */
  async #appendForDelays(
    log: PartitionLog,
    batches: Uint8Array,
  ): Promise<{ baseOffset: number; lastOffset: number }> {
    if (this.#stopped) {
      throw new DakgharError("partition_unavailable", "Partition is stopping");
    }
    const { baseOffset, lastOffset } = this.#appendToLog(log, batches);
    if (this.#config.flush === "sync") {
      try {
        await log.flush();
      } catch (error) {
        this.#fatal(error);
        throw error;
      }
    }
    this.#wakeReaders(log);
    return { baseOffset, lastOffset };
  }

  #schedule(id: number, records: Uint8Array, due: number[]): void {
    const delays = this.#delaysOrReply(id);
    delays?.schedule(records, due).then(
      (result) => this.#reply({ type: "scheduled", id, ...result }),
      (error) => this.#replyError(id, error),
    );
  }

  #unschedule(id: number, delayId: string): void {
    const delays = this.#delaysOrReply(id);
    delays?.cancel(delayId).then(
      (found) => this.#reply({ type: "unscheduled", id, found }),
      (error) => this.#replyError(id, error),
    );
  }

  /** The delays, or null after answering that they are unavailable (not fatal). */
  #delaysOrReply(id: number): PartitionDelays | null {
    if (this.#delays === null) {
      this.#replyError(
        id,
        new DakgharError(
          "partition_unavailable",
          "Delayed records are unavailable on this partition",
          { topic: this.#topic, partition: this.#partition },
        ),
      );
    }
    return this.#delays;
  }

  #append(log: PartitionLog, id: number, batches: Uint8Array): void {
    const result = this.#appendToLog(log, batches);
    const appended: PartitionMessage = { type: "appended", id, ...result };
    if (this.#config.flush === "interval") {
      this.#reply(appended);
      this.#wakeReaders(log);
      return;
    }
    // Replied even when a close has begun: close() flushes first, so these
    // appends are durable and their replies go out before `closed`.
    log.flush().then(() => {
      this.#reply(appended);
      this.#wakeReaders(log);
    }, (error) => {
      this.#replyError(id, error);
      this.#fatal(error);
    });
  }

  #read(
    log: PartitionLog,
    request: Extract<RouterMessage, { type: "read" }>,
  ): void {
    const { id, offset, maxBytes, maxWaitMs } = request;
    const matcher = compileRequestFilter(request.filter);
    const caughtUp = offset >= log.highWatermark &&
      offset <= log.logEndOffset;
    if (!caughtUp) {
      // Throws OffsetOutOfRangeError outside [logStartOffset, logEndOffset].
      const bytes = log.read(offset, maxBytes);
      if (bytes.length > 0 || maxWaitMs <= 0) {
        return this.#replyBytes(log, id, bytes, offset, matcher);
      }
      // Nothing below the high watermark from here on: the offset lies in
      // offsets lost to a crash, which recovery stepped the log end past.
      // Like a caught-up read, it waits for the next append.
    } else if (maxWaitMs <= 0) {
      return this.#replyEmpty(log, id, offset, matcher);
    }
    const timer = setTimeout(() => this.#answerWaiting(id, true), maxWaitMs);
    this.#waiting.set(id, {
      offset,
      maxBytes,
      highWatermark: log.highWatermark,
      matcher,
      timer,
    });
  }

  /**
   * Answers a read with `bytes` read from `offset`. A filtered read keeps
   * only matching records (re-framed) and says where to go on.
   */
  #replyBytes(
    log: PartitionLog,
    id: number,
    bytes: Uint8Array,
    offset: number,
    matcher: RecordMatcher | null,
  ): void {
    let nextOffset: number | undefined;
    if (matcher !== null) {
      const picked = pickRecords(
        bytes,
        (recordOffset, batch, recordStart) =>
          recordOffset >= offset && matcher(batch, recordStart),
      );
      nextOffset = bytes.length === 0
        ? offset
        : Math.max(offset, picked.nextOffset);
      // The read itself, or one fresh array: either may be transferred.
      bytes = picked.bytes;
    }
    this.#reply({
      type: "records",
      id,
      bytes,
      highWatermark: log.highWatermark,
      logStartOffset: log.logStartOffset,
      logEndOffset: log.logEndOffset,
      ...(nextOffset === undefined ? {} : { nextOffset }),
    });
  }

  #replyEmpty(
    log: PartitionLog,
    id: number,
    offset: number,
    matcher: RecordMatcher | null,
  ): void {
    this.#replyBytes(log, id, new Uint8Array(0), offset, matcher);
  }

  /** Answers a waiting read: empty when `empty`, else with what is readable now. */
  #answerWaiting(id: number, empty: boolean): void {
    const waiting = this.#waiting.get(id);
    const log = this.#partitionLog;
    if (waiting === undefined || log === null) return;
    this.#waiting.delete(id);
    clearTimeout(waiting.timer);
    try {
      const { offset, matcher } = waiting;
      if (empty) this.#replyEmpty(log, id, offset, matcher);
      else {
        const bytes = log.read(offset, waiting.maxBytes);
        this.#replyBytes(log, id, bytes, offset, matcher);
      }
    } catch (error) {
      // Retention may have passed the offset while the read waited.
      this.#replyError(id, error);
    }
  }

  #wakeReaders(log: PartitionLog): void {
    for (const [id, waiting] of [...this.#waiting]) {
      if (log.highWatermark > waiting.highWatermark) {
        this.#answerWaiting(id, false);
      }
    }
    this.#queues?.wake();
  }

  #flush(): void {
    const log = this.#partitionLog;
    if (log === null || this.#stopped) return;
    log.flush().then(() => this.#wakeReaders(log), (error) => {
      this.#fatal(error);
    });
  }

  #maintain(): void {
    const log = this.#partitionLog;
    if (log === null || this.#stopped) return;
    try {
      const now = Date.now();
      log.maybeRoll(now);
      this.#applyRetention(log, now);
    } catch (error) {
      this.#fatal(error);
    }
  }

  #configure(log: PartitionLog, id: number, config: PartitionLogConfig): void {
    const wasInterval = this.#config.flush === "interval";
    log.configure(config);
    this.#config = config;
    this.#startFlushTimer();
    // Leaving "interval" for "sync": make what was acked so far durable.
    if (wasInterval && config.flush === "sync") this.#flush();
    this.#reply({ type: "configured", id });
  }

  async #close(
    log: PartitionLog,
    id: number,
    deleteFiles: boolean,
  ): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#maintenanceTimer);
    clearInterval(this.#flushTimer);
    try {
      await this.#delays?.close();
      await this.#queues?.close();
      await log.flush();
      for (const id of [...this.#waiting.keys()]) this.#answerWaiting(id, true);
      if (deleteFiles) log.delete();
      else log.close();
      this.#reply({ type: "closed", id });
    } catch (error) {
      this.#replyError(id, error);
    }
    this.#port.close();
    runtime.parentPort().close();
  }

  #stats(log: PartitionLog): PartitionStats {
    const stats: PartitionStats = {
      partition: this.#partition,
      ...log.stats(),
    };
    if (this.#delays !== null) stats.delayed = this.#delays.pending;
    return stats;
  }

  #fatal(error: unknown): void {
    if (this.#stopped) return;
    this.#stopped = true;
    clearInterval(this.#maintenanceTimer);
    clearInterval(this.#flushTimer);
    // Stops their timers; the restart recovers both from disk.
    this.#queues?.close().catch(() => {});
    this.#delays?.close().catch(() => {});
    const data = errorToData(error);
    this.#log.error("partition blocked", {
      topic: this.#topic,
      partition: this.#partition,
      error: data.message,
    });
    send(this.#port, { type: "fatal", code: data.code, message: data.message });
  }

  #reply(message: PartitionMessage): void {
    send(this.#port, message);
  }

  #replyError(id: number, error: unknown): void {
    send(this.#port, { type: "error", id, ...errorToData(error) });
  }
}

const parent = runtime.parentPort();
parent.onMessage((data) => {
  const { init, port } = data as InitPost;
  const message = decode<InitMessage>(init);
  new PartitionActor(message, wrapMessagePort(port)).start(message);
});
send(parent, { type: "started" });
