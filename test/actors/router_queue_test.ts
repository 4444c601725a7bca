import { suite } from "uvu";
import * as assert from "uvu/assert";
import { type RouterActor, startRouter } from "../../actors/router_actor.ts";
import {
  DEAD_LETTER_HEADERS,
  DELAY_ID_HEADER,
  type MemberHandle,
} from "../../src/broker.ts";
import { DakgharError } from "../../src/errors.ts";
import { decodeBatches } from "../../src/log/record_batch.ts";
import { silentLogger } from "../../src/logger.ts";
import { runtime } from "../../src/runtime/mod.ts";
import { makeTempDir, removeTempDir } from "../router/_temp_dir.ts";
import {
  eventually,
  type Got,
  pause,
  queueMember,
  receiveAll,
  settlements,
  text,
  untext,
} from "./_queue_helpers.ts";

// Queue groups, dead letters, redrive and delays through the real router
// and partition workers, on the runtime that runs the suite.
const test = suite(`router_queue (${runtime.name})`);

let dir = "";
let router: RouterActor | null = null;

async function start(): Promise<RouterActor> {
  router = await startRouter({ dataDir: dir, runtime, logger: silentLogger });
  return router;
}

async function restart(): Promise<RouterActor> {
  await router?.close();
  router = null;
  return await start();
}

async function codeOf(run: () => unknown): Promise<string | undefined> {
  try {
    await run();
  } catch (error) {
    return error instanceof DakgharError ? error.code : String(error);
  }
  return undefined;
}

async function publishValues(
  broker: RouterActor,
  topic: string,
  values: string[],
  key?: (i: number) => string,
): Promise<void> {
  await broker.publishRecords(
    topic,
    values.map((value, i) => ({
      key: key === undefined ? null : text(key(i)),
      value: text(value),
    })),
  );
}

test.before.each(() => {
  dir = makeTempDir("router-queue");
});
test.after.each(async () => {
  await router?.close();
  router = null;
  removeTempDir(dir);
});

test("createGroup() validates, persists and refuses a changed identity", async () => {
  const broker = await start();
  await broker.createTopic("orders", { partitions: 2 });
  assert.is(
    await codeOf(() =>
      broker.createGroup("g", { topic: "missing", mode: "queue" })
    ),
    "unknown_topic",
  );
  assert.is(
    await codeOf(() =>
      broker.createGroup("g", {
        topic: "orders",
        mode: "queue",
        queue: { ackTimeoutMs: -1 },
      })
    ),
    "bad_request",
  );
  const created = await broker.createGroup("g", {
    topic: "orders",
    mode: "queue",
    filter: { tags: ["eu"] },
  });
  assert.is(created.queue!.deadLetterTopic, "orders.g.dlq");
  const updated = await broker.createGroup("g", {
    topic: "orders",
    mode: "queue",
    filter: { tags: ["eu"] },
    queue: { maxDeliveries: 3 },
  });
  assert.is(updated.queue!.maxDeliveries, 3);
  assert.is(
    await codeOf(() =>
      broker.createGroup("g", { topic: "orders", mode: "key_shared" })
    ),
    "group_exists",
  );

  const handle: MemberHandle = {
    id: "s",
    onAssignment() {},
    onRevocation() {},
  };
  assert.is(
    await codeOf(() => broker.joinGroup("g", "orders", handle, "earliest")),
    "bad_request",
  );
  await broker.joinGroup("s", "orders", handle, "earliest");
  assert.is(
    await codeOf(() => broker.joinQueueGroup("s", queueMember("m"))),
    "bad_request",
  );
  assert.is(
    await codeOf(() => broker.joinQueueGroup("nope", queueMember("m"))),
    "unknown_group",
  );
  broker.leaveGroup("s", "s");

  const again = await restart();
  assert.equal(again.groupSettings("g"), updated);
  const listed = again.listGroups().find((g) => g.name === "g");
  assert.is(listed?.mode, "queue");
  const described = await again.describeGroup("g");
  assert.equal(described.settings, updated);
  assert.is(described.queue!.length, 2);
  await again.deleteGroup("g");
  assert.is(again.groupSettings("g"), undefined);
  assert.is(await codeOf(() => again.deleteGroup("g")), "unknown_group");
});

