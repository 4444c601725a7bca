/**
 * The one place messages between threads are encoded.
 *
 * Every message between the router (main thread) and a partition actor
 * (worker thread) is a plain object with a `type` field, packed with
 * msgpackr into a fresh `Uint8Array` whose buffer is transferred, never
 * cloned. Small byte fields travel inside the pack as msgpack `bin`. The
 * record batches of `append` and `records`, from 4 KiB up, travel beside
 * it: the posted value is then `[map, batches]`, the map holding `null` in
 * the batch field, and the batches' own buffer is transferred too, so a
 * batch crosses threads without a copy.
 *
 * Envelope layout, one msgpack map per message:
 *
 *   { type: "append", id: 7, batches: <bin 512> }
 *   [{ type: "append", id: 8, batches: null }, <Uint8Array 131072>]
 *
 * - `type`: the discriminant of {@linkcode RouterMessage} or
 *   {@linkcode PartitionMessage};
 * - `id`: on requests, a number unique per channel; the reply repeats it;
 *   `cancel` names the id of the read it cancels;
 * - everything else: the fields of that message type, as below.
 *
 * A new worker's own port carries exactly two messages: the actor's
 * `started` envelope once its handler is installed (a message posted to a
 * worker still loading its modules may be dropped on Deno), then the
 * router's `{ init: <envelope bytes>, port: MessagePort }` (an
 * {@linkcode InitPost}). Everything after that, in both directions, uses
 * the transferred port.
 */
import { Packr } from "msgpackr";
import type { ErrorCode } from "./errors.ts";
import type { LogFields, LogLevel } from "./logger.ts";
import type { PortLike } from "./runtime/types.ts";
import type {
  PartitionStats,
  RecordFilter,
  RefusedSettlement,
  SettleAction,
} from "./broker.ts";
import type {
  PartitionLogConfig,
  RecoveryReport,
} from "./log/partition_log.ts";

/** Opens a partition actor: recover the log in `dir` with `config`. */
export interface InitMessage {
  type: "init";
  id: number;
  topic: string;
  partition: number;
  dir: string;
  config: PartitionLogConfig;
  /** Lowest level the main thread writes; the actor drops lines below it. */
  logLevel: LogLevel;
}

/** Every request from the router to a partition actor. */
export type RouterMessage =
  | InitMessage
  /** One or several concatenated record batches, producer-framed. */
  | { type: "append"; id: number; batches: Uint8Array }
  /** Waits up to `maxWaitMs` when `offset` equals the high watermark. */
  | {
    type: "read";
    id: number;
    offset: number;
    maxBytes: number;
    maxWaitMs: number;
    /** Only matching records are returned; `records.nextOffset` says where to go on. */
    filter?: RecordFilter;
  }
  /** Ends the waiting read whose id is `id` with an empty `records`. */
  | { type: "cancel"; id: number }
  | { type: "offsetForTime"; id: number; timestamp: number }
  | { type: "stats"; id: number }
  | { type: "configure"; id: number; config: PartitionLogConfig }
  | { type: "close"; id: number; deleteFiles: boolean }
  // --- Queue groups (docs/queues.md). `group` names the group everywhere.
  /**
   * Opens (loading its state file, else starting at `config.from`) or
   * reconfigures the group's cursor on this partition; `config: null`
   * drops the cursor and deletes its state file. Sent for every queue
   * group of the topic before any other queue message, and again after an
   * actor restart. Answered by `qconfigured`.
   */
  | {
    type: "qconfig";
    id: number;
    group: string;
    config: QueueCursorConfig | null;
  }
  /**
   * Hands up to `maxRecords` deliverable records (soft `maxBytes`, at least
   * one record when any is ready) to `member` (a number the router gives
   * each member of the group; 0 for anonymous HTTP receivers). Answers at
   * once with `deliveries`, possibly empty.
   */
  | {
    type: "qfetch";
    id: number;
    group: string;
    member: number;
    maxRecords: number;
    maxBytes: number;
  }
  /**
   * Settles deliveries. `acks` is flat triples [offset, count, attempt]:
   * `count` consecutive offsets from `offset`, each expected at `attempt`.
   * Answered by `qsettled` once the state covering them is on disk and,
   * when they dead-lettered records (a reject, or a nack at the limit),
   * once those letters were appended (`qdeadDone`), at most 10 s later.
   */
  | {
    type: "qsettle";
    id: number;
    group: string;
    acks: number[];
    items: QueueSettleItem[];
  }
  /**
   * The member is gone: its in-flight records are deliverable again at
   * once. Answered by `qsettled` (settled 0) whose `freed` lists them.
   */
  | { type: "qrelease"; id: number; group: string; member: number }
  /** Per-partition progress; answered by `qstats`. */
  | { type: "qdescribe"; id: number; group: string }
  /**
   * The router appended the dead letters of `qdead` with sequence `seq` to
   * the dead-letter topic: settle those records. Answered by `qsettled`.
   */
  | { type: "qdeadDone"; id: number; group: string; seq: number }
  // --- Delayed records
  /**
   * Keeps records until due: `records` is producer-framed batches, one due
   * time (broker ms) per record in `due`. Durable (per the flush policy)
   * before `scheduled` answers with one id per record.
   */
  | { type: "schedule"; id: number; records: Uint8Array; due: number[] }
  /** Cancels a pending delayed record; answered by `unscheduled`. */
  | { type: "unschedule"; id: number; delayId: string };

