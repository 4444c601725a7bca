import { suite } from "uvu";
import * as assert from "uvu/assert";
import { createApp } from "../../src/http/app.ts";
import { decodeBatches, encodeBatch } from "../../src/log/record_batch.ts";
import { silentLogger } from "../../src/logger.ts";
import { runtime } from "../../src/runtime/mod.ts";
import type { Server } from "../../src/runtime/types.ts";
import { FakeBroker } from "./_fake_broker.ts";
import { connect, type Frame, type TestSocket } from "./_ws_client.ts";

const test = suite("websocket");
const utf8 = (text: string) => new TextEncoder().encode(text);

interface Context {
  broker: FakeBroker;
  server: Server;
  sockets: TestSocket[];
  open(): Promise<TestSocket>;
}

async function start(partitions = 1, fetchWaitMs = 500): Promise<Context> {
  const broker = new FakeBroker();
  await broker.createTopic("orders", { partitions });
  const app = createApp(broker, {
    log: silentLogger,
    webSocketFor: runtime.webSocketFor,
    webSocket: { fetchWaitMs, retryMs: 50 },
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

async function fill(broker: FakeBroker, partition: number, count: number) {
  for (let i = 0; i < count; i++) {
    await broker.publish(
      "orders",
      encodeBatch([{
        key: null,
        value: utf8(`p${partition}-${i}`),
        headers: [],
        timestamp: 1,
      }]),
      { partition },
    );
  }
}

/** Receives record frames until `count` records came; fails on any extra. */
async function receiveRecords(socket: TestSocket, count: number) {
  const records: { partition: number; offset: number; value: string }[] = [];
  while (records.length < count) {
    const frame = await socket.next();
    assert.is(frame.op, "records", JSON.stringify(frame));
    for (const record of frame.records as { offset: number; value: string }[]) {
      records.push({ partition: frame.partition as number, ...record });
    }
  }
  assert.is(records.length, count);
  return records;
}

/** Asserts that nothing but the pong arrives before it. */
async function assertQuiet(socket: TestSocket) {
  socket.send({ op: "ping", id: "quiet" });
  const frame = await socket.next();
  assert.equal([frame.op, frame.id], ["pong", "quiet"], JSON.stringify(frame));
}

async function subscribe(
  socket: TestSocket,
  fields: Record<string, unknown>,
  binary = false,
): Promise<{ sub: string; assigned: Frame }> {
  socket.send({ op: "subscribe", id: 1, topic: "orders", ...fields }, binary);
  const subscribed = await socket.next();
  assert.is(subscribed.op, "subscribed", JSON.stringify(subscribed));
  const assigned = await socket.next();
  assert.is(assigned.op, "assigned", JSON.stringify(assigned));
  return { sub: subscribed.sub as string, assigned };
}

test("ping answers pong in the client's encoding", async () => {
  const context = await start();
  try {
    const socket = await context.open();
    socket.send({ op: "ping", id: 7 });
    assert.equal(await socket.next(), { op: "pong", id: 7, binary: false });
    socket.send({ op: "ping", id: 8 }, true);
    assert.equal(await socket.next(), { op: "pong", id: 8, binary: true });
  } finally {
    await stop(context);
  }
});

test("subscribe sends no more records than the credit granted", async () => {
  const context = await start();
  try {
    await fill(context.broker, 0, 10);
    const socket = await context.open();
    const { sub, assigned } = await subscribe(socket, { from: "earliest" });
    assert.equal(assigned.partitions, [{ partition: 0, offset: 0 }]);
    await assertQuiet(socket);

    socket.send({ op: "credit", sub, records: 3 });
    const first = await receiveRecords(socket, 3);
    assert.equal(first.map((r) => r.value), ["p0-0", "p0-1", "p0-2"]);
    await assertQuiet(socket);

    socket.send({ op: "credit", sub, records: 4 });
    const second = await receiveRecords(socket, 4);
    assert.equal(second.map((r) => r.offset), [3, 4, 5, 6]);
    await assertQuiet(socket);
  } finally {
    await stop(context);
  }
});

test("subscribe shares one credit across partitions exactly", async () => {
  const context = await start(3);
  try {
    for (let p = 0; p < 3; p++) await fill(context.broker, p, 5);
    const socket = await context.open();
    const { sub } = await subscribe(socket, { from: "earliest", credit: 4 });
    const records = await receiveRecords(socket, 4);
    await assertQuiet(socket);
    socket.send({ op: "credit", sub, records: 11 });
    const rest = await receiveRecords(socket, 11);
    const all = [...records, ...rest].map((r) => `${r.partition}/${r.offset}`);
    assert.is(new Set(all).size, 15);
    await assertQuiet(socket);
  } finally {
    await stop(context);
  }
});

test("subscribe from latest waits for new records and pushes them", async () => {
  const context = await start();
  try {
    await fill(context.broker, 0, 2);
    const socket = await context.open();
    const { assigned } = await subscribe(socket, { credit: 10 });
    assert.equal(assigned.partitions, [{ partition: 0, offset: 2 }]);
    socket.send({
      op: "publish",
      id: "p",
      topic: "orders",
      records: [{ value: "new", headers: { h: "v" } }],
    });
    const frames = [await socket.next(), await socket.next()];
    const ack = frames.find((f) => f.op === "ack")!;
    assert.equal(ack.offsets, [{ partition: 0, offset: 2 }]);
    const pushed = frames.find((f) => f.op === "records")!;
    assert.equal(
      (pushed.records as Record<string, unknown>[]).map((
        r,
      ) => [r.offset, r.value, r.headers]),
      [[2, "new", { h: "v" }]],
    );
  } finally {
    await stop(context);
  }
});

test("subscribe with format batch sends sliced batch bytes over msgpack", async () => {
  const context = await start();
  try {
    await context.broker.publish(
      "orders",
      encodeBatch(["a", "b", "c", "d", "e"].map((v) => ({
        key: null,
        value: utf8(v),
        headers: [],
        timestamp: 1,
      }))),
    );
    const socket = await context.open();
    const { sub } = await subscribe(socket, {
      from: { offset: 1 },
      format: "batch",
      credit: 2,
    }, true);
    const frame = await socket.next();
    assert.is(frame.op, "batch");
    assert.is(frame.binary, true);
    const records = decodeBatches(frame.bytes as Uint8Array);
    assert.equal(
      records.map((r) => [r.offset, new TextDecoder().decode(r.value!)]),
      [[1, "b"], [2, "c"]],
    );
    socket.send({ op: "credit", sub, records: 5 }, true);
    const rest = decodeBatches((await socket.next()).bytes as Uint8Array);
    assert.equal(rest.map((r) => r.offset), [3, 4]);
  } finally {
    await stop(context);
  }
});

test("publish takes JSON records and binary batches", async () => {
  const context = await start(2);
  try {
    const socket = await context.open();
    socket.send({
      op: "publish",
      id: 1,
      topic: "orders",
      records: [{ value: "a", partition: 1 }, { value: { n: 1 } }],
    });
    assert.equal(await socket.next(), {
      op: "ack",
      id: 1,
      offsets: [{ partition: 1, offset: 0 }, { partition: 0, offset: 0 }],
      binary: false,
    });
    socket.send({
      op: "publish",
      id: 2,
      topic: "orders",
      partition: 1,
      batch: encodeBatch([{
        key: null,
        value: utf8("x"),
        headers: [],
        timestamp: 1,
      }]),
    }, true);
    const ack = await socket.next();
    assert.equal([ack.op, ack.id, ack.offsets], ["ack", 2, [{
      partition: 1,
      offset: 1,
    }]]);

    socket.send({
      op: "publish",
      id: 3,
      topic: "nope",
      records: [{ value: 1 }],
    });
    const error = await socket.next();
    assert.equal([error.op, error.id, error.code], [
      "error",
      3,
      "unknown_topic",
    ]);

    socket.send({
      op: "publish",
      id: 4,
      topic: "orders",
      records: [{ key: 1, value: 1 }],
    });
    const malformed = await socket.next();
    assert.equal([
      malformed.op,
      malformed.id,
      malformed.code,
      malformed.message,
    ], [
      "error",
      4,
      "malformed_body",
      "records[0].key: expected a string or null",
    ]);
  } finally {
    await stop(context);
  }
});

test("bad frames get bad_frame errors and the connection survives", async () => {
  const context = await start();
  try {
    const socket = await context.open();
    socket.sendRaw("not json");
    socket.sendRaw(new Uint8Array([0xc1]));
    socket.send({ op: "teleport", id: 5 });
    socket.send({ op: "subscribe", topic: "orders" });
    socket.send({ op: "credit", sub: 3 });
    socket.send({ op: "subscribe", id: 6, topic: "orders", from: "yesterday" });
    const errors = [];
    for (let i = 0; i < 6; i++) errors.push(await socket.next());
    assert.equal(errors.map((e) => e.code), Array(6).fill("bad_frame"));
    assert.is(errors[2].id, 5);
    assert.is(errors[5].id, 6);
    await assertQuiet(socket);

    socket.send({ op: "credit", id: 9, sub: "s404", records: 1 });
    const unknown = await socket.next();
    assert.equal([unknown.code, unknown.id], ["not_found", 9]);
  } finally {
    await stop(context);
  }
});

test("a flood of bad frames closes the connection with 1008", async () => {
  const context = await start();
  try {
    const socket = await context.open();
    for (let i = 0; i < 101; i++) socket.sendRaw("{");
    // Deno may drop the socket with frames in flight (docs/protocol.md).
    const expected = "Deno" in globalThis ? [1008, 1006] : [1008];
    const code = await socket.closed;
    assert.ok(expected.includes(code), `closed with ${code}`);
  } finally {
    await stop(context);
  }
});

test("group subscriptions rebalance, commit and leave on close", async () => {
  const context = await start(2);
  try {
    const first = await context.open();
    const a = await subscribe(first, { group: "billing", from: "earliest" });
    assert.equal(a.assigned.partitions, [
      { partition: 0, offset: 0 },
      { partition: 1, offset: 0 },
    ]);

    const second = await context.open();
    const b = await subscribe(second, { group: "billing", from: "earliest" });
    assert.equal(b.assigned.partitions, [{ partition: 1, offset: 0 }]);
    const revoked = (await first.nextOp("revoked")).frame;
    assert.equal(revoked.partitions, [0, 1]);
    const reassigned = (await first.nextOp("assigned")).frame;
    assert.equal(reassigned.partitions, [{ partition: 0, offset: 0 }]);

    first.send({ op: "commit", id: "c1", sub: a.sub, partition: 0, offset: 0 });
    assert.equal((await first.next()).op, "committed");
    first.send({ op: "commit", id: "c2", sub: a.sub, partition: 1, offset: 0 });
    const refused = await first.next();
    assert.equal([refused.op, refused.id, refused.code], [
      "error",
      "c2",
      "not_assigned",
    ]);

    await second.close();
    const back = (await first.nextOp("assigned")).frame;
    assert.equal(back.partitions, [
      { partition: 0, offset: 0 },
      { partition: 1, offset: 0 },
    ]);
    assert.is(context.broker.groups.get("billing")!.members.length, 1);
  } finally {
    await stop(context);
  }
});

test("unsubscribe and close end the fetch loops", async () => {
  // Long polls far longer than the test: only cancellation ends them.
  const context = await start(2, 60_000);
  try {
    const socket = await context.open();
    const { sub } = await subscribe(socket, { from: "latest", credit: 5 });
    socket.send({ op: "unsubscribe", id: 2, sub });
    assert.equal((await socket.next()).op, "unsubscribed");
    await fill(context.broker, 0, 1);
    await assertQuiet(socket);

    await subscribe(socket, { from: "latest", credit: 5 });
    for (let i = 0; i < 200 && context.broker.openReads < 2; i++) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    assert.is(context.broker.openReads, 2);
    await socket.close();
    // Closing cancels the long-polls at once rather than at their timeout.
    for (let i = 0; i < 100 && context.broker.openReads > 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.is(context.broker.openReads, 0);
  } finally {
    await stop(context);
  }
});

test("publish past publishBytesInFlightMax gets too_many_requests until acks come", async () => {
  const broker = new FakeBroker();
  await broker.createTopic("orders", { partitions: 1 });
  const app = createApp(broker, {
    log: silentLogger,
    webSocketFor: runtime.webSocketFor,
    webSocket: { publishBytesInFlightMax: 400 }, // two frames of ~160
  });
  const server = await runtime.serve(app, { hostname: "127.0.0.1", port: 0 });
  const held: (() => void)[] = [];
  const publishRecords = broker.publishRecords.bind(broker);
  broker.publishRecords = (topic, records) =>
    new Promise((resolve) =>
      held.push(() => resolve(publishRecords(topic, records)))
    );
  const socket = await connect(`ws://127.0.0.1:${server.port}/ws`);
  try {
    const frame = (id: number) => ({
      op: "publish",
      id,
      topic: "orders",
      records: [{ value: "x".repeat(100) }],
    });
    socket.send(frame(1));
    socket.send(frame(2));
    socket.send(frame(3));
    const refused = await socket.next();
    assert.is(refused.op, "error");
    assert.is(refused.id, 3);
    assert.is(refused.code, "too_many_requests");

    while (held.length < 2) await new Promise((r) => setTimeout(r, 5));
    for (const release of held.splice(0)) release();
    assert.is((await socket.next()).op, "ack");
    assert.is((await socket.next()).op, "ack");
    socket.send(frame(4));
    while (held.length < 1) await new Promise((r) => setTimeout(r, 5));
    held.splice(0)[0]();
    const ack = await socket.next();
    assert.is(ack.op, "ack");
    assert.is(ack.id, 4);
  } finally {
    await socket.close();
    await server.close();
  }
});

test.run();
