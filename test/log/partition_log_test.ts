import { suite } from "uvu";
import * as assert from "uvu/assert";
import {
  defaultPartitionLogConfig,
  PartitionLog,
  type PartitionLogConfig,
} from "../../src/log/partition_log.ts";
import {
  batchAppendTime,
  batchBaseOffset,
  decodeBatches,
  validateBatches,
} from "../../src/log/record_batch.ts";
import {
  MalformedBatchError,
  OffsetOutOfRangeError,
  PartitionClosedError,
  RecordTooLargeError,
} from "../../src/errors.ts";
import { silentLogger } from "../../src/logger.ts";
import {
  batchOf,
  FaultyFileSystem,
  fileSystem as fs,
  temporaryDir,
} from "./_helpers.ts";

const test = suite("partition_log");
// deno-lint-ignore no-explicit-any
const isA = (type: new (...args: any[]) => Error) => (error: unknown) =>
  error instanceof type;

let root = "";
let dir = "";
test.before.each(() => {
  root = temporaryDir();
  dir = `${root}/topics/orders/3`;
});
test.after.each(() => fs.remove(root));

function config(
  overrides: Partial<PartitionLogConfig> = {},
): PartitionLogConfig {
  return { ...defaultPartitionLogConfig, ...overrides };
}

function open(overrides: Partial<PartitionLogConfig> = {}, fileSystem = fs) {
  return PartitionLog.open(fileSystem, dir, config(overrides), silentLogger);
}

function offsetsOf(bytes: Uint8Array): number[] {
  return decodeBatches(bytes).map((r) => r.offset);
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i);
}

test("open() on a new directory starts an empty log at offset 0", () => {
  const log = open();
  assert.equal(log.stats(), {
    logStartOffset: 0,
    logEndOffset: 0,
    highWatermark: 0,
    bytes: 0,
    segments: 1,
  });
  assert.is(log.recovery.clean, false);
  assert.ok(fs.exists(`${dir}/00000000000000000000.log`));
  assert.equal(log.read(0, 1000), new Uint8Array(0));
  log.close();
});

test("append() assigns offsets and appendTime; flush() raises the high watermark", async () => {
  const log = open();
  assert.equal(log.append(batchOf(3), 5000), {
    baseOffset: 0,
    lastOffset: 2,
    appendTime: 5000,
  });
  // appendTime never goes back, even when the clock does.
  assert.equal(log.append(batchOf(2), 4000), {
    baseOffset: 3,
    lastOffset: 4,
    appendTime: 5000,
  });
  assert.is(log.logEndOffset, 5);
  assert.is(log.highWatermark, 0);
  assert.equal(log.read(0, 1 << 20), new Uint8Array(0));
  assert.is(await log.flush(), 5);
  assert.is(log.highWatermark, 5);
  const bytes = log.read(0, 1 << 20);
  assert.equal(validateBatches(bytes, 1 << 20), {
    batchCount: 2,
    recordCount: 5,
  });
  assert.equal(offsetsOf(bytes), [0, 1, 2, 3, 4]);
  assert.is(batchAppendTime(bytes, 0), 5000);
  assert.is(decodeBatches(bytes)[4].appendTime, 5000);
  log.close();
});

test("append() takes several concatenated batches at once", async () => {
  const log = open();
  const both = new Uint8Array([...batchOf(2, "a"), ...batchOf(3, "b")]);
  assert.equal(log.append(both, 1), {
    baseOffset: 0,
    lastOffset: 4,
    appendTime: 1,
  });
  await log.flush();
  assert.equal(offsetsOf(log.read(2, 1)), [2, 3, 4]);
  log.close();
});

test("append() with flush interval makes records visible at once", () => {
  const log = open({ flush: "interval" });
  log.append(batchOf(2), 1);
  assert.is(log.highWatermark, 2);
  assert.equal(offsetsOf(log.read(0, 1000)), [0, 1]);
  log.close();
});

