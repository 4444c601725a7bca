import { suite } from "uvu";
import * as assert from "uvu/assert";
import {
  batchLength,
  type BatchRecord,
  decodeBatches,
  type DecodedRecord,
  encodeBatch,
  stampBatch,
  validateBatches,
} from "../../src/log/record_batch.ts";
import {
  forEachRecordStart,
  joinBatches,
  pickRecords,
  recordEndAt,
  recordHeaderAt,
  recordKeyAt,
  recordKeyStringAt,
  recordOffsetAt,
} from "../../src/log/record_pick.ts";
import { pickSeed, seededRandom } from "./_random.ts";

const test = suite("record_pick");
const text = (s: string) => new TextEncoder().encode(s);
const MAX = 1 << 20;

/** Stamped batches of the given sizes, offsets from `base`, back to back. */
function stampedBatches(
  sizes: number[],
  base = 100,
  record = (i: number): BatchRecord => ({
    key: i % 3 === 0 ? null : text(`k${i % 5}`),
    value: text(`value ${i}`),
    headers: [["n", text(String(i))]],
    timestamp: 1_700_000_000_000 + i,
  }),
): Uint8Array {
  const batches: Uint8Array[] = [];
  let offset = base;
  for (const size of sizes) {
    const batch = encodeBatch(
      Array.from({ length: size }, (_, i) => record(offset - base + i)),
    );
    stampBatch(batch, 0, offset, 5_000);
    batches.push(batch);
    offset += size;
  }
  const bytes = new Uint8Array(batches.reduce((n, b) => n + b.length, 0));
  let p = 0;
  for (const batch of batches) {
    bytes.set(batch, p);
    p += batch.length;
  }
  return bytes;
}

function plain(records: DecodedRecord[]) {
  return records.map((
    { offset, timestamp, appendTime, key, value, headers },
  ) => ({
    offset,
    timestamp,
    appendTime,
    key: key && [...key],
    value: value && [...value],
    headers: headers.map(([n, v]) => [n, v && [...v]]),
  }));
}

test("pickRecords() returns the input when every record is kept", () => {
  const bytes = stampedBatches([3, 4]);
  const picked = pickRecords(bytes, () => true);
  assert.is(picked.bytes, bytes);
  assert.is(picked.records, 7);
  assert.is(picked.lastOffset, 106);
  assert.is(picked.nextOffset, 107);
});

test("pickRecords() returns nothing when no record is kept", () => {
  const picked = pickRecords(stampedBatches([3, 4]), () => false);
  assert.is(picked.bytes.length, 0);
  assert.is(picked.records, 0);
  assert.is(picked.lastOffset, -1);
  assert.is(picked.nextOffset, 107);
  assert.is(pickRecords(new Uint8Array(0), () => true).records, 0);
});

test("pickRecords() keeps whole batches untouched and splits runs", () => {
  const bytes = stampedBatches([3, 5]);
  const first = batchLength(bytes, 0);
  const seen: number[] = [];
  const picked = pickRecords(bytes, (offset) => {
    seen.push(offset);
    return offset < 103 || offset === 104 || offset === 106 || offset === 107;
  });
  assert.equal(seen, [100, 101, 102, 103, 104, 105, 106, 107]);
  assert.equal(
    [...picked.bytes.subarray(0, first)],
    [...bytes.subarray(0, first)],
  );
  const { batchCount, recordCount } = validateBatches(picked.bytes, MAX);
  assert.is(batchCount, 3);
  assert.is(recordCount, 6);
  assert.equal(
    decodeBatches(picked.bytes).map((r) => r.offset),
    [100, 101, 102, 104, 106, 107],
  );
  assert.is(picked.lastOffset, 107);
});

test("pickRecords() keeps timestamps of records far apart", () => {
  const wide = (i: number): BatchRecord => ({
    key: null,
    value: text(`v${i}`),
    headers: [],
    timestamp: 1_000_000_000 + [0, 2_000_000_000, -2_000_000_000, 5][i],
  });
  const bytes = stampedBatches([4], 0, wide);
  for (const keepSet of [[1, 2], [2, 3], [1], [0, 1, 2]]) {
    const picked = pickRecords(bytes, (offset) => keepSet.includes(offset));
    validateBatches(picked.bytes, MAX);
    assert.equal(
      decodeBatches(picked.bytes).map((r) => r.timestamp),
      keepSet.map((i) => wide(i).timestamp),
    );
  }
});

