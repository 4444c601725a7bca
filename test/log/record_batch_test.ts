import { suite } from "uvu";
import * as assert from "uvu/assert";
import {
  BATCH_HEADER_BYTES,
  batchAppendTime,
  batchBaseOffset,
  batchBaseTimestamp,
  batchLastOffset,
  batchLength,
  type BatchRecord,
  batchRecordCount,
  decodeBatches,
  encodeBatch,
  encodeRecords,
  forEachRecord,
  sliceBatches,
  stampBatch,
  validateBatches,
} from "../../src/log/record_batch.ts";
import { MalformedBatchError, RecordTooLargeError } from "../../src/errors.ts";
import { pickSeed, seededRandom } from "./_random.ts";

const test = suite("record_batch");
const text = (s: string) => new TextEncoder().encode(s);
const MAX = 1 << 20;
// deno-lint-ignore no-explicit-any
const isA = (type: new (...args: any[]) => Error) => (error: unknown) =>
  error instanceof type;

function record(i: number, timestamp = 1_700_000_000_000 + i): BatchRecord {
  return {
    key: text(`k${i}`),
    value: text(`value ${i}`),
    headers: [["n", text(String(i))]],
    timestamp,
  };
}

function records(from: number, count: number): BatchRecord[] {
  return Array.from({ length: count }, (_, i) => record(from + i));
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const part of parts) {
    out.set(part, o);
    o += part.length;
  }
  return out;
}

/** Batches stamped with consecutive offsets from `base`, `sizes` records each. */
function stampedLog(base: number, sizes: number[]): Uint8Array {
  let offset = base;
  const batches = sizes.map((n) => {
    const batch = encodeBatch(records(offset, n));
    stampBatch(batch, 0, offset, 5000 + offset);
    offset += n;
    return batch;
  });
  return concat(...batches);
}

function plain(r: BatchRecord) {
  return {
    key: r.key && [...r.key],
    value: r.value && [...r.value],
    headers: r.headers.map(([n, v]) => [n, v && [...v]]),
    timestamp: r.timestamp,
  };
}

test("encodeBatch() round trips through decodeBatches()", () => {
  const input: BatchRecord[] = [
    { key: null, value: null, headers: [], timestamp: 1000 },
    {
      key: new Uint8Array(0),
      value: new Uint8Array(0),
      headers: [],
      timestamp: 999,
    },
    {
      key: text("key"),
      value: text("v"),
      headers: [["ünïcødé 🚀", text("x")], ["null", null], [
        "",
        new Uint8Array(0),
      ]],
      timestamp: 1000 + 2 ** 31 - 1,
    },
    {
      key: text("k"),
      value: new Uint8Array(300).fill(7),
      headers: [],
      timestamp: 1000 - 2 ** 31,
    },
  ];
  const batch = encodeBatch(input);
  assert.equal(validateBatches(batch, MAX), { batchCount: 1, recordCount: 4 });
  const output = decodeBatches(batch);
  assert.equal(output.map(plain), input.map(plain));
  assert.equal(output.map((r) => r.offset), [0, 1, 2, 3]);
});

test("encodeBatch() writes the header fields", () => {
  const batch = encodeBatch(records(0, 3));
  assert.is(batchLength(batch), batch.length);
  assert.is(batchRecordCount(batch), 3);
  assert.is(batchBaseOffset(batch), 0);
  assert.is(batchAppendTime(batch), 0);
  assert.is(batchBaseTimestamp(batch), 1_700_000_000_000);
  assert.is(batch[24], 1);
});

test("encodeBatch() rejects an empty list and far timestamps", () => {
  assert.throws(() => encodeBatch([]), isA(RangeError));
  assert.throws(
    () => encodeBatch([record(0, 0), record(1, 2 ** 31)]),
    RangeError,
  );
});

test("stampBatch() sets offsets and time without breaking the crc", () => {
  const batch = encodeBatch(records(0, 5));
  stampBatch(batch, 0, 2 ** 40 + 7, 1_765_000_000_123);
  validateBatches(batch, MAX);
  assert.is(batchBaseOffset(batch), 2 ** 40 + 7);
  assert.is(batchLastOffset(batch), 2 ** 40 + 11);
  assert.is(batchAppendTime(batch), 1_765_000_000_123);
  const decoded = decodeBatches(batch);
  assert.equal(
    decoded.map((r) => r.offset),
    [0, 1, 2, 3, 4].map((i) => 2 ** 40 + 7 + i),
  );
  assert.is(decoded[0].appendTime, 1_765_000_000_123);
});

test("validateBatches() counts concatenated batches", () => {
  const bytes = stampedLog(10, [3, 1, 4]);
  assert.equal(validateBatches(bytes, MAX), { batchCount: 3, recordCount: 8 });
});