test("append() rejects bad batches and leaves the log as it was", () => {
  const log = open({ maxMessageBytes: 100 });
  const garbled = batchOf(2);
  garbled[50] ^= 0xff;
  assert.throws(() => log.append(garbled, 1), isA(MalformedBatchError));
  assert.throws(
    () => log.append(batchOf(1, "x", 200), 1),
    isA(RecordTooLargeError),
  );
  assert.is(log.logEndOffset, 0);
  assert.is(log.stats().bytes, 0);
  log.append(batchOf(1), 1);
  assert.is(log.logEndOffset, 1);
  log.close();
});

test("append() rolls a new segment at segmentBytes", async () => {
  const batch = batchOf(2, "r", 100);
  const log = open({ segmentBytes: batch.length * 3 });
  for (let i = 0; i < 10; i++) log.append(batchOf(2, "r", 100), 1000 + i);
  await log.flush();
  assert.is(log.stats().segments, 4);
  assert.is(log.stats().bytes, batch.length * 10);
  const names = fs.list(dir).map((e) => e.name).filter((n) =>
    n.endsWith(".log")
  );
  assert.equal(names.sort(), [
    "00000000000000000000.log",
    "00000000000000000006.log",
    "00000000000000000012.log",
    "00000000000000000018.log",
  ]);
  log.close();
});

test("read() crosses segments while maxBytes allows and returns whole batches", async () => {
  const batch = batchOf(2, "r", 100);
  const log = open({ segmentBytes: batch.length * 3, indexIntervalBytes: 1 });
  for (let i = 0; i < 10; i++) log.append(batchOf(2, "r", 100), 1000 + i);
  await log.flush();
  assert.equal(offsetsOf(log.read(0, 1 << 20)), range(0, 20));
  assert.equal(offsetsOf(log.read(5, batch.length * 2)), [4, 5, 6, 7]);
  assert.equal(offsetsOf(log.read(5, 1)), [4, 5], "at least one batch");
  assert.equal(offsetsOf(log.read(11, 1 << 20, 16)), range(10, 16));
  assert.equal(offsetsOf(log.read(11, 1 << 20, 15)), range(10, 14));
  assert.equal(log.read(20, 1000), new Uint8Array(0));
  assert.throws(() => log.read(21, 1000), isA(OffsetOutOfRangeError));
  try {
    log.read(21, 1000);
  } catch (error) {
    assert.equal((error as OffsetOutOfRangeError).context, {
      topic: "orders",
      partition: 3,
      offset: 21,
      logStartOffset: 0,
      logEndOffset: 20,
    });
  }
  const fresh = log.read(0, 1 << 20);
  assert.is(fresh.byteOffset, 0);
  assert.is(fresh.buffer.byteLength, fresh.length);
  log.close();
});

test("maybeRoll() rolls once the active segment is segmentMs old", () => {
  const log = open({ segmentMs: 1000, flush: "interval" });
  log.maybeRoll(50_000);
  assert.is(log.stats().segments, 1, "an empty segment never rolls");
  log.append(batchOf(1), 10_000);
  log.maybeRoll(10_999);
  assert.is(log.stats().segments, 1);
  log.maybeRoll(11_000);
  assert.is(log.stats().segments, 2);
  log.append(batchOf(1), 11_000);
  assert.equal(offsetsOf(log.read(0, 1 << 20)), [0, 1]);
  log.close();
});

test("offsetForTime() finds the first batch appended at or after a time", () => {
  const log = open({ flush: "interval" });
  log.append(batchOf(5), 1000);
  log.append(batchOf(5), 2000);
  assert.is(log.offsetForTime(0), 0, "before the first");
  assert.is(log.offsetForTime(1000), 0);
  assert.is(log.offsetForTime(1500), 5, "between batches");
  assert.is(log.offsetForTime(2000), 5, "the batch holding it");
  assert.is(log.offsetForTime(2001), 10, "after the last");
  log.close();
});