test("pickRecords() output is valid and exact on random input", () => {
  const seed = pickSeed();
  console.log(`  record_pick seed ${seed}`);
  const random = seededRandom(seed);
  for (let round = 0; round < 200; round++) {
    const sizes = Array.from(
      { length: 1 + Math.floor(random() * 5) },
      () => 1 + Math.floor(random() * 12),
    );
    const record = (i: number): BatchRecord => ({
      key: random() < 0.3 ? null : text(`key-${Math.floor(random() * 4)}`),
      value: random() < 0.1 ? null : text("x".repeat(random() * 40)),
      headers: random() < 0.5 ? [] : [["h", text(String(i))], ["e", null]],
      timestamp: 1_700_000_000_000 +
        Math.floor((random() - 0.5) * (random() < 0.1 ? 2 ** 31 - 2 : 2 ** 10)),
    });
    const bytes = stampedBatches(sizes, Math.floor(random() * 1e6), record);
    const rate = random();
    const keptOffsets = new Set<number>();
    const picked = pickRecords(bytes, (offset) => {
      const keep = random() < rate;
      if (keep) keptOffsets.add(offset);
      return keep;
    });
    const message = `seed ${seed} round ${round}`;
    const expected = decodeBatches(bytes).filter((r) =>
      keptOffsets.has(r.offset)
    );
    assert.is(picked.records, expected.length, message);
    if (expected.length > 0) validateBatches(picked.bytes, MAX);
    assert.equal(plain(decodeBatches(picked.bytes)), plain(expected), message);
    assert.is(picked.lastOffset, expected.at(-1)?.offset ?? -1, message);
  }
});

test("joinBatches() joins the records of several batches into one valid batch", () => {
  const records = (from: number, count: number, ts: number) =>
    Array.from({ length: count }, (_, i): BatchRecord => ({
      key: i % 2 ? null : text(`k${from + i}`),
      value: text(`v${from + i}`),
      headers: [["dakghar.delay-id", text(`0-${from + i}`)]],
      timestamp: ts + i * 7,
    }));
  const parts = [
    encodeBatch(records(0, 1, 1_700_000_000_000)),
    encodeBatch(records(1, 3, 1_699_999_999_000)),
    encodeBatch(records(4, 2, 1_700_000_050_000)),
  ];
  const joined = joinBatches(parts)!;
  assert.equal(validateBatches(joined, MAX), { batchCount: 1, recordCount: 6 });
  assert.equal(
    decodeBatches(joined).map((r) => [r.offset, r.timestamp, r.value]),
    parts.flatMap((part) => decodeBatches(part)).map((r, i) => [
      i,
      r.timestamp,
      r.value,
    ]),
  );
});

test("joinBatches() gives null when timestamps lie too far apart for one batch", () => {
  const one = (timestamp: number) =>
    encodeBatch([{ key: null, value: text("x"), headers: [], timestamp }]);
  assert.is(joinBatches([one(0), one(2 ** 32)]), null);
});

test("recordKeyAt() and friends read fields in place", () => {
  const batch = encodeBatch([
    { key: text("a"), value: null, headers: [["x", text("1")]], timestamp: 1 },
    {
      key: null,
      value: text("v"),
      headers: [["x", null], ["y", text("2")]],
      timestamp: 2,
    },
    {
      key: new Uint8Array([0, 255, 1]),
      value: null,
      headers: [],
      timestamp: 3,
    },
  ]);
  stampBatch(batch, 0, 40, 0);
  const starts: number[] = [];
  forEachRecordStart(batch, (offset, at, batchStart) => {
    assert.is(batchStart, 0);
    assert.is(recordOffsetAt(batch, batchStart, at), offset);
    starts.push(at);
  });
  assert.is(starts.length, 3);
  assert.is(recordEndAt(batch, starts[2]), batch.length);
  assert.equal([...recordKeyAt(batch, starts[0])!], [97]);
  assert.is(recordKeyAt(batch, starts[1]), null);
  assert.is(recordKeyStringAt(batch, starts[2]), "\u0000\u00ff\u0001");
  assert.is(recordKeyStringAt(batch, starts[1]), null);
  assert.equal([...recordHeaderAt(batch, starts[0], text("x"))!], [49]);
  assert.is(recordHeaderAt(batch, starts[1], text("x")), null);
  assert.equal([...recordHeaderAt(batch, starts[1], text("y"))!], [50]);
  assert.is(recordHeaderAt(batch, starts[2], text("y")), null);
});

test.run();
