import { suite } from "uvu";
import * as assert from "uvu/assert";
import {
  defaultPartitionLogConfig,
  PartitionLog,
  type PartitionLogConfig,
} from "../../src/log/partition_log.ts";
import {
  batchBaseOffset,
  batchLength,
  decodeBatches,
} from "../../src/log/record_batch.ts";
import { createLogger, type LogFields } from "../../src/logger.ts";
import { batchOf, fileSystem as fs, temporaryDir } from "./_helpers.ts";
import { pickSeed, seededRandom } from "./_random.ts";

const test = suite("partition_log recovery");

let root = "";
let dir = "";
let warnings: { message: string; fields: LogFields }[] = [];
const log = createLogger((level, _scope, message, fields) => {
  if (level === "warn") warnings.push({ message, fields });
}, "info");

test.before.each(() => {
  root = temporaryDir();
  dir = `${root}/topics/audit/0`;
  warnings = [];
});
test.after.each(() => fs.remove(root));

const BATCH_BYTES = batchOf(2, "r", 60).length;
const settings: PartitionLogConfig = {
  ...defaultPartitionLogConfig,
  // Three two-record batches per segment: segments start at 0, 6, 12, 18.
  segmentBytes: BATCH_BYTES * 3,
  indexIntervalBytes: BATCH_BYTES,
  flush: "interval",
};

const open = () => PartitionLog.open(fs, dir, settings, log);
const name = (base: number, extension = "log") =>
  `${dir}/${String(base).padStart(20, "0")}.${extension}`;
const offsetsOf = (bytes: Uint8Array) =>
  decodeBatches(bytes).map((r) => r.offset);
const range = (from: number, to: number) =>
  Array.from({ length: to - from }, (_, i) => from + i);

/** Ten batches (offsets 0..19) in four segments, closed cleanly or not. */
function writeLog(clean: boolean): void {
  const partitionLog = open();
  for (let i = 0; i < 10; i++) {
    partitionLog.append(batchOf(2, "r", 60), 1000 + 100 * i);
  }
  partitionLog.close();
  if (!clean) fs.remove(`${dir}/clean-shutdown`);
}

function editFile(path: string, edit: (bytes: Uint8Array) => Uint8Array): void {
  const bytes = edit(fs.readFile(path).slice());
  fs.remove(path);
  const file = fs.open(path, "readWrite");
  file.write(bytes, 0);
  file.close();
}

test("open() after a crash cuts a header torn mid-segment", () => {
  writeLog(false);
  editFile(name(12), (bytes) => bytes.subarray(0, BATCH_BYTES * 2 + 25));
  const partitionLog = open();
  assert.equal(partitionLog.recovery.corruptions, [
    {
      path: name(12),
      position: BATCH_BYTES * 2,
      reason: "truncated batch header",
    },
  ]);
  assert.is(partitionLog.recovery.bytesTruncated, 25 + BATCH_BYTES);
  // Segment 18 was deleted; a new, empty one starts at its base offset.
  assert.is(fs.sizeOf(name(18)), 0);
  assert.is(partitionLog.logEndOffset, 18);
  assert.equal(offsetsOf(partitionLog.read(0, 1 << 20)), range(0, 16));
  partitionLog.close();
});

test("open() after a crash cuts a torn tail and continues at the recovered end", () => {
  writeLog(false);
  // Segment 18 holds one batch, offsets 18-19; its last 10 bytes never landed.
  editFile(name(18), (bytes) => bytes.subarray(0, BATCH_BYTES - 10));
  const partitionLog = open();
  assert.is(partitionLog.recovery.clean, false);
  assert.is(partitionLog.recovery.bytesTruncated, BATCH_BYTES - 10);
  assert.equal(partitionLog.recovery.corruptions, [
    {
      path: name(18),
      position: 0,
      reason: "batch runs past the end of the segment",
    },
  ]);
  assert.equal(warnings.map((w) => [w.message, w.fields.position]), [
    ["segment truncated at a bad batch", 0],
  ]);
  assert.is(warnings[0].fields.path, name(18));
  assert.is(partitionLog.logEndOffset, 18);
  assert.equal(offsetsOf(partitionLog.read(0, 1 << 20)), range(0, 18));
  assert.is(partitionLog.append(batchOf(1), 9999).baseOffset, 18);
  assert.is(fs.sizeOf(name(18)), batchOf(1).length);
  partitionLog.close();
});

test("open() after a crash cuts at a garbled batch and deletes later segments", () => {
  writeLog(false);
  // Offsets 8-9 are the second batch of segment 6.
  editFile(name(6), (bytes) => {
    bytes[BATCH_BYTES + 70] ^= 0x40;
    return bytes;
  });
  const partitionLog = open();
  const recovery = partitionLog.recovery;
  assert.equal(recovery.corruptions, [
    { path: name(6), position: BATCH_BYTES, reason: "crc mismatch" },
  ]);
  assert.is(
    recovery.bytesTruncated,
    BATCH_BYTES * 2 + BATCH_BYTES * 3 + BATCH_BYTES,
  );
  assert.not.ok(fs.exists(name(12)));
  assert.equal(offsetsOf(partitionLog.read(0, 1 << 20)), range(0, 8));
  // Offsets up to segment 18's base were handed out once: they are not reused.
  assert.is(partitionLog.logEndOffset, 18);
  assert.equal(partitionLog.read(8, 1 << 20), new Uint8Array(0));
  assert.is(partitionLog.append(batchOf(2), 9999).baseOffset, 18);
  assert.equal(offsetsOf(partitionLog.read(8, 1 << 20)), [18, 19]);
  assert.equal(offsetsOf(partitionLog.read(6, 1 << 20)), [6, 7, 18, 19]);
  partitionLog.close();
});

