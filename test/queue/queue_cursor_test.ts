import { suite } from "uvu";
import * as assert from "uvu/assert";
import type { QueueCursorConfig } from "../../src/envelope.ts";
import { encodeBatch, validateBatches } from "../../src/log/record_batch.ts";
import { compileFilter } from "../../src/queue/filter.ts";
import {
  EXTEND_MAX_MS,
  QueueCursor,
  type RecordMatcher,
} from "../../src/queue/queue_cursor.ts";
import {
  decodeQueueState,
  encodeQueueState,
} from "../../src/queue/queue_state.ts";
import { MemoryLog, offsetsOf, textRecord, valuesOf } from "./_memory_log.ts";

const test = suite("queue_cursor");
const NOW = 1_000_000;

function config(over: Partial<QueueCursorConfig> = {}): QueueCursorConfig {
  return {
    mode: "queue",
    from: "earliest",
    ackTimeoutMs: 30_000,
    maxDeliveries: 5,
    backoffInitialMs: 1000,
    backoffMaxMs: 60_000,
    maxUnsettled: 1_000_000,
    filter: null,
    ...over,
  };
}

function cursorOn(
  _log: MemoryLog,
  over: Partial<QueueCursorConfig> = {},
  matcher: RecordMatcher | null = null,
): QueueCursor {
  return new QueueCursor(config(over), matcher, { floor: 0 }, () => 0.5);
}

test("fetch hands out new records as the stored batches, attempt 1", () => {
  const log = new MemoryLog();
  log.appendMany(6, 3);
  const cursor = cursorOn(log);
  const fetched = cursor.fetch(1, 100, 1 << 20, NOW, log);
  assert.is(fetched.records, 6);
  assert.equal(fetched.redelivered, []);
  assert.is(fetched.more, false);
  assert.equal(
    fetched.bytes,
    new Uint8Array([...log.batches[0], ...log.batches[1]]),
  );
  assert.is(cursor.readOffset, 6);
  assert.is(cursor.stats(6).inFlight, 6);
});

test("fetch stops at maxRecords and re-frames the cut batch", () => {
  const log = new MemoryLog();
  log.appendMany(5);
  const cursor = cursorOn(log);
  const first = cursor.fetch(1, 2, 1 << 20, NOW, log);
  assert.equal(offsetsOf(first.bytes), [0, 1]);
  assert.is(first.more, true);
  const second = cursor.fetch(2, 10, 1 << 20, NOW, log);
  assert.equal(valuesOf(second.bytes), ["r-2", "r-3", "r-4"]);
  assert.is(second.more, false);
});

test("settle moves the ack floor only when out-of-order acks close the gap", () => {
  const log = new MemoryLog();
  log.appendMany(5);
  const cursor = cursorOn(log);
  cursor.fetch(1, 10, 1 << 20, NOW, log);
  let outcome = cursor.settle([1, 2, 1, 4, 1, 1], [], NOW);
  assert.is(outcome.settled, 3);
  assert.is(cursor.floor, 0);
  assert.is(cursor.stats(5).unsettled, 2);
  outcome = cursor.settle([0, 1, 1], [], NOW);
  assert.is(cursor.floor, 3);
  cursor.settle([3, 1, 1], [], NOW);
  assert.is(cursor.floor, 5);
  assert.is(cursor.stats(5).unsettled, 0);
});

test("settle frees member, records and bytes summing to what was sent", () => {
  const log = new MemoryLog();
  log.appendMany(4, 2);
  const cursor = cursorOn(log);
  const a = cursor.fetch(7, 2, 1 << 20, NOW, log);
  const b = cursor.fetch(8, 2, 1 << 20, NOW, log);
  const outcome = cursor.settle([0, 4, 1], [], NOW);
  assert.equal(outcome.freed, [7, 2, a.bytes.length, 8, 2, b.bytes.length]);
});

