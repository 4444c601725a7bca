/**
 * Exact broker-side filters (docs/queues.md, "Filters"). A filter is
 * compiled once into a matcher that works on a record's bytes in place:
 * it walks the record's headers and compares names and values as bytes,
 * so matching decodes nothing and allocates nothing per record.
 */
import { DakgharError } from "../errors.ts";
import { type RecordFilter, TAG_HEADER } from "../broker.ts";
import { readI32 } from "../log/_bytes.ts";

/**
 * Decides whether the record whose recordLength field is at `recordStart`
 * in `bytes` (a valid batch, layout in src/log/record_batch.ts) matches.
 */
export type RecordMatcher = (bytes: Uint8Array, recordStart: number) => boolean;

/** Most tags and headers one filter may list together. */
export const FILTER_ENTRIES_MAX = 32;

const encoder = new TextEncoder();

/**
 * Compiles a filter into a matcher. A record matches when, for every tag,
 * it has a {@linkcode TAG_HEADER} header with that value and, for every
 * listed header, a header of that name with exactly that UTF-8 value. A
 * record may carry a name several times; any one of them can satisfy an
 * entry. A header with a null value matches nothing.
 *
 * @param filter a filter checked by {@linkcode validateFilter}, or null
 * @returns the matcher, or null when the filter is null or empty (every record matches)
 * @example
 * ```ts
 * const matches = compileFilter({ tags: ["eu"] });
 * const keep = matches === null || matches(bytes, recordStart);
 * ```
 */
export function compileFilter(
  filter: RecordFilter | null | undefined,
): RecordMatcher | null {
  if (!filter) return null;
  const pairs: [string, string][] = [];
  for (const tag of filter.tags ?? []) pairs.push([TAG_HEADER, tag]);
  for (const [name, value] of Object.entries(filter.headers ?? {})) {
    pairs.push([name, value]);
  }
  if (pairs.length === 0) return null;
  if (pairs.length > FILTER_ENTRIES_MAX) {
    throw new RangeError(
      `Cannot compile a filter: too many entries: ${pairs.length}`,
    );
  }

  // One name and value per entry, duplicates dropped: a tag listed twice
  // asks for one header, not two.
  const seen = new Set<string>();
  const names: Uint8Array[] = [];
  const values: Uint8Array[] = [];
  for (const [name, value] of pairs) {
    const key = `${name}\u0000${value}`;
    if (seen.has(key)) continue;
    seen.add(key);
    names.push(encoder.encode(name));
    values.push(encoder.encode(value));
  }
  const entries = names.length;
  const all = entries === 32 ? -1 : (1 << entries) - 1;

  return (bytes, recordStart) => {
    // Skip timestampDelta, offsetDelta, key and value.
    let p = recordStart + 12;
    const keyLength = readI32(bytes, p);
    p += 4 + (keyLength > 0 ? keyLength : 0);
    const valueLength = readI32(bytes, p);
    p += 4 + (valueLength > 0 ? valueLength : 0);
    const headerCount = bytes[p] | (bytes[p + 1] << 8);
    p += 2;

    let found = 0;
    for (let h = 0; h < headerCount; h++) {
      const nameLength = bytes[p] | (bytes[p + 1] << 8);
      const nameStart = p + 2;
      p = nameStart + nameLength;
      const headerValueLength = readI32(bytes, p);
      const valueStart = p + 4;
      p = valueStart + (headerValueLength > 0 ? headerValueLength : 0);
      if (headerValueLength < 0) continue;
      for (let e = 0; e < entries; e++) {
        const bit = 1 << e;
        if (
          (found & bit) === 0 &&
          names[e].length === nameLength &&
          values[e].length === headerValueLength &&
          equalAt(bytes, nameStart, names[e]) &&
          equalAt(bytes, valueStart, values[e])
        ) {
          found |= bit;
          if (found === all) return true;
        }
      }
    }
    return false;
  };
}

