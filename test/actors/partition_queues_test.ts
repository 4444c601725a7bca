import { suite } from "uvu";
import * as assert from "uvu/assert";
import { DEAD_LETTER_HEADERS } from "../../src/broker.ts";
import type { QueueCursorConfig } from "../../src/envelope.ts";
import { DakgharError } from "../../src/errors.ts";
import {
  defaultPartitionLogConfig,
  type PartitionLogConfig,
} from "../../src/log/partition_log.ts";
import { decodeBatches, encodeBatch } from "../../src/log/record_batch.ts";
import { silentLogger } from "../../src/logger.ts";
import {
  PartitionClient,
  type QueueNotice,
} from "../../src/router/partition_client.ts";
import { runtime } from "../../src/runtime/mod.ts";
import { makeTempDir, removeTempDir } from "../router/_temp_dir.ts";

// A real partition worker driven through the router's partition client.
const test = suite(`partition_queues (${runtime.name})`);
const text = (value: string) => new TextEncoder().encode(value);
const untext = (bytes: Uint8Array | null) =>
  bytes === null ? null : new TextDecoder().decode(bytes);

let dir = "";
let notices: QueueNotice[] = [];

test.before.each(() => {
  dir = makeTempDir("queues");
  notices = [];
});
test.after.each(() => removeTempDir(dir));

function queueConfig(over: Partial<QueueCursorConfig> = {}): QueueCursorConfig {
  return {
    mode: "queue",
    from: "earliest",
    ackTimeoutMs: 30_000,
    maxDeliveries: 5,
    backoffInitialMs: 1000,
    backoffMaxMs: 60_000,
    maxUnsettled: 1_000_000,
    filter: null,
    ...over,
  };
}

async function startPartition(
  config: Partial<PartitionLogConfig> = {},
): Promise<PartitionClient> {
  const client = new PartitionClient({
    topic: "orders",
    partition: 0,
    dir: `${dir}/topics/orders/0`,
    config: { ...defaultPartitionLogConfig, ...config },
    startWorker: runtime.startWorker,
    log: silentLogger,
    onQueueNotice: (_client, notice) => notices.push(notice),
  });
  await client.start();
  return client;
}

function records(values: string[], tags: string[] = []) {
  return encodeBatch(values.map((value) => ({
    key: null,
    value: text(value),
    headers: tags.map((tag) => ["dakghar.tag", text(tag)]),
    timestamp: 1000,
  })));
}

async function eventually(check: () => boolean | Promise<boolean>) {
  for (let i = 0; i < 3000; i++) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error("condition never became true");
}

test("qfetch/qsettle deliver, ack and describe through the worker", async () => {
  const client = await startPartition();
  try {
    await client.request({ type: "append", batches: records(["a", "b", "c"]) });
    await client.request({
      type: "qconfig",
      group: "g",
      config: queueConfig(),
    });
    const fetched = await client.request({
      type: "qfetch",
      group: "g",
      member: 1,
      maxRecords: 10,
      maxBytes: 1 << 20,
    });
    assert.equal(
      decodeBatches(fetched.bytes).map((r) => untext(r.value)),
      ["a", "b", "c"],
    );
    assert.is(fetched.more, false);
    const settled = await client.request({
      type: "qsettle",
      group: "g",
      acks: [0, 2, 1, 2, 1, 2],
      items: [],
    });
    assert.is(settled.settled, 2);
    assert.equal(settled.refused, [{
      offset: 2,
      attempt: 2,
      code: "stale_receipt",
    }]);
    // The acked deliveries were reported by qfreed before the answer.
    assert.equal(settled.freed, []);
    const freed = notices.find((n) => n.type === "qfreed");
    assert.ok(freed && freed.type === "qfreed");
    assert.equal(freed.freed.slice(0, 2), [1, 2]);
    const described = await client.request({ type: "qdescribe", group: "g" });
    assert.equal(
      [
        described.stats.ackFloor,
        described.stats.inFlight,
        described.stats.unsettled,
      ],
      [2, 1, 1],
    );

    // Idle after more=false: an append sends qready.
    await client.request({ type: "append", batches: records(["d"]) });
    await eventually(() => notices.some((n) => n.type === "qready"));
  } finally {
    await client.close(false);
  }
});

