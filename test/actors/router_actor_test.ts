import { suite } from "uvu";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import * as assert from "uvu/assert";
import { type RouterActor, startRouter } from "../../actors/router_actor.ts";
import { DakgharError } from "../../src/errors.ts";
import { decodeBatches, encodeBatch } from "../../src/log/record_batch.ts";
import { silentLogger } from "../../src/logger.ts";
import type { WorkerHandle } from "../../src/runtime/types.ts";
import { runtime as testRuntime } from "../../src/runtime/mod.ts";
import { makeTempDir, removeTempDir } from "../router/_temp_dir.ts";

// Real partition workers, started through the router, on the runtime that
// runs the suite.
const test = suite(`router_actor (${testRuntime.name})`);
const text = (value: string) => new TextEncoder().encode(value);
const untext = (bytes: Uint8Array | null) =>
  bytes === null ? null : new TextDecoder().decode(bytes);

let dir = "";
let router: RouterActor | null = null;
let workers: WorkerHandle[] = [];

const runtime = {
  fs: testRuntime.fs,
  startWorker(actorName: string, workerName: string): WorkerHandle {
    const worker = testRuntime.startWorker(actorName, workerName);
    workers.push(worker);
    return worker;
  },
};

async function start(autoCreateTopics = false): Promise<RouterActor> {
  router = await startRouter({
    dataDir: dir,
    runtime,
    logger: silentLogger,
    autoCreateTopics,
  });
  return router;
}

async function readValues(
  broker: RouterActor,
  topic: string,
  partition: number,
  offset = 0,
): Promise<string[]> {
  const result = await broker.read(topic, partition, offset, {
    maxBytes: 1 << 20,
    maxWaitMs: 0,
  });
  return decodeBatches(result.bytes).map((r) =>
    `${r.offset}:${untext(r.value)}`
  );
}

async function codeOf(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
  } catch (error) {
    return error instanceof DakgharError ? error.code : String(error);
  }
  return undefined;
}

test.before.each(() => {
  dir = makeTempDir("router");
  workers = [];
});
test.after.each(async () => {
  await router?.close();
  router = null;
  removeTempDir(dir);
});

test("publishRecords() lands keys on stable partitions and read() returns them", async () => {
  const broker = await start();
  await broker.createTopic("orders", { partitions: 2 });
  const records = ["a", "b", "c", "a", "b"].map((key, i) => ({
    key: text(key),
    value: text(`v${i}`),
  }));
  const positions = await broker.publishRecords("orders", records);
  assert.is(positions.length, 5);
  assert.is(positions[0].partition, positions[3].partition);
  assert.is(positions[1].partition, positions[4].partition);

  const all: string[] = [];
  for (const partition of [0, 1]) {
    const values = await readValues(broker, "orders", partition);
    all.push(...values.map((v) => `${partition}/${v}`));
  }
  const expected = positions.map((p, i) => `${p.partition}/${p.offset}:v${i}`);
  assert.equal(all.sort(), expected.sort());
});

test("publish() appends a framed batch and describeTopic() reports it", async () => {
  const broker = await start();
  await broker.createTopic("audit");
  const batch = encodeBatch([
    { key: null, value: text("x"), headers: [], timestamp: 1 },
    { key: null, value: text("y"), headers: [["h", text("1")]], timestamp: 2 },
  ]);
  const first = await broker.publish("audit", batch);
  const second = await broker.publish("audit", batch, { partition: 0 });
  assert.equal([first.partition, first.baseOffset, first.lastOffset], [
    0,
    0,
    1,
  ]);
  assert.equal([second.baseOffset, second.lastOffset], [2, 3]);
  assert.equal(await readValues(broker, "audit", 0, 1), [
    "0:x",
    "1:y",
    "2:x",
    "3:y",
  ]);
  const described = await broker.describeTopic("audit");
  assert.is(described.partitions[0].logEndOffset, 4);
  assert.is(described.partitions[0].highWatermark, 4);
});