function equalAt(bytes: Uint8Array, position: number, want: Uint8Array) {
  for (let i = 0; i < want.length; i++) {
    if (bytes[position + i] !== want[i]) return false;
  }
  return true;
}

function badFilter(reason: string): DakgharError {
  return new DakgharError("bad_request", `Invalid filter: ${reason}`);
}

/**
 * Checks a filter as it arrives in a request and returns it in a canonical
 * form: only the fields given, no empty lists, null when it filters
 * nothing. Tags and header names must be non-empty strings; header values
 * must be strings (an empty value asks for a header present with no
 * bytes); names and values at most 65535 UTF-8 bytes; at most
 * {@linkcode FILTER_ENTRIES_MAX} tags and headers together.
 *
 * @param value the parsed `filter` field, or undefined/null for none
 * @returns the filter, or null for no filtering
 * @throws {DakgharError} `bad_request` naming what is wrong
 * @example
 * ```ts
 * const filter = validateFilter(body.filter); // { tags: ["eu"] } or null
 * ```
 */
export function validateFilter(value: unknown): RecordFilter | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== "object" || Array.isArray(value)) {
    throw badFilter("expected an object with tags and/or headers");
  }
  for (const key of Object.keys(value)) {
    if (key !== "tags" && key !== "headers") {
      throw badFilter(`unknown field: ${key}`);
    }
  }
  const { tags, headers } = value as { tags?: unknown; headers?: unknown };
  const filter: RecordFilter = {};
  let entries = 0;

  if (tags !== undefined && tags !== null) {
    if (!Array.isArray(tags)) throw badFilter("tags must be an array");
    for (const tag of tags) {
      if (typeof tag !== "string" || tag === "") {
        throw badFilter(
          `tags must be non-empty strings: ${JSON.stringify(tag)}`,
        );
      }
      checkLength("tag", tag);
    }
    entries += tags.length;
    if (tags.length > 0) filter.tags = [...tags];
  }

  if (headers !== undefined && headers !== null) {
    if (typeof headers !== "object" || Array.isArray(headers)) {
      throw badFilter("headers must be an object of name to value");
    }
    const pairs = Object.entries(headers);
    for (const [name, headerValue] of pairs) {
      if (name === "") throw badFilter("header names must not be empty");
      if (typeof headerValue !== "string") {
        throw badFilter(`header ${name} must have a string value`);
      }
      checkLength("header name", name);
      checkLength("header value", headerValue);
    }
    entries += pairs.length;
    if (pairs.length > 0) filter.headers = Object.fromEntries(pairs);
  }

  if (entries > FILTER_ENTRIES_MAX) {
    throw badFilter(
      `too many tags and headers: ${entries}, at most ${FILTER_ENTRIES_MAX}`,
    );
  }
  return entries === 0 ? null : filter;
}

function checkLength(what: string, text: string): void {
  // A UTF-8 encoding is at most three bytes per UTF-16 unit.
  if (text.length * 3 <= 0xffff) return;
  if (encoder.encode(text).length > 0xffff) {
    throw badFilter(`${what} longer than 65535 bytes`);
  }
}

/**
 * True when two filters select the same records: the same tags (as a set)
 * and the same headers. Null and empty filters are equal.
 *
 * @param a a filter from {@linkcode validateFilter}, or null
 * @param b another
 * @returns whether they are the same filter
 */
export function sameFilter(
  a: RecordFilter | null | undefined,
  b: RecordFilter | null | undefined,
): boolean {
  const tagsA = new Set(a?.tags ?? []);
  const tagsB = new Set(b?.tags ?? []);
  if (tagsA.size !== tagsB.size) return false;
  for (const tag of tagsA) if (!tagsB.has(tag)) return false;
  const headersA = Object.entries(a?.headers ?? {});
  const headersB = b?.headers ?? {};
  if (headersA.length !== Object.keys(headersB).length) return false;
  return headersA.every(([name, value]) =>
    Object.hasOwn(headersB, name) && headersB[name] === value
  );
}