test("qsettle reject sends qdead with provenance headers; qdeadDone settles", async () => {
  const client = await startPartition();
  try {
    await client.request({ type: "append", batches: records(["x"], ["eu"]) });
    await client.request({
      type: "qconfig",
      group: "g",
      config: queueConfig(),
    });
    await client.request({
      type: "qfetch",
      group: "g",
      member: 1,
      maxRecords: 1,
      maxBytes: 1,
    });
    // The answer waits for the letter's qdeadDone.
    let answered = false;
    const settling = client.request({
      type: "qsettle",
      group: "g",
      acks: [],
      items: [{ offset: 0, attempt: 1, action: "reject", reason: "bad input" }],
    }).finally(() => answered = true);
    await eventually(() => notices.some((n) => n.type === "qdead"));
    const dead = notices.find((n) => n.type === "qdead")!;
    assert.ok(dead.type === "qdead");
    const [letter] = decodeBatches(dead.bytes);
    assert.is(untext(letter.value), "x");
    const headers = Object.fromEntries(
      letter.headers.map(([name, value]) => [name, untext(value)]),
    );
    assert.is(headers["dakghar.tag"], "eu");
    assert.is(headers[DEAD_LETTER_HEADERS.topic], "orders");
    assert.is(headers[DEAD_LETTER_HEADERS.partition], "0");
    assert.is(headers[DEAD_LETTER_HEADERS.offset], "0");
    assert.is(headers[DEAD_LETTER_HEADERS.group], "g");
    assert.is(headers[DEAD_LETTER_HEADERS.deliveries], "1");
    assert.is(headers[DEAD_LETTER_HEADERS.reason], "rejected");
    assert.is(headers[DEAD_LETTER_HEADERS.error], "bad input");
    assert.ok(Number(headers[DEAD_LETTER_HEADERS.firstFailedAt]) > 0);
    assert.not.ok(answered, "answered before its letter was appended");
    const done = await client.request({
      type: "qdeadDone",
      group: "g",
      seq: dead.seq,
    });
    assert.is(done.settled, 1);
    assert.is((await settling).settled, 1);
    assert.ok(answered);
    const described = await client.request({ type: "qdescribe", group: "g" });
    assert.is(described.stats.ackFloor, 1);
    assert.is(described.stats.deadLettered, 1);
  } finally {
    await client.close(false);
  }
});

test("qconfig after a restart redelivers in-flight records with attempts continued", async () => {
  let client = await startPartition();
  await client.request({ type: "append", batches: records(["a", "b", "c"]) });
  await client.request({ type: "qconfig", group: "g", config: queueConfig() });
  await client.request({
    type: "qfetch",
    group: "g",
    member: 1,
    maxRecords: 10,
    maxBytes: 1 << 20,
  });
  await client.request({
    type: "qsettle",
    group: "g",
    acks: [1, 1, 1],
    items: [],
  });
  await client.close(false);

  client = await startPartition();
  try {
    await client.request({
      type: "qconfig",
      group: "g",
      config: queueConfig(),
    });
    const fetched = await client.request({
      type: "qfetch",
      group: "g",
      member: 2,
      maxRecords: 10,
      maxBytes: 1 << 20,
    });
    assert.equal(decodeBatches(fetched.bytes).map((r) => r.offset), [0, 2]);
    assert.equal(fetched.redelivered, [0, 2, 2, 2]);
  } finally {
    await client.close(false);
  }
});

test("an ack timeout sends qfreed and qready, then redelivers with attempt 2", async () => {
  const client = await startPartition();
  try {
    await client.request({ type: "append", batches: records(["a"]) });
    await client.request({
      type: "qconfig",
      group: "g",
      config: queueConfig({ ackTimeoutMs: 20 }),
    });
    const first = await client.request({
      type: "qfetch",
      group: "g",
      member: 3,
      maxRecords: 10,
      maxBytes: 1 << 20,
    });
    assert.is(first.more, false);
    await eventually(() => notices.some((n) => n.type === "qready"));
    const expired = notices.find((n) => n.type === "qfreed");
    assert.ok(expired?.type === "qfreed");
    assert.equal(expired.freed, [3, 1, first.bytes.length]);
    const again = await client.request({
      type: "qfetch",
      group: "g",
      member: 4,
      maxRecords: 10,
      maxBytes: 1 << 20,
    });
    assert.equal(again.redelivered, [0, 2]);
    const late = await client.request({
      type: "qsettle",
      group: "g",
      acks: [0, 1, 1],
      items: [],
    });
    assert.is(late.refused.length, 1);
  } finally {
    await client.close(false);
  }
});

