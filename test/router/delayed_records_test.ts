import { suite } from "uvu";
import * as assert from "uvu/assert";
import type { DakgharError } from "../../src/errors.ts";
import {
  delayIdPartition,
  delayMaxMs,
  dueTime,
} from "../../src/router/delayed_records.ts";

const test = suite("delayed_records");
const now = 1_800_000_000_000;

function codeOf(run: () => unknown): string | undefined {
  try {
    run();
  } catch (error) {
    return (error as DakgharError).code;
  }
  return undefined;
}

test("dueTime() takes deliverAt over delayMs, and nothing for a plain record", () => {
  assert.is(dueTime({ value: null }, now), undefined);
  assert.is(dueTime({ value: null, delayMs: 250 }, now), now + 250);
  assert.is(
    dueTime({ value: null, delayMs: 250, deliverAt: now + 9 }, now),
    now + 9,
  );
  assert.is(dueTime({ value: null, deliverAt: now - 5 }, now), now - 5);
  assert.is(
    dueTime({ value: null, delayMs: delayMaxMs }, now),
    now + delayMaxMs,
  );
});

test("dueTime() refuses negative, infinite and too distant times", () => {
  assert.is(
    codeOf(() => dueTime({ value: null, delayMs: -1 }, now)),
    "bad_request",
  );
  assert.is(
    codeOf(() => dueTime({ value: null, delayMs: Number.NaN }, now)),
    "bad_request",
  );
  assert.is(
    codeOf(() => dueTime({ value: null, deliverAt: Infinity }, now)),
    "bad_request",
  );
  assert.is(
    codeOf(() => dueTime({ value: null, delayMs: delayMaxMs + 1 }, now)),
    "bad_request",
  );
});

test("delayIdPartition() reads the partition prefix, undefined when malformed", () => {
  assert.is(delayIdPartition("3-abc"), 3);
  assert.is(delayIdPartition("0-x"), 0);
  assert.is(delayIdPartition("03-x"), undefined);
  assert.is(delayIdPartition("-x"), undefined);
  assert.is(delayIdPartition("3-"), undefined);
  assert.is(delayIdPartition("abc"), undefined);
});

test.run();
