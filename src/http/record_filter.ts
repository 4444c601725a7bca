/**
 * A broker-side filter as clients send it, in HTTP bodies and WebSocket
 * frames alike: `{ "tags"?: ["eu"], "headers"?: { "type": "order" } }`.
 * The checks are `validateFilter`'s (src/queue/filter.ts); this only says
 * which way the front end reports a bad one.
 */
import type { RecordFilter } from "../broker.ts";
import { DakgharError } from "../errors.ts";
import { validateFilter } from "../queue/filter.ts";

/**
 * Parses a filter.
 *
 * @param value the JSON or msgpack value; undefined or null for none
 * @returns the filter (null when it filters nothing), or a message saying
 *   what is wrong with it
 */
export function parseRecordFilter(
  value: unknown,
): RecordFilter | null | string {
  try {
    return validateFilter(value);
  } catch (error) {
    if (error instanceof DakgharError) return error.message;
    throw error;
  }
}
