import { suite } from "uvu";
import * as assert from "uvu/assert";
import {
  cancelEntry,
  DelayJournal,
  firedEntry,
  intentEntry,
  type JournalEntry,
  readScheduleEntry,
  scheduleEntry,
} from "../../src/delay/delay_journal.ts";
import { createLogger } from "../../src/logger.ts";
import { crc32c } from "../../src/log/_crc32c.ts";
import { fileSystem, temporaryDir } from "../log/_helpers.ts";

const test = suite("delay_journal");
const log = createLogger(() => {}, "error");
let dir = "";

test.before.each(() => {
  dir = `${temporaryDir()}/delayed`;
});
test.after.each(() => {
  fileSystem.remove(dir.slice(0, -"/delayed".length));
});

function replayed(journal: DelayJournal): JournalEntry[] {
  const entries: JournalEntry[] = [];
  journal.replay((entry) => entries.push(entry));
  return entries;
}

test("replay() returns every entry as appended", () => {
  const journal = DelayJournal.open(fileSystem, dir, log);
  const batch = new Uint8Array([1, 2, 3, 4, 5]);
  const schedule = scheduleEntry("0-abc", 1234.5, batch);
  const position = journal.append(schedule);
  journal.append(cancelEntry("0-abc"));
  journal.append(intentEntry(7, 2 ** 40, ["0-x", "0-yy"]));
  journal.append(firedEntry(7, []));
  journal.append(firedEntry(8, ["0-x"]));
  journal.syncNow();
  journal.close();

  const reopened = DelayJournal.open(fileSystem, dir, log);
  assert.equal(replayed(reopened), [
    {
      type: 1,
      id: "0-abc",
      due: 1234.5,
      position: 0,
      length: schedule.length,
    },
    { type: 2, id: "0-abc" },
    { type: 3, seq: 7, logEndOffset: 2 ** 40, ids: ["0-x", "0-yy"] },
    { type: 4, seq: 7, ids: [] },
    { type: 4, seq: 8, ids: ["0-x"] },
  ]);
  const read = readScheduleEntry(reopened.read(position, schedule.length));
  assert.is(read.id, "0-abc");
  assert.is(read.due, 1234.5);
  assert.equal([...read.batch], [...batch]);
  reopened.close();
});

test("replay() stops at a garbled entry and cuts the file there", () => {
  const journal = DelayJournal.open(fileSystem, dir, log);
  const first = cancelEntry("1-a");
  journal.append(first);
  const second = cancelEntry("1-b");
  second[second.length - 1] ^= 0xff;
  journal.append(second);
  journal.append(cancelEntry("1-c"));
  assert.equal(replayed(journal), [{ type: 2, id: "1-a" }]);
  assert.is(journal.size, first.length);
  journal.close();
});

test("replay() skips an intact entry of unknown type", () => {
  const journal = DelayJournal.open(fileSystem, dir, log);
  const unknown = cancelEntry("1-x");
  unknown[8] = 99;
  // Re-checksum so the entry is intact, just not understood.
  new DataView(unknown.buffer).setUint32(
    4,
    crc32c(unknown, 8, unknown.length),
    true,
  );
  journal.append(unknown);
  journal.append(cancelEntry("1-z"));
  const size = journal.size;
  assert.equal(replayed(journal), [{ type: 2, id: "1-z" }]);
  assert.is(journal.size, size);
  journal.close();
});

test("readScheduleEntry() refuses a damaged entry", () => {
  const entry = scheduleEntry("2-a", 1, new Uint8Array([9]));
  entry[entry.length - 1] = 8;
  assert.throws(() => readScheduleEntry(entry), RangeError);
  assert.throws(() => readScheduleEntry(cancelEntry("2-a")), RangeError);
});

test("compact() keeps chosen schedule entries and survives leftovers", () => {
  const journal = DelayJournal.open(fileSystem, dir, log);
  const positions = new Map<string, number>();
  for (let i = 0; i < 50; i++) {
    const id = `0-${i}`;
    positions.set(
      id,
      journal.append(scheduleEntry(id, i, new Uint8Array(100))),
    );
    if (i % 2 === 0) journal.append(cancelEntry(id));
  }
  journal.append(intentEntry(1, 0, ["0-1"]));
  const moved = new Map<string, number>();
  journal.compact(
    (id, position) =>
      Number(id.slice(2)) % 2 === 1 && positions.get(id) === position,
    (id, position) => moved.set(id, position),
  );
  assert.is(moved.size, 25);
  for (const [id, position] of moved) {
    const entry = readScheduleEntry(
      journal.read(position, scheduleEntry(id, 0, new Uint8Array(100)).length),
    );
    assert.is(entry.id, id);
  }
  assert.equal(fileSystem.list(dir).map((e) => e.name), ["journal-2.log"]);
  journal.close();

  // A crash mid-compaction leaves a .tmp; one after the rename, two logs.
  fileSystem.writeFileAtomic(`${dir}/journal-3.tmp`, new Uint8Array(7));
  fileSystem.writeFileAtomic(`${dir}/journal-1.log`, cancelEntry("0-old"));
  const reopened = DelayJournal.open(fileSystem, dir, log);
  const entries = replayed(reopened);
  assert.is(entries.length, 25);
  assert.ok(entries.every((e) => e.type === 1));
  assert.equal(fileSystem.list(dir).map((e) => e.name), ["journal-2.log"]);
  reopened.close();
});

test.run();