test("settle() in a queue group and commit() in a stream group on one log leave each other alone", async () => {
  const broker = await start();
  await broker.createTopic("log");
  await broker.createGroup("q", { topic: "log", mode: "queue" });
  await publishValues(broker, "log", ["a", "b", "c", "d"]);

  let generation = 0;
  await broker.joinGroup("s", "log", {
    id: "reader",
    onAssignment: (a) => (generation = a.generation),
    onRevocation() {},
  }, "earliest");
  await broker.commit("s", "log", 0, 3, "reader", generation);
  const [before] = await broker.describeQueue("q");
  assert.is(before.ackFloor, 0);
  assert.is(before.unsettled, 4);

  const got = await receiveAll(broker, "q");
  assert.equal(got.map((g) => g.value), ["a", "b", "c", "d"]);
  const result = await broker.settle("q", settlements(got, "ack"));
  assert.equal(result, { settled: 4, refused: [] });
  const [after] = await broker.describeQueue("q");
  assert.is(after.ackFloor, 4);
  const stream = await broker.describeGroup("s");
  assert.is(stream.partitions[0].committedOffset, 3);
  broker.leaveGroup("s", "reader");
});

test("joinQueueGroup() hands each record to exactly one member when all ack", async () => {
  const broker = await start();
  await broker.createTopic("jobs", { partitions: 2 });
  await broker.createGroup("workers", { topic: "jobs", mode: "queue" });
  const values = Array.from({ length: 60 }, (_, i) => `v${i}`);
  await publishValues(broker, "jobs", values, (i) => `k${i}`);

  const members = ["a", "b", "c"].map((id) =>
    queueMember(id, (got) => {
      void broker.settle("workers", settlements(got, "ack"));
    })
  );
  for (const m of members) {
    await broker.joinQueueGroup("workers", m, { prefetchRecords: 4 });
  }
  await eventually(
    () => members.reduce((n, m) => n + m.got.length, 0) >= 60 || undefined,
    "every record delivered",
  );
  const all = members.flatMap((m) => m.got.map((g) => g.value!));
  assert.equal(all.sort(), [...values].sort());
  assert.ok(
    members.filter((m) => m.got.length > 0).length >= 2,
    "shared by members",
  );
  await eventually(async () => {
    const queue = await broker.describeQueue("workers");
    return queue.every((q) => q.unsettled === 0) || undefined;
  }, "all settled");
});

test("joinQueueGroup() keeps a member within its prefetch; leaveQueueGroup() returns its records at once", async () => {
  const broker = await start();
  await broker.createTopic("jobs");
  await broker.createGroup("w", { topic: "jobs", mode: "queue" });
  await publishValues(broker, "jobs", ["a", "b", "c", "d", "e"]);

  const slow = queueMember("slow");
  await broker.joinQueueGroup("w", slow, { prefetchRecords: 2 });
  await eventually(() => slow.got.length === 2 || undefined, "prefetch");
  await pause(100);
  assert.is(slow.got.length, 2, "no more than the prefetch");

  broker.leaveQueueGroup("w", "slow");
  const got = await eventually(async () => {
    const got = await receiveAll(broker, "w");
    return got.length === 5 ? got : undefined;
  }, "released records delivered again");
  const attempts = got.map((g) => `${g.value}:${g.attempt}`);
  assert.equal(attempts, ["a:2", "b:2", "c:1", "d:1", "e:1"]);
});

test("receive() redelivers after the ack timeout with the attempt raised", async () => {
  const broker = await start();
  await broker.createTopic("jobs");
  await broker.createGroup("w", {
    topic: "jobs",
    mode: "queue",
    queue: { ackTimeoutMs: 100 },
  });
  await publishValues(broker, "jobs", ["a"]);
  const [first] = await receiveAll(broker, "w");
  assert.is(first.attempt, 1);
  const [second] = await receiveAll(broker, "w", 5000);
  assert.equal([second.value, second.attempt], ["a", 2]);

  // The first receipt is stale now.
  const stale = await broker.settle("w", settlements([first], "ack"));
  assert.is(stale.settled, 0);
  assert.is(stale.refused[0].code, "stale_receipt");
  const fresh = await broker.settle("w", settlements([second], "ack"));
  assert.is(fresh.settled, 1);
});