test("open() after a crash rejects a batch whose baseOffset is out of sequence", () => {
  writeLog(false);
  // baseOffset lies outside the CRC; the offset sequence catches it.
  editFile(name(12), (bytes) => {
    bytes[BATCH_BYTES * 2] = 99;
    return bytes;
  });
  const partitionLog = open();
  assert.equal(
    partitionLog.recovery.corruptions.map((c) => [c.path, c.position]),
    [
      [name(12), BATCH_BYTES * 2],
    ],
  );
  assert.is(partitionLog.logEndOffset, 18);
  assert.equal(offsetsOf(partitionLog.read(0, 1 << 20)), range(0, 16));
  partitionLog.close();
});

test("open() after a clean shutdown verifies a damaged last batch", () => {
  writeLog(true);
  editFile(name(18), (bytes) => {
    bytes[60] ^= 1;
    return bytes;
  });
  const partitionLog = open();
  assert.is(partitionLog.recovery.clean, true);
  assert.is(partitionLog.recovery.segmentsChecked, 1);
  assert.is(partitionLog.recovery.bytesTruncated, BATCH_BYTES);
  // The marker said 20: those offsets were given out and are skipped.
  assert.is(partitionLog.logEndOffset, 20);
  assert.equal(offsetsOf(partitionLog.read(0, 1 << 20)), range(0, 18));
  assert.is(partitionLog.append(batchOf(1), 9999).baseOffset, 20);
  partitionLog.close();
});

test("open() rebuilds deleted, torn and garbled index files", () => {
  writeLog(true);
  fs.remove(name(0, "index"));
  fs.remove(name(6, "timeindex"));
  editFile(name(12, "index"), (bytes) => bytes.subarray(0, bytes.length - 3));
  editFile(name(12, "timeindex"), (bytes) => bytes.map(() => 0xee));
  const expectedIndex = fs.readFile(name(6, "index")).slice();
  const partitionLog = open();
  assert.is(partitionLog.recovery.indexesRebuilt, 4);
  assert.ok(
    fs.readFile(name(6, "index")).every((b, i) => b === expectedIndex[i]),
  );
  assert.is(
    fs.sizeOf(name(0, "index")),
    16,
    "two entries, one per batch after the first",
  );
  assert.is(fs.sizeOf(name(6, "timeindex")), 24);
  assert.equal(offsetsOf(partitionLog.read(9, 1)), [8, 9]);
  assert.is(partitionLog.offsetForTime(1450), 10);
  assert.is(partitionLog.logEndOffset, 20);
  partitionLog.close();
});

test("open() after losing the active segment's log keeps its base offset", () => {
  writeLog(false);
  fs.remove(name(18));
  const partitionLog = open();
  assert.is(partitionLog.logEndOffset, 18);
  assert.is(partitionLog.stats().segments, 3);
  assert.equal(offsetsOf(partitionLog.read(12, 1 << 20)), range(12, 18));
  assert.is(partitionLog.append(batchOf(1), 9999).baseOffset, 18);
  partitionLog.close();
});

test("open() after losing the last two logs starts a segment at the newest base", () => {
  writeLog(false);
  fs.remove(name(12));
  fs.remove(name(18));
  const partitionLog = open();
  assert.is(partitionLog.logEndOffset, 18);
  assert.is(partitionLog.stats().segments, 3);
  assert.ok(fs.exists(name(18)));
  assert.equal(partitionLog.read(12, 1 << 20), new Uint8Array(0));
  assert.is(partitionLog.append(batchOf(1), 9999).baseOffset, 18);
  assert.equal(offsetsOf(partitionLog.read(12, 1 << 20)), [18]);
  partitionLog.close();
});

test("open() after losing every file of the active segment keeps the marker's end", () => {
  writeLog(true);
  for (const extension of ["log", "index", "timeindex"]) {
    fs.remove(name(18, extension));
  }
  const partitionLog = open();
  assert.is(partitionLog.logEndOffset, 20);
  assert.equal(offsetsOf(partitionLog.read(0, 1 << 20)), range(0, 18));
  assert.is(partitionLog.append(batchOf(1), 9999).baseOffset, 20);
  partitionLog.close();
});