test("offsetForTime() agrees with a scan across indexes and segments", () => {
  const log = open({
    flush: "interval",
    indexIntervalBytes: 300,
    segmentBytes: 4000,
  });
  // Times repeat in runs so that many indexed batches share one appendTime.
  const times: number[] = [];
  for (let i = 0; i < 120; i++) {
    const time = 10_000 + Math.floor(i / 7) * 10;
    times.push(time);
    log.append(batchOf(3, "t", 20), time);
  }
  assert.ok(log.stats().segments > 3);
  for (let t = 9_990; t <= 10_000 + 18 * 10 + 5; t += 5) {
    const first = times.findIndex((time) => time >= t);
    const expected = first < 0 ? 360 : first * 3;
    assert.is(log.offsetForTime(t), expected, `timestamp ${t}`);
  }
  log.close();
});

test("maybeApplyRetention() deletes closed segments older than retentionMs", () => {
  const batch = batchOf(2, "r", 100);
  const log = open({
    segmentBytes: batch.length * 2,
    retentionMs: 1000,
    flush: "interval",
  });
  for (let i = 0; i < 6; i++) {
    log.append(batchOf(2, "r", 100), 10_000 + i * 1000);
  }
  assert.is(log.stats().segments, 3);
  log.maybeApplyRetention(12_000);
  assert.is(
    log.stats().segments,
    3,
    "newest batch of segment 0 is 1000 ms old",
  );
  log.maybeApplyRetention(12_001);
  assert.equal(
    [log.stats().segments, log.logStartOffset, log.stats().bytes],
    [2, 4, batch.length * 4],
  );
  log.maybeApplyRetention(1_000_000);
  assert.is(log.stats().segments, 1, "the active segment stays");
  assert.is(log.logStartOffset, 8);
  assert.throws(() => log.read(7, 100), isA(OffsetOutOfRangeError));
  assert.equal(offsetsOf(log.read(8, 1 << 20)), [8, 9, 10, 11]);
  assert.ok(!fs.exists(`${dir}/00000000000000000000.log`));
  assert.ok(!fs.exists(`${dir}/00000000000000000000.index`));
  log.close();
});

test("maybeApplyRetention() deletes the oldest segments past retentionBytes", () => {
  const batch = batchOf(2, "r", 100);
  const log = open({
    segmentBytes: batch.length * 2,
    retentionBytes: batch.length * 3,
    retentionMs: -1,
    flush: "interval",
  });
  for (let i = 0; i < 7; i++) log.append(batchOf(2, "r", 100), 10_000);
  assert.is(log.stats().segments, 4);
  log.maybeApplyRetention(10_000_000);
  assert.equal([log.stats().segments, log.logStartOffset], [2, 8]);
  assert.is(log.stats().bytes, batch.length * 3);
  log.close();
});

test("flush() coalesces many appends into one fsync", async () => {
  const faulty = new FaultyFileSystem(fs);
  const log = open({}, faulty);
  faulty.syncs = 0;
  for (let i = 0; i < 50; i++) log.append(batchOf(1), 1);
  assert.is(await log.flush(), 50);
  assert.is(faulty.syncs, 1);
  assert.is(await log.flush(), 50, "nothing new: no fsync");
  assert.is(faulty.syncs, 1);
  log.close();
});

test("flush() runs at most one fsync and queues one while appends continue", async () => {
  const faulty = new FaultyFileSystem(fs);
  const log = open({}, faulty);
  faulty.syncs = 0;
  faulty.holdSyncs = true;
  const flushed: Promise<number>[] = [];
  for (let i = 0; i < 20; i++) {
    log.append(batchOf(1), 1);
    flushed.push(log.flush());
  }
  await Promise.resolve();
  assert.is(faulty.syncs, 1, "one fsync in flight");
  assert.is(log.highWatermark, 0);
  faulty.holdSyncs = false;
  faulty.releaseSyncs();
  const results = await Promise.all(flushed);
  assert.is(results[0], 1, "the first fsync covered the first append");
  assert.equal(results.slice(1), new Array(19).fill(20));
  assert.is(faulty.syncs, 2);
  assert.is(log.highWatermark, 20);
  log.close();
});

