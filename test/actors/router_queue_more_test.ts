import { suite } from "uvu";
import * as assert from "uvu/assert";
import { type RouterActor, startRouter } from "../../actors/router_actor.ts";
import { DEAD_LETTER_HEADERS } from "../../src/broker.ts";
import { decodeBatches } from "../../src/log/record_batch.ts";
import { silentLogger } from "../../src/logger.ts";
import { runtime } from "../../src/runtime/mod.ts";
import { makeTempDir, removeTempDir } from "../router/_temp_dir.ts";
import {
  eventually,
  type Got,
  queueMember,
  settlements,
  text,
  unpack,
  untext,
} from "./_queue_helpers.ts";

// More queue group behaviour through the real router and partition
// workers: many members over many partitions, key_shared blocking and late
// joiners, filtered queue groups and explicit nack delays.
const test = suite(`router_queue_more (${runtime.name})`);

let dir = "";
let router: RouterActor | null = null;

async function start(): Promise<RouterActor> {
  router = await startRouter({ dataDir: dir, runtime, logger: silentLogger });
  return router;
}

const where = (g: Got) => `${g.partition}:${g.offset}`;

test.before.each(() => {
  dir = makeTempDir("router-queue-more");
});
test.after.each(async () => {
  await router?.close();
  router = null;
  removeTempDir(dir);
});

test("joinQueueGroup() with 20 members over 4 partitions gives every member work and each record to one member", async () => {
  const broker = await start();
  await broker.createTopic("jobs", { partitions: 4 });
  await broker.createGroup("w", { topic: "jobs", mode: "queue" });
  const total = 400;
  await broker.publishRecords(
    "jobs",
    Array.from({ length: total }, (_, i) => ({
      key: null,
      value: text(`v${i}`),
      partition: i % 4,
    })),
  );

  // Members hold what they get until every one of them has had some: the
  // backlog (400) is far above what 20 prefetches of 2 can hold, so a
  // dispatcher serving only some members never lets the rest start.
  let holding = true;
  const held: Got[] = [];
  const settle = (got: Got[]) => {
    if (holding) held.push(...got);
    else void broker.settle("w", settlements(got, "ack"));
  };
  const members = Array.from(
    { length: 20 },
    (_, n) => queueMember(`m${String(n).padStart(2, "0")}`, settle),
  );
  for (const m of members) {
    await broker.joinQueueGroup("w", m, { prefetchRecords: 2 });
  }
  await eventually(
    () => members.every((m) => m.got.length > 0) || undefined,
    "every member got work",
  );
  const inFlight = members.reduce((n, m) => n + m.got.length, 0);
  assert.ok(inFlight <= 40, `within the prefetches: ${inFlight}`);
  holding = false;
  await broker.settle("w", settlements(held.splice(0), "ack"));

  await eventually(
    () => members.reduce((n, m) => n + m.got.length, 0) >= total || undefined,
    "every record delivered",
  );
  await eventually(async () => {
    const queue = await broker.describeQueue("w");
    return queue.every((q) => q.unsettled === 0 && q.ackFloor === total / 4) ||
      undefined;
  }, "all settled");
  const all = members.flatMap((m) => m.got);
  assert.is(all.length, total, "no record delivered twice");
  assert.is(new Set(all.map(where)).size, total);
  assert.ok(all.every((g) => g.attempt === 1));
  assert.equal(
    all.map((g) => g.value!).sort(),
    Array.from({ length: total }, (_, i) => `v${i}`).sort(),
  );
});

