import { suite } from "uvu";
import * as assert from "uvu/assert";
import {
  type DelayHost,
  PartitionDelays,
  type PartitionDelaysOptions,
} from "../../actors/partition_delays.ts";
import { DELAY_ID_HEADER } from "../../src/broker.ts";
import {
  batchLength,
  type BatchRecord,
  batchRecordCount,
  decodeBatches,
  type DecodedRecord,
  encodeRecords,
  stampBatch,
  validateBatches,
} from "../../src/log/record_batch.ts";
import { createLogger } from "../../src/logger.ts";
import { FaultyFileSystem, fileSystem } from "../log/_helpers.ts";
import {
  OffsetOutOfRangeError,
  RecordTooLargeError,
} from "../../src/errors.ts";
import type { FileSystem } from "../../src/runtime/types.ts";
import { makeTempDir, removeTempDir } from "../router/_temp_dir.ts";

const test = suite("partition_delays");
const text = (s: string) => new TextEncoder().encode(s);
const str = (b: Uint8Array | null) =>
  b === null ? null : new TextDecoder().decode(b);
const warnings: string[] = [];
const log = createLogger((level, _scope, message) => {
  if (level !== "debug" && level !== "trace") warnings.push(message);
}, "info");

/** A partition log in memory; `mode` makes appends fail or hang. */
class MemoryLog implements DelayHost {
  batches: Uint8Array[] = [];
  end = 0;
  /** Broker time each record was appended at, by offset. */
  appendedAt: number[] = [];
  mode:
    | "ok"
    | "throwBefore"
    | "throwAfter"
    | "hangBefore"
    | "hangAfter" = "ok";
  appends = 0;

  append(
    bytes: Uint8Array,
  ): Promise<{ baseOffset: number; lastOffset: number }> {
    this.appends++;
    validateBatches(bytes, 1 << 20);
    const mode = this.mode;
    if (mode === "throwBefore") return Promise.reject(new Error("log down"));
    if (mode === "hangBefore") return new Promise(() => {});
    const baseOffset = this.end;
    for (let p = 0; p < bytes.length;) {
      const length = batchLength(bytes, p);
      const batch = bytes.slice(p, p + length);
      stampBatch(batch, 0, this.end, Date.now());
      this.batches.push(batch);
      const count = batchRecordCount(batch);
      for (let i = 0; i < count; i++) this.appendedAt.push(Date.now());
      this.end += count;
      p += length;
    }
    if (mode === "throwAfter") return Promise.reject(new Error("ack lost"));
    if (mode === "hangAfter") return new Promise(() => {});
    return Promise.resolve({ baseOffset, lastOffset: this.end - 1 });
  }

  read(offset: number, maxBytes: number): Uint8Array {
    const picked: Uint8Array[] = [];
    let total = 0;
    for (const batch of this.batches) {
      const last = decodeBatches(batch).at(-1)!.offset;
      if (last < offset) continue;
      if (picked.length > 0 && total + batch.length > maxBytes) break;
      picked.push(batch);
      total += batch.length;
    }
    const out = new Uint8Array(total);
    let p = 0;
    for (const batch of picked) {
      out.set(batch, p);
      p += batch.length;
    }
    return out;
  }

  logEndOffset(): number {
    return this.end;
  }

  records(): DecodedRecord[] {
    return this.batches.flatMap((batch) => decodeBatches(batch));
  }

  delayIds(): string[] {
    return this.records().map((r) =>
      str(r.headers.find(([name]) => name === DELAY_ID_HEADER)?.[1] ?? null)
    ).filter((id): id is string => id !== null);
  }
}

function records(labels: string[], timestamp = 1_700_000_000_000) {
  return encodeRecords(labels.map((label, i): BatchRecord => ({
    key: text(`key-${label}`),
    value: text(label),
    headers: [["label", text(label)]],
    timestamp: timestamp + i,
  })));
}

let dir = "";
const opened: PartitionDelays[] = [];

function open(
  host: DelayHost,
  options: Partial<PartitionDelaysOptions> = {},
  fs: FileSystem = fileSystem,
): PartitionDelays {
  const delays = PartitionDelays.open(fs, dir, host, log, {
    partition: 3,
    flush: "sync",
    retryMs: 10,
    ...options,
  });
  opened.push(delays);
  return delays;
}

/** Waits until `done()` holds, failing after a generous bound. */
async function until(done: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 1000 && !done(); i++) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  assert.ok(done(), `timed out waiting for ${what}`);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test.before.each(() => {
  dir = makeTempDir("delays");
  warnings.length = 0;
});