test("settle refuses stale attempts with stale_receipt", () => {
  const log = new MemoryLog();
  log.appendMany(3);
  const cursor = cursorOn(log);
  cursor.fetch(1, 2, 1 << 20, NOW, log);
  const outcome = cursor.settle([0, 1, 2, 2, 1, 1], [
    { offset: 1, attempt: 1, action: "nack" },
    { offset: 1, attempt: 1, action: "extend", delayMs: 5 },
  ], NOW);
  // Offset 0 at the wrong attempt, 2 never delivered, 1 nacked then extended.
  assert.is(outcome.settled, 1);
  assert.equal(outcome.refused.map((r) => [r.offset, r.attempt]), [
    [0, 2],
    [2, 1],
    [1, 1],
  ]);
  assert.ok(outcome.refused.every((r) => r.code === "stale_receipt"));
  const again = cursor.settle([1, 1, 1], [], NOW);
  assert.is(again.refused.length, 1);
});

test("expire redelivers an unsettled record with attempt + 1", () => {
  const log = new MemoryLog();
  log.appendMany(2);
  const cursor = cursorOn(log, { ackTimeoutMs: 1000 });
  cursor.fetch(1, 10, 1 << 20, NOW, log);
  const acked = cursor.settle([0, 1, 1], [], NOW);
  assert.is(cursor.nextTimerAt(), NOW + 1000);
  assert.equal(cursor.expire(NOW + 999), []);
  const freed = cursor.expire(NOW + 1000);
  assert.equal(freed.slice(0, 2), [1, 1]);
  assert.ok(freed[2] < acked.freed[2], "the batch header went with offset 0");
  assert.is(cursor.stats(2).waiting, 1);
  const again = cursor.fetch(2, 10, 1 << 20, NOW + 1000, log);
  assert.equal(offsetsOf(again.bytes), [1]);
  assert.equal(again.redelivered, [1, 2]);
  // The old receipt is stale now; the new one settles.
  assert.is(cursor.settle([1, 1, 1], [], NOW + 1001).refused.length, 1);
  assert.is(cursor.settle([1, 1, 2], [], NOW + 1001).settled, 1);
  assert.is(cursor.floor, 2);
});

test("settle takes an expired delivery not yet redelivered", () => {
  const log = new MemoryLog();
  log.appendMany(1);
  const cursor = cursorOn(log, { ackTimeoutMs: 10 });
  cursor.fetch(1, 10, 1 << 20, NOW, log);
  cursor.expire(NOW + 10);
  const outcome = cursor.settle([0, 1, 1], [], NOW + 11);
  assert.is(outcome.settled, 1);
  assert.equal(outcome.freed, []);
  assert.is(cursor.floor, 1);
  assert.is(cursor.hasDeliverable(NOW + 11, log.highWatermark), false);
});

test("settle nack redelivers after the backoff: initial·2^(attempt−1) ±20 %, capped", () => {
  const log = new MemoryLog();
  log.appendMany(1);
  for (const [random, factor] of [[0, 0.8], [0.999999, 1.2]]) {
    const cursor = new QueueCursor(
      config({ backoffInitialMs: 1000, backoffMaxMs: 3000, ackTimeoutMs: 1e9 }),
      null,
      { floor: 0 },
      () => random,
    );
    const dues: number[] = [];
    let now = NOW;
    for (let attempt = 1; attempt <= 4; attempt++) {
      const fetched = cursor.fetch(1, 1, 1 << 20, now, log);
      assert.is(fetched.records, 1, `attempt ${attempt} delivered`);
      cursor.settle([], [{ offset: 0, attempt, action: "nack" }], now);
      const due = cursor.nextTimerAt();
      dues.push(due - now);
      assert.is(cursor.fetch(1, 1, 1 << 20, due - 1, log).records, 0);
      now = due;
    }
    assert.equal(
      dues,
      [1000, 2000, 3000, 3000].map((ms) => Math.round(ms * factor)),
    );
  }
});

test("settle nack with delayMs waits exactly that long", () => {
  const log = new MemoryLog();
  log.appendMany(1);
  const cursor = cursorOn(log);
  cursor.fetch(1, 1, 1 << 20, NOW, log);
  cursor.settle(
    [],
    [{ offset: 0, attempt: 1, action: "nack", delayMs: 250 }],
    NOW,
  );
  assert.is(cursor.hasDeliverable(NOW + 249, 1), false);
  assert.is(cursor.hasDeliverable(NOW + 250, 1), true);
});