test("validateBatches() rejects empty input, truncation and trailing bytes", () => {
  const batch = encodeBatch(records(0, 2));
  assert.throws(
    () => validateBatches(new Uint8Array(0), MAX),
    isA(MalformedBatchError),
  );
  assert.throws(
    () => validateBatches(batch.subarray(0, 39), MAX),
    /truncated header/,
  );
  assert.throws(
    () => validateBatches(batch.subarray(0, batch.length - 1), MAX),
    /past the end/,
  );
  assert.throws(
    () => validateBatches(concat(batch, new Uint8Array(3)), MAX),
    /truncated header/,
  );
});

test("validateBatches() names the fault", () => {
  const fault = (edit: (b: Uint8Array, v: DataView) => void) => {
    const b = encodeBatch(records(0, 2));
    edit(b, new DataView(b.buffer));
    return () => validateBatches(b, MAX);
  };
  assert.throws(fault((b) => (b[24] = 2)), /unknown magic/);
  assert.throws(fault((b) => (b[25] = 1)), /unsupported attributes/);
  assert.throws(fault((b) => (b[60] ^= 1)), /crc mismatch/);
  assert.throws(
    fault((_, v) => v.setUint32(8, 12, true)),
    /batchLength below 40/,
  );
  try {
    fault((b) => (b[60] ^= 1))();
    assert.unreachable();
  } catch (error) {
    assert.instance(error, MalformedBatchError);
    assert.is((error as MalformedBatchError).context.position, 0);
  }
});

test("validateBatches() checks counts and offsetDeltas behind a valid crc", async () => {
  const { crc32c } = await import("../../src/log/_crc32c.ts");
  const recrc = (b: Uint8Array) => {
    new DataView(b.buffer).setUint32(20, crc32c(b, 24, b.length), true);
    return b;
  };
  const count = recrc(encodeBatch(records(0, 2)));
  new DataView(count.buffer).setUint32(28, 3, true);
  assert.throws(() => validateBatches(recrc(count), MAX), /fewer records/);
  const zero = encodeBatch(records(0, 2));
  new DataView(zero.buffer).setUint32(28, 0, true);
  assert.throws(() => validateBatches(recrc(zero), MAX), /recordCount is 0/);
  const delta = encodeBatch(records(0, 2));
  const second = BATCH_HEADER_BYTES + 4 +
    new DataView(delta.buffer).getUint32(40, true);
  new DataView(delta.buffer).setUint32(second + 8, 5, true);
  assert.throws(() => validateBatches(recrc(delta), MAX), /offsetDelta/);
  const key = encodeBatch(records(0, 1));
  new DataView(key.buffer).setInt32(52, 200, true);
  assert.throws(() => validateBatches(recrc(key), MAX), /record fields/);
});

test("validateBatches() throws RecordTooLargeError past maxMessageBytes", () => {
  const batch = encodeBatch([
    { key: null, value: new Uint8Array(100), headers: [], timestamp: 0 },
  ]);
  // The record is 4 + 12 + 4 + 100 + 2 = 122 bytes.
  validateBatches(batch, 122);
  assert.throws(() => validateBatches(batch, 121), isA(RecordTooLargeError));
});

test("validateBatches() rejects every garbled batch (randomized)", () => {
  const seed = pickSeed();
  console.log(`  record_batch garble seed=${seed} (DAKGHAR_SEED to replay)`);
  const random = seededRandom(seed);
  const int = (n: number) => Math.floor(random() * n);
  for (let round = 0; round < 300; round++) {
    const input = Array.from({ length: 1 + int(5) }, (_, i) => ({
      key: random() < 0.3 ? null : new Uint8Array(int(20)).map(() => int(256)),
      value: random() < 0.1
        ? null
        : new Uint8Array(int(200)).map(() => int(256)),
      headers: Array.from(
        { length: int(3) },
        (_, h) =>
          [`h${h}`, random() < 0.2 ? null : new Uint8Array(int(8))] as [
            string,
            Uint8Array | null,
          ],
      ),
      timestamp: 1_700_000_000_000 + i * int(1000),
    }));
    const batch = encodeBatch(input);
    validateBatches(batch, MAX);

    // Flip 1 to 3 bytes anywhere the crc or the framing covers.
    const garbled = batch.slice();
    const flips = 1 + int(3);
    for (let f = 0; f < flips; f++) {
      const position = random() < 0.1
        ? 8 + int(4)
        : 20 + int(garbled.length - 20);
      garbled[position] ^= 1 + int(255);
    }
    const changed = garbled.some((b, i) => b !== batch[i]);
    if (changed) {
      assert.throws(
        () => validateBatches(garbled, MAX),
        isA(MalformedBatchError),
        `round ${round} seed ${seed}`,
      );
    }

    // Pure noise and truncation must throw the domain error, never crash.
    const noise = new Uint8Array(int(300)).map(() => int(256));
    if (noise.length >= 12 && random() < 0.5) noise[8] = noise.length;
    assert.throws(
      () => validateBatches(noise, MAX),
      isA(MalformedBatchError),
      `noise round ${round} seed ${seed}`,
    );
    assert.throws(
      () => validateBatches(batch.subarray(0, int(batch.length)), MAX),
      isA(MalformedBatchError),
    );
    try {
      decodeBatches(noise);
    } catch (error) {
      assert.instance(error, MalformedBatchError, `decode noise seed ${seed}`);
    }
  }
});

