import { suite } from "uvu";
import * as assert from "uvu/assert";
import process from "node:process";
import { DakgharClient } from "../../src/client/client.ts";
import { DakgharClientError } from "../../src/client/errors.ts";
import type {
  QueueMessage,
  QueueSubscription,
} from "../../src/client/queue_subscription.ts";
import { FakeQueueServer, type Frame } from "./_fake_queue_socket.ts";

const test = suite("QueueSubscription");

async function subscribed(
  options: Record<string, unknown> = {},
): Promise<{ server: FakeQueueServer; queue: QueueSubscription }> {
  const server = new FakeQueueServer();
  const client = new DakgharClient({
    url: "http://127.0.0.1:1",
    WebSocket: server.WebSocket,
  });
  const queue = await client.subscribe({
    topic: "jobs",
    group: "workers",
    mode: "queue",
    reconnect: { initialDelayMs: 1, maxDelayMs: 1 },
    ...options,
  });
  return { server, queue };
}

async function take(
  queue: QueueSubscription,
  count: number,
): Promise<QueueMessage[]> {
  const messages: QueueMessage[] = [];
  while (messages.length < count) {
    const next = await queue.next();
    if (next.done) break;
    messages.push(next.value);
  }
  return messages;
}

/** Refuses every settlement of these offsets, whatever the action. */
function refusing(offsets: number[]) {
  return (frame: Frame) => {
    const refused: Frame[] = [];
    for (const [partition, offset, records, attempt] of frame.acks ?? []) {
      for (let at = offset; at < offset + records; at++) {
        if (offsets.includes(at)) {
          refused.push({
            partition,
            offset: at,
            attempt,
            code: "stale_receipt",
          });
        }
      }
    }
    for (const list of [frame.nacks, frame.rejects, frame.extends]) {
      for (const [partition, offset, attempt] of list ?? []) {
        if (offsets.includes(offset)) {
          refused.push({ partition, offset, attempt, code: "stale_receipt" });
        }
      }
    }
    return refused;
  };
}