/** What a partition actor needs to run a queue group's cursor. */
export interface QueueCursorConfig {
  mode: "queue" | "key_shared";
  /** Where the cursor starts when the partition has no state for the group. */
  from: "earliest" | "latest";
  ackTimeoutMs: number;
  maxDeliveries: number;
  backoffInitialMs: number;
  backoffMaxMs: number;
  maxUnsettled: number;
  /** Non-matching records are settled by the cursor itself. */
  filter: RecordFilter | null;
}

/** One non-ack settlement in `qsettle`. */
export interface QueueSettleItem {
  offset: number;
  attempt: number;
  action: Exclude<SettleAction, "ack">;
  delayMs?: number;
  reason?: string;
}

/** A queue cursor's progress, as `qstats` reports it. */
export interface QueueCursorStats {
  ackFloor: number;
  readOffset: number;
  logEndOffset: number;
  unsettled: number;
  inFlight: number;
  waiting: number;
  deadLettered: number;
  lostToRetention: number;
}

/** Every message from a partition actor to the router. */
export type PartitionMessage =
  | {
    type: "ready";
    id: number;
    stats: PartitionStats;
    recovery: RecoveryReport;
  }
  | {
    type: "appended";
    id: number;
    baseOffset: number;
    lastOffset: number;
    appendTime: number;
  }
  | {
    type: "records";
    id: number;
    bytes: Uint8Array;
    highWatermark: number;
    logStartOffset: number;
    logEndOffset: number;
    /** Filtered reads: the offset after the last record examined. */
    nextOffset?: number;
  }
  | { type: "offset"; id: number; offset: number }
  | { type: "stats"; id: number; stats: PartitionStats }
  | { type: "configured"; id: number }
  | { type: "closed"; id: number }
  | {
    type: "error";
    id: number;
    code: ErrorCode;
    message: string;
    details: Record<string, unknown>;
  }
  /** On the worker's own port: the actor is ready for `init`. */
  | { type: "started" }
  /** Unsolicited: a log line for the main thread to write. */
  | { type: "log"; level: LogLevel; message: string; fields: LogFields }
  /** Unsolicited: the log is blocked; the router restarts the actor. */
  | { type: "fatal"; code: ErrorCode; message: string }
  | { type: "qconfigured"; id: number; stats: QueueCursorStats }
  /**
   * Answer to `qfetch`: whole batches, one per run of consecutive offsets;
   * each record's attempt is 1 unless listed in `redelivered` (flat pairs
   * [offset, attempt]). `more`: records were still deliverable after this.
   */
  | {
    type: "deliveries";
    id: number;
    bytes: Uint8Array;
    records: number;
    redelivered: number[];
    more: boolean;
  }
  /**
   * Answer to `qsettle`, `qrelease` and `qdeadDone`. `freed` is flat triples
   * [member, records, bytes] of in-flight deliveries a `qrelease` released;
   * for `qsettle` it is empty, as its deliveries were reported by `qfreed`
   * before the state write this answer waits for.
   */
  | {
    type: "qsettled";
    id: number;
    settled: number;
    refused: Omit<RefusedSettlement, "partition">[];
    freed: number[];
  }
  | { type: "qstats"; id: number; stats: QueueCursorStats }
  /**
   * Unsolicited, edge-triggered: the group has deliverable records again
   * after a `deliveries` said `more: false` (new records appended, a nack
   * delay or ack timeout passed, a key came free, a member released).
   */
  | { type: "qready"; group: string }
  /**
   * Unsolicited: deliveries that ended, as flat triples [member, records,
   * bytes], for the router's prefetch accounting: sent at once when a
   * `qsettle` settles them (before the state write that `qsettled` waits
   * for, so a member's prefetch does not wait on the disk), and in batches
   * when ack deadlines pass or retention drops records in flight.
   */
  | { type: "qfreed"; group: string; freed: number[] }
  /**
   * Unsolicited: records that reached the delivery limit or were rejected,
   * as batches ready to append to the dead-letter topic: each record keeps
   * its key, value, headers and timestamp and gains the provenance headers
   * (DEAD_LETTER_HEADERS). Until `qdeadDone` with this `seq`, the records
   * are neither delivered nor settled; after an actor restart they are sent
   * again under a new `seq`.
   */
  | {
    type: "qdead";
    group: string;
    seq: number;
    bytes: Uint8Array;
    records: number;
  }
  | { type: "scheduled"; id: number; ids: string[]; due: number[] }
  | { type: "unscheduled"; id: number; found: boolean };

