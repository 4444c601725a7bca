import { suite } from "uvu";
import * as assert from "uvu/assert";
import { TAG_HEADER } from "../../src/broker.ts";
import { createApp } from "../../src/http/app.ts";
import { decodeBatches, encodeBatch } from "../../src/log/record_batch.ts";
import { silentLogger } from "../../src/logger.ts";
import { runtime } from "../../src/runtime/mod.ts";
import type { Server } from "../../src/runtime/types.ts";
import { FakeBroker } from "./_fake_broker.ts";
import { connect, type Frame, type TestSocket } from "./_ws_client.ts";

// Queue subscriptions, settle frames and filtered stream reads over
// WebSocket, against the in-memory broker.
const test = suite("websocket_queue");
const utf8 = (text: string) => new TextEncoder().encode(text);

interface Context {
  broker: FakeBroker;
  server: Server;
  sockets: TestSocket[];
  open(): Promise<TestSocket>;
}

async function start(partitions = 1): Promise<Context> {
  const broker = new FakeBroker();
  await broker.createTopic("orders", { partitions });
  const app = createApp(broker, {
    log: silentLogger,
    webSocketFor: runtime.webSocketFor,
    webSocket: { fetchWaitMs: 200, retryMs: 50 },
  });
  const server = await runtime.serve(app, { hostname: "127.0.0.1", port: 0 });
  const sockets: TestSocket[] = [];
  return {
    broker,
    server,
    sockets,
    async open() {
      const socket = await connect(`ws://127.0.0.1:${server.port}/ws`);
      sockets.push(socket);
      return socket;
    },
  };
}

async function stop(context: Context): Promise<void> {
  await Promise.all(context.sockets.map((socket) => socket.close()));
  await context.server.close();
}

async function fill(
  broker: FakeBroker,
  count: number,
  tags: (i: number) => string[] = () => [],
) {
  for (let i = 0; i < count; i++) {
    await broker.publish(
      "orders",
      encodeBatch([{
        key: null,
        value: utf8(`r${i}`),
        headers: tags(i).map((tag) => [TAG_HEADER, utf8(tag)]),
        timestamp: 1,
      }]),
      { partition: 0 },
    );
  }
}

interface Delivered {
  offset: number;
  attempt: number;
  value: string;
  tags?: string[];
}

/** Collects delivered records until `count` came. */
async function deliveries(socket: TestSocket, count: number) {
  const records: Delivered[] = [];
  while (records.length < count) {
    const { frame } = await socket.nextOp("deliveries");
    records.push(...frame.records as Delivered[]);
  }
  return records;
}

test("subscribe with mode queue creates the group and delivers up to the prefetch", async () => {
  const context = await start();
  try {
    await fill(context.broker, 5);
    const socket = await context.open();
    socket.send({
      op: "subscribe",
      id: 1,
      topic: "orders",
      group: "work",
      mode: "queue",
      prefetch: { records: 3 },
    });
    const { frame: subscribed } = await socket.nextOp("subscribed");
    assert.is(subscribed.mode, "queue");
    assert.type(subscribed.memberId, "string");
    assert.is(context.broker.groupSettings("work")?.mode, "queue");

    const first = await deliveries(socket, 3);
    assert.equal(first.map((r) => [r.offset, r.attempt, r.value]), [
      [0, 1, "r0"],
      [1, 1, "r1"],
      [2, 1, "r2"],
    ]);

    // Settling frees room: the rest comes.
    socket.send({
      op: "settle",
      id: 2,
      sub: subscribed.sub,
      acks: [[0, 0, 2, 1]],
    });
    const { frame: settled, skipped } = await socket.nextOp("settled");
    assert.equal(
      { ...settled, binary: false },
      {
        op: "settled",
        id: 2,
        sub: subscribed.sub,
        settled: 2,
        refused: [],
        binary: false,
      },
    );
    const rest = [
      ...skipped.flatMap((f) => f.records as Delivered[]),
    ];
    if (rest.length < 2) {
      rest.push(...await deliveries(socket, 2 - rest.length));
    }
    assert.equal(rest.map((r) => r.offset), [3, 4]);
  } finally {
    await stop(context);
  }
});