test("settle extend moves the deadline, at most 12 h", () => {
  const log = new MemoryLog();
  log.appendMany(1);
  const cursor = cursorOn(log, { ackTimeoutMs: 100 });
  cursor.fetch(1, 1, 1 << 20, NOW, log);
  cursor.settle(
    [],
    [{ offset: 0, attempt: 1, action: "extend", delayMs: 500 }],
    NOW + 50,
  );
  assert.equal(cursor.expire(NOW + 100), []);
  assert.is(cursor.stats(1).inFlight, 1);
  cursor.settle([], [{
    offset: 0,
    attempt: 1,
    action: "extend",
    delayMs: 1e12,
  }], NOW + 60);
  assert.equal(cursor.expire(NOW + 60 + EXTEND_MAX_MS - 1), []);
  assert.is(cursor.expire(NOW + 60 + EXTEND_MAX_MS).length, 3);
});

test("expire at the 5th delivery dead-letters the record", () => {
  const log = new MemoryLog();
  log.appendMany(2);
  const cursor = cursorOn(log, { ackTimeoutMs: 10 });
  let now = NOW;
  for (let attempt = 1; attempt <= 4; attempt++) {
    cursor.fetch(1, 1, 1 << 20, now, log);
    if (attempt === 2) {
      cursor.settle([], [{
        offset: 0,
        attempt,
        action: "nack",
        delayMs: 0,
        reason: "boom",
      }], now);
    } else cursor.expire(now + 10);
    now += 10;
    assert.equal(cursor.takeDeadLetters(), []);
  }
  const fifth = cursor.fetch(1, 1, 1 << 20, now, log);
  assert.equal(fifth.redelivered, [0, 5]);
  cursor.expire(now + 10);
  const letters = cursor.takeDeadLetters();
  assert.equal(letters, [{
    offset: 0,
    deliveries: 5,
    reason: "max_deliveries",
    error: "boom",
    firstFailedAt: NOW + 10,
  }]);
  // Neither deliverable nor settled until the letter is appended.
  const next = cursor.fetch(1, 10, 1 << 20, now + 10, log);
  assert.equal(offsetsOf(next.bytes), [1]);
  assert.is(cursor.floor, 0);
  assert.is(cursor.deadDone([0]), 1);
  assert.is(cursor.floor, 1);
  cursor.settle([1, 1, 1], [], now + 10);
  assert.is(cursor.floor, 2);
  assert.is(cursor.stats(2).deadLettered, 1);
});

test("settle reject dead-letters at once with its reason", () => {
  const log = new MemoryLog();
  log.appendMany(1);
  const cursor = cursorOn(log);
  cursor.fetch(3, 1, 1 << 20, NOW, log);
  const outcome = cursor.settle([], [{
    offset: 0,
    attempt: 1,
    action: "reject",
    reason: "bad json",
  }], NOW);
  assert.is(outcome.freed[0], 3);
  assert.equal(cursor.takeDeadLetters(), [{
    offset: 0,
    deliveries: 1,
    reason: "rejected",
    error: "bad json",
    firstFailedAt: NOW,
  }]);
  assert.equal(cursor.takeDeadLetters(), []);
  assert.is(cursor.deadDone([0]), 1);
  assert.is(cursor.floor, 1);
});

test("settle keeps at most 1024 UTF-8 bytes of an error text, whole characters", () => {
  const log = new MemoryLog();
  log.appendMany(1);
  const cursor = cursorOn(log);
  cursor.fetch(3, 1, 1 << 20, NOW, log);
  cursor.settle([], [{
    offset: 0,
    attempt: 1,
    action: "reject",
    reason: "é".repeat(5000),
  }], NOW);
  const [letter] = cursor.takeDeadLetters();
  assert.is(letter.error, "é".repeat(512));
  const state = decodeQueueState(encodeQueueState(cursor.snapshot()), "s");
  assert.ok(
    JSON.stringify(state).length < 4000,
    "the state file keeps the cut text",
  );
});