test("settle() nack: the fifth failure lands in the dead-letter topic with every provenance header", async () => {
  const broker = await start();
  await broker.createTopic("jobs", { partitions: 2 });
  await broker.createGroup("w", {
    topic: "jobs",
    mode: "queue",
    queue: { backoffInitialMs: 1, backoffMaxMs: 1 },
  });
  await broker.publishRecords("jobs", [{
    key: text("k"),
    value: text("poison"),
    headers: [["type", text("order")]],
    partition: 1,
  }]);
  const failedAt = Date.now();
  for (let attempt = 1; attempt <= 5; attempt++) {
    const got = await eventually(async () => {
      const got = await receiveAll(broker, "w", 1000);
      return got.length > 0 ? got : undefined;
    }, `delivery ${attempt}`);
    assert.equal(got.map((g) => g.attempt), [attempt]);
    await broker.settle(
      "w",
      settlements(got, "nack", { reason: `boom ${attempt}` }),
    );
  }

  const letters = await eventually(async () => {
    if (!broker.listTopics().some((t) => t.name === "jobs.w.dlq")) return;
    const read = await broker.read("jobs.w.dlq", 1, 0, {
      maxBytes: 1 << 20,
      maxWaitMs: 0,
    });
    const records = decodeBatches(read.bytes);
    return records.length > 0 ? records : undefined;
  }, "dead letter appended");
  assert.is(letters.length, 1);
  assert.is(untext(letters[0].value), "poison");
  assert.is(untext(letters[0].key), "k");
  const headers = new Map(
    letters[0].headers.map(([name, value]) => [name, untext(value)]),
  );
  assert.is(headers.get("type"), "order");
  assert.is(headers.get(DEAD_LETTER_HEADERS.topic), "jobs");
  assert.is(headers.get(DEAD_LETTER_HEADERS.partition), "1");
  assert.is(headers.get(DEAD_LETTER_HEADERS.offset), "0");
  assert.is(headers.get(DEAD_LETTER_HEADERS.group), "w");
  assert.is(headers.get(DEAD_LETTER_HEADERS.deliveries), "5");
  assert.is(headers.get(DEAD_LETTER_HEADERS.reason), "max_deliveries");
  assert.is(headers.get(DEAD_LETTER_HEADERS.error), "boom 5");
  const first = Number(headers.get(DEAD_LETTER_HEADERS.firstFailedAt));
  assert.ok(first >= failedAt - 1000 && first <= Date.now(), `${first}`);
  const dlq = await broker.describeTopic("jobs.w.dlq");
  assert.is(dlq.config.partitions, 2);
  assert.is(dlq.config.retentionMs, 14 * 24 * 60 * 60 * 1000);

  await eventually(async () => {
    const [, q] = await broker.describeQueue("w");
    return q.unsettled === 0 && q.deadLettered === 1 ? true : undefined;
  }, "counted as settled");
});

test("settle() reject dead-letters at once; redrive() republishes it to its source", async () => {
  const broker = await start();
  await broker.createTopic("jobs");
  await broker.createGroup("w", { topic: "jobs", mode: "queue" });
  await publishValues(broker, "jobs", ["bad", "good"]);
  const got = await receiveAll(broker, "w");
  await broker.settle("w", [
    ...settlements([got[0]], "reject", { reason: "unparseable" }),
    ...settlements([got[1]], "ack"),
  ]);
  const letter = await eventually(async () => {
    if (!broker.listTopics().some((t) => t.name === "jobs.w.dlq")) return;
    const read = await broker.read("jobs.w.dlq", 0, 0, {
      maxBytes: 1 << 20,
      maxWaitMs: 0,
    });
    return decodeBatches(read.bytes)[0];
  }, "rejected letter");
  const headers = new Map(letter.headers.map(([n, v]) => [n, untext(v)]));
  assert.is(headers.get(DEAD_LETTER_HEADERS.reason), "rejected");
  assert.is(headers.get(DEAD_LETTER_HEADERS.error), "unparseable");

  const result = await broker.redrive("w");
  assert.equal(result, {
    deadLetterTopic: "jobs.w.dlq",
    redriven: 1,
    skipped: 0,
  });
  const again = await eventually(async () => {
    const got = await receiveAll(broker, "w");
    return got.length > 0 ? got : undefined;
  }, "redriven record delivered");
  assert.equal(again.map((g) => [g.value, g.offset, g.attempt]), [[
    "bad",
    2,
    1,
  ]]);
  assert.not.ok(again[0].headers.some(([n]) => n.startsWith("dakghar.dlq.")));
  assert.is((await broker.redrive("w")).redriven, 0, "cursor moved");
  assert.is((await broker.redrive("w", { fromStart: true })).redriven, 1);
});