test("publish() rejects unknown topics, partitions and malformed batches", async () => {
  const broker = await start();
  await broker.createTopic("t");
  const batch = encodeBatch([{
    key: null,
    value: text("x"),
    headers: [],
    timestamp: 1,
  }]);
  assert.is(await codeOf(broker.publish("nope", batch)), "unknown_topic");
  assert.is(
    await codeOf(broker.publish("t", batch, { partition: 1 })),
    "unknown_partition",
  );
  const garbled = batch.slice();
  garbled[garbled.length - 1] ^= 0xff;
  assert.is(await codeOf(broker.publish("t", garbled)), "malformed_batch");
  assert.is((await broker.publish("t", batch)).baseOffset, 0);
});

test("publish() creates the topic first when autoCreateTopics is on", async () => {
  const broker = await start(true);
  const positions = await broker.publishRecords("fresh", [{
    value: text("x"),
  }]);
  assert.equal(positions, [{ partition: 0, offset: 0 }]);
  assert.equal(broker.listTopics().map((t) => t.name), ["fresh"]);
});

test("read() at the high watermark waits and wakes on publish", async () => {
  const broker = await start();
  await broker.createTopic("t");
  const waiting = broker.read("t", 0, 0, {
    maxBytes: 1 << 20,
    maxWaitMs: 30_000,
  });
  await broker.publishRecords("t", [{ value: text("late") }]);
  const result = await waiting;
  assert.equal(decodeBatches(result.bytes).map((r) => untext(r.value)), [
    "late",
  ]);
  assert.is(result.highWatermark, 1);
});

test("read() ends with no bytes when its signal aborts", async () => {
  const broker = await start();
  await broker.createTopic("t");
  const controller = new AbortController();
  const waiting = broker.read("t", 0, 0, {
    maxBytes: 1024,
    maxWaitMs: 30_000,
    signal: controller.signal,
  });
  controller.abort();
  const result = await waiting;
  assert.is(result.bytes.length, 0);
  assert.is(result.highWatermark, 0);
});

test("publishRecords() on an interval topic is readable at once", async () => {
  const broker = await start();
  await broker.createTopic("fast", { flush: "interval", flushIntervalMs: 50 });
  await broker.publishRecords("fast", [{ value: text("a") }, {
    value: text("b"),
  }]);
  assert.equal(await readValues(broker, "fast", 0), ["0:a", "1:b"]);
});

test("offsetForTime() finds the first offset appended at or after a time", async () => {
  const broker = await start();
  await broker.createTopic("t");
  const first = await broker.publishRecords("t", [{ value: text("a") }]);
  const { appendTime } = await broker.publish(
    "t",
    encodeBatch([{ key: null, value: text("b"), headers: [], timestamp: 1 }]),
  );
  assert.is(first[0].offset, 0);
  assert.is(await broker.offsetForTime("t", 0, 0), 0);
  assert.is(await broker.offsetForTime("t", 0, appendTime + 1), 2);
});

test("read() past the log end fails with offset_out_of_range", async () => {
  const broker = await start();
  await broker.createTopic("t");
  assert.is(
    await codeOf(broker.read("t", 0, 5, { maxBytes: 1024, maxWaitMs: 0 })),
    "offset_out_of_range",
  );
});

test("startRouter() after close() recovers topics, records and commits", async () => {
  let broker = await start();
  await broker.createTopic("t", { partitions: 2 });
  await broker.publishRecords("t", [
    { value: text("p0"), partition: 0 },
    { value: text("p1"), partition: 1 },
  ]);
  let generation = 0;
  await broker.joinGroup("g", "t", {
    id: "m",
    onAssignment: (a) => {
      generation = a.generation;
    },
    onRevocation: () => {},
  }, "earliest");
  await broker.commit("g", "t", 1, 1, "m", generation);
  await broker.close();

  broker = await start();
  assert.equal(broker.listTopics().map((t) => [t.name, t.config.partitions]), [
    ["t", 2],
  ]);
  assert.equal(await readValues(broker, "t", 0), ["0:p0"]);
  assert.equal(await readValues(broker, "t", 1), ["0:p1"]);
  const group = await broker.describeGroup("g");
  assert.equal(group.partitions.map((p) => [p.committedOffset, p.lag]), [
    [null, 1],
    [1, 0],
  ]);
});

