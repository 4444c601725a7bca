import { suite } from "uvu";
import * as assert from "uvu/assert";
import type { QueueCursorConfig } from "../../src/envelope.ts";
import { decodeBatches } from "../../src/log/record_batch.ts";
import {
  QueueCursor,
  type RecordMatcher,
} from "../../src/queue/queue_cursor.ts";
import {
  decodeQueueState,
  encodeQueueState,
} from "../../src/queue/queue_state.ts";
import { pickSeed, seededRandom } from "../log/_random.ts";
import { MemoryLog, textRecord } from "./_memory_log.ts";

// Random fetches, settlements, expiries, releases and restarts against a
// model of what each record's receipts allow.
const test = suite("queue_cursor random");
const decoder = new TextDecoder();

type ModelState = "new" | "out" | "waiting" | "acked" | "dead" | "gone";

interface ModelRecord {
  key: string | null;
  filtered: boolean;
  state: ModelState;
  /** Deliveries so far. */
  attempt: number;
  member: number;
  deadline: number;
  /** Its delivery expired or was released: it may go out again. */
  free: boolean;
}

function run(mode: QueueCursorConfig["mode"], seed: number): void {
  const random = seededRandom(seed);
  const pick = <T>(items: T[]): T => items[Math.floor(random() * items.length)];
  const config: QueueCursorConfig = {
    mode,
    from: "earliest",
    ackTimeoutMs: 100,
    maxDeliveries: 4,
    backoffInitialMs: 10,
    backoffMaxMs: 40,
    maxUnsettled: 150,
    filter: null,
  };
  // Values ending in 7 do not match.
  const matcher: RecordMatcher = (bytes, start) => {
    const keyLength = new DataView(bytes.buffer, bytes.byteOffset)
      .getInt32(start + 12, true);
    const valueAt = start + 16 + Math.max(0, keyLength) + 4;
    const valueLength = new DataView(bytes.buffer, bytes.byteOffset)
      .getInt32(valueAt - 4, true);
    return bytes[valueAt + valueLength - 1] !== "7".charCodeAt(0);
  };

  const log = new MemoryLog();
  const model: ModelRecord[] = [];
  let cursor = new QueueCursor(config, matcher, { floor: 0 }, random);
  let now = 1_000_000;
  const context = () => `${mode} seed ${seed}`;

  const appendSome = () => {
    const count = 1 + Math.floor(random() * 8);
    const records = [];
    for (let i = 0; i < count; i++) {
      const offset = model.length;
      const key = random() < 0.2 ? null : `k${Math.floor(random() * 6)}`;
      records.push(textRecord(`v${offset}`, key));
      model.push({
        key,
        filtered: String(offset).endsWith("7"),
        state: "new",
        attempt: 0,
        member: 0,
        deadline: 0,
        free: false,
      });
    }
    log.append(records);
  };

  const takeDead = () => {
    for (const letter of cursor.takeDeadLetters()) {
      const record = model[letter.offset];
      assert.ok(
        record.state === "out" || record.state === "waiting" ||
          record.state === "dead",
        `${context()}: offset ${letter.offset} dead-lettered from ${record.state}`,
      );
      assert.is(letter.deliveries, record.attempt, context());
      record.state = "dead";
    }
  };

  const fetch = () => {
    const member = 1 + Math.floor(random() * 3);
    const fetched = cursor.fetch(
      member,
      1 + Math.floor(random() * 15),
      1 << 20,
      now,
      log,
    );
    const redelivered = new Map<number, number>();
    for (let i = 0; i < fetched.redelivered.length; i += 2) {
      redelivered.set(fetched.redelivered[i], fetched.redelivered[i + 1]);
    }
    const records = decodeBatches(fetched.bytes);
    assert.is(records.length, fetched.records, context());
    for (const { offset, value } of records) {
      const record = model[offset];
      assert.is(decoder.decode(value!), `v${offset}`, context());
      assert.not.ok(record.filtered, `${context()}: filtered ${offset} sent`);
      assert.ok(
        record.state === "new" || record.state === "waiting" ||
          (record.state === "out" && record.free),
        `${context()}: offset ${offset} delivered while ${record.state}`,
      );
      if (mode === "key_shared" && record.key !== null) {
        for (let earlier = 0; earlier < offset; earlier++) {
          const other = model[earlier];
          if (other.key !== record.key || other.filtered) continue;
          assert.ok(
            other.state === "acked" || other.state === "gone",
            `${context()}: ${offset} sent before ${earlier} of its key settled`,
          );
        }
      }
      record.attempt++;
      assert.is(redelivered.get(offset) ?? 1, record.attempt, context());
      record.state = "out";
      record.member = member;
      record.deadline = now + config.ackTimeoutMs;
      record.free = false;
    }
    takeDead();
  };

  const outstanding = () =>
    model.flatMap((record, offset) =>
      record.state === "out" ? [{ offset, attempt: record.attempt }] : []
    );

  const settle = () => {
    const receipts = outstanding();
    if (receipts.length === 0) return;
    const receipt = pick(receipts);
    // Sometimes a stale attempt, which must be refused.
    const stale = random() < 0.1;
    const attempt = stale ? receipt.attempt + 1 : receipt.attempt;
    const action = pick(["ack", "ack", "ack", "nack", "reject"] as const);
    const outcome = action === "ack"
      ? cursor.settle([receipt.offset, 1, attempt], [], now)
      : cursor.settle([], [{
        offset: receipt.offset,
        attempt,
        action,
        delayMs: random() < 0.5 ? undefined : 5,
      }], now);
    assert.is(outcome.settled, stale ? 0 : 1, context());
    if (stale) return;
    const record = model[receipt.offset];
    if (action === "ack") record.state = "acked";
    else if (action === "nack") record.state = "waiting";
    takeDead();
    if (action === "reject") assert.is(record.state, "dead", context());
  };

  const expire = () => {
    now += Math.floor(random() * 60);
    cursor.expire(now);
    for (const record of model) {
      if (record.state === "out" && record.deadline <= now) record.free = true;
    }
    takeDead();
  };

  const release = () => {
    const member = 1 + Math.floor(random() * 3);
    cursor.release(member, now);
    for (const record of model) {
      if (record.state === "out" && record.member === member) {
        record.free = true;
      }
    }
    takeDead();
  };

  const deadDone = () => {
    const dead = model.flatMap((record, offset) =>
      record.state === "dead" ? [offset] : []
    );
    cursor.deadDone(dead);
    for (const offset of dead) model[offset].state = "gone";
  };

  const restart = () => {
    const state = decodeQueueState(
      encodeQueueState(cursor.snapshot()),
      "random.state",
    );
    const readOffset = cursor.readOffset;
    cursor = new QueueCursor(config, matcher, state, random);
    // Outstanding receipts die with the old cursor. Records the state file
    // reserved as delivered but never read come back counted once.
    for (const [offset, record] of model.entries()) {
      if (record.state === "out") record.state = "waiting";
      if (
        record.state === "new" && offset >= readOffset &&
        offset < state.delivered
      ) {
        record.attempt = Math.max(record.attempt, 1);
      }
    }
    takeDead();
  };

  for (let step = 0; step < 1500; step++) {
    const roll = random();
    if (roll < 0.1) appendSome();
    else if (roll < 0.45) fetch();
    else if (roll < 0.8) settle();
    else if (roll < 0.9) expire();
    else if (roll < 0.94) release();
    else if (roll < 0.98) deadDone();
    else restart();
  }

  // Drain: everything ends acked or dead-lettered.
  for (let round = 0; round < 20_000; round++) {
    now += 1000;
    cursor.expire(now);
    for (const record of model) if (record.state === "out") record.free = true;
    takeDead();
    fetch();
    for (const { offset, attempt } of outstanding()) {
      assert.is(cursor.settle([offset, 1, attempt], [], now).settled, 1);
      model[offset].state = "acked";
    }
    deadDone();
    if (cursor.floor === log.highWatermark) break;
  }
  assert.is(cursor.floor, log.highWatermark, context());
  const stats = cursor.stats(log.highWatermark);
  assert.equal([stats.unsettled, stats.inFlight, stats.waiting], [0, 0, 0]);
  for (const [offset, record] of model.entries()) {
    const expected = record.filtered ? "new" : record.state;
    assert.ok(
      expected === "acked" || expected === "gone" || record.filtered,
      `${context()}: offset ${offset} ended ${record.state}`,
    );
    assert.ok(record.attempt <= config.maxDeliveries, context());
  }
  assert.is(
    stats.deadLettered,
    model.filter((record) => record.state === "gone").length,
    context(),
  );
}

for (const mode of ["queue", "key_shared"] as const) {
  test(`fetch, settle, expire, release and restart keep every receipt rule (${mode})`, () => {
    const seed = pickSeed();
    console.log(`queue_cursor random ${mode} seed ${seed}`);
    run(mode, seed);
  });
}

test.run();