test("append() after a failed write throws PartitionClosedError until reopened", () => {
  const faulty = new FaultyFileSystem(fs);
  const log = open({}, faulty);
  log.append(batchOf(1), 1);
  faulty.failWrites = true;
  let first: unknown;
  try {
    log.append(batchOf(1), 1);
  } catch (error) {
    first = error;
  }
  assert.instance(first, PartitionClosedError);
  assert.match(String((first as Error).cause), /injected write failure/);
  faulty.failWrites = false;
  try {
    log.append(batchOf(1), 1);
    assert.unreachable();
  } catch (error) {
    assert.instance(error, PartitionClosedError);
    assert.match(String((error as Error).cause), /injected write failure/);
  }
  log.close();
  assert.not.ok(
    fs.exists(`${dir}/clean-shutdown`),
    "a blocked log closes unclean",
  );
  const reopened = open();
  assert.is(reopened.logEndOffset, 1);
  reopened.append(batchOf(1), 1);
  assert.is(reopened.logEndOffset, 2);
  reopened.close();
});

test("flush() after a failed fsync rejects and blocks the log", async () => {
  const faulty = new FaultyFileSystem(fs);
  const log = open({}, faulty);
  log.append(batchOf(1), 1);
  faulty.failSyncs = true;
  try {
    await log.flush();
    assert.unreachable();
  } catch (error) {
    assert.instance(error, PartitionClosedError);
    assert.match(String((error as Error).cause), /injected fsync failure/);
  }
  assert.is(log.highWatermark, 0);
  faulty.failSyncs = false;
  assert.throws(() => log.append(batchOf(1), 1), isA(PartitionClosedError));
  log.close();
});

test("close() writes a clean-shutdown marker and open() checks only cheaply", async () => {
  const log = open({ segmentBytes: 500, indexIntervalBytes: 100 });
  for (let i = 0; i < 20; i++) log.append(batchOf(2, "r", 30), 100 + i);
  await log.flush();
  const segments = log.stats().segments;
  log.close();
  assert.ok(fs.exists(`${dir}/clean-shutdown`));
  const again = open({ segmentBytes: 500, indexIntervalBytes: 100 });
  assert.equal(
    [
      again.recovery.clean,
      again.recovery.segmentsChecked,
      again.recovery.indexesRebuilt,
    ],
    [true, 0, 0],
  );
  assert.is(again.recovery.segments, segments);
  assert.not.ok(fs.exists(`${dir}/clean-shutdown`));
  assert.equal(again.stats().logEndOffset, 40);
  assert.equal(offsetsOf(again.read(0, 1 << 20)), range(0, 40));
  assert.is(again.offsetForTime(110), 20);
  again.close();
});

test("delete() removes the partition directory", () => {
  const log = open();
  log.append(batchOf(1), 1);
  log.delete();
  assert.not.ok(fs.exists(dir));
  assert.throws(() => log.append(batchOf(1), 1), isA(PartitionClosedError));
});

test("read() returns batches stamped with their offsets across a reopen", async () => {
  const log = open();
  log.append(batchOf(3), 7);
  await log.flush();
  log.close();
  const again = open();
  const result = again.append(batchOf(2), 8);
  assert.is(result.baseOffset, 3);
  await again.flush();
  const bytes = again.read(3, 1000);
  assert.is(batchBaseOffset(bytes, 0), 3);
  again.close();
});

test("flush() with flush interval syncs once and keeps the high watermark", async () => {
  const faulty = new FaultyFileSystem(fs);
  const log = open({ flush: "interval" }, faulty);
  faulty.syncs = 0;
  log.append(batchOf(3), 1);
  log.append(batchOf(3), 1);
  assert.is(log.highWatermark, 6);
  assert.is(await log.flush(), 6);
  assert.is(faulty.syncs, 1);
  log.close();
});

test("configure() applies new limits from the next append", () => {
  const log = open({ flush: "interval" });
  log.append(batchOf(1, "x", 300), 1);
  log.configure(
    config({ flush: "interval", maxMessageBytes: 100, segmentBytes: 10 }),
  );
  assert.throws(
    () => log.append(batchOf(1, "x", 300), 2),
    isA(RecordTooLargeError),
  );
  log.append(batchOf(1), 2);
  assert.is(log.stats().segments, 2, "rolled at the new segmentBytes");
  assert.is(log.config.maxMessageBytes, 100);
  log.close();
});

test.run();
