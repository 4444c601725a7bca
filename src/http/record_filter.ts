/**
 * Checks a broker-side filter as clients send it, in HTTP bodies and
 * WebSocket frames alike:
 *
 *   { "tags"?: ["eu", "vip"], "headers"?: { "type": "order" } }
 *
 * Exact matching, the AND of every entry (see `RecordFilter` in
 * src/broker.ts). An empty filter `{}` matches every record.
 */
import type { RecordFilter } from "../broker.ts";

/** Most tags plus headers one filter may name. */
export const filterEntriesMax = 64;

/**
 * Parses a filter.
 *
 * @param value the JSON or msgpack value
 * @returns the filter, or a message saying what is wrong with it
 */
export function parseRecordFilter(value: unknown): RecordFilter | string {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return 'expected { "tags"?: [string], "headers"?: { name: string } }';
  }
  const { tags, headers, ...rest } = value as Record<string, unknown>;
  const unknown = Object.keys(rest);
  if (unknown.length > 0) return `unknown field ${unknown[0]}`;

  const filter: RecordFilter = {};
  if (tags !== undefined) {
    if (
      !Array.isArray(tags) ||
      !tags.every((tag) => typeof tag === "string" && tag !== "")
    ) {
      return "tags: expected an array of non-empty strings";
    }
    filter.tags = [...new Set(tags as string[])];
  }
  if (headers !== undefined) {
    if (
      typeof headers !== "object" || headers === null ||
      Array.isArray(headers) ||
      !Object.values(headers).every((v) => typeof v === "string")
    ) {
      return "headers: expected an object of strings";
    }
    filter.headers = { ...(headers as Record<string, string>) };
  }
  const entries = (filter.tags?.length ?? 0) +
    Object.keys(filter.headers ?? {}).length;
  if (entries > filterEntriesMax) {
    return `at most ${filterEntriesMax} tags and headers`;
  }
  return filter;
}

/**
 * True when two filters match the same records: the same tags in any
 * order and the same headers. Null, undefined and `{}` are all "no filter".
 */
export function sameFilter(
  a: RecordFilter | null | undefined,
  b: RecordFilter | null | undefined,
): boolean {
  const tags = (f: RecordFilter | null | undefined) =>
    [...new Set(f?.tags ?? [])].sort();
  const headers = (f: RecordFilter | null | undefined) =>
    Object.entries(f?.headers ?? {}).sort(([x], [y]) => x < y ? -1 : 1);
  return JSON.stringify([tags(a), headers(a)]) ===
    JSON.stringify([tags(b), headers(b)]);
}
