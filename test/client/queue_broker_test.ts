import { suite } from "uvu";
import * as assert from "uvu/assert";
import type { DakgharClientError } from "../../src/client/errors.ts";
import type {
  QueueMessage,
  QueueSubscription,
} from "../../src/client/queue_subscription.ts";
import { DakgharClient } from "../../src/client/client.ts";
import { trackedWebSocket, withBroker } from "./_broker.ts";

// The client against a whole broker (router, partition actors, front end)
// on a fresh data directory.
const test = suite("DakgharClient queues on a broker");

/** Takes `count` deliveries; closes the queue after 20 s without them. */
async function take(
  queue: QueueSubscription,
  count: number,
): Promise<QueueMessage[]> {
  const messages: QueueMessage[] = [];
  const guard = setTimeout(() => queue.close(), 20_000);
  try {
    while (messages.length < count) {
      const next = await queue.next();
      if (next.done) break;
      messages.push(next.value);
    }
  } finally {
    clearTimeout(guard);
  }
  return messages;
}

test("subscribe() with mode queue: each record once to one of two members when all ack", async () => {
  await withBroker(async ({ client, newClient }) => {
    await client.createTopic("jobs", { partitions: 2 });
    const values = Array.from({ length: 40 }, (_, n) => `job-${n}`);
    await client.publishBatch("jobs", values.map((value) => ({ value })));
    const other = newClient();
    const first = await client.subscribe({
      topic: "jobs",
      group: "workers",
      mode: "queue",
      prefetch: { records: 5 },
    });
    const second = await other.subscribe({
      topic: "jobs",
      group: "workers",
      mode: "queue",
      prefetch: { records: 5 },
    });
    assert.is(first.mode, "queue");

    const seen: string[] = [];
    const consume = async (queue: QueueSubscription) => {
      for await (const message of queue) {
        seen.push(message.text()!);
        assert.is(message.attempt, 1);
        await message.ack();
        if (seen.length === values.length) {
          await first.close();
          await second.close();
        }
      }
    };
    const guard = setTimeout(() => {
      first.close();
      second.close();
    }, 20_000);
    await Promise.all([consume(first), consume(second)]);
    clearTimeout(guard);
    assert.equal(seen.sort(), [...values].sort());
    await other.close();

    const [progress] = (await client.describeGroup("workers")).queue ?? [];
    assert.ok(progress !== undefined, "queue progress reported");
  });
});

test("nack() redelivers with the attempt raised; a stale ack is refused", async () => {
  await withBroker(async ({ client }) => {
    await client.createTopic("jobs", { partitions: 1 });
    await client.publish("jobs", { value: "retry-me", tags: ["eu"] });
    const queue = await client.subscribe({
      topic: "jobs",
      group: "workers",
      mode: "queue",
    });
    const [first] = await take(queue, 1);
    assert.is(first.attempt, 1);
    assert.equal(first.tags, ["eu"]);
    await first.extend(30_000);
    await first.nack({ delayMs: 0, reason: "not yet" });

    const [second] = await take(queue, 1);
    assert.is(second.offset, first.offset);
    assert.is(second.attempt, 2);
    // The first delivery's receipt is stale now, whatever verb is tried.
    const refused = await first.extend(1000).then(
      () => undefined,
      (error: DakgharClientError) => error,
    );
    assert.is(refused?.code, "stale_receipt");
    await second.ack();
    await queue.close();
  });
});

test("reject() dead-letters the record with its provenance", async () => {
  await withBroker(async ({ client }) => {
    await client.createTopic("jobs", { partitions: 1 });
    await client.createGroup("workers", { topic: "jobs", mode: "queue" });
    await client.publish("jobs", { value: "poison" });
    const queue = await client.subscribe({
      topic: "jobs",
      group: "workers",
      mode: "queue",
    });
    const [message] = await take(queue, 1);
    await message.reject("cannot parse");
    await queue.close();

    const settings = (await client.describeGroup("workers")).settings!;
    const deadLetterTopic = settings.queue!.deadLetterTopic;
    const { records } = await client.read(deadLetterTopic, 0, {
      offset: 0,
      maxWaitMs: 5_000,
    });
    assert.is(records.length, 1);
    assert.is(records[0].text(), "poison");
    assert.is(records[0].headers["dakghar.dlq.reason"], "rejected");
    assert.is(records[0].headers["dakghar.dlq.error"], "cannot parse");
    assert.is(records[0].headers["dakghar.dlq.topic"], "jobs");
  });
});