test("qconfig with an unreadable state file starts at the log start", async () => {
  const client = await startPartition();
  try {
    await client.request({ type: "append", batches: records(["a", "b"]) });
    const path = `${dir}/topics/orders/0/queues/g.state`;
    runtime.fs.mkdirs(`${dir}/topics/orders/0/queues`);
    runtime.fs.writeFileAtomic(path, text("not msgpack at all \xc1"));
    const configured = await client.request({
      type: "qconfig",
      group: "g",
      config: queueConfig({ from: "latest" }),
    });
    assert.is(configured.stats.ackFloor, 0);
    assert.ok(runtime.fs.exists(`${path}.corrupt`));
  } finally {
    await client.close(false);
  }
});

test("retention waits for the queue floor unless the topic drops unsettled records", async () => {
  // Every append rolls a segment; retentionBytes 1 deletes all closed ones.
  const small = { segmentBytes: 64, retentionBytes: 1 };
  for (const drops of [false, true]) {
    const client = await startPartition({
      ...small,
      retentionDropsUnsettled: drops,
    });
    try {
      await client.request({
        type: "qconfig",
        group: "g",
        config: queueConfig(),
      });
      for (const value of ["a", "b", "c", "d"]) {
        await client.request({ type: "append", batches: records([value]) });
      }
      const { stats } = await client.request({ type: "stats" });
      const described = await client.request({ type: "qdescribe", group: "g" });
      if (!drops) {
        assert.is(stats.logStartOffset, 0);
        await client.request({
          type: "qfetch",
          group: "g",
          member: 1,
          maxRecords: 10,
          maxBytes: 1 << 20,
        });
        await client.request({
          type: "qsettle",
          group: "g",
          acks: [0, 3, 1],
          items: [],
        });
        await client.request({ type: "append", batches: records(["e"]) });
        const after = await client.request({ type: "stats" });
        assert.is(after.stats.logStartOffset, 3);
      } else {
        assert.is(stats.logStartOffset, 3);
        assert.is(described.stats.ackFloor, 3);
        assert.is(described.stats.lostToRetention, 3);
      }
    } finally {
      await client.close(true);
    }
  }
});

test("qconfig null drops the cursor and its state file", async () => {
  const client = await startPartition();
  try {
    await client.request({
      type: "qconfig",
      group: "g",
      config: queueConfig(),
    });
    const path = `${dir}/topics/orders/0/queues/g.state`;
    assert.ok(runtime.fs.exists(path));
    await client.request({ type: "qconfig", group: "g", config: null });
    assert.not.ok(runtime.fs.exists(path));
    try {
      await client.request({ type: "qdescribe", group: "g" });
      assert.unreachable("described a dropped group");
    } catch (error) {
      assert.ok(error instanceof DakgharError);
      assert.is(error.code, "unknown_group");
    }
  } finally {
    await client.close(false);
  }
});

test("read with a filter answers only matching records and nextOffset", async () => {
  const client = await startPartition();
  try {
    await client.request({
      type: "append",
      batches: records(["a", "b"], ["us"]),
    });
    await client.request({ type: "append", batches: records(["c"], ["eu"]) });
    await client.request({ type: "append", batches: records(["d"], ["us"]) });
    const reply = await client.request({
      type: "read",
      offset: 0,
      maxBytes: 1 << 20,
      maxWaitMs: 0,
      filter: { tags: ["eu"] },
    });
    assert.equal(decodeBatches(reply.bytes).map((r) => untext(r.value)), ["c"]);
    assert.is(reply.nextOffset, 4);
  } finally {
    await client.close(false);
  }
});

test("schedule appends the records when due and counts them in stats until then", async () => {
  const client = await startPartition();
  try {
    const scheduled = await client.request({
      type: "schedule",
      records: records(["later"]),
      due: [Date.now() + 50],
    });
    assert.is(scheduled.ids.length, 1);
    await eventually(async () => {
      const { stats } = await client.request({ type: "stats" });
      return stats.logEndOffset === 1 && stats.delayed === 0;
    });
    const cancelled = await client.request({
      type: "unschedule",
      delayId: scheduled.ids[0],
    });
    assert.is(cancelled.found, false);
  } finally {
    await client.close(false);
  }
});

test.run();