test("joinQueueGroup() key_shared keeps each key's order across redeliveries with more members than partitions", async () => {
  const broker = await start();
  await broker.createTopic("events", { partitions: 2 });
  await broker.createGroup("k", {
    topic: "events",
    mode: "key_shared",
    queue: { backoffInitialMs: 1, backoffMaxMs: 5 },
  });
  const keys = ["k0", "k1", "k2", "k3"];
  const values = Array.from({ length: 24 }, (_, i) => `${keys[i % 4]}-${i}`);
  await publishValues(broker, "events", values, (i) => keys[i % 4]);

  const acked: Got[] = [];
  const members = Array.from(
    { length: 5 },
    (_, n) =>
      queueMember(`m${n}`, (got) => {
        // Every record fails once, then succeeds.
        const retry = got.filter((g) => g.attempt === 1);
        const done = got.filter((g) => g.attempt > 1);
        acked.push(...done);
        void broker.settle("k", [
          ...settlements(retry, "nack", { delayMs: 0 }),
          ...settlements(done, "ack"),
        ]);
      }),
  );
  for (const m of members) await broker.joinQueueGroup("k", m);
  await eventually(() => acked.length >= 24 || undefined, "all acked");
  for (const key of keys) {
    const order = acked.filter((g) => g.key === key).map((g) => g.value);
    const expected = values.filter((v) => v.startsWith(`${key}-`));
    assert.equal(order, expected, `order of ${key}`);
  }
});

test("publishRecords() with delays, cancelDelayed(), and a restart with unacked and delayed records pending", async () => {
  const broker = await start();
  await broker.createTopic("later", { partitions: 2 });
  await broker.createGroup("w", { topic: "later", mode: "queue" });
  await publishValues(broker, "later", ["now-1", "now-2", "now-3"]);
  const positions = await broker.publishRecords("later", [
    { key: null, value: text("soon"), delayMs: 300, partition: 0 },
    { key: null, value: text("never"), delayMs: 300, partition: 1 },
    { key: null, value: text("plain"), partition: 1 },
  ]);
  assert.is(positions[0].offset, -1);
  assert.type(positions[0].delayId, "string");
  assert.ok(positions[0].dueAt! >= Date.now() - 1000);
  assert.ok(positions[2].offset >= 0);
  assert.ok(await broker.cancelDelayed("later", positions[1].delayId!));
  assert.not.ok(await broker.cancelDelayed("later", positions[1].delayId!));
  assert.not.ok(await broker.cancelDelayed("later", "garbage"));
  assert.is(
    await codeOf(() =>
      broker.publishRecords("later", [{ value: null, delayMs: -5 }])
    ),
    "bad_request",
  );

  // Settle some, hold one unacked, then restart.
  const got = await receiveAll(broker, "w");
  assert.equal(got.map((g) => g.value).sort(), [
    "now-1",
    "now-2",
    "now-3",
    "plain",
  ]);
  const held = got.find((g) => g.value === "now-2")!;
  await broker.settle(
    "w",
    settlements(got.filter((g) => g !== held), "ack"),
  );
  const again = await restart();

  // The unacked record comes back counted on; the delayed one fires (its
  // 300 ms may run out before or after the first receive, so in any order).
  const seen: Got[] = [];
  await eventually(async () => {
    const got = await receiveAll(again, "w", 500);
    seen.push(...got);
    await again.settle("w", settlements(got, "ack"));
    return seen.length >= 2 || undefined;
  }, "the unacked and the delayed record after the restart");
  assert.equal(
    seen.map((g) => [g.value, g.attempt]).sort(),
    [["now-2", 2], ["soon", 1]],
  );
  const fired = seen.find((g) => g.value === "soon")!;
  assert.ok(
    fired.headers.some(([n, v]) =>
      n === DELAY_ID_HEADER && v === positions[0].delayId
    ),
  );
  await pause(400);
  assert.equal(await receiveAll(again, "w"), [], "the cancelled one never");
});