test("release makes a member's in-flight records deliverable at once, attempts counted", () => {
  const log = new MemoryLog();
  log.appendMany(4);
  const cursor = cursorOn(log);
  const a = cursor.fetch(1, 2, 1 << 20, NOW, log);
  cursor.fetch(2, 2, 1 << 20, NOW, log);
  const freed = cursor.release(1, NOW);
  assert.equal(freed, [1, 2, a.bytes.length]);
  assert.is(cursor.stats(4).inFlight, 2);
  const again = cursor.fetch(2, 10, 1 << 20, NOW, log);
  assert.equal(offsetsOf(again.bytes), [0, 1]);
  assert.equal(again.redelivered, [0, 2, 1, 2]);
  assert.equal(cursor.release(9, NOW), []);
});

test("fetch in key_shared mode keeps one record per key in flight, in order across redeliveries", () => {
  const log = new MemoryLog();
  log.append([
    textRecord("a1", "a"),
    textRecord("b1", "b"),
    textRecord("a2", "a"),
    textRecord("n1"),
    textRecord("a3", "a"),
    textRecord("n2"),
  ]);
  const cursor = cursorOn(log, { mode: "key_shared" });
  const first = cursor.fetch(1, 10, 1 << 20, NOW, log);
  assert.equal(valuesOf(first.bytes), ["a1", "b1", "n1", "n2"]);
  assert.is(cursor.stats(6).waiting, 2);
  // a1 fails: a2 stays parked; b and the keyless records go on.
  cursor.settle([1, 1, 1, 3, 1, 1, 5, 1, 1], [
    { offset: 0, attempt: 1, action: "nack", delayMs: 100 },
  ], NOW);
  assert.is(cursor.fetch(2, 10, 1 << 20, NOW + 50, log).records, 0);
  const retry = cursor.fetch(2, 10, 1 << 20, NOW + 100, log);
  assert.equal(valuesOf(retry.bytes), ["a1"]);
  assert.equal(retry.redelivered, [0, 2]);
  assert.is(cursor.settle([0, 1, 2], [], NOW + 100).settled, 1);
  assert.is(cursor.hasDeliverable(NOW + 100, 6), true);
  const a2 = cursor.fetch(1, 10, 1 << 20, NOW + 100, log);
  assert.equal(valuesOf(a2.bytes), ["a2"]);
  assert.equal(a2.redelivered, []);
  cursor.settle([2, 1, 1], [], NOW + 100);
  assert.equal(valuesOf(cursor.fetch(1, 10, 1 << 20, NOW + 100, log).bytes), [
    "a3",
  ]);
  cursor.settle([4, 1, 1], [], NOW + 100);
  assert.is(cursor.floor, 6);
});

test("fetch in key_shared mode: a dead-lettering key blocks nothing else", () => {
  const log = new MemoryLog();
  log.append([
    textRecord("x1", "x"),
    textRecord("y1", "y"),
    textRecord("x2", "x"),
  ]);
  const cursor = cursorOn(log, { mode: "key_shared" });
  cursor.fetch(1, 10, 1 << 20, NOW, log);
  cursor.settle([1, 1, 1], [{ offset: 0, attempt: 1, action: "reject" }], NOW);
  log.append([textRecord("y2", "y")]);
  assert.equal(valuesOf(cursor.fetch(1, 10, 1 << 20, NOW, log).bytes), ["y2"]);
  assert.is(cursor.takeDeadLetters().length, 1);
  cursor.deadDone([0]);
  assert.equal(valuesOf(cursor.fetch(1, 10, 1 << 20, NOW, log).bytes), ["x2"]);
});

test("fetch settles records not matching the filter", () => {
  const log = new MemoryLog();
  log.append([
    textRecord("keep-0"),
    textRecord("drop-1"),
    textRecord("drop-2"),
    textRecord("keep-3"),
  ]);
  const matcher: RecordMatcher = (bytes, start) => {
    // The value starts after 16 fixed bytes and the null key.
    return new TextDecoder().decode(bytes.subarray(start + 20, start + 24)) ===
      "keep";
  };
  const cursor = cursorOn(log, {}, matcher);
  const fetched = cursor.fetch(1, 10, 1 << 20, NOW, log);
  assert.equal(valuesOf(fetched.bytes), ["keep-0", "keep-3"]);
  assert.equal(offsetsOf(fetched.bytes), [0, 3]);
  cursor.settle([0, 1, 1], [], NOW);
  assert.is(cursor.floor, 3);
  cursor.settle([3, 1, 1], [], NOW);
  assert.is(cursor.floor, 4);
});

