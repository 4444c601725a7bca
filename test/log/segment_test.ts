import { suite } from "uvu";
import * as assert from "uvu/assert";
import { Segment, segmentFileName } from "../../src/log/segment.ts";
import {
  batchOf,
  FaultyFileSystem,
  fileSystem,
  temporaryDir,
} from "./_helpers.ts";
import { stampBatch } from "../../src/log/record_batch.ts";
import { createLogger, silentLogger } from "../../src/logger.ts";

const test = suite("segment");
let dir = "";
test.before.each(() => {
  dir = temporaryDir();
});
test.after.each(() => fileSystem.remove(dir));

const BASE = 1000;
const BATCH_BYTES = batchOf(4, "s", 100).length;

/** A segment of `count` four-record batches; batch i has appendTime 5000 + 10 * floor(i / 3). */
function filled(
  fs: FileSystem,
  count: number,
  indexIntervalBytes = 1024,
): Segment {
  const segment = Segment.create(
    fs,
    dir,
    BASE,
    { indexIntervalBytes },
    silentLogger,
  );
  for (let i = 0; i < count; i++) {
    const batch = batchOf(4, "s", 100);
    const time = 5000 + 10 * Math.floor(i / 3);
    stampBatch(batch, 0, BASE + 4 * i, time);
    segment.append(batch, time);
  }
  return segment;
}
type FileSystem = typeof fileSystem;

test("segmentFileName() pads the base offset to 20 digits", () => {
  assert.is(segmentFileName(1200, "log"), "00000000000000001200.log");
  assert.is(segmentFileName(0, "timeindex"), "00000000000000000000.timeindex");
});

test("append() tracks size, next offset and append times", () => {
  const segment = filled(fileSystem, 10);
  assert.is(segment.sizeBytes, 10 * BATCH_BYTES);
  assert.is(segment.nextOffset, BASE + 40);
  assert.is(segment.firstAppendTime, 5000);
  assert.is(segment.lastAppendTime, 5030);
  segment.close();
});

test("locate() finds the batch holding an offset without scanning the log", () => {
  const counting = new FaultyFileSystem(fileSystem);
  const segment = filled(counting, 2000);
  const interval = 1024;
  for (const offset of [BASE, BASE + 5, BASE + 4000, BASE + 7999]) {
    counting.bytesRead = 0;
    const { start, end } = segment.locate(offset, 1, Infinity, true);
    const batch = Math.floor((offset - BASE) / 4);
    assert.equal([start, end], [
      batch * BATCH_BYTES,
      (batch + 1) * BATCH_BYTES,
    ]);
    assert.ok(
      counting.bytesRead <= 4096 + interval + BATCH_BYTES,
      `read ${counting.bytesRead} bytes for offset ${offset}`,
    );
  }
  segment.close();
});

test("locate() stops before upTo and at maxBytes, at least one batch", () => {
  const segment = filled(fileSystem, 10);
  assert.equal(segment.locate(BASE + 4, BATCH_BYTES * 3, Infinity, true), {
    start: BATCH_BYTES,
    end: BATCH_BYTES * 4,
  });
  assert.equal(segment.locate(BASE + 4, BATCH_BYTES * 3 - 1, Infinity, false), {
    start: BATCH_BYTES,
    end: BATCH_BYTES * 3,
  });
  assert.equal(segment.locate(BASE + 4, 10, BASE + 12, true), {
    start: BATCH_BYTES,
    end: BATCH_BYTES * 2,
  });
  assert.equal(segment.locate(BASE + 4, 10, BASE + 7, true), {
    start: BATCH_BYTES,
    end: BATCH_BYTES,
  });
  segment.close();
});

test("offsetForTime() reads only a few headers in a large segment", () => {
  const counting = new FaultyFileSystem(fileSystem);
  const segment = filled(counting, 3000);
  for (
    const [time, expected] of [[4000, 0], [5000, 0], [5001, 3], [5455, 138], [
      14990,
      2997,
    ]]
  ) {
    counting.bytesRead = 0;
    assert.is(segment.offsetForTime(time), BASE + 4 * expected, `time ${time}`);
    assert.ok(
      counting.bytesRead <= 20 * 4096,
      `read ${counting.bytesRead} bytes`,
    );
  }
  assert.is(segment.offsetForTime(14991), -1);
  segment.close();
});

