import { suite } from "uvu";
import * as assert from "uvu/assert";
import type { WSContext, WSEvents } from "hono/ws";
import { createWebSocketRoute } from "../../src/http/websocket.ts";
import { encodeBatch } from "../../src/log/record_batch.ts";
import { silentLogger } from "../../src/logger.ts";
import type { UpgradeWebSocket } from "../../src/runtime/types.ts";
import { FakeBroker } from "./_fake_broker.ts";

// Sessions driven in-process through a fake socket whose outgoing buffer
// the test controls.
const test = suite("websocket_flow");

interface FakeSocket {
  frames: Record<string, unknown>[];
  raw: { bufferedAmount: number };
  events: WSEvents;
  ws: WSContext;
  send(frame: Record<string, unknown>): void;
}

function open(
  broker: FakeBroker,
  options: { bufferedBytesMax: number; fetchWaitMs?: number },
): FakeSocket {
  let createEvents: ((c: unknown) => WSEvents) | undefined;
  const upgrade: UpgradeWebSocket = (create) => {
    createEvents = create;
    return () => {};
  };
  createWebSocketRoute(broker, upgrade, {
    log: silentLogger,
    fetchWaitMs: 50,
    drainCheckMs: 1,
    ...options,
  });
  const frames: Record<string, unknown>[] = [];
  const raw = { bufferedAmount: 0 };
  const ws = {
    raw,
    readyState: 1,
    send: (data: string) => frames.push(JSON.parse(data)),
    close: () => {},
  } as unknown as WSContext;
  const events = createEvents!({});
  events.onOpen?.(new Event("open"), ws);
  return {
    frames,
    raw,
    events,
    ws,
    send(frame) {
      events.onMessage?.(
        { data: JSON.stringify(frame) } as unknown as MessageEvent,
        ws,
      );
    },
  };
}

const turns = async (count: number) => {
  for (let i = 0; i < count; i++) {
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
};

async function until(condition: () => boolean) {
  for (let i = 0; i < 500 && !condition(); i++) await turns(1);
  assert.ok(condition(), "condition never held");
}

test("a congested socket pauses fetches until it drains", async () => {
  const broker = new FakeBroker();
  await broker.createTopic("orders");
  for (let i = 0; i < 4; i++) {
    await broker.publish(
      "orders",
      encodeBatch([{
        key: null,
        value: new TextEncoder().encode(`r${i}`),
        headers: [],
        timestamp: 1,
      }]),
    );
  }
  const socket = open(broker, { bufferedBytesMax: 1000 });
  socket.raw.bufferedAmount = 5000;
  socket.send({
    op: "subscribe",
    id: 1,
    topic: "orders",
    from: "earliest",
    credit: 3,
  });
  await until(() => socket.frames.some((f) => f.op === "assigned"));
  await turns(20);
  assert.is(broker.reads, 0);

  socket.raw.bufferedAmount = 0;
  await until(() => socket.frames.some((f) => f.op === "records"));
  const records = socket.frames.filter((f) => f.op === "records")
    .flatMap((f) => f.records as { value: string }[]);
  assert.equal(records.map((r) => r.value), ["r0", "r1", "r2"]);
  socket.events.onClose?.(new Event("close") as CloseEvent, socket.ws);
});

test("close leaves the group and cancels reads", async () => {
  const broker = new FakeBroker();
  await broker.createTopic("orders", { partitions: 2 });
  // Long polls far longer than the test: only cancellation ends them.
  const socket = open(broker, {
    bufferedBytesMax: 1000,
    fetchWaitMs: 60_000,
  });
  socket.send({
    op: "subscribe",
    id: 1,
    topic: "orders",
    group: "g",
    from: "latest",
    credit: 10,
  });
  await until(() => broker.openReads === 2);
  assert.is(broker.groups.get("g")!.members.length, 1);

  socket.events.onClose?.(new Event("close") as CloseEvent, socket.ws);
  assert.is(broker.groups.get("g")!.members.length, 0);
  await until(() => broker.openReads === 0);
});

test.run();