test("settle answers refusals, and without an id only refusals", async () => {
  const context = await start();
  try {
    await fill(context.broker, 3);
    await context.broker.createGroup("work", {
      topic: "orders",
      mode: "queue",
    });
    const socket = await context.open();
    socket.send({ op: "subscribe", id: 1, group: "work" });
    const { frame: subscribed } = await socket.nextOp("subscribed");
    const sub = subscribed.sub;
    await deliveries(socket, 3);

    // Without id and all taken: no answer. The ping's pong comes next.
    socket.send({ op: "settle", sub, nacks: [[0, 0, 1, 500, "busy"]] });
    socket.send({ op: "settle", sub, rejects: [[0, 1, 1, "bad"]] });
    socket.send({ op: "settle", sub, extends: [[0, 2, 1, 1000]] });
    socket.send({ op: "ping", id: "p" });
    const { skipped } = await socket.nextOp("pong");
    assert.not.ok(skipped.some((f) => f.op === "settled"));
    assert.equal(
      context.broker.queues.settleCalls.map((c) => c.settlements),
      [
        [{
          partition: 0,
          offset: 0,
          attempt: 1,
          action: "nack",
          delayMs: 500,
          reason: "busy",
        }],
        [{
          partition: 0,
          offset: 1,
          attempt: 1,
          action: "reject",
          reason: "bad",
        }],
        [{
          partition: 0,
          offset: 2,
          attempt: 1,
          action: "extend",
          delayMs: 1000,
        }],
      ],
    );

    // Offset 1 was rejected: settling it again is refused, even without id.
    socket.send({ op: "settle", sub, acks: [[0, 1, 1, 1]] });
    const { frame: refused } = await socket.nextOp("settled");
    assert.is(refused.id, undefined);
    assert.is(refused.settled, 0);
    assert.equal(refused.refused, [
      { partition: 0, offset: 1, attempt: 1, code: "stale_receipt" },
    ]);
  } finally {
    await stop(context);
  }
});

test("settle refuses malformed frames with bad_frame", async () => {
  const context = await start();
  try {
    await context.broker.createGroup("work", {
      topic: "orders",
      mode: "queue",
    });
    const socket = await context.open();
    socket.send({ op: "subscribe", id: 1, group: "work" });
    const { frame: subscribed } = await socket.nextOp("subscribed");
    const sub = subscribed.sub;
    const bad = [
      {},
      { acks: [[0, 0, 1]] },
      { acks: [[0, 0, 0, 1]] },
      { acks: [[0, -1, 1, 1]] },
      { acks: "all" },
      { nacks: [[0, 0, 1]] },
      { nacks: [[0, 0, 1, -5]] },
      { rejects: [[0, 0, 0]] },
      { rejects: [[0, 0, 1, 42]] },
      { extends: [[0, 0, 1, 0]] },
      { extends: [[0, 0, 1]] },
      { acks: [[0, 0, 200_000, 1]] },
    ];
    for (const [index, fields] of bad.entries()) {
      socket.send({ op: "settle", id: index, sub, ...fields });
      const frame = await socket.next();
      assert.is(frame.op, "error", JSON.stringify(fields));
      assert.is(frame.code, "bad_frame", JSON.stringify(fields));
      assert.is(frame.id, index);
    }
    assert.is(context.broker.queues.settleCalls.length, 0);

    // Settling a stream subscription, or giving credit to a queue one, is a bad request.
    socket.send({ op: "credit", id: 50, sub, records: 5 });
    assert.is((await socket.nextOp("error")).frame.code, "bad_request");
    socket.send({ op: "subscribe", id: 51, topic: "orders" });
    const { frame: plain } = await socket.nextOp("subscribed");
    socket.send({ op: "settle", id: 52, sub: plain.sub, acks: [[0, 0, 1, 1]] });
    assert.is((await socket.nextOp("error")).frame.code, "bad_request");
  } finally {
    await stop(context);
  }
});

test("unsubscribe and close give in-flight deliveries back at once", async () => {
  const context = await start();
  try {
    await fill(context.broker, 2);
    const a = await context.open();
    a.send({
      op: "subscribe",
      id: 1,
      topic: "orders",
      group: "work",
      mode: "queue",
    });
    const { frame: subscribed } = await a.nextOp("subscribed");
    await deliveries(a, 2);

    a.send({ op: "unsubscribe", id: 2, sub: subscribed.sub });
    await a.nextOp("unsubscribed");
    const b = await context.open();
    b.send({ op: "subscribe", id: 1, group: "work" });
    const again = await deliveries(b, 2);
    assert.equal(again.map((r) => [r.offset, r.attempt]), [[0, 2], [1, 2]]);

    // b disconnects: c gets them, attempt 3.
    await b.close();
    const c = await context.open();
    c.send({ op: "subscribe", id: 1, group: "work" });
    assert.equal(
      (await deliveries(c, 2)).map((r) => r.attempt),
      [3, 3],
    );
  } finally {
    await stop(context);
  }
});

test("subscribe to a queue group in batch format sends bytes and redelivered attempts", async () => {
  const context = await start();
  try {
    await fill(context.broker, 2);
    await context.broker.createGroup("work", {
      topic: "orders",
      mode: "key_shared",
    });
    const socket = await context.open();
    socket.send({
      op: "subscribe",
      id: 1,
      group: "work",
      topic: "orders",
      mode: "queue",
    }, true);
    const { frame: subscribed } = await socket.nextOp("subscribed");
    assert.is(subscribed.mode, "key_shared");
    const { frame } = await socket.nextOp("deliveries");
    assert.ok(frame.binary);
    assert.equal(frame.redelivered, []);
    const records = decodeBatches(frame.bytes as Uint8Array);
    assert.equal(records.map((r) => r.offset), [0, 1]);

    context.broker.queues.expireAll("work");
    const { frame: again } = await socket.nextOp("deliveries");
    assert.equal(again.redelivered, [0, 2, 1, 2]);
  } finally {
    await stop(context);
  }
});