test("open() keeps a gap where a middle segment was deleted", () => {
  writeLog(false);
  for (const extension of ["log", "index", "timeindex"]) {
    fs.remove(name(6, extension));
  }
  const partitionLog = open();
  assert.equal(warnings.map((w) => w.message), [
    "offsets missing between segments",
  ]);
  assert.is(partitionLog.logStartOffset, 0);
  assert.is(partitionLog.logEndOffset, 20);
  assert.equal(offsetsOf(partitionLog.read(0, 1 << 20)), [
    ...range(0, 6),
    ...range(12, 20),
  ]);
  assert.equal(offsetsOf(partitionLog.read(7, 1)), [12, 13]);
  partitionLog.close();
});

test("open() after losing the first segment starts the log at the next one", () => {
  writeLog(true);
  for (const extension of ["log", "index", "timeindex"]) {
    fs.remove(name(0, extension));
  }
  const partitionLog = open();
  assert.equal([partitionLog.logStartOffset, partitionLog.logEndOffset], [
    6,
    20,
  ]);
  partitionLog.close();
});

test("open() removes leftover temporary files and orphan indexes", () => {
  writeLog(true);
  fs.writeFileAtomic(`${dir}/topic.json.123-1.tmp`, new Uint8Array(1));
  fs.writeFileAtomic(name(3, "index"), new Uint8Array(8));
  const partitionLog = open();
  assert.is(partitionLog.recovery.filesDeleted, 2);
  assert.not.ok(fs.exists(name(3, "index")));
  assert.is(partitionLog.logEndOffset, 20);
  partitionLog.close();
});

test("open() after a crash verifies only segments from the recovery point on", () => {
  writeLog(true);
  // A clean open writes the recovery point 20; later appends then crash.
  const partitionLog = open();
  for (let i = 0; i < 4; i++) partitionLog.append(batchOf(2, "r", 60), 5000);
  partitionLog.close();
  fs.remove(`${dir}/clean-shutdown`);
  const reopened = open();
  assert.is(reopened.recovery.segments, 5);
  assert.is(reopened.recovery.segmentsChecked, 2, "segments 18 and 24");
  assert.is(reopened.logEndOffset, 28);
  reopened.close();
});

test("open() output stays consistent with batch lengths on disk", () => {
  writeLog(false);
  const partitionLog = open();
  let total = 0;
  for (const base of [0, 6, 12, 18]) total += fs.sizeOf(name(base));
  assert.is(partitionLog.stats().bytes, total);
  const bytes = partitionLog.read(0, 1 << 20);
  assert.is(batchLength(bytes, 0), BATCH_BYTES);
  partitionLog.close();
});

test("open() keeps exactly the batches before random damage (randomized)", () => {
  const seed = pickSeed();
  console.log(`  recovery damage seed=${seed} (DAKGHAR_SEED to replay)`);
  const random = seededRandom(seed);
  const int = (n: number) => Math.floor(random() * n);
  const small = { ...settings, segmentBytes: 1500, indexIntervalBytes: 300 };
  for (let round = 0; round < 12; round++) {
    fs.remove(dir);
    const writer = PartitionLog.open(fs, dir, small, log);
    const batches = 5 + int(20);
    for (let i = 0; i < batches; i++) {
      writer.append(batchOf(1 + int(4), `b${i}`, int(200)), 1000 + i);
    }
    const original = decodeBatches(writer.read(0, 1 << 30, Infinity))
      .map((r) => `${r.offset}:${new TextDecoder().decode(r.value!)}`);
    writer.close();
    fs.remove(`${dir}/clean-shutdown`);

    // Pick a segment and a batch in it; damage that batch.
    const bases = fs.list(dir).map((e) => e.name).filter((n) =>
      n.endsWith(".log")
    )
      .sort().map((n) => Number(n.slice(0, 20)));
    const base = bases[int(bases.length)];
    const bytes = fs.readFile(name(base)).slice();
    const starts: number[] = [];
    for (let p = 0; p < bytes.length; p += batchLength(bytes, p)) {
      starts.push(p);
    }
    const victim = int(starts.length);
    const start = starts[victim];
    const length = batchLength(bytes, start);
    const cutOffset = batchBaseOffset(bytes, start);
    if (random() < 0.5) {
      editFile(name(base), (b) => b.subarray(0, start + 1 + int(length - 1)));
    } else {
      // Anywhere but appendTime, which no checksum covers.
      let position = int(length - 8);
      if (position >= 12) position += 8;
      editFile(name(base), (b) => {
        b[start + position] ^= 1 + int(255);
        return b;
      });
    }

    const reopened = PartitionLog.open(fs, dir, small, log);
    const context = `round ${round} seed ${seed} base ${base} batch ${victim}`;
    // Damage in the first batch leaves no survivor, so the log starts later.
    const survivors = decodeBatches(
      reopened.read(reopened.logStartOffset, 1 << 30),
    )
      .map((r) => `${r.offset}:${new TextDecoder().decode(r.value!)}`);
    assert.equal(survivors, original.slice(0, survivors.length), context);
    assert.is(survivors.length, cutOffset, context);
    assert.is(reopened.recovery.corruptions.length, 1, context);
    assert.ok(reopened.logEndOffset >= cutOffset, context);
    const next = reopened.append(batchOf(1), 99_999).baseOffset;
    assert.is(next, reopened.logEndOffset - 1, context);
    reopened.close();
  }
});

test.run();