test("fetch with a compiled tag filter delivers only tagged records", () => {
  const log = new MemoryLog();
  log.append([
    textRecord("eu-1", null, [["dakghar.tag", "eu"]]),
    textRecord("us-1", null, [["dakghar.tag", "us"]]),
  ]);
  log.append([textRecord("none")]);
  log.append([textRecord("eu-2", "k", [["dakghar.tag", "eu"]])]);
  const cursor = cursorOn(log, {}, compileFilter({ tags: ["eu"] }));
  const fetched = cursor.fetch(1, 10, 1 << 20, NOW, log);
  assert.equal(valuesOf(fetched.bytes), ["eu-1", "eu-2"]);
  validateBatches(fetched.bytes, 1 << 20);
  cursor.settle([0, 1, 1, 3, 1, 1], [], NOW);
  assert.is(cursor.floor, 4);
});

test("fetch stops delivering new records at maxUnsettled; redeliveries go on", () => {
  const log = new MemoryLog();
  log.appendMany(10);
  const cursor = cursorOn(log, { maxUnsettled: 3, ackTimeoutMs: 10 });
  assert.equal(offsetsOf(cursor.fetch(1, 10, 1 << 20, NOW, log).bytes), [
    0,
    1,
    2,
  ]);
  assert.is(cursor.hasDeliverable(NOW, 10), false);
  cursor.expire(NOW + 10);
  assert.equal(offsetsOf(cursor.fetch(1, 10, 1 << 20, NOW + 10, log).bytes), [
    0,
    1,
    2,
  ]);
  cursor.settle([0, 1, 2], [], NOW + 10);
  assert.equal(offsetsOf(cursor.fetch(1, 10, 1 << 20, NOW + 10, log).bytes), [
    3,
  ]);
});

test("dropBelow counts unsettled records lost and moves the floor", () => {
  const log = new MemoryLog();
  log.appendMany(10);
  const cursor = cursorOn(log);
  cursor.fetch(1, 4, 1 << 20, NOW, log);
  cursor.settle([1, 1, 1], [], NOW);
  const freed = cursor.dropBelow(6);
  assert.is(freed[1], 3);
  assert.is(cursor.floor, 6);
  assert.is(cursor.stats(10).lostToRetention, 5);
  log.logStartOffset = 6;
  assert.equal(offsetsOf(cursor.fetch(1, 10, 1 << 20, NOW, log).bytes), [
    6,
    7,
    8,
    9,
  ]);
});

test("snapshot after a million in-order acks is just the floor", () => {
  const log = new MemoryLog();
  const records = [];
  for (let i = 0; i < 1000; i++) records.push(textRecord("v"));
  log.appendCopies(encodeBatch(records), 1000);
  const cursor = cursorOn(log);
  let acked = 0;
  while (acked < 1_000_000) {
    const fetched = cursor.fetch(1, 50_000, 1 << 24, NOW, log);
    cursor.settle([acked, fetched.records, 1], [], NOW);
    acked += fetched.records;
  }
  const state = cursor.snapshot();
  assert.equal(state.settled, []);
  assert.equal(state.failures, []);
  assert.is(state.floor, 1_000_000);
  assert.ok(encodeQueueState(state).length < 100);
});