/** Any message that crosses between the router and a partition actor. */
export type Message = RouterMessage | PartitionMessage;

/** An encoded message and the buffers to transfer with it. */
export interface Encoded {
  /** The packed map, or the packed map and a batch posted beside it. */
  data: Uint8Array | [Uint8Array, Uint8Array];
  transfer: ArrayBuffer[];
}

/** What the router posts on a new worker's own port. */
export interface InitPost {
  init: Uint8Array;
  port: MessagePort;
}

// Records (msgpackr's shared-structure extension) would make the bytes
// depend on what was packed before; plain maps keep every envelope
// self-describing, which both threads need since each has its own Packr.
const packr = new Packr({ useRecords: false, moreTypes: false });

/**
 * The byte field of each message type that carries record batches. Above
 * {@linkcode payloadBytesMin} it travels beside the packed map rather than
 * inside it, and its own buffer is transferred: packing would copy the
 * batch twice (into msgpackr's pool, then out of it).
 */
const payloadFields: Partial<Record<Message["type"], string>> = {
  append: "batches",
  records: "bytes",
  deliveries: "bytes",
  qdead: "bytes",
  schedule: "records",
};
const payloadBytesMin = 4096;

/**
 * Packs `message` for posting: one fresh buffer for the map, plus, for a
 * large batch, the batch's own buffer.
 *
 * A batch that is a view into a larger buffer is copied once so that
 * transferring it detaches nothing else. A batch that owns its buffer is
 * transferred as is: the sender must not use it afterwards.
 *
 * @param message any router or partition message
 * @returns what to post and the buffers to list as transferable
 */
export function encode(message: Message): Encoded {
  const field = payloadFields[message.type];
  const payload = field === undefined
    ? undefined
    : (message as unknown as Record<string, Uint8Array>)[field];
  if (payload === undefined || payload.byteLength < payloadBytesMin) {
    // pack() returns a view into a pooled buffer that the next pack()
    // overwrites; transferring that would detach the pool itself.
    const data = new Uint8Array(packr.pack(message));
    return { data, transfer: [data.buffer] };
  }

  const owned = payload.byteOffset === 0 &&
      payload.byteLength === payload.buffer.byteLength &&
      payload.buffer instanceof ArrayBuffer
    ? payload
    : payload.slice();
  const head = new Uint8Array(packr.pack({ ...message, [field!]: null }));
  return {
    data: [head, owned],
    transfer: [head.buffer, owned.buffer as ArrayBuffer],
  };
}

/**
 * Unpacks a message. Byte fields come back as views into the posted
 * buffers.
 *
 * @throws {TypeError} when `data` is not an envelope or holds no typed message
 */
export function decode<T extends Message = Message>(data: unknown): T {
  let head = data;
  let payload: Uint8Array | undefined;
  if (Array.isArray(data) && data.length === 2) {
    [head, payload] = data;
    if (!(payload instanceof Uint8Array)) {
      throw new TypeError("Cannot decode message: payload not a Uint8Array");
    }
  }
  if (!(head instanceof Uint8Array)) {
    throw new TypeError("Cannot decode message: not a Uint8Array");
  }
  const message = packr.unpack(head) as { type?: unknown };
  if (typeof message !== "object" || message === null) {
    throw new TypeError("Cannot decode message: not a map");
  }
  if (typeof message.type !== "string") {
    throw new TypeError("Cannot decode message: no type");
  }
  if (payload !== undefined) {
    const field = payloadFields[message.type as Message["type"]];
    if (field === undefined) {
      throw new TypeError(
        `Cannot decode message: ${message.type} has no payload`,
      );
    }
    (message as Record<string, unknown>)[field] = payload;
  }
  return message as T;
}

/** Encodes `message` and posts it on `port`, transferring its buffer. */
export function send(port: PortLike, message: Message): void {
  const { data, transfer } = encode(message);
  port.postMessage(data, transfer);
}

/**
 * Wraps a web-standard `MessagePort` (a `MessageChannel` end) as a
 * {@linkcode PortLike}. Setting `onmessage` starts the port in both Node
 * and Deno.
 */
export function wrapMessagePort(port: MessagePort): PortLike {
  return {
    postMessage: (message, transfer) =>
      port.postMessage(message, transfer ?? []),
    onMessage: (handler) => {
      port.onmessage = (event: MessageEvent) => handler(event.data);
    },
    close: () => port.close(),
  };
}