test.after.each(async () => {
  // Close what a test left open; crashed instances hang, so do not wait on them.
  for (const delays of opened.splice(0)) {
    void delays.close().catch(() => {});
  }
  await sleep(0);
  removeTempDir(dir);
});

test("schedule() answers ids and fires records at their due time, in due order", async () => {
  const host = new MemoryLog();
  const delays = open(host);
  delays.start();
  const now = Date.now();
  const due = [now + 60, now + 20, now + 40, now + 20];
  const { ids, due: dueBack } = await delays.schedule(
    records(["a", "b", "c", "d"]),
    due,
  );
  assert.equal(dueBack, due);
  assert.is(ids.length, 4);
  assert.is(new Set(ids).size, 4);
  for (const id of ids) assert.match(id, /^3-[A-Za-z0-9_-]{21}$/);
  assert.is(delays.pending, 4);

  await until(() => host.end === 4, "four records");
  const fired = host.records();
  assert.equal(fired.map((r) => str(r.value)), ["b", "d", "c", "a"]);
  assert.equal(host.delayIds(), [ids[1], ids[3], ids[2], ids[0]]);
  const byLabel = new Map(["a", "b", "c", "d"].map((l, i) => [l, i]));
  fired.forEach((record, offset) => {
    const i = byLabel.get(str(record.value)!)!;
    assert.ok(host.appendedAt[offset] >= due[i], "never early");
    assert.is(str(record.key), `key-${str(record.value)}`);
    assert.equal(record.headers.map(([n]) => n), ["label", DELAY_ID_HEADER]);
    assert.is(record.timestamp, 1_700_000_000_000 + i);
  });
  assert.is(delays.pending, 0);
  await delays.close();
});

test("schedule() replaces a delay id the record already carries", async () => {
  const host = new MemoryLog();
  const delays = open(host);
  const old = encodeRecords([{
    key: null,
    value: text("again"),
    headers: [[DELAY_ID_HEADER, text("3-old")], ["x", null]],
    timestamp: 5,
  }]);
  const { ids } = await delays.schedule(old, [Date.now() - 1]);
  delays.start();
  await until(() => host.end === 1, "the record");
  assert.equal(
    host.records()[0].headers.map(([n, v]) => [n, str(v)]),
    [["x", null], [DELAY_ID_HEADER, ids[0]]],
  );
  await delays.close();
});

test("schedule() refuses due times that do not match the records", async () => {
  const delays = open(new MemoryLog());
  try {
    await delays.schedule(records(["a", "b"]), [1]);
    assert.unreachable();
  } catch (error) {
    assert.instance(error, RangeError);
  }
  try {
    await delays.schedule(records(["a"]), [Date.now(), Date.now()]);
    assert.unreachable();
  } catch (error) {
    assert.instance(error, RangeError);
  }
  await delays.close();
});

test("schedule() shares fsyncs between concurrent schedules and cancels", async () => {
  const fs = new FaultyFileSystem(fileSystem);
  const delays = open(new MemoryLog(), {}, fs);
  fs.holdSyncs = true;
  const far = Date.now() + 1e9;
  const scheduled = Array.from(
    { length: 10 },
    (_, i) => delays.schedule(records([`r${i}`]), [far]),
  );
  await sleep(0);
  assert.is(fs.syncs, 1, "one fsync running");
  fs.holdSyncs = false;
  fs.releaseSyncs();
  const results = await Promise.all(scheduled);
  assert.is(fs.syncs, 2, "the other nine share the next one");

  const cancels = results.map(({ ids }) => delays.cancel(ids[0]));
  assert.equal(await Promise.all(cancels), results.map(() => true));
  assert.ok(fs.syncs <= 4);
  assert.is(delays.pending, 0);
  await delays.close();
});

test("schedule() fails with storage_error once the journal cannot be written", async () => {
  const fs = new FaultyFileSystem(fileSystem);
  const delays = open(new MemoryLog(), {}, fs);
  fs.failSyncs = true;
  const codes: string[] = [];
  for (let i = 0; i < 2; i++) {
    try {
      await delays.schedule(records(["a"]), [Date.now() + 1e9]);
    } catch (error) {
      codes.push((error as { code: string }).code);
    }
  }
  assert.equal(codes, ["storage_error", "storage_error"]);
  fs.failSyncs = false;
  await delays.close();
});

