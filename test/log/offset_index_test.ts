import { suite } from "uvu";
import * as assert from "uvu/assert";
import { OffsetIndex } from "../../src/log/offset_index.ts";
import { TimeIndex } from "../../src/log/time_index.ts";
import { fileSystem as fs, temporaryDir } from "./_helpers.ts";

const test = suite("offset_index");
let dir = "";
test.before.each(() => {
  dir = temporaryDir();
});
test.after.each(() => fs.remove(dir));

test("floorEntry() finds the last entry at or below an offset", () => {
  const index = OffsetIndex.open(fs, `${dir}/a.index`);
  for (let i = 1; i <= 100; i++) index.append(i * 10, i * 4096);
  assert.is(index.floorEntry(5), -1);
  assert.is(index.floorPosition(5), 0);
  assert.is(index.floorEntry(10), 0);
  assert.is(index.floorPosition(19), 4096);
  assert.is(index.floorPosition(20), 8192);
  assert.is(index.floorPosition(100_000), 409600);
  assert.is(index.lastRelativeOffset, 1000);
  index.close();
});

test("open() loads what append() wrote", () => {
  const index = OffsetIndex.open(fs, `${dir}/a.index`);
  index.append(3, 100);
  index.append(9, 300);
  index.close();
  const again = OffsetIndex.open(fs, `${dir}/a.index`);
  assert.is(again.count, 2);
  assert.ok(again.equals([3, 100, 9, 300]));
  assert.ok(again.isSane(301, 10));
  again.close();
});

test("isSane() rejects torn, unsorted and out-of-bounds indexes", () => {
  const index = OffsetIndex.open(fs, `${dir}/a.index`);
  index.append(3, 100);
  index.append(9, 300);
  assert.not.ok(index.isSane(300, 10), "position past the log");
  assert.not.ok(index.isSane(400, 9), "offset past the end");
  index.rewrite([9, 300, 3, 100]);
  assert.not.ok(index.isSane(400, 10), "unsorted");
  index.close();
  const file = fs.open(`${dir}/a.index`, "readWrite");
  file.write(new Uint8Array(3), 16);
  file.close();
  const torn = OffsetIndex.open(fs, `${dir}/a.index`);
  assert.is(torn.count, 2);
  assert.not.ok(torn.isSane(400, 10));
  torn.rewrite([1, 50]);
  assert.ok(torn.isSane(400, 10));
  torn.close();
  assert.is(fs.sizeOf(`${dir}/a.index`), 8);
});

test("TimeIndex.lastEntryBefore() finds the last older entry", () => {
  const index = TimeIndex.open(fs, `${dir}/a.timeindex`);
  index.append(1_700_000_000_000, 5);
  index.append(1_700_000_000_500, 9);
  index.append(1_700_000_001_000, 20);
  assert.is(index.lastEntryBefore(1_700_000_000_000), -1);
  assert.is(index.lastEntryBefore(1_700_000_000_001), 0);
  assert.is(index.lastEntryBefore(1_700_000_000_500), 0);
  assert.is(index.lastEntryBefore(1_800_000_000_000), 2);
  index.close();
  const again = TimeIndex.open(fs, `${dir}/a.timeindex`);
  assert.ok(again.equals([
    1_700_000_000_000,
    5,
    1_700_000_000_500,
    9,
    1_700_000_001_000,
    20,
  ]));
  assert.ok(again.isSane(21));
  assert.not.ok(again.isSane(20));
  assert.is(again.lastTime, 1_700_000_001_000);
  again.rewrite([5, 1, 4, 2]);
  assert.not.ok(again.isSane(21), "times must increase");
  again.close();
});

test.run();