test("forEachRecord() visits records in offset order across batches", () => {
  const seen: number[] = [];
  forEachRecord(stampedLog(100, [2, 3]), (r) => seen.push(r.offset));
  assert.equal(seen, [100, 101, 102, 103, 104]);
});

test("sliceBatches() passes whole batches through as a view", () => {
  const log = stampedLog(10, [3, 2, 4]);
  const all = sliceBatches(log, 10, 100);
  assert.is(all.records, 9);
  assert.is(all.nextOffset, 19);
  assert.is(all.bytes.buffer, log.buffer);
  assert.is(all.bytes.length, log.length);

  const middle = sliceBatches(log, 13, 2);
  assert.is(middle.bytes.buffer, log.buffer);
  assert.is(middle.records, 2);
  assert.is(middle.nextOffset, 15);
  assert.equal(decodeBatches(middle.bytes).map((r) => r.offset), [13, 14]);
});

test("sliceBatches() re-frames batches cut at either edge", () => {
  const log = stampedLog(10, [3, 2, 4]);
  const original = decodeBatches(log);
  for (let from = 10; from <= 19; from++) {
    for (let max = 0; max <= 10; max++) {
      const slice = sliceBatches(log, from, max);
      const expected = original.filter((r) => r.offset >= from).slice(0, max);
      assert.is(slice.records, expected.length, `from ${from} max ${max}`);
      assert.is(slice.nextOffset, from + expected.length);
      if (slice.bytes.length > 0) validateBatches(slice.bytes, MAX);
      const got = decodeBatches(slice.bytes);
      assert.equal(got.map((r) => r.offset), expected.map((r) => r.offset));
      assert.equal(got.map(plain), expected.map(plain));
      assert.equal(
        got.map((r) => r.appendTime),
        expected.map((r) => r.appendTime),
      );
    }
  }
});

test("sliceBatches() rebases baseTimestamp on the first kept record", () => {
  const log = encodeBatch([record(0, 1000), record(1, 5000), record(2, 9000)]);
  const slice = sliceBatches(log, 1, 1);
  assert.is(batchBaseTimestamp(slice.bytes), 5000);
  assert.is(decodeBatches(slice.bytes)[0].timestamp, 5000);
});

test("sliceBatches() before the first batch starts at the first batch", () => {
  const log = stampedLog(50, [2, 2]);
  const slice = sliceBatches(log, 0, 3);
  assert.is(slice.records, 3);
  assert.is(slice.nextOffset, 53);
  assert.is(sliceBatches(log, 60, 3).records, 0);
  assert.is(sliceBatches(log, 60, 3).nextOffset, 60);
});

test("sliceBatches() throws on a zero batchLength instead of looping", () => {
  const bytes = stampedLog(0, [2, 2]);
  new DataView(bytes.buffer).setUint32(8, 0, true);
  assert.throws(() => sliceBatches(bytes, 3, 10), isA(MalformedBatchError));
});

test("encodeRecords() starts a new batch where timestamps are too far apart", () => {
  const input = [record(0, 0), record(1, 1000), record(2, 4_000_000_000)];
  const bytes = encodeRecords(input, MAX);
  assert.equal(validateBatches(bytes, MAX), { batchCount: 2, recordCount: 3 });
  assert.equal(
    decodeBatches(bytes).map((r) => r.timestamp),
    [0, 1000, 4_000_000_000],
  );
  assert.equal(
    encodeRecords(input.slice(0, 2), MAX),
    encodeBatch(input.slice(0, 2)),
  );
});

test("encodeRecords() rejects an oversize record before encoding any", () => {
  const big = { ...record(1), value: new Uint8Array(MAX) };
  assert.throws(
    () => encodeRecords([record(0), big], MAX),
    isA(RecordTooLargeError),
  );
});

test.run();
