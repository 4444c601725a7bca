import { suite } from "uvu";
import * as assert from "uvu/assert";
import { createApp } from "../../src/http/app.ts";
import { encodeBatch } from "../../src/log/record_batch.ts";
import { silentLogger } from "../../src/logger.ts";
import { runtime } from "../../src/runtime/mod.ts";
import type { Server } from "../../src/runtime/types.ts";
import { FakeBroker } from "./_fake_broker.ts";
import { connect, type Frame, type TestSocket } from "./_ws_client.ts";

// Subscriptions whose position leaves the log, and subscribes that fail.
const test = suite("websocket_reset");
const utf8 = (text: string) => new TextEncoder().encode(text);

interface Context {
  broker: FakeBroker;
  server: Server;
  socket: TestSocket;
}

async function start(partitions = 1): Promise<Context> {
  const broker = new FakeBroker();
  await broker.createTopic("orders", { partitions });
  const app = createApp(broker, {
    log: silentLogger,
    webSocketFor: runtime.webSocketFor,
    webSocket: { fetchWaitMs: 500, retryMs: 50 },
  });
  const server = await runtime.serve(app, { hostname: "127.0.0.1", port: 0 });
  const socket = await connect(`ws://127.0.0.1:${server.port}/ws`);
  return { broker, server, socket };
}

async function stop(context: Context): Promise<void> {
  await context.socket.close();
  await context.server.close();
}

async function fill(broker: FakeBroker, count: number) {
  for (let i = 0; i < count; i++) {
    await broker.publish(
      "orders",
      encodeBatch([{
        key: null,
        value: utf8(`v${i}`),
        headers: [],
        timestamp: 1,
      }]),
      { partition: 0 },
    );
  }
}

async function subscribed(socket: TestSocket): Promise<string> {
  const frame = await socket.next();
  assert.is(frame.op, "subscribed", JSON.stringify(frame));
  return frame.sub as string;
}

async function offsetsOf(socket: TestSocket): Promise<number[]> {
  const frame = await socket.next();
  assert.is(frame.op, "records", JSON.stringify(frame));
  return (frame.records as { offset: number }[]).map((r) => r.offset);
}

/** Asserts that nothing but the pong arrives before it. */
async function assertQuiet(socket: TestSocket) {
  socket.send({ op: "ping", id: "quiet" });
  const frame = await socket.next();
  assert.equal([frame.op, frame.id], ["pong", "quiet"], JSON.stringify(frame));
}

function withoutBinary(frame: Frame): Record<string, unknown> {
  const { binary: _, ...rest } = frame;
  return rest;
}

test("subscribe below the log start resets to it and keeps fetching", async () => {
  const context = await start();
  const { broker, socket } = context;
  try {
    await fill(broker, 5);
    broker.deleteRecordsBefore("orders", 0, 3);
    socket.send({
      op: "subscribe",
      id: 1,
      topic: "orders",
      from: { offset: 1 },
      credit: 10,
    });
    const sub = await subscribed(socket);
    assert.equal((await socket.next()).partitions, [
      { partition: 0, offset: 1 },
    ]);
    assert.equal(withoutBinary(await socket.next()), {
      op: "reset",
      sub,
      partition: 0,
      offset: 3,
      previousOffset: 1,
      reason: "below_log_start",
    });
    assert.equal(await offsetsOf(socket), [3, 4]);

    await fill(broker, 1);
    assert.equal(await offsetsOf(socket), [5]);
  } finally {
    await stop(context);
  }
});

test("subscribe beyond the log end resets to it and keeps fetching", async () => {
  const context = await start();
  const { broker, socket } = context;
  try {
    await fill(broker, 2);
    socket.send({
      op: "subscribe",
      id: 1,
      topic: "orders",
      from: { offset: 9 },
      credit: 10,
    });
    const sub = await subscribed(socket);
    assert.is((await socket.next()).op, "assigned");
    assert.equal(withoutBinary(await socket.next()), {
      op: "reset",
      sub,
      partition: 0,
      offset: 2,
      previousOffset: 9,
      reason: "above_log_end",
    });
    await fill(broker, 1);
    assert.equal(await offsetsOf(socket), [2]);
  } finally {
    await stop(context);
  }
});

test("subscribe with a group resets a position that retention deleted", async () => {
  const context = await start();
  const { broker, socket } = context;
  try {
    await fill(broker, 4);
    socket.send({
      op: "subscribe",
      id: 1,
      topic: "orders",
      group: "billing",
      from: "earliest",
    });
    const sub = await subscribed(socket);
    const assigned = await socket.next();
    assert.equal(assigned.partitions, [{ partition: 0, offset: 0 }]);
    socket.send({ op: "commit", id: 2, sub, partition: 0, offset: 1 });
    assert.is((await socket.next()).op, "committed");

    broker.deleteRecordsBefore("orders", 0, 2);
    socket.send({ op: "credit", sub, records: 10 });
    const reset = await socket.next();
    assert.equal(
      [reset.op, reset.offset, reset.previousOffset, reset.reason],
      ["reset", 2, 0, "below_log_start"],
    );
    assert.equal(await offsetsOf(socket), [2, 3]);
  } finally {
    await stop(context);
  }
});

test("subscribe to a group on an unknown topic answers error alone", async () => {
  const context = await start();
  const { broker, socket } = context;
  try {
    socket.send({ op: "subscribe", id: 1, topic: "nope", group: "billing" });
    const error = await socket.next();
    assert.equal([error.op, error.id, error.code], [
      "error",
      1,
      "unknown_topic",
    ]);
    await assertQuiet(socket);
    socket.send({ op: "credit", id: 2, sub: "s1", records: 1 });
    const unknown = await socket.next();
    assert.equal([unknown.op, unknown.code], ["error", "not_found"]);
    assert.is(broker.groups.get("billing"), undefined);
  } finally {
    await stop(context);
  }
});

test("subscribe with a bad group name answers error alone", async () => {
  const context = await start();
  const { socket } = context;
  try {
    socket.send({ op: "subscribe", id: 1, topic: "orders", group: "../x" });
    const error = await socket.next();
    assert.equal([error.op, error.id, error.code], ["error", 1, "bad_request"]);
    await assertQuiet(socket);

    // The failed subscribe left nothing behind: the next one is s2 alone.
    socket.send({ op: "subscribe", id: 3, topic: "orders", group: "ok" });
    assert.is(await subscribed(socket), "s2");
    assert.is((await socket.next()).op, "assigned");
    socket.send({ op: "unsubscribe", id: 4, sub: "s1" });
    assert.is((await socket.next()).code, "not_found");
  } finally {
    await stop(context);
  }
});

test.run();
