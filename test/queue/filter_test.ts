import { suite } from "uvu";
import * as assert from "uvu/assert";
import {
  compileFilter,
  sameFilter,
  validateFilter,
} from "../../src/queue/filter.ts";
import { TAG_HEADER } from "../../src/broker.ts";
import { DakgharError } from "../../src/errors.ts";
import { encodeBatch } from "../../src/log/record_batch.ts";
import { forEachRecordStart } from "../../src/log/record_pick.ts";

const test = suite("filter");
const text = (s: string) => new TextEncoder().encode(s);

/** Whether the one record with these headers matches `filter`. */
function matches(
  filter: Parameters<typeof compileFilter>[0],
  headers: [string, string | null][],
  key: string | null = "k",
): boolean {
  const batch = encodeBatch([{
    key: key === null ? null : text(key),
    value: text("value"),
    headers: headers.map(([n, v]) => [n, v === null ? null : text(v)]),
    timestamp: 1,
  }]);
  const matcher = compileFilter(filter);
  if (matcher === null) return true;
  let result = false;
  forEachRecordStart(batch, (_offset, at) => result = matcher(batch, at));
  return result;
}

test("compileFilter() returns null for null and empty filters", () => {
  assert.is(compileFilter(null), null);
  assert.is(compileFilter({}), null);
  assert.is(compileFilter({ tags: [], headers: {} }), null);
});

test("compileFilter() matches every tag and header exactly", () => {
  const filter = { tags: ["eu", "vip"], headers: { type: "order" } };
  const full: [string, string][] = [
    [TAG_HEADER, "vip"],
    ["type", "order"],
    [TAG_HEADER, "eu"],
  ];
  assert.ok(matches(filter, full));
  assert.ok(matches(filter, [...full, ["other", "x"]], null));
});

test("compileFilter() has no false positives", () => {
  const filter = { tags: ["eu"], headers: { type: "order" } };
  // Tag missing.
  assert.not.ok(matches(filter, [["type", "order"]]));
  // Tag present as another header name.
  assert.not.ok(matches(filter, [["type", "order"], ["tag", "eu"]]));
  // Header present with a different value, a prefix, a longer value, null.
  assert.not.ok(matches(filter, [[TAG_HEADER, "eu"], ["type", "orders"]]));
  assert.not.ok(matches(filter, [[TAG_HEADER, "eu"], ["type", "orde"]]));
  assert.not.ok(matches(filter, [[TAG_HEADER, "eu"], ["type", "Order"]]));
  assert.not.ok(matches(filter, [[TAG_HEADER, "eu"], ["type", null]]));
  // Header name differs in case; tag value differs.
  assert.not.ok(matches(filter, [[TAG_HEADER, "eu"], ["Type", "order"]]));
  assert.not.ok(matches(filter, [[TAG_HEADER, "us"], ["type", "order"]]));
  // Matching value in the key or value does not count.
  assert.not.ok(matches(filter, [], "order"));
  // No headers at all.
  assert.not.ok(matches(filter, []));
});

test("compileFilter() lets any of duplicate headers satisfy an entry", () => {
  const filter = { headers: { type: "order" } };
  assert.ok(matches(filter, [["type", "refund"], ["type", "order"]]));
  assert.not.ok(matches(filter, [["type", "refund"], ["type", "refunds"]]));
  // Two tags need two headers: one tag header cannot satisfy both.
  assert.not.ok(matches({ tags: ["a", "b"] }, [[TAG_HEADER, "a"]]));
  assert.ok(
    matches({ tags: ["a", "b"] }, [[TAG_HEADER, "b"], [TAG_HEADER, "a"]]),
  );
  // A tag listed twice asks for it once.
  assert.ok(matches({ tags: ["a", "a"] }, [[TAG_HEADER, "a"]]));
});

test("compileFilter() compares UTF-8 bytes", () => {
  const filter = { headers: { "städt": "Zürich ✓" } };
  assert.ok(matches(filter, [["städt", "Zürich ✓"]]));
  assert.not.ok(matches(filter, [["städt", "Zurich ✓"]]));
  assert.ok(matches({ headers: { empty: "" } }, [["empty", ""]]));
  assert.not.ok(matches({ headers: { empty: "" } }, [["empty", null]]));
});

test("compileFilter() handles 32 entries", () => {
  const tags = Array.from({ length: 32 }, (_, i) => `t${i}`);
  const headers: [string, string][] = tags.map((t) => [TAG_HEADER, t]);
  assert.ok(matches({ tags }, headers));
  assert.not.ok(matches({ tags }, headers.slice(1)));
  assert.not.ok(matches({ tags }, headers.slice(0, 31)));
});

const badRequest = (error: unknown) =>
  error instanceof DakgharError && error.code === "bad_request" &&
  error.message.startsWith("Invalid filter: ");

test("validateFilter() returns null for no filter and canonical filters", () => {
  assert.is(validateFilter(undefined), null);
  assert.is(validateFilter(null), null);
  assert.is(validateFilter({}), null);
  assert.is(validateFilter({ tags: [], headers: {} }), null);
  assert.equal(validateFilter({ tags: ["eu"], headers: {} }), {
    tags: ["eu"],
  });
  assert.equal(validateFilter({ headers: { a: "1" } }), {
    headers: { a: "1" },
  });
});

test("validateFilter() refuses malformed filters with bad_request", () => {
  const bad: unknown[] = [
    "eu",
    42,
    ["eu"],
    { tag: ["eu"] },
    { tags: "eu" },
    { tags: [1] },
    { tags: [""] },
    { tags: [null] },
    { headers: ["a"] },
    { headers: "a=1" },
    { headers: { a: 1 } },
    { headers: { a: null } },
    { headers: { "": "x" } },
    { tags: Array.from({ length: 33 }, (_, i) => `t${i}`) },
    {
      tags: Array.from({ length: 20 }, (_, i) => `t${i}`),
      headers: Object.fromEntries(
        Array.from({ length: 13 }, (_, i) => [`h${i}`, "v"]),
      ),
    },
    { tags: ["x".repeat(70_000)] },
  ];
  for (const value of bad) {
    assert.throws(
      () => validateFilter(value),
      badRequest,
      JSON.stringify(value)?.slice(0, 60),
    );
  }
});

test("sameFilter() compares tags as sets and headers exactly", () => {
  assert.ok(sameFilter(null, {}));
  assert.ok(sameFilter({ tags: ["a", "b"] }, { tags: ["b", "a"] }));
  assert.ok(sameFilter({ headers: { a: "1" } }, { headers: { a: "1" } }));
  assert.not.ok(sameFilter({ tags: ["a"] }, null));
  assert.not.ok(sameFilter({ headers: { a: "1" } }, { headers: { a: "2" } }));
  assert.not.ok(sameFilter({ headers: { a: "1" } }, { headers: { b: "1" } }));
});

test.run();
