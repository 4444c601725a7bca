/**
 * Due times and ids of delayed records, as the router handles them before
 * a partition actor's delay journal takes over (docs/queues.md, "Delayed
 * records").
 *
 * A delay id starts with the number of the partition holding the record
 * and a dash (`3-...`); the rest is the actor's.
 */
import type { ProducerRecord } from "../broker.ts";
import { DakgharError } from "../errors.ts";
import { QUEUE_LIMITS } from "../broker.ts";

/** Furthest ahead a record may be due. */
export const delayMaxMs = QUEUE_LIMITS.delayMsMax;

/**
 * When a record is due, by the broker's clock: `deliverAt`, else `now` +
 * `delayMs`; undefined for a record to append at once.
 *
 * @throws DakgharError bad_request for a time that is not finite, a
 *   negative delay, or a due time more than 90 days ahead
 */
export function dueTime(
  record: ProducerRecord,
  now: number,
): number | undefined {
  let due: number;
  if (record.deliverAt !== undefined && record.deliverAt !== null) {
    if (!Number.isFinite(record.deliverAt)) {
      throw badDelay("deliverAt", record.deliverAt, "expected a finite time");
    }
    due = Math.trunc(record.deliverAt);
  } else if (record.delayMs !== undefined && record.delayMs !== null) {
    if (!Number.isFinite(record.delayMs) || record.delayMs < 0) {
      throw badDelay(
        "delayMs",
        record.delayMs,
        "expected a delay of 0 or more",
      );
    }
    due = now + Math.trunc(record.delayMs);
  } else {
    return undefined;
  }
  if (due > now + delayMaxMs) {
    const field = record.deliverAt != null ? "deliverAt" : "delayMs";
    throw badDelay(
      field,
      field === "deliverAt" ? record.deliverAt : record.delayMs,
      "due more than 90 days ahead",
    );
  }
  return due;
}

/** The partition a delay id names, or undefined for a malformed id. */
export function delayIdPartition(delayId: string): number | undefined {
  const match = /^(0|[1-9][0-9]{0,5})-./.exec(delayId);
  return match === null ? undefined : Number(match[1]);
}

function badDelay(field: string, value: unknown, expected: string) {
  return new DakgharError(
    "bad_request",
    `Invalid ${field}: ${JSON.stringify(value)}, ${expected}`,
    { field, value },
  );
}