test("joinQueueGroup() key_shared: a key failing to its dead letter blocks only its own later records", async () => {
  const broker = await start();
  await broker.createTopic("events");
  await broker.createGroup("k", {
    topic: "events",
    mode: "key_shared",
    queue: { maxDeliveries: 3, backoffInitialMs: 1, backoffMaxMs: 1 },
  });
  // bad-0 comes first, bad-1 amid the others, bad-2 last.
  const order: [string, string][] = [["bad", "bad-0"]];
  for (let i = 0; i < 30; i++) {
    const key = ["a", "b", "c"][i % 3];
    order.push([key, `${key}-${i}`]);
    if (i === 14) order.push(["bad", "bad-1"]);
  }
  order.push(["bad", "bad-2"]);
  await broker.publishRecords(
    "events",
    order.map(([key, value]) => ({ key: text(key), value: text(value) })),
  );
  const others = order.filter(([key]) => key !== "bad").map(([, v]) => v);

  // Every delivery in arrival order, across members.
  const log: Got[] = [];
  const acked: Got[] = [];
  let lastAttempt: Got | undefined;
  let othersAckedBeforeLast: string[] = [];
  let badLaterBeforeLast: Got[] = [];
  const handle = (got: Got[]) => {
    log.push(...got);
    for (const g of got) {
      if (g.value === "bad-0" && g.attempt === 3) {
        // Hold the last attempt until every other key's record is acked:
        // that can only happen if the failing key blocks nothing else.
        lastAttempt = g;
        continue;
      }
      if (g.value === "bad-0") {
        void broker.settle("k", settlements([g], "nack", { reason: "boom" }));
      } else {
        acked.push(g);
        void broker.settle("k", settlements([g], "ack"));
      }
    }
  };
  const members = ["m0", "m1"].map((id) => queueMember(id, handle));
  for (const m of members) await broker.joinQueueGroup("k", m);

  await eventually(
    () =>
      lastAttempt !== undefined &&
        acked.filter((g) => g.key !== "bad").length === others.length ||
      undefined,
    "the others acked while bad-0 is on its last attempt",
  );
  othersAckedBeforeLast = acked.filter((g) => g.key !== "bad").map((g) =>
    g.value!
  );
  badLaterBeforeLast = log.filter((g) =>
    g.value === "bad-1" || g.value === "bad-2"
  );
  assert.equal([...othersAckedBeforeLast].sort(), [...others].sort());
  assert.equal(badLaterBeforeLast, [], "bad-1 and bad-2 wait behind bad-0");
  await broker.settle(
    "k",
    settlements([lastAttempt!], "nack", { reason: "boom 3" }),
  );

  await eventually(
    () => acked.filter((g) => g.key === "bad").length === 2 || undefined,
    "the failing key's later records acked",
  );
  const badLog = log.filter((g) => g.key === "bad").map((g) =>
    `${g.value}:${g.attempt}`
  );
  assert.equal(badLog, [
    "bad-0:1",
    "bad-0:2",
    "bad-0:3",
    "bad-1:1",
    "bad-2:1",
  ]);
  for (const key of ["a", "b", "c"]) {
    assert.equal(
      acked.filter((g) => g.key === key).map((g) => g.value),
      others.filter((v) => v.startsWith(`${key}-`)),
      `order of ${key}`,
    );
  }

  const letter = await eventually(async () => {
    if (!broker.listTopics().some((t) => t.name === "events.k.dlq")) return;
    const read = await broker.read("events.k.dlq", 0, 0, {
      maxBytes: 1 << 20,
      maxWaitMs: 0,
    });
    return decodeBatches(read.bytes)[0];
  }, "dead letter appended");
  assert.is(untext(letter.value), "bad-0");
  const headers = new Map(letter.headers.map(([n, v]) => [n, untext(v)]));
  assert.is(headers.get(DEAD_LETTER_HEADERS.deliveries), "3");
  assert.is(headers.get(DEAD_LETTER_HEADERS.reason), "max_deliveries");
  await eventually(async () => {
    const [q] = await broker.describeQueue("k");
    return q.unsettled === 0 && q.deadLettered === 1 || undefined;
  }, "all settled, one dead-lettered");
});

test("joinQueueGroup() key_shared: a member joining later gets keys the others do not hold", async () => {
  const broker = await start();
  await broker.createTopic("events", { partitions: 2 });
  await broker.createGroup("k", { topic: "events", mode: "key_shared" });
  const keys = Array.from({ length: 12 }, (_, i) => `k${i}`);
  await broker.publishRecords(
    "events",
    Array.from({ length: 48 }, (_, i) => ({
      key: text(keys[i % keys.length]),
      value: text(`${keys[i % keys.length]}-${i}`),
    })),
  );

  // The first two hold what they get and never settle it.
  const a = queueMember("a");
  const b = queueMember("b");
  await broker.joinQueueGroup("k", a, { prefetchRecords: 2 });
  await broker.joinQueueGroup("k", b, { prefetchRecords: 2 });
  await eventually(
    () => a.got.length === 2 && b.got.length === 2 || undefined,
    "a and b full",
  );
  const held = new Set([...a.got, ...b.got].map((g) => g.key));
  assert.is(held.size, 4, "one record per key at once");

  const late = queueMember("late", (got) => {
    void broker.settle("k", settlements(got, "ack"));
  });
  await broker.joinQueueGroup("k", late, { prefetchRecords: 4 });
  await eventually(
    () => late.got.length >= 8 || undefined,
    "the late member gets work",
  );
  assert.ok(
    late.got.every((g) => !held.has(g.key)),
    `late got only keys not held: ${late.got.map((g) => g.key)}`,
  );
  assert.equal(a.got.length + b.got.length, 4, "the holders got no more");
  for (const key of new Set(late.got.map((g) => g.key))) {
    const values = late.got.filter((g) => g.key === key).map((g) => g.offset);
    assert.equal(values, [...values].sort((x, y) => x - y), `order of ${key}`);
  }
});