test("open() looks from the log start when retention removed an intent's offset", async () => {
  const host = new MemoryLog();
  const append = host.append.bind(host);
  host.append = (bytes) => {
    // A producer's append lands between the intent and the delayed one.
    host.mode = "ok";
    void append(records(["other"]));
    host.mode = "hangAfter";
    return append(bytes);
  };
  const crashed = open(host);
  await crashed.schedule(records(["a"]), [Date.now() - 1]);
  crashed.start();
  await until(() => host.end === 2, "the append");
  opened.splice(opened.indexOf(crashed), 1);

  // Retention removed offset 0, where the intent says to look from.
  const read = host.read.bind(host);
  host.read = (offset, maxBytes) => {
    if (offset < 1) throw new OffsetOutOfRangeError("t", 3, offset, 1, 2);
    return read(offset, maxBytes);
  };
  const delays = open(host);
  assert.is(delays.pending, 0);
  assert.ok(
    warnings.includes("delayed records intent older than the log start"),
  );
  await delays.close();
});

test("schedule() refuses a record too large once its delay id is added", async () => {
  const delays = open(new MemoryLog(), { maxMessageBytes: 120 });
  const small = records(["a"]);
  await delays.schedule(small, [Date.now() + 1e9]);
  const big = records(["b".repeat(60)]);
  try {
    await delays.schedule(big, [Date.now() + 1e9]);
    assert.unreachable();
  } catch (error) {
    assert.instance(error, RecordTooLargeError);
  }
  assert.is(delays.pending, 1);
  await delays.close();
});

test("schedule() fires due records in batches", async () => {
  const host = new MemoryLog();
  const delays = open(host, { fireRecordsMax: 7 });
  const labels = Array.from({ length: 30 }, (_, i) => `r${i}`);
  await delays.schedule(records(labels), labels.map(() => Date.now() - 1));
  delays.start();
  await until(() => host.end === 30, "thirty records");
  assert.is(host.appends, 5);
  assert.equal(host.records().map((r) => str(r.value)), labels);
  await delays.close();
});

test("cancel() removes a pending record, durably", async () => {
  const host = new MemoryLog();
  let delays = open(host);
  const soon = Date.now() + 30;
  const { ids } = await delays.schedule(records(["a", "b", "c"]), [
    soon,
    soon,
    soon + 1e9,
  ]);
  assert.ok(await delays.cancel(ids[0]));
  assert.not.ok(await delays.cancel(ids[0]));
  assert.not.ok(await delays.cancel("3-unknown"));
  assert.is(delays.pending, 2);
  await delays.close();

  delays = open(host);
  assert.is(delays.pending, 2);
  assert.ok(await delays.cancel(ids[2]));
  delays.start();
  await until(() => host.end === 1, "one record");
  assert.equal(host.delayIds(), [ids[1]]);
  assert.not.ok(await delays.cancel(ids[1]), "already appended");
  assert.is(delays.pending, 0);
  await delays.close();
});

test("open() keeps pending records across a restart: none lost, none early, overdue at once", async () => {
  const host = new MemoryLog();
  let delays = open(host);
  const now = Date.now();
  const { ids } = await delays.schedule(records(["past", "soon", "far"]), [
    now - 5_000,
    now + 50,
    now + 3_600_000,
  ]);
  await delays.close();
  assert.is(host.end, 0, "nothing fires before start()");

  delays = open(host);
  assert.is(delays.pending, 3);
  delays.start();
  await until(() => host.end === 2, "the overdue and the soon record");
  assert.equal(host.delayIds(), [ids[0], ids[1]]);
  assert.ok(host.appendedAt[1] >= now + 50);
  assert.is(delays.pending, 1);
  await delays.close();

  delays = open(host);
  assert.is(delays.pending, 1);
  assert.ok(await delays.cancel(ids[2]));
  await delays.close();
  assert.is(host.end, 2);
});

for (
  const [mode, appendedBeforeCrash] of [
    ["hangBefore", false],
    ["hangAfter", true],
  ] as const
) {
  test(`open() appends each record once after a crash while firing (${mode})`, async () => {
    const host = new MemoryLog();
    host.mode = mode;
    const crashed = open(host);
    const { ids } = await crashed.schedule(records(["a", "b"]), [
      Date.now() - 1,
      Date.now() - 1,
    ]);
    crashed.start();
    await until(() => host.appends === 1, "the append");
    assert.is(host.end, appendedBeforeCrash ? 2 : 0);
    // The instance is abandoned as a crash would leave it: no fired entry.
    opened.splice(opened.indexOf(crashed), 1);

    // Something else appended meanwhile, so the intent's offset matters.
    host.mode = "ok";
    await host.append(records(["other"]));

    const delays = open(host);
    assert.is(delays.pending, appendedBeforeCrash ? 0 : 2);
    delays.start();
    await until(() => host.end === 3, "three records");
    assert.equal([...host.delayIds()].sort(), [...ids].sort());
    await sleep(30);
    assert.is(host.end, 3, "each record once");
    await delays.close();
  });
}