test("snapshot round trip: restart redelivers in-flight records with attempts continued", () => {
  const log = new MemoryLog();
  log.appendMany(8);
  const cursor = cursorOn(log, { ackTimeoutMs: 10 });
  cursor.fetch(1, 6, 1 << 20, NOW, log);
  cursor.settle([0, 1, 1, 2, 1, 1, 3, 1, 1], [
    { offset: 1, attempt: 1, action: "nack", delayMs: 0, reason: "e1" },
    { offset: 4, attempt: 1, action: "reject", reason: "no" },
  ], NOW);
  const state = decodeQueueState(
    encodeQueueState(cursor.snapshot()),
    "test.state",
  );
  assert.is(state.floor, 1);
  assert.equal(state.settled, [2, 4]);

  const restarted = new QueueCursor(config(), null, state, () => 0.5);
  assert.is(restarted.readOffset, 1);
  const letters = restarted.takeDeadLetters();
  assert.equal(letters.map((l) => [l.offset, l.reason, l.error]), [[
    4,
    "rejected",
    "no",
  ]]);
  const fetched = restarted.fetch(1, 10, 1 << 20, NOW + 5, log);
  assert.equal(offsetsOf(fetched.bytes), [1, 5, 6, 7]);
  // 6 and 7 were never read, but the state file reserved them as
  // delivered (DELIVERY_RESERVE): they come back counted once.
  assert.equal(fetched.redelivered, [1, 2, 5, 2, 6, 2, 7, 2]);
  assert.is(fetched.persist, true);
  restarted.deadDone([4]);
  restarted.settle([1, 1, 2, 5, 3, 2], [], NOW + 5);
  assert.is(restarted.floor, 8);
  assert.is(restarted.stats(8).deadLettered, 1);
});