test("createGroup() with a tag filter: the queue gets only matching records and the floor passes the rest", async () => {
  const broker = await start();
  await broker.createTopic("tagged");
  await broker.createGroup("eu", {
    topic: "tagged",
    mode: "queue",
    filter: { tags: ["eu"] },
  });
  const tagOf = (i: number) => i % 3 === 0 ? "eu" : i % 3 === 1 ? "us" : null;
  // 20 records, the last two not matching.
  const records = Array.from({ length: 20 }, (_, i) => {
    const tag = tagOf(i);
    return {
      key: null,
      value: text(`r${i}`),
      headers: tag === null
        ? []
        : [["dakghar.tag", text(tag)] as [string, Uint8Array]],
    };
  });
  await broker.publishRecords("tagged", records);
  const matching = records.filter((_, i) => tagOf(i) === "eu").map((r) =>
    untext(r.value)
  );

  const m = queueMember("m", (got) => {
    void broker.settle("eu", settlements(got, "ack"));
  });
  await broker.joinQueueGroup("eu", m, { prefetchRecords: 3 });
  await eventually(
    () => m.got.length >= matching.length || undefined,
    "matching records delivered",
  );
  const [queue] = await eventually(async () => {
    const queue = await broker.describeQueue("eu");
    return queue[0].ackFloor === 20 ? queue : undefined;
  }, "the floor past the non-matching tail");
  assert.equal(m.got.map((g) => g.value), matching);
  assert.is(queue.unsettled, 0);
  assert.is(queue.readOffset, 20);
  assert.is(queue.logEndOffset, 20);

  // Non-matching records alone move the floor too.
  await broker.publishRecords("tagged", [
    { key: null, value: text("x"), headers: [["dakghar.tag", text("us")]] },
    { key: null, value: text("y") },
  ]);
  await eventually(async () => {
    const [q] = await broker.describeQueue("eu");
    return q.ackFloor === 22 && q.unsettled === 0 || undefined;
  }, "the floor past records nobody gets");
  assert.is(m.got.length, matching.length);
  const described = await broker.describeGroup("eu");
  assert.is(described.queue![0].ackFloor, 22);
});

test("settle() nack with delayMs is not redelivered before the delay", async () => {
  const broker = await start();
  await broker.createTopic("jobs");
  // A tiny backoff: only the explicit delay can hold the record back.
  await broker.createGroup("w", {
    topic: "jobs",
    mode: "queue",
    queue: { backoffInitialMs: 1, backoffMaxMs: 1 },
  });
  await broker.publishRecords("jobs", [
    { key: null, value: text("later") },
    { key: null, value: text("soon") },
  ]);
  const first = (await broker.receive("w", {
    maxRecords: 10,
    maxBytes: 1 << 20,
    maxWaitMs: 0,
  })).flatMap(unpack);
  assert.equal(first.map((g) => g.value), ["later", "soon"]);

  const delayMs = 300;
  // The broker stamps the nack with its own Date.now(), taken after this:
  // a redelivery before nackedBefore + delayMs would be early.
  const nackedBefore = Date.now();
  await broker.settle("w", [
    ...settlements([first[0]], "nack", { delayMs }),
    ...settlements([first[1]], "nack"),
  ]);
  const [waiting] = await broker.describeQueue("w");
  assert.is(waiting.inFlight, 0);

  const seen: { value: string | null; attempt: number; at: number }[] = [];
  await eventually(async () => {
    const got = (await broker.receive("w", {
      maxRecords: 10,
      maxBytes: 1 << 20,
      maxWaitMs: 200,
    })).flatMap(unpack);
    const at = Date.now();
    for (const g of got) seen.push({ value: g.value, attempt: g.attempt, at });
    if (got.length > 0) await broker.settle("w", settlements(got, "ack"));
    return seen.some((s) => s.value === "later") || undefined;
  }, "the delayed nack redelivered");
  const later = seen.find((s) => s.value === "later")!;
  const soon = seen.find((s) => s.value === "soon")!;
  assert.is(later.attempt, 2);
  assert.is(soon.attempt, 2);
  assert.ok(
    later.at >= nackedBefore + delayMs,
    `redelivered ${later.at - nackedBefore} ms after the nack`,
  );
  assert.ok(soon.at <= later.at, "the backoff-only nack is not held back");
});

test.run();