test("createTopic() keeps retentionDropsUnsettled across a restart", async () => {
  const broker = await start();
  await broker.createTopic("loose", { retentionDropsUnsettled: true });
  await broker.createTopic("strict");
  assert.is(
    await codeOf(() =>
      broker.createTopic("bad", {
        retentionDropsUnsettled: "yes" as unknown as boolean,
      })
    ),
    "invalid_config",
  );
  const again = await restart();
  assert.is(
    (await again.describeTopic("loose")).config.retentionDropsUnsettled,
    true,
  );
  assert.is(
    (await again.describeTopic("strict")).config.retentionDropsUnsettled,
    false,
  );
});

test("a partition worker that dies mid-flight gets its cursor again and the member its prefetch back", async () => {
  const broker = await start();
  await broker.createTopic("jobs");
  await broker.createGroup("w", { topic: "jobs", mode: "queue" });
  await publishValues(broker, "jobs", ["a", "b", "c"]);
  const m = queueMember("m");
  await broker.joinQueueGroup("w", m, { prefetchRecords: 3 });
  await eventually(() => m.got.length === 3 || undefined, "prefetch full");

  await broker.partitionClient("jobs", 0).worker!.terminate();
  await eventually(
    () => m.got.length === 6 || undefined,
    "delivered again after the restart",
  );
  assert.equal(m.got.slice(3).map((g) => `${g.value}:${g.attempt}`), [
    "a:2",
    "b:2",
    "c:2",
  ]);
  const result = await broker.settle("w", settlements(m.got.slice(3), "ack"));
  assert.is(result.settled, 3);
});

test("deleteTopic() forgets its queue groups' cursors; the group reads the topic made again", async () => {
  const broker = await start();
  await broker.createTopic("jobs");
  await broker.createGroup("w", { topic: "jobs", mode: "queue" });
  await publishValues(broker, "jobs", ["old"]);
  assert.is((await receiveAll(broker, "w")).length, 1);
  await broker.deleteTopic("jobs");
  assert.is(await codeOf(() => receiveAll(broker, "w")), "unknown_topic");

  await broker.createTopic("jobs");
  await publishValues(broker, "jobs", ["new"]);
  const got = await eventually(async () => {
    const got = await receiveAll(broker, "w");
    return got.length > 0 ? got : undefined;
  }, "the new topic's record");
  assert.equal(got.map((g) => [g.value, g.offset, g.attempt]), [["new", 0, 1]]);
});

test("read() with a filter returns only matching records and where to go on", async () => {
  const broker = await start();
  await broker.createTopic("tagged");
  await broker.publishRecords("tagged", [
    { value: text("a"), headers: [["dakghar.tag", text("eu")]] },
    { value: text("b") },
    { value: text("c"), headers: [["dakghar.tag", text("eu")]] },
    { value: text("d") },
  ]);
  const result = await broker.read("tagged", 0, 0, {
    maxBytes: 1 << 20,
    maxWaitMs: 0,
    filter: { tags: ["eu"] },
  });
  assert.equal(
    decodeBatches(result.bytes).map((r) => untext(r.value)),
    ["a", "c"],
  );
  assert.is(result.nextOffset, 4);
});

test("describeGroup() of a queue group lists its members and per-partition progress", async () => {
  const broker = await start();
  await broker.createTopic("jobs", { partitions: 2 });
  await broker.createGroup("w", { topic: "jobs", mode: "queue" });
  await broker.joinQueueGroup("w", queueMember("b"));
  await broker.joinQueueGroup("w", queueMember("a"));
  const described = await broker.describeGroup("w");
  assert.equal(described.members.map((m) => m.id), ["a", "b"]);
  assert.equal(described.queue!.map((q) => q.partition), [0, 1]);
  assert.is(broker.listGroups().find((g) => g.name === "w")!.members, 2);
  broker.leaveQueueGroup("w", "a");
  assert.is(broker.listGroups().find((g) => g.name === "w")!.members, 1);
});

test.run();
