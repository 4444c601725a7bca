/**
 * The state file of one queue cursor: `<partition dir>/queues/<group>.state`.
 *
 * One msgpack map, replaced atomically on every write:
 *
 * ```
 * { v: 1,
 *   floor: 1200,                 every offset below is settled
 *   read: 1440,                  the read offset when written (optional):
 *                                offsets from it to `delivered` were
 *                                reserved, perhaps never delivered
 *   delivered: 1450,             offsets below count one delivery at least
 *   settled: [1203, 1210, ...],  settled offsets above the floor, [start, end) pairs
 *   failures: [[1201, 3, 1733300000000, "timeout upstream", 0, 1733300060000], ...],
 *                                offset, deliveries, first failed at (ms),
 *                                last error or null, dead letter pending
 *                                (0 no, 1 rejected, 2 max_deliveries),
 *                                and (optional) when a nacked record is due
 *                                again (ms; 0 or absent: not waiting);
 *                                first failed at 0: only the count differs
 *                                from what `delivered` implies
 *   deadLettered: 4, lostToRetention: 0 }
 * ```
 *
 * Records acked in order leave only the floor: the file is as large as the
 * unsettled window is ragged, not as the number of acks.
 */
import { Packr } from "msgpackr";
import { DakgharError } from "../errors.ts";

/** Why a record went to the dead letters; "" while it has not. */
export type DeadReason = "" | "rejected" | "max_deliveries";

/** A record that failed at least once and is not settled. */
export interface FailureState {
  offset: number;
  /** Deliveries so far. */
  deliveries: number;
  /** ms since epoch of the first failed delivery; 0 when none failed (only the count is kept). */
  firstFailedAt: number;
  /** The last error a member gave, or null. */
  error: string | null;
  /** Set once the record is waiting for its dead letter to be appended. */
  dead: DeadReason;
  /** When a nacked record is due for redelivery, ms since epoch; 0 when it is not waiting. */
  retryAt: number;
}

/** What a cursor keeps across restarts. */
export interface QueueCursorState {
  floor: number;
  /** The read offset when written; absent in older files. */
  read?: number;
  delivered: number;
  /** Flat [start, end) pairs above the floor, ascending. */
  settled: number[];
  failures: FailureState[];
  deadLettered: number;
  lostToRetention: number;
}

const VERSION = 1;
const deadCodes: DeadReason[] = ["", "rejected", "max_deliveries"];
const packr = new Packr({ useRecords: false, moreTypes: false });

/** Packs `state` as the state file's bytes (a fresh array). */
export function encodeQueueState(state: QueueCursorState): Uint8Array {
  return new Uint8Array(packr.pack({
    v: VERSION,
    floor: state.floor,
    read: state.read ?? state.delivered,
    delivered: state.delivered,
    settled: state.settled,
    failures: state.failures.map((failure) => [
      failure.offset,
      failure.deliveries,
      failure.firstFailedAt,
      failure.error,
      deadCodes.indexOf(failure.dead),
      failure.retryAt,
    ]),
    deadLettered: state.deadLettered,
    lostToRetention: state.lostToRetention,
  }));
}

/**
 * Reads a state file's bytes.
 *
 * @param path named in the error
 * @throws {DakgharError} storage_error when the bytes are not a state file
 */
export function decodeQueueState(
  bytes: Uint8Array,
  path: string,
): QueueCursorState {
  let map: Record<string, unknown>;
  try {
    map = packr.unpack(bytes) as Record<string, unknown>;
  } catch (error) {
    throw corrupt(path, "not msgpack", error);
  }
  if (typeof map !== "object" || map === null || map.v !== VERSION) {
    throw corrupt(path, "unknown version");
  }
  const floor = map.floor, delivered = map.delivered;
  const settled = map.settled, failures = map.failures;
  if (
    !isOffset(floor) || !isOffset(delivered) || !Array.isArray(settled) ||
    settled.length % 2 !== 0 || !settled.every(isOffset) ||
    !Array.isArray(failures)
  ) {
    throw corrupt(path, "fields missing or of the wrong type");
  }
  return {
    floor,
    read: isOffset(map.read) ? map.read : delivered,
    delivered,
    settled,
    failures: failures.map((entry) => {
      if (
        !Array.isArray(entry) || entry.length < 5 || entry.length > 6 ||
        !isOffset(entry[0])
      ) {
        throw corrupt(path, "bad failure entry");
      }
      return {
        offset: entry[0],
        deliveries: Number(entry[1]) || 0,
        firstFailedAt: Number(entry[2]) || 0,
        error: typeof entry[3] === "string" ? entry[3] : null,
        dead: deadCodes[Number(entry[4])] ?? "",
        retryAt: Number(entry[5]) || 0,
      };
    }),
    deadLettered: Number(map.deadLettered) || 0,
    lostToRetention: Number(map.lostToRetention) || 0,
  };
}

function isOffset(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

function corrupt(path: string, reason: string, cause?: unknown): DakgharError {
  return new DakgharError(
    "storage_error",
    `Cannot read queue state ${path}: ${reason}`,
    { path, reason },
    { cause },
  );
}