test("fetch() asks for a state write only past the delivered mark on disk or for redeliveries", () => {
  const log = new MemoryLog();
  log.appendMany(10);
  const cursor = cursorOn(log, { ackTimeoutMs: 10 });
  const first = cursor.fetch(1, 2, 1 << 20, NOW, log);
  assert.is(first.persist, true);
  // The write that follows records the reservation: offsets up to the log end.
  const written = cursor.snapshot();
  assert.is(written.delivered, 10);
  // A fetch before that write finished still waits for one.
  assert.is(cursor.fetch(1, 2, 1 << 20, NOW, log).persist, true);
  cursor.markDurable(written.delivered);
  assert.is(cursor.fetch(1, 2, 1 << 20, NOW, log).persist, false);
  // A redelivery carries an attempt the disk must know first.
  cursor.expire(NOW + 10);
  const again = cursor.fetch(1, 1, 1 << 20, NOW + 10, log);
  assert.equal(again.redelivered, [0, 2]);
  assert.is(again.persist, true);
  // After a crash with only `written` on disk, no receipt given out
  // before it is handed out again: every attempt is higher.
  const restarted = new QueueCursor(config(), null, written, () => 0.5);
  const after = restarted.fetch(1, 10, 1 << 20, NOW + 20, log);
  assert.equal(offsetsOf(after.bytes), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  for (let i = 1; i < after.redelivered.length; i += 2) {
    assert.is(after.redelivered[i], 2);
  }
  assert.is(after.redelivered.length, 20);
});

test("snapshot: reserved records never delivered do not use up a delivery limit of one", () => {
  const log = new MemoryLog();
  log.appendMany(6);
  const cursor = cursorOn(log, { maxDeliveries: 1 });
  cursor.fetch(1, 2, 1 << 20, NOW, log);
  const written = decodeQueueState(
    encodeQueueState(cursor.snapshot()),
    "test.state",
  );
  assert.equal([written.read, written.delivered], [2, 6]);

  const restarted = new QueueCursor(
    config({ maxDeliveries: 1 }),
    null,
    written,
    () => 0.5,
  );
  const after = restarted.fetch(1, 10, 1 << 20, NOW + 5, log);
  // 0 and 1 were out at the crash: their one delivery is used up.
  assert.equal(
    restarted.takeDeadLetters().map((letter) => letter.offset),
    [0, 1],
  );
  assert.equal(offsetsOf(after.bytes), [2, 3, 4, 5]);
});

test("fetch() writes first for a key_shared record whose key came free, so a crash cannot hand out its receipt again", () => {
  const log = new MemoryLog();
  log.append([
    textRecord("a", "k1"),
    textRecord("b", "k1"),
    textRecord("c", "k2"),
  ]);
  const cursor = cursorOn(log, { mode: "key_shared" });
  assert.equal(valuesOf(cursor.fetch(1, 10, 1 << 20, NOW, log).bytes), [
    "a",
    "c",
  ]);
  cursor.settle([0, 1, 1], [], NOW);
  const written = cursor.snapshot();
  cursor.markDurable(written.delivered);
  const freed = cursor.fetch(1, 10, 1 << 20, NOW, log);
  assert.equal(valuesOf(freed.bytes), ["b"]);
  assert.is(freed.persist, true);
  // With the write that follows on disk, b comes back counted on.
  const restarted = new QueueCursor(
    config({ mode: "key_shared" }),
    null,
    cursor.snapshot(),
    () => 0.5,
  );
  const again = restarted.fetch(1, 10, 1 << 20, NOW + 5, log);
  assert.equal(valuesOf(again.bytes), ["b", "c"]);
  assert.equal(again.redelivered, [1, 2, 2, 2]);
});

test("snapshot: a delivery limit of one holds across two restarts with no fetch between", () => {
  const log = new MemoryLog();
  log.appendMany(1);
  const cursor = cursorOn(log, { maxDeliveries: 1 });
  cursor.fetch(1, 1, 1 << 20, NOW, log);
  const once = new QueueCursor(
    config({ maxDeliveries: 1 }),
    null,
    decodeQueueState(encodeQueueState(cursor.snapshot()), "a.state"),
    () => 0.5,
  );
  const twice = new QueueCursor(
    config({ maxDeliveries: 1 }),
    null,
    decodeQueueState(encodeQueueState(once.snapshot()), "b.state"),
    () => 0.5,
  );
  assert.is(twice.fetch(1, 10, 1 << 20, NOW + 5, log).records, 0);
  assert.equal(twice.takeDeadLetters().map((letter) => letter.offset), [0]);
});

test("snapshot keeps a nack delay across a restart", () => {
  const log = new MemoryLog();
  log.appendMany(3);
  const cursor = cursorOn(log);
  cursor.fetch(1, 3, 1 << 20, NOW, log);
  cursor.settle([0, 1, 1, 2, 1, 1], [
    { offset: 1, attempt: 1, action: "nack", delayMs: 60_000 },
  ], NOW);
  const state = decodeQueueState(
    encodeQueueState(cursor.snapshot()),
    "test.state",
  );
  assert.equal(
    state.failures.map((f) => [f.offset, f.retryAt]),
    [[1, NOW + 60_000]],
  );

  const restarted = new QueueCursor(config(), null, state, () => 0.5);
  const early = restarted.fetch(1, 10, 1 << 20, NOW + 1000, log);
  assert.equal(offsetsOf(early.bytes), []);
  assert.is(restarted.stats(3).waiting, 1);
  const due = restarted.fetch(1, 10, 1 << 20, NOW + 60_000, log);
  assert.equal(offsetsOf(due.bytes), [1]);
  assert.equal(due.redelivered, [1, 2]);
  assert.is(restarted.settle([1, 1, 2], [], NOW + 60_000).settled, 1);
  assert.is(restarted.floor, 3);
});

test("snapshot: a nack delay that ran out during a restart is delivered at once", () => {
  const log = new MemoryLog();
  log.appendMany(1);
  const cursor = cursorOn(log);
  cursor.fetch(1, 1, 1 << 20, NOW, log);
  cursor.settle(
    [],
    [{ offset: 0, attempt: 1, action: "nack", delayMs: 500 }],
    NOW,
  );
  const restarted = new QueueCursor(
    config(),
    null,
    cursor.snapshot(),
    () => 0.5,
  );
  const fetched = restarted.fetch(1, 10, 1 << 20, NOW + 600, log);
  assert.equal(offsetsOf(fetched.bytes), [0]);
  assert.equal(fetched.redelivered, [0, 2]);
});

test("snapshot keeps a record at its delivery limit dead-lettered after restart", () => {
  const log = new MemoryLog();
  log.appendMany(1);
  const cursor = cursorOn(log, { maxDeliveries: 2, ackTimeoutMs: 10 });
  cursor.fetch(1, 1, 1 << 20, NOW, log);
  cursor.expire(NOW + 10);
  cursor.fetch(1, 1, 1 << 20, NOW + 10, log);
  const state = cursor.snapshot();
  const restarted = new QueueCursor(config({ maxDeliveries: 2 }), null, state);
  assert.is(restarted.fetch(1, 1, 1 << 20, NOW + 20, log).records, 0);
  assert.equal(
    restarted.takeDeadLetters().map((l) => [l.offset, l.deliveries]),
    [[0, 2]],
  );
});

test.run();
