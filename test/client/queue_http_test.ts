import { suite } from "uvu";
import * as assert from "uvu/assert";
import { DakgharClient } from "../../src/client/client.ts";
import { DakgharClientError } from "../../src/client/errors.ts";
import { createApp } from "../../src/http/app.ts";
import { silentLogger } from "../../src/logger.ts";
import { FakeBroker } from "../http/_fake_broker.ts";

const test = suite("DakgharClient queues over HTTP");

/**
 * The real HTTP front end on the in-memory FakeBroker, called through the
 * client's `fetch` option: no sockets.
 */
async function setup() {
  const broker = new FakeBroker();
  await broker.createTopic("jobs", { partitions: 2 });
  const shutdown = new AbortController();
  const app = createApp(broker, {
    log: silentLogger,
    shutdown: shutdown.signal,
  });
  const client = new DakgharClient({
    url: "http://broker.test",
    fetch: (input, init) => Promise.resolve(app.request(input as string, init)),
  });
  return { broker, client };
}

async function expectCode(promise: Promise<unknown>, code: string) {
  try {
    await promise;
  } catch (error) {
    assert.instance(error, DakgharClientError);
    assert.is((error as DakgharClientError).code, code);
    return error as DakgharClientError;
  }
  assert.unreachable(`expected ${code}`);
}

test("createGroup() creates a queue group with settings; deleteGroup() removes it", async () => {
  const { client } = await setup();
  const created = await client.createGroup("mailer", {
    topic: "jobs",
    mode: "queue",
    ackTimeoutMs: 5_000,
    maxDeliveries: 3,
    filter: { tags: ["eu"] },
  });
  assert.is(created.mode, "queue");
  assert.is(created.topic, "jobs");
  assert.equal(created.filter, { tags: ["eu"] });
  assert.is(created.queue?.ackTimeoutMs, 5_000);
  assert.is(created.queue?.maxDeliveries, 3);
  assert.is(created.queue?.deadLetterTopic, "jobs.mailer.dlq");

  await expectCode(
    client.createGroup("mailer", { topic: "jobs", mode: "key_shared" }),
    "group_exists",
  );
  const described = await client.describeGroup("mailer");
  assert.is(described.settings?.mode, "queue");

  await client.deleteGroup("mailer");
  await expectCode(client.deleteGroup("mailer"), "unknown_group");
  await expectCode(
    client.createGroup("x", { topic: "nope", mode: "queue" }),
    "unknown_topic",
  );
});

test("publish() with delayMs answers a delayId; cancelDelayed() cancels it once", async () => {
  const { client } = await setup();
  const [now, later] = await client.publishBatch("jobs", [
    { value: "now", tags: ["eu", "vip"], partition: 0 },
    { value: "later", delayMs: 60_000, partition: 1 },
  ]);
  assert.is(now.offset, 0);
  assert.is(now.delayId, undefined);
  assert.is(later.offset, -1);
  assert.type(later.delayId, "string");
  assert.type(later.dueAt, "number");

  assert.is(await client.cancelDelayed("jobs", later.delayId!), true);
  assert.is(await client.cancelDelayed("jobs", later.delayId!), false);
  await expectCode(client.cancelDelayed("nope", "d1"), "unknown_topic");

  const { records } = await client.read("jobs", 0, { offset: 0 });
  assert.equal(records[0].tags, ["eu", "vip"]);
  assert.equal(records[0].headers, {});
});

test("receive() hands out records with attempts and receipts; ack() settles them", async () => {
  const { broker, client } = await setup();
  await client.createGroup("mailer", { topic: "jobs", mode: "queue" });
  await client.publishBatch("jobs", [
    { value: "a", partition: 0, tags: ["eu"] },
    { value: "b", partition: 1 },
  ]);
  const messages = await client.receive("mailer", { maxRecords: 10 });
  assert.equal(messages.map((m) => m.text()).sort(), ["a", "b"]);
  for (const message of messages) {
    assert.is(message.attempt, 1);
    assert.is(message.group, "mailer");
    assert.is(message.topic, "jobs");
    assert.is(message.receipt, `${message.partition}.${message.offset}.1`);
  }
  assert.equal(messages.find((m) => m.text() === "a")!.tags, ["eu"]);

  await Promise.all(messages.map((m) => m.ack()));
  const settled = broker.queues.settleCalls.flatMap((call) => call.settlements);
  assert.equal(settled.map((s) => s.action), ["ack", "ack"]);
  assert.equal(await client.receive("mailer"), []);
});