test("receive() over HTTP and ack() by receipt; the acked record is not received again", async () => {
  await withBroker(async ({ client }) => {
    await client.createTopic("jobs", { partitions: 1 });
    await client.createGroup("edge", { topic: "jobs", mode: "queue" });
    await client.publishBatch("jobs", [{ value: "a" }, { value: "b" }]);
    const messages = await client.receive("edge", {
      maxRecords: 10,
      maxWaitMs: 5_000,
    });
    assert.equal(messages.map((m) => m.text()), ["a", "b"]);
    await messages[0].ack();
    await messages[1].nack({ delayMs: 0 });
    const again = await client.receive("edge", {
      maxRecords: 10,
      maxWaitMs: 5_000,
    });
    assert.equal(again.map((m) => [m.text(), m.attempt]), [["b", 2]]);
    const stale = await messages[1].ack().then(
      () => undefined,
      (error: DakgharClientError) => error,
    );
    assert.is(stale?.code, "stale_receipt");
    await again[0].ack();
  });
});

test("subscribe() rejoins after its socket drops; the old delivery's ack is refused as stale", async () => {
  await withBroker(async ({ client, running }) => {
    await client.createTopic("jobs", { partitions: 1 });
    await client.publish("jobs", { value: "a" });
    const sockets = trackedWebSocket();
    const member = new DakgharClient({
      url: running.url,
      WebSocket: sockets.WebSocket,
    });
    const events: string[] = [];
    const queue = await member.subscribe({
      topic: "jobs",
      group: "workers",
      mode: "queue",
      reconnect: { initialDelayMs: 10, maxDelayMs: 50 },
      onEvent: (event) => events.push(event.type),
    });
    const [first] = await take(queue, 1);
    sockets.opened[0].close();

    // Released at the drop, the record comes back to the rejoined member.
    const [again] = await take(queue, 1);
    assert.is(again.offset, first.offset);
    assert.is(again.attempt, 2);
    const stale = await first.ack().then(
      () => undefined,
      (error: DakgharClientError) => error,
    );
    assert.is(stale?.code, "stale_receipt");
    await again.ack();
    assert.equal(events, ["disconnected", "reconnected"]);
    await member.close();
  });
});

test("publishBatch() over the WebSocket carries tags and delays; cancelDelayed() cancels", async () => {
  await withBroker(async ({ client }) => {
    await client.createTopic("jobs", { partitions: 1 });
    await client.connect();
    const tagged = await client.publishBatch("jobs", [
      { value: "a", tags: ["eu"] },
      { value: "b" },
    ]);
    assert.equal(tagged.map((p) => p.offset), [0, 1]);
    const [delayed] = await client.publishBatch("jobs", [
      { value: "later", delayMs: 3_600_000 },
    ]);
    assert.is(delayed.offset, -1);
    assert.type(delayed.delayId, "string");
    assert.is(await client.cancelDelayed("jobs", delayed.delayId!), true);
    assert.is(await client.cancelDelayed("jobs", delayed.delayId!), false);

    const { records } = await client.read("jobs", 0, { offset: 0 });
    assert.equal(records.map((r) => [r.text(), r.tags]), [
      ["a", ["eu"]],
      ["b", []],
    ]);
  });
});

test("subscribe() with a filter receives only the matching records", async () => {
  await withBroker(async ({ client }) => {
    await client.createTopic("jobs", { partitions: 1 });
    await client.publishBatch("jobs", [
      { value: "eu-1", tags: ["eu"] },
      { value: "us-1", tags: ["us"] },
      { value: "eu-order", tags: ["eu"], headers: { type: "order" } },
      { value: "plain" },
      { value: "eu-2", tags: ["eu", "vip"] },
    ]);
    const subscription = await client.subscribe({
      topic: "jobs",
      from: "earliest",
      filter: { tags: ["eu"] },
    });
    const seen: string[] = [];
    const guard = setTimeout(() => subscription.close(), 20_000);
    for await (const message of subscription) {
      seen.push(message.text()!);
      if (seen.length === 3) break;
    }
    clearTimeout(guard);
    assert.equal(seen, ["eu-1", "eu-order", "eu-2"]);
  });
});

test("subscribe() without a mode on a queue group is refused before any delivery counts", async () => {
  await withBroker(async ({ client }) => {
    await client.createTopic("jobs", { partitions: 1 });
    await client.createGroup("once", {
      topic: "jobs",
      mode: "queue",
      maxDeliveries: 1,
    });
    await client.publishBatch("jobs", [{ value: "a" }, { value: "b" }]);
    try {
      await client.subscribe({ topic: "jobs", group: "once" });
      assert.unreachable("a stream subscribe must be refused");
    } catch (error) {
      assert.is((error as DakgharClientError).code, "bad_request");
      assert.is((error as DakgharClientError).context.mode, "queue");
    }
    const queue = await client.subscribe({
      topic: "jobs",
      group: "once",
      mode: "queue",
    });
    const messages = await take(queue, 2);
    assert.equal(messages.map((m) => [m.text(), m.attempt]), [
      ["a", 1],
      ["b", 1],
    ]);
    await Promise.all(messages.map((m) => m.ack()));
    await queue.close();
  });
});

test.run();
