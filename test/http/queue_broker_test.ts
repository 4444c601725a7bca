import { suite } from "uvu";
import * as assert from "uvu/assert";
import { decodeBatches } from "../../src/log/record_batch.ts";
import { type RunningBroker, startBroker } from "../../src/server.ts";
import { makeTempDir, removeTempDir } from "../router/_temp_dir.ts";
import { connect, type TestSocket } from "./_ws_client.ts";

// The queue front end against the real broker (router, partition actors,
// queue cursors): a WebSocket member that acks, and an HTTP receiver whose
// receipt goes stale once its record is redelivered.
const test = suite("queue_broker");

interface Context {
  dir: string;
  running: RunningBroker;
  sockets: TestSocket[];
  call(method: string, path: string, body?: unknown): Promise<{
    status: number;
    // deno-lint-ignore no-explicit-any
    body: any;
  }>;
}

async function start(): Promise<Context> {
  const dir = makeTempDir("http-queue");
  const running = await startBroker({ dataDir: dir, port: 0 });
  await running.broker.createTopic("orders", { partitions: 2 });
  return {
    dir,
    running,
    sockets: [],
    async call(method, path, body) {
      const response = await fetch(`${running.url}${path}`, {
        method,
        headers: body === undefined
          ? {}
          : { "Content-Type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await response.text();
      return { status: response.status, body: text ? JSON.parse(text) : null };
    },
  };
}

async function stop(context: Context): Promise<void> {
  for (const socket of context.sockets) await socket.close();
  await context.running.stop();
  removeTempDir(context.dir);
}

test("WebSocket queue subscription: deliveries, settle with acks, nothing redelivered", async () => {
  const context = await start();
  try {
    const published = await context.call("POST", "/topics/orders/records", {
      records: Array.from({ length: 6 }, (_, i) => ({
        key: `k${i}`,
        value: `v${i}`,
        partition: i % 2,
        tags: i === 0 ? ["eu"] : undefined,
      })),
    });
    assert.is(published.status, 200, JSON.stringify(published.body));

    const socket = await connect(
      `ws://127.0.0.1:${context.running.port}/ws`,
    );
    context.sockets.push(socket);
    socket.send({
      op: "subscribe",
      id: 1,
      topic: "orders",
      group: "work",
      mode: "queue",
      prefetch: { records: 10 },
    });
    const { frame: subscribed } = await socket.nextOp("subscribed");
    assert.is(subscribed.mode, "queue");

    const seen = new Map<string, number>();
    let settledCount = 0;
    while (seen.size < 6 || settledCount < 6) {
      const frame = await socket.next();
      if (frame.op === "settled") {
        assert.equal(frame.refused, []);
        settledCount += frame.settled as number;
        continue;
      }
      assert.is(frame.op, "deliveries", JSON.stringify(frame));
      const records = frame.records as {
        offset: number;
        attempt: number;
        value: string;
        tags?: string[];
      }[];
      for (const record of records) {
        assert.is(record.attempt, 1);
        if (record.value === "v0") assert.equal(record.tags, ["eu"]);
        seen.set(record.value, record.offset);
      }
      socket.send({
        op: "settle",
        id: `${frame.partition}-${records[0].offset}`,
        sub: subscribed.sub,
        acks: records.map((r) => [frame.partition, r.offset, 1, 1]),
      });
    }
    assert.equal([...seen.keys()].sort(), ["v0", "v1", "v2", "v3", "v4", "v5"]);

    const described = await context.call("GET", "/groups/work");
    assert.is(described.status, 200);
    assert.is(described.body.settings.mode, "queue");
    const floors = (described.body.queue as { ackFloor: number }[])
      .map((p) => p.ackFloor);
    assert.equal(floors, [3, 3]);
  } finally {
    await stop(context);
  }
});

test("HTTP receive and ack: a receipt from before a redelivery is refused", async () => {
  const context = await start();
  try {
    const created = await context.call("PUT", "/groups/jobs", {
      topic: "orders",
      mode: "queue",
      ackTimeoutMs: 50,
    });
    assert.is(created.status, 200, JSON.stringify(created.body));
    assert.is(created.body.queue.ackTimeoutMs, 50);
    await context.call("POST", "/topics/orders/records", {
      value: "job",
      partition: 1,
    });

    const first = await context.call("POST", "/groups/jobs/receive", {
      maxWaitMs: 5000,
    });
    assert.is(first.status, 200, JSON.stringify(first.body));
    const [delivery] = first.body.records;
    assert.is(delivery.value, "job");
    assert.is(delivery.attempt, 1);
    assert.is(delivery.receipt, "1.0.1");

    // Not settled within 50 ms: the record comes back, attempt 2.
    let again;
    for (let i = 0; i < 50 && again === undefined; i++) {
      const answer = await context.call("POST", "/groups/jobs/receive", {
        maxWaitMs: 1000,
      });
      again = answer.body.records[0];
    }
    assert.ok(again, "redelivered");
    assert.is(again.attempt, 2);
    assert.is(again.receipt, "1.0.2");

    const stale = await context.call("POST", "/groups/jobs/ack", {
      receipts: [delivery.receipt],
    });
    assert.is(stale.status, 409);
    assert.is(stale.body.error.code, "stale_receipt");
    assert.equal(
      stale.body.error.refused.map((r: { receipt: string }) => r.receipt),
      ["1.0.1"],
    );

    // The current receipt may still be taken (its deadline passed but it
    // may not have been redelivered yet), or be stale by now: either way
    // the answer says which.
    const current = await context.call("POST", "/groups/jobs/ack", {
      receipts: [again.receipt],
    });
    assert.ok(
      current.status === 200 ||
        current.body.error.code === "stale_receipt",
      JSON.stringify(current.body),
    );
  } finally {
    await stop(context);
  }
});

test("WebSocket batch deliveries from the real broker decode as record batches", async () => {
  const context = await start();
  try {
    await context.call("POST", "/topics/orders/records", {
      records: [{ value: "a", partition: 0 }, { value: "b", partition: 0 }],
    });
    const socket = await connect(
      `ws://127.0.0.1:${context.running.port}/ws`,
    );
    context.sockets.push(socket);
    socket.send({
      op: "subscribe",
      id: 1,
      topic: "orders",
      group: "batchers",
      mode: "key_shared",
      format: "batch",
    }, true);
    const { frame: subscribed } = await socket.nextOp("subscribed");
    assert.is(subscribed.mode, "key_shared");
    const { frame } = await socket.nextOp("deliveries");
    const records = decodeBatches(frame.bytes as Uint8Array);
    assert.ok(records.length >= 1);
    assert.equal(frame.redelivered, []);
  } finally {
    await stop(context);
  }
});

test("WebSocket filtered subscription on the real broker sends only matching records", async () => {
  const context = await start();
  try {
    await context.call("POST", "/topics/orders/records", {
      records: Array.from({ length: 20 }, (_, i) => ({
        value: `v${i}`,
        partition: 0,
        tags: i % 5 === 0 ? ["eu"] : ["us"],
        headers: { n: String(i) },
      })),
    });
    const socket = await connect(
      `ws://127.0.0.1:${context.running.port}/ws`,
    );
    context.sockets.push(socket);
    socket.send({
      op: "subscribe",
      id: 1,
      topic: "orders",
      partitions: [0],
      from: "earliest",
      credit: 100,
      filter: { tags: ["eu"] },
    });
    const values: string[] = [];
    while (values.length < 4) {
      const { frame } = await socket.nextOp("records");
      for (
        const record of frame.records as { value: string; tags: string[] }[]
      ) {
        assert.equal(record.tags, ["eu"]);
        values.push(record.value);
      }
    }
    assert.equal(values, ["v0", "v5", "v10", "v15"]);

    // Later records: the next matching one arrives, nothing else.
    await context.call("POST", "/topics/orders/records", {
      records: [
        { value: "late-us", partition: 0, tags: ["us"] },
        { value: "late-eu", partition: 0, tags: ["eu"] },
      ],
    });
    const { frame } = await socket.nextOp("records");
    assert.equal(
      (frame.records as { value: string }[]).map((r) => r.value),
      ["late-eu"],
    );
  } finally {
    await stop(context);
  }
});

/** Subscribes a queue member of `group` on `orders`; resolves with its `sub`. */
async function queueMember(
  context: Context,
  group: string,
): Promise<{ socket: TestSocket; sub: unknown }> {
  const socket = await connect(`ws://127.0.0.1:${context.running.port}/ws`);
  context.sockets.push(socket);
  socket.send({
    op: "subscribe",
    id: 1,
    topic: "orders",
    group,
    mode: "queue",
  });
  const { frame } = await socket.nextOp("subscribed");
  return { socket, sub: frame.sub };
}

test("deleting a queue group ends its WebSocket members; their settlements are refused", async () => {
  const context = await start();
  try {
    await context.call("POST", "/topics/orders/records", {
      value: "a",
      partition: 0,
    });
    const { socket, sub } = await queueMember(context, "doomed");
    const { frame: delivered } = await socket.nextOp("deliveries");
    assert.is(delivered.partition, 0);

    const deleted = await context.call("DELETE", "/groups/doomed");
    assert.is(deleted.status, 204);
    const { frame: ended } = await socket.nextOp("error");
    assert.equal([ended.sub, ended.code], [sub, "unknown_group"]);

    // The same name made again: the old member's ack touches nothing.
    await context.call("PUT", "/groups/doomed", {
      topic: "orders",
      mode: "queue",
    });
    socket.send({ op: "settle", id: 2, sub, acks: [[0, 0, 1, 1]] });
    const { frame: refused } = await socket.nextOp("error");
    assert.equal([refused.id, refused.code], [2, "not_found"]);
    const received = await context.call("POST", "/groups/doomed/receive", {
      maxWaitMs: 5000,
    });
    assert.equal(
      received.body.records.map((r: { value: string }) => r.value),
      ["a"],
    );
  } finally {
    await stop(context);
  }
});

test("deleting the topic ends a queue group's members; a member of the topic made again gets its records", async () => {
  const context = await start();
  try {
    await context.call("PUT", "/groups/work", {
      topic: "orders",
      mode: "queue",
    });
    await context.call("POST", "/topics/orders/records", {
      value: "old",
      partition: 0,
    });
    const { socket, sub } = await queueMember(context, "work");
    await socket.nextOp("deliveries");

    assert.is((await context.call("DELETE", "/topics/orders")).status, 204);
    const { frame: ended } = await socket.nextOp("error");
    assert.equal([ended.sub, ended.code], [sub, "unknown_topic"]);

    await context.call("POST", "/topics", { name: "orders", partitions: 2 });
    await context.call("POST", "/topics/orders/records", {
      value: "new",
      partition: 1,
    });
    const fresh = await queueMember(context, "work");
    const { frame } = await fresh.socket.nextOp("deliveries");
    assert.equal(
      (frame.records as { value: string }[]).map((r) => r.value),
      ["new"],
    );
  } finally {
    await stop(context);
  }
});

test("redrives of one group at once republish each dead letter once", async () => {
  const context = await start();
  try {
    await context.call("PUT", "/groups/jobs", {
      topic: "orders",
      mode: "queue",
    });
    await context.call("POST", "/topics/orders/records", {
      records: [0, 1, 2].map((i) => ({ value: `j${i}`, partition: 0 })),
    });
    const received = await context.call("POST", "/groups/jobs/receive", {
      maxRecords: 3,
      maxWaitMs: 5000,
    });
    const receipts = received.body.records.map((r: { receipt: string }) =>
      r.receipt
    );
    assert.is(receipts.length, 3);
    await context.call("POST", "/groups/jobs/reject", { receipts });
    // Wait for the three letters to land.
    for (let i = 0; i < 200; i++) {
      const dlq = await context.call(
        "GET",
        "/topics/orders.jobs.dlq/partitions/0/records?offset=0",
      );
      if (dlq.status === 200 && dlq.body.records.length === 3) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }

    const answers = await Promise.all([
      context.call("POST", "/groups/jobs/dead-letters/redrive", {}),
      context.call("POST", "/groups/jobs/dead-letters/redrive", {}),
    ]);
    assert.equal(
      answers.map((answer) => answer.body.redriven).sort(),
      [0, 3],
    );
    const topic = await context.call("GET", "/topics/orders");
    assert.is(topic.body.partitions[0].logEndOffset, 6);
  } finally {
    await stop(context);
  }
});

test("seeking a queue group is refused: it keeps no offsets", async () => {
  const context = await start();
  try {
    await context.call("PUT", "/groups/jobs", {
      topic: "orders",
      mode: "queue",
    });
    const sought = await context.call("POST", "/groups/jobs/seek", {
      topic: "orders",
      to: "earliest",
    });
    assert.is(sought.status, 400);
    assert.is(sought.body.error.code, "bad_request");
  } finally {
    await stop(context);
  }
});

test("a queue member id joining again elsewhere ends the old subscription with member_replaced", async () => {
  const context = await start();
  try {
    await context.call("PUT", "/groups/jobs", {
      topic: "orders",
      mode: "queue",
    });
    const url = `ws://127.0.0.1:${context.running.port}/ws`;
    const old = await connect(url);
    const fresh = await connect(url);
    context.sockets.push(old, fresh);
    const frame = { op: "subscribe", id: 1, group: "jobs", memberId: "w1" };
    old.send(frame);
    const { frame: first } = await old.nextOp("subscribed");
    fresh.send(frame);
    await fresh.nextOp("subscribed");
    const { frame: ended } = await old.nextOp("error");
    assert.equal([ended.sub, ended.code], [first.sub, "member_replaced"]);
    await context.call("POST", "/topics/orders/records", {
      value: "job",
      partition: 0,
    });
    const { frame: delivered } = await fresh.nextOp("deliveries");
    assert.is(delivered.partition, 0);
  } finally {
    await stop(context);
  }
});

test.run();