test("subscribe refuses a mode, topic or filter that contradicts the group", async () => {
  const context = await start();
  try {
    await context.broker.createTopic("audit");
    await context.broker.createGroup("work", {
      topic: "orders",
      mode: "queue",
      filter: { tags: ["eu"] },
    });
    const socket = await context.open();
    const answer = async (frame: Record<string, unknown>) => {
      socket.send({ op: "subscribe", id: 1, ...frame });
      return (await socket.next()) as Frame;
    };
    assert.is(
      (await answer({ group: "work", mode: "stream", topic: "orders" })).code,
      "group_exists",
    );
    assert.is(
      (await answer({ group: "work", topic: "audit" })).code,
      "bad_request",
    );
    assert.is(
      (await answer({ group: "work", filter: { tags: ["us"] } })).code,
      "bad_request",
    );
    assert.is(
      (await answer({ group: "work", prefetch: { records: 0 } })).code,
      "bad_frame",
    );
    assert.is(
      (await answer({ group: "work", filter: { tags: "eu" } })).code,
      "bad_frame",
    );
    assert.is(
      (await answer({ topic: "orders", mode: "queue" })).code,
      "bad_frame",
    );
    assert.is(
      (await answer({ group: "fresh", mode: "queue" })).code,
      "bad_frame",
    );
    assert.is(
      (await answer({ group: "fresh", mode: "lifo", topic: "orders" })).code,
      "bad_frame",
    );
    assert.is(
      (await answer({ group: "work", mode: "queue", credit: 10 })).code,
      "bad_frame",
    );
    // The same filter, in another order, is the group's.
    const same = await answer({ group: "work", filter: { tags: ["eu"] } });
    assert.is(same.op, "subscribed");
  } finally {
    await stop(context);
  }
});

test("subscribe with a filter delivers only matching records", async () => {
  const context = await start();
  try {
    await fill(context.broker, 6, (i) => i % 3 === 0 ? ["eu"] : ["us"]);
    const socket = await context.open();
    // Ungrouped stream subscription: reads skip what does not match.
    socket.send({
      op: "subscribe",
      id: 1,
      topic: "orders",
      from: "earliest",
      credit: 10,
      filter: { tags: ["eu"] },
    });
    const seen: number[] = [];
    while (seen.length < 2) {
      const { frame } = await socket.nextOp("records");
      for (
        const record of frame.records as { offset: number; tags: string[] }[]
      ) {
        assert.equal(record.tags, ["eu"]);
        seen.push(record.offset);
      }
    }
    assert.equal(seen, [0, 3]);

    // A queue group created with the filter settles the rest by itself.
    socket.send({
      op: "subscribe",
      id: 2,
      topic: "orders",
      group: "eu-work",
      mode: "queue",
      filter: { tags: ["eu"] },
    });
    await socket.nextOp("subscribed");
    assert.equal((await deliveries(socket, 2)).map((r) => r.offset), [0, 3]);
    assert.equal(context.broker.groupSettings("eu-work")?.filter, {
      tags: ["eu"],
    });

    // Later records: only the matching one crosses the wire.
    await fill(context.broker, 2, () => ["us"]);
    await fill(context.broker, 1, () => ["eu"]);
    const { frame } = await socket.nextOp("records");
    assert.equal((frame.records as { offset: number }[]).map((r) => r.offset), [
      8,
    ]);
  } finally {
    await stop(context);
  }
});

test("publish frames take tags and delays and answer delayed positions", async () => {
  const context = await start();
  try {
    const socket = await context.open();
    socket.send({
      op: "publish",
      id: 1,
      topic: "orders",
      records: [
        { value: "now", tags: ["eu"] },
        { value: "later", delayMs: 5000 },
      ],
    });
    const { frame } = await socket.nextOp("ack");
    const [now, later] = frame.offsets as Record<string, unknown>[];
    assert.equal(now, { partition: 0, offset: 0 });
    assert.is(later.offset, -1);
    assert.type(later.delayId, "string");
    assert.type(later.dueAt, "number");

    socket.send({
      op: "publish",
      id: 2,
      topic: "orders",
      records: [{ value: "x", deliverAt: "soon" }],
    });
    const { frame: error } = await socket.nextOp("error");
    assert.is(error.code, "malformed_body");
    assert.is(error.field, "records[0].deliverAt");
  } finally {
    await stop(context);
  }
});

test.run();