test("offsetForTime() stays bounded when many batches share one appendTime", () => {
  const counting = new FaultyFileSystem(fileSystem);
  const segment = Segment.create(
    counting,
    dir,
    BASE,
    { indexIntervalBytes: 1024 },
    silentLogger,
  );
  for (let i = 0; i < 2000; i++) {
    const batch = batchOf(4, "s", 100);
    const time = i < 1990 ? 5000 : 6000;
    stampBatch(batch, 0, BASE + 4 * i, time);
    segment.append(batch, time);
  }
  counting.bytesRead = 0;
  assert.is(segment.offsetForTime(5500), BASE + 4 * 1990);
  assert.ok(
    counting.bytesRead <= 20 * 4096,
    `read ${counting.bytesRead} bytes`,
  );
  segment.close();
});

test("open() after a clean close trusts complete indexes", () => {
  filled(fileSystem, 50).close();
  const { segment, recovery } = Segment.open(
    fileSystem,
    dir,
    BASE,
    { indexIntervalBytes: 1024 },
    false,
    silentLogger,
  );
  assert.equal(recovery, {
    verified: false,
    truncatedBytes: 0,
    corruptPosition: -1,
    reason: "",
    indexesRebuilt: 0,
  });
  assert.is(segment.nextOffset, BASE + 200);
  assert.is(segment.lastAppendTime, 5160);
  assert.is(segment.firstAppendTime, 5000);
  segment.close();
});

test("open() rebuilds an index that stops early", () => {
  filled(fileSystem, 50).close();
  const path = `${dir}/${segmentFileName(BASE, "index")}`;
  const bytes = fileSystem.readFile(path).slice(0, 16);
  fileSystem.remove(path);
  fileSystem.writeFileAtomic(path, bytes);
  const { segment, recovery } = Segment.open(
    fileSystem,
    dir,
    BASE,
    { indexIntervalBytes: 1024 },
    false,
    silentLogger,
  );
  assert.is(recovery.verified, true);
  assert.is(recovery.indexesRebuilt, 1);
  assert.ok(fileSystem.sizeOf(path) > 16);
  segment.close();
});

test("append() after open() indexes exactly as before the close", () => {
  const whole = filled(fileSystem, 30);
  const expected = fileSystem.readFile(
    `${dir}/${segmentFileName(BASE, "index")}`,
  ).slice();
  whole.close();
  fileSystem.remove(dir);
  fileSystem.mkdirs(dir);
  filled(fileSystem, 13).close();
  const { segment } = Segment.open(
    fileSystem,
    dir,
    BASE,
    { indexIntervalBytes: 1024 },
    false,
    silentLogger,
  );
  for (let i = 13; i < 30; i++) {
    const batch = batchOf(4, "s", 100);
    const time = 5000 + 10 * Math.floor(i / 3);
    stampBatch(batch, 0, BASE + 4 * i, time);
    segment.append(batch, time);
  }
  segment.close();
  const actual = fileSystem.readFile(
    `${dir}/${segmentFileName(BASE, "index")}`,
  );
  assert.equal([...actual], [...expected]);
});

test("locate() and offsetForTime() survive an index entry off a batch boundary", () => {
  filled(fileSystem, 50).close();
  const path = `${dir}/${segmentFileName(BASE, "index")}`;
  const bytes = fileSystem.readFile(path).slice();
  const view = new DataView(bytes.buffer);
  // Entry 2 still sorted, but pointing 8 bytes into a batch.
  view.setUint32(2 * 8 + 4, view.getUint32(2 * 8 + 4, true) + 8, true);
  const relative = view.getUint32(2 * 8, true);
  fileSystem.remove(path);
  fileSystem.writeFileAtomic(path, bytes);
  const warnings: string[] = [];
  const logger = createLogger((level, _scope, message) => {
    if (level === "warn") warnings.push(message);
  });
  const { segment } = Segment.open(
    fileSystem,
    dir,
    BASE,
    { indexIntervalBytes: 1024 },
    false,
    logger,
  );
  const batch = relative / 4 + 1;
  assert.equal(segment.locate(BASE + relative + 5, 1, Infinity, true), {
    start: batch * BATCH_BYTES,
    end: (batch + 1) * BATCH_BYTES,
  });
  assert.is(segment.offsetForTime(5001), BASE + 12);
  assert.equal(warnings, ["index entry does not match the log; scanning"]);
  segment.close();
});

test("open() trusts an index with an entry for every batch", () => {
  filled(fileSystem, 5, 0).close();
  const { segment, recovery } = Segment.open(
    fileSystem,
    dir,
    BASE,
    { indexIntervalBytes: 0 },
    false,
    silentLogger,
  );
  assert.is(recovery.verified, false);
  assert.is(fileSystem.sizeOf(`${dir}/${segmentFileName(BASE, "index")}`), 40);
  assert.is(segment.offsetForTime(5010), BASE + 12);
  segment.close();
});

test.run();