test("ack() of a receipt from before a redelivery rejects with stale_receipt", async () => {
  const { broker, client } = await setup();
  await client.createGroup("mailer", { topic: "jobs", mode: "queue" });
  await client.publish("jobs", { value: "a", partition: 0 });
  const [first] = await client.receive("mailer");
  broker.queues.expireAll("mailer");
  const [second] = await client.receive("mailer");
  assert.is(second.attempt, 2);
  assert.is(second.offset, first.offset);

  const error = await expectCode(first.ack(), "stale_receipt");
  assert.is(error?.status, 409);
  await second.ack();
  // A second ack of the same delivery is refused too.
  await expectCode(second.ack(), "stale_receipt");
});

test("nack(), extend() and reject() go to their receipt routes with their fields", async () => {
  const { broker, client } = await setup();
  await client.createGroup("mailer", { topic: "jobs", mode: "queue" });
  await client.publishBatch("jobs", [
    { value: "a", partition: 0 },
    { value: "b", partition: 0 },
    { value: "c", partition: 0 },
  ]);
  const [a, b, c] = await client.receive("mailer");
  await b.extend(60_000);
  await b.ack();
  await a.nack({ delayMs: 250, reason: "busy" });
  await c.reject("malformed");
  const settlements = broker.queues.settleCalls.flatMap((call) =>
    call.settlements
  );
  assert.equal(
    settlements.map(({ action, offset, delayMs, reason }) => ({
      action,
      offset,
      delayMs,
      reason,
    })),
    [
      { action: "extend", offset: 1, delayMs: 60_000, reason: undefined },
      { action: "ack", offset: 1, delayMs: undefined, reason: undefined },
      { action: "nack", offset: 0, delayMs: 250, reason: "busy" },
      { action: "reject", offset: 2, delayMs: undefined, reason: "malformed" },
    ],
  );
  const [again] = await client.receive("mailer");
  assert.is(again.offset, 0);
  assert.is(again.attempt, 2);
});

test("ack() on the client settles many receipts in one request, naming refusals", async () => {
  const { broker, client } = await setup();
  await client.createGroup("mailer", { topic: "jobs", mode: "queue" });
  await client.publishBatch("jobs", [
    { value: "a", partition: 0 },
    { value: "b", partition: 0 },
  ]);
  const [a, b] = await client.receive("mailer");
  await a.ack();
  const calls = broker.queues.settleCalls.length;
  const result = await client.ack("mailer", [a, b.receipt]);
  assert.is(broker.queues.settleCalls.length, calls + 1);
  assert.is(result.settled, 1);
  assert.equal(result.refused.map((r) => [r.receipt, r.code]), [
    [a.receipt, "stale_receipt"],
  ]);
  await expectCode(client.ack("mailer", [a]), "stale_receipt");
});

test("redrive() passes its options and answers the counts", async () => {
  const { broker, client } = await setup();
  await client.createGroup("mailer", { topic: "jobs", mode: "queue" });
  const result = await client.redrive("mailer", {
    toTopic: "jobs",
    filter: { tags: ["eu"] },
    fromStart: true,
  });
  assert.is(result.deadLetterTopic, "jobs.mailer.dlq");
  assert.is(result.redriven, 0);
  assert.equal(broker.queues.redriveCalls.at(-1)?.options, {
    toTopic: "jobs",
    filter: { tags: ["eu"] },
    fromStart: true,
  });
  await expectCode(client.redrive("nope"), "unknown_group");
});

test("receive() on a stream group fails with bad_request", async () => {
  const { client } = await setup();
  await client.createGroup("stream", { topic: "jobs", mode: "stream" });
  await expectCode(client.receive("stream"), "bad_request");
});

test.run();