/** Counts unhandled rejections while `body` runs and a few turns after. */
async function unhandledRejections(body: () => Promise<void>): Promise<number> {
  let seen = 0;
  const onNode = () => seen++;
  const onDeno = (event: Event) => {
    event.preventDefault();
    seen++;
  };
  const deno = "Deno" in globalThis;
  if (deno) globalThis.addEventListener("unhandledrejection", onDeno);
  else process.on("unhandledRejection", onNode);
  try {
    await body();
    for (let turn = 0; turn < 3; turn++) {
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
  } finally {
    if (deno) globalThis.removeEventListener("unhandledrejection", onDeno);
    else process.off("unhandledRejection", onNode);
  }
  return seen;
}

test("subscribe() with a mode joins as a queue member with prefetch and filter", async () => {
  const { server, queue } = await subscribed({
    prefetch: { records: 10 },
    filter: { tags: ["eu"] },
  });
  const [frame] = server.sent("subscribe");
  assert.is(frame.topic, "jobs");
  assert.is(frame.group, "workers");
  assert.is(frame.mode, "queue");
  assert.is(frame.format, "batch");
  assert.equal(frame.prefetch, { records: 10 });
  assert.equal(frame.filter, { tags: ["eu"] });
  assert.is(frame.credit, undefined);
  assert.is(queue.memberId, "member-1");
  assert.is(queue.mode, "queue");
  await queue.close();
});

test("next() yields deliveries with their attempts and tags", async () => {
  const { server, queue } = await subscribed();
  server.deliver(1, 40, ["a", "b", "c"], { 41: 3 });
  const messages = await take(queue, 3);
  assert.equal(messages.map((m) => m.text()), ["a", "b", "c"]);
  assert.equal(messages.map((m) => m.offset), [40, 41, 42]);
  assert.equal(messages.map((m) => m.attempt), [1, 3, 1]);
  assert.equal(messages.map((m) => m.partition), [1, 1, 1]);
  assert.equal(messages[0].tags, ["t"]);
  assert.equal(messages[0].headers, {});
  await queue.close();
});

test("ack() of one task's messages leaves as one settle frame of ranges", async () => {
  const { server, queue } = await subscribed();
  server.deliver(0, 0, ["a", "b", "c"]);
  server.deliver(1, 7, ["d", "e"], { 8: 2 });
  const messages = await take(queue, 5);
  await Promise.all(messages.map((m) => m.ack()));
  const frames = server.sent("settle");
  assert.is(frames.length, 1);
  assert.equal(frames[0].acks, [[0, 0, 3, 1], [1, 7, 1, 1], [1, 8, 1, 2]]);
  assert.is(frames[0].sub, server.socket.sub);
  assert.type(frames[0].id, "number");
  await queue.close();
});

test("nack(), reject() and extend() carry their delay, reason and time", async () => {
  const { server, queue } = await subscribed();
  server.deliver(2, 10, ["a", "b", "c", "d"], { 12: 4 });
  const [a, b, c, d] = await take(queue, 4);
  await Promise.all([
    a.nack({ delayMs: 500, reason: "busy" }),
    b.nack(),
    c.reject("malformed"),
    d.extend(60_000),
  ]);
  const [frame] = server.sent("settle");
  assert.equal(frame.nacks, [[2, 10, 1, 500, "busy"], [2, 11, 1, null]]);
  assert.equal(frame.rejects, [[2, 12, 4, "malformed"]]);
  assert.equal(frame.extends, [[2, 13, 1, 60_000]]);
  assert.is(frame.acks, undefined);
  await queue.close();
});

test("ack() rejects with stale_receipt when the broker refuses it", async () => {
  const { server, queue } = await subscribed();
  server.refuse = refusing([1]);
  server.deliver(0, 0, ["a", "b", "c"]);
  const [a, b, c] = await take(queue, 3);
  const outcomes = await Promise.allSettled([a.ack(), b.ack(), c.ack()]);
  assert.equal(outcomes.map((o) => o.status), [
    "fulfilled",
    "rejected",
    "fulfilled",
  ]);
  const error = (outcomes[1] as PromiseRejectedResult).reason;
  assert.instance(error, DakgharClientError);
  assert.is(error.code, "stale_receipt");
  assert.is(error.status, 409);
  assert.equal(error.context, { partition: 0, offset: 1, attempt: 1 });
  await queue.close();
});

test("ack() whose promise is ignored raises no unhandled rejection when refused", async () => {
  const { server, queue } = await subscribed();
  server.refuse = refusing([0, 1]);
  server.deliver(0, 0, ["a", "b"]);
  const [a, b] = await take(queue, 2);
  const unhandled = await unhandledRejections(async () => {
    a.ack();
    b.nack({ delayMs: 1 });
    // A second settlement of one message is refused without the wire.
    a.ack();
    await queue.flush();
  });
  assert.is(unhandled, 0);
  assert.is(server.sent("settle").length, 1);
  await queue.close();
});

test("ack() twice on one message is refused locally as stale_receipt", async () => {
  const { server, queue } = await subscribed();
  server.deliver(0, 5, ["a"]);
  const [a] = await take(queue, 1);
  await a.ack();
  try {
    await a.nack();
    assert.unreachable("a second settlement must be refused");
  } catch (error) {
    assert.is((error as DakgharClientError).code, "stale_receipt");
  }
  assert.is(server.sent("settle").length, 1);
  await queue.close();
});

test("extend() and nack() with arguments out of range reject alone with invalid_argument", async () => {
  const { server, queue } = await subscribed();
  server.deliver(0, 0, ["a", "b", "c"]);
  const [a, b, c] = await take(queue, 3);
  const outcomes = await Promise.allSettled([
    a.ack(),
    b.extend(1.5),
    c.nack({ delayMs: Number.NaN }),
  ]);
  assert.equal(outcomes.map((o) => o.status), [
    "fulfilled",
    "rejected",
    "rejected",
  ]);
  for (const outcome of outcomes.slice(1)) {
    const error = (outcome as PromiseRejectedResult).reason;
    assert.is((error as DakgharClientError).code, "invalid_argument");
  }
  // Nothing bad reached the wire; the refused ones may still be settled.
  assert.equal(server.sent("settle").map((frame) => frame.acks), [
    [[0, 0, 1, 1]],
  ]);
  await Promise.all([b.ack(), c.ack()]);
  await queue.close();
});

test("ack() leaves at once when settleBatchMax settlements are queued", async () => {
  const { server, queue } = await subscribed({ settleBatchMax: 2 });
  server.deliver(0, 0, ["a", "b", "c"]);
  const messages = await take(queue, 3);
  const acks = messages.map((m) => m.ack());
  // The first two left at once; the third waits for the end of the task.
  assert.is(server.sent("settle").length, 1);
  await Promise.all(acks);
  const frames = server.sent("settle");
  assert.equal(frames.map((f) => f.acks), [[[0, 0, 2, 1]], [[0, 2, 1, 1]]]);
  await queue.close();
});

test("subscribe() rejoins after the connection drops; earlier deliveries settle on the new one", async () => {
  const events: string[] = [];
  const { server, queue } = await subscribed({
    onEvent: (event: { type: string }) => events.push(event.type),
  });
  server.deliver(0, 0, ["a", "b"]);
  const [a] = await take(queue, 1);
  // "b" is buffered, not yielded: the drop releases it on the broker.
  const first = server.socket;
  first.close();
  await server.waitFor("subscribe", 2);
  assert.is(server.sockets.length, 2);
  assert.is(server.sent("subscribe")[1].memberId, "member-1");
  assert.is(queue.buffered, 0);

  // The broker decides: here it still takes the settlement.
  await a.ack();
  const [frame] = server.sent("settle");
  assert.is(frame.sub, server.socket.sub);
  assert.is.not(frame.sub, first.sub);
  assert.equal(frame.acks, [[0, 0, 1, 1]]);

  server.deliver(0, 1, ["b"], { 1: 2 });
  const [again] = await take(queue, 1);
  assert.is(again.attempt, 2);
  assert.equal(events, ["disconnected", "reconnected"]);
  await queue.close();
});

test("ack() of a delivery from before a reconnect rejects when the broker calls it stale", async () => {
  const { server, queue } = await subscribed();
  server.deliver(0, 0, ["a"]);
  const [a] = await take(queue, 1);
  server.socket.close();
  await server.waitFor("subscribe", 2);
  server.refuse = refusing([0]);
  const error = await a.ack().then(() => undefined, (e) => e);
  assert.is(error?.code, "stale_receipt");
  await queue.close();
});

test("close() sends queued settlements, then unsubscribes", async () => {
  const { server, queue } = await subscribed();
  server.deliver(0, 0, ["a"]);
  const [a] = await take(queue, 1);
  const acked = a.ack();
  await queue.close();
  await acked;
  assert.equal(server.frames.map((f) => f.op), [
    "subscribe",
    "settle",
    "unsubscribe",
  ]);
  const done = await queue.next();
  assert.is(done.done, true);
  const late = await a.extend(10).then(() => undefined, (e) => e);
  assert.is(late?.code, "stale_receipt");
});

test("ack() after the connection dropped without reconnect rejects with connection_closed", async () => {
  const { server, queue } = await subscribed({ reconnect: false });
  server.deliver(0, 0, ["a"]);
  const [a] = await take(queue, 1);
  server.socket.close();
  const error = await queue.next().then(() => undefined, (e) => e);
  assert.is(error?.code, "connection_closed");
  const refused = await a.ack().then(() => undefined, (e) => e);
  assert.is(refused?.code, "connection_closed");
  await queue.close();
});

test("subscribe() without a mode refuses a queue group with bad_request", async () => {
  const server = new FakeQueueServer();
  server.mode = "queue";
  const client = new DakgharClient({
    url: "http://127.0.0.1:1",
    WebSocket: server.WebSocket,
  });
  try {
    await client.subscribe({ topic: "jobs", group: "workers" });
    assert.unreachable("a stream subscription must not join a queue group");
  } catch (error) {
    assert.is((error as DakgharClientError).code, "bad_request");
    assert.is((error as DakgharClientError).context.mode, "queue");
  }
  await client.close();
});

test.run();