test("start() retries a failed append without appending twice", async () => {
  for (const mode of ["throwBefore", "throwAfter"] as const) {
    const host = new MemoryLog();
    host.mode = mode;
    const delays = open(host);
    const { ids } = await delays.schedule(records(["a", "b"]), [
      Date.now() - 1,
      Date.now(),
    ]);
    delays.start();
    await until(() => host.appends >= 1, "the first append");
    host.mode = "ok";
    await until(() => delays.pending === 0, "no record pending");
    assert.equal(host.delayIds(), ids, mode);
    if (mode === "throwBefore") assert.ok(host.appends >= 2, mode);
    else assert.is(host.appends, 1, mode);
    await delays.close();
    fileSystem.remove(`${dir}/delayed`);
  }
  assert.ok(warnings.includes("delayed records append failed"));
});

test("open() cuts a torn journal tail", async () => {
  const host = new MemoryLog();
  let delays = open(host);
  const { ids } = await delays.schedule(records(["a", "b"]), [
    Date.now() + 1e9,
    Date.now() + 1e9,
  ]);
  await delays.close();
  const [name] = fileSystem.list(`${dir}/delayed`).map((e) => e.name);
  const path = `${dir}/delayed/${name}`;
  const size = fileSystem.sizeOf(path);
  const file = fileSystem.open(path, "readWrite");
  file.write(new Uint8Array([40, 0, 0, 0, 1, 2, 3, 4, 1, 9]), size);
  file.close();

  delays = open(host);
  assert.is(delays.pending, 2);
  assert.is(fileSystem.sizeOf(path), size);
  assert.ok(warnings.includes("delay journal cut at a torn or garbled entry"));
  assert.ok(await delays.cancel(ids[1]));
  await delays.close();
});

test("start() compacts a mostly dead journal and fires from the new one", async () => {
  const host = new MemoryLog();
  let delays = open(host, { compactBytesMin: 4096 });
  const fireNow = Array.from({ length: 100 }, (_, i) => `now${i}`);
  const later = ["l0", "l1", "l2", "l3", "l4"];
  await delays.schedule(records(fireNow), fireNow.map(() => Date.now() - 1));
  const far = Date.now() + 1e9;
  const { ids } = await delays.schedule(
    records(later),
    later.map((_, i) => far + i),
  );
  const journalBytes = () =>
    fileSystem.list(`${dir}/delayed`).reduce(
      (n, e) => n + fileSystem.sizeOf(`${dir}/delayed/${e.name}`),
      0,
    );
  const before = journalBytes();
  delays.start();
  await until(() => host.end === 100, "the due records");
  await until(() => journalBytes() < before / 4, "compaction");
  assert.ok(await delays.cancel(ids[1]));
  await delays.close();

  // A clock past their due time fires them at once.
  delays = open(host, { compactBytesMin: 4096, now: () => far + 10 });
  assert.is(delays.pending, 4);
  delays.start();
  await until(() => host.end === 104, "the later records");
  assert.equal(
    host.records().slice(100).map((r) => str(r.value)),
    ["l0", "l2", "l3", "l4"],
  );
  assert.equal(fileSystem.list(`${dir}/delayed`).length, 1);
  await delays.close();
});

test("schedule() keeps 100,000 pending records small and reopens them", async () => {
  const host = new MemoryLog();
  let delays = open(host, { flush: "interval" });
  const far = Date.now() + 3_600_000;
  const heapBefore = process.memoryUsage().heapUsed;
  let first = "";
  for (let round = 0; round < 100; round++) {
    const labels = Array.from({ length: 1000 }, (_, i) => `${round}-${i}`);
    const { ids } = await delays.schedule(
      records(labels),
      labels.map((_, i) => far + i),
    );
    if (round === 0) first = ids[0];
  }
  const perRecord = (process.memoryUsage().heapUsed - heapBefore) / 100_000;
  console.log(
    `  partition_delays: about ${
      Math.round(perRecord)
    } heap bytes per pending record`,
  );
  assert.is(delays.pending, 100_000);
  await delays.close();

  delays = open(host);
  assert.is(delays.pending, 100_000);
  assert.ok(await delays.cancel(first));
  assert.is(delays.pending, 99_999);
  await delays.close();
  assert.is(host.end, 0);
});

test.run();