test("a partition worker that dies is restarted and keeps its data", async () => {
  const broker = await start();
  await broker.createTopic("t");
  await broker.publishRecords("t", [{ value: text("before") }]);
  const first = broker.partitionClient("t", 0).worker!;
  await first.terminate();

  await broker.publishRecords("t", [{ value: text("after") }]);
  assert.ok(broker.partitionClient("t", 0).worker !== first);
  assert.equal(await readValues(broker, "t", 0), ["0:before", "1:after"]);
});

test("read() waiting on a worker that dies fails with partition_unavailable", async () => {
  const broker = await start();
  await broker.createTopic("t");
  const waiting = broker.read("t", 0, 0, { maxBytes: 1024, maxWaitMs: 30_000 });
  // A stats round trip guarantees the read reached the actor first.
  await broker.describeTopic("t");
  await broker.partitionClient("t", 0).worker!.terminate();
  assert.is(await codeOf(waiting), "partition_unavailable");
  assert.equal(await readValues(broker, "t", 0), []);
});

test("deleteTopic() stops the partitions and removes the files", async () => {
  const broker = await start();
  await broker.createTopic("t", { partitions: 2 });
  await broker.publishRecords("t", [{ value: text("x") }]);
  await broker.deleteTopic("t");
  assert.equal(broker.listTopics(), []);
  assert.not.ok(testRuntime.fs.exists(`${dir}/topics/t`));
  assert.is(await codeOf(broker.describeTopic("t")), "unknown_topic");
  await broker.createTopic("t");
  assert.equal(await readValues(broker, "t", 0), []);
});

test("close() rejects later calls with shutting_down", async () => {
  const broker = await start();
  await broker.createTopic("t");
  await broker.close();
  assert.is(
    await codeOf(broker.publishRecords("t", [{ value: null }])),
    "shutting_down",
  );
});

test("read() in offsets lost at the log end waits for the next append", async () => {
  let broker = await start();
  await broker.createTopic("t");
  for (const value of ["a", "b", "c"]) {
    await broker.publishRecords("t", [{ value: text(value) }]);
  }
  await broker.close();
  broker = await start(); // records the recovery point at offset 3
  await broker.close();

  // A crash that tears the last batch: recovery cuts it, and the log end
  // stays at 3 so that offset 2 is never given out again.
  const partitionDir = `${dir}/topics/t/0`;
  rmSync(`${partitionDir}/clean-shutdown`);
  const segment = `${partitionDir}/${"0".repeat(20)}.log`;
  const bytes = readFileSync(segment);
  bytes[bytes.length - 1] ^= 0xff;
  writeFileSync(segment, bytes);

  broker = await start();
  const [stats] = (await broker.describeTopic("t")).partitions;
  assert.is(stats.logEndOffset, 3);
  assert.is(stats.highWatermark, 3);
  assert.equal(await readValues(broker, "t", 0, 2), []);

  const waiting = broker.read("t", 0, 2, {
    maxBytes: 1 << 20,
    maxWaitMs: 30_000,
  });
  await broker.publishRecords("t", [{ value: text("d") }]);
  const result = await waiting;
  assert.equal(
    decodeBatches(result.bytes).map((r) => `${r.offset}:${untext(r.value)}`),
    ["3:d"],
  );
});

test("createTopic() refuses partitions past maxPartitions", async () => {
  router = await startRouter({ dataDir: dir, runtime, maxPartitions: 3 });
  await router.createTopic("a", { partitions: 2 });
  assert.is(
    await codeOf(router.createTopic("b", { partitions: 2 })),
    "invalid_config",
  );
  assert.equal(router.listTopics().map((t) => t.name), ["a"]);
  await router.createTopic("c", { partitions: 1 });
});

test.run();
