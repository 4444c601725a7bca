import { suite } from "uvu";
import * as assert from "uvu/assert";
import { DakgharClient } from "../../src/client/client.ts";
import { DakgharClientError } from "../../src/client/errors.ts";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { silentLogger } from "../../src/logger.ts";
import { startBroker } from "../../src/server.ts";
import {
  take,
  trackedWebSocket,
  WebSocketImpl,
  withBroker,
} from "./_broker.ts";

const test = suite("DakgharClient");

async function rejection(
  promise: Promise<unknown>,
): Promise<DakgharClientError> {
  try {
    await promise;
  } catch (error) {
    assert.instance(error, DakgharClientError);
    return error as DakgharClientError;
  }
  throw new Error("expected a rejection");
}

test("publish() and publishBatch() over HTTP land where read() finds them", async () => {
  await withBroker(async ({ client }) => {
    await client.createTopic("orders", { partitions: 2 });
    const single = await client.publish("orders", {
      key: "c-1",
      value: "hello",
      partition: 1,
      headers: { trace: "abc" },
    });
    assert.equal(single, { partition: 1, offset: 0 });

    const bytes = new Uint8Array([0, 255, 1, 128]);
    const positions = await client.publishBatch("orders", [
      { value: { total: 12.5 }, partition: 0 },
      { value: bytes, key: new Uint8Array([7, 8]), partition: 0 },
      { value: null, partition: 0 },
    ]);
    assert.equal(positions, [
      { partition: 0, offset: 0 },
      { partition: 0, offset: 1 },
      { partition: 0, offset: 2 },
    ]);

    const read = await client.read("orders", 0, { offset: 0 });
    assert.is(read.nextOffset, 3);
    assert.is(read.highWatermark, 3);
    assert.is(read.logStartOffset, 0);
    assert.equal(read.records.map((r) => r.offset), [0, 1, 2]);
    assert.equal(read.records[0].json(), { total: 12.5 });
    assert.equal([...read.records[1].value!], [...bytes]);
    assert.equal([...read.records[1].keyBytes!], [7, 8]);
    assert.is(read.records[2].value, null);
    assert.is(read.records[2].text(), null);

    const other = await client.read("orders", 1, { maxRecords: 1 });
    assert.is(other.records[0].key, "c-1");
    assert.is(other.records[0].text(), "hello");
    assert.equal(other.records[0].headers, { trace: "abc" });
    assert.is(other.records[0].topic, "orders");
    assert.is(other.records[0].partition, 1);
  });
});

test("publishBatch() over the WebSocket sends batches and JSON records", async () => {
  await withBroker(async ({ client }) => {
    await client.createTopic("orders", { partitions: 3 });
    await client.connect();

    // One key: one pre-framed batch in a msgpack frame.
    const sameKey = await client.publishBatch("orders", [
      { key: "c-42", value: "a" },
      { key: "c-42", value: new Uint8Array([1, 2]) },
      { key: "c-42", value: { n: 3 }, headers: { h: "v" } },
    ]);
    // murmur2 of c-42 modulo 3 is partition 0 (docs/protocol.md).
    assert.equal(sameKey, [
      { partition: 0, offset: 0 },
      { partition: 0, offset: 1 },
      { partition: 0, offset: 2 },
    ]);

    // Different keys: JSON records, placed one by one.
    const mixed = await client.publishBatch("orders", [
      { key: "c-42", value: "d" },
      { value: "e", partition: 2 },
    ]);
    assert.equal(mixed, [{ partition: 0, offset: 3 }, {
      partition: 2,
      offset: 0,
    }]);

    const explicit = await client.publish("orders", {
      value: "f",
      partition: 1,
    });
    assert.equal(explicit, { partition: 1, offset: 0 });

    const read = await client.read("orders", 0);
    assert.equal(read.records.map((r) => r.key), [
      "c-42",
      "c-42",
      "c-42",
      "c-42",
    ]);
    assert.equal(read.records.map((r) => r.offset), [0, 1, 2, 3]);
    assert.is(read.records[0].text(), "a");
    assert.equal([...read.records[1].value!], [1, 2]);
    assert.equal(read.records[2].json(), { n: 3 });
    assert.equal(read.records[2].headers, { h: "v" });
    assert.is(read.records[3].text(), "d");
  });
});

test("publish() over the WebSocket opens a new socket after one drops", async () => {
  await withBroker(async ({ client, running }) => {
    await client.createTopic("orders");
    const sockets = trackedWebSocket();
    const producer = new DakgharClient({
      url: running.url,
      WebSocket: sockets.WebSocket,
    });
    await producer.connect();
    assert.equal(await producer.publish("orders", { value: "a" }), {
      partition: 0,
      offset: 0,
    });
    sockets.opened[0].close();
    // Give the close a moment to land, so the next publish sees it.
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(await producer.publish("orders", { value: "b" }), {
      partition: 0,
      offset: 1,
    });
    assert.is(sockets.opened.length, 2);
    await producer.close();
  });
});

test("createTopic() and the admin calls describe topics and groups", async () => {
  await withBroker(async ({ client }) => {
    const created = await client.createTopic("orders", {
      partitions: 2,
      retentionMs: 86_400_000,
    });
    assert.is(created.name, "orders");
    assert.is(created.config.partitions, 2);
    assert.is(created.config.retentionMs, 86_400_000);

    assert.equal((await client.listTopics()).map((t) => t.name), ["orders"]);
    await client.publish("orders", { value: "x", partition: 1 });
    const described = await client.describeTopic("orders");
    assert.equal(
      described.partitions.map((p) => [p.partition, p.logEndOffset]),
      [[0, 0], [1, 1]],
    );

    const subscription = await client.subscribe({
      topic: "orders",
      group: "billing",
      from: "earliest",
    });
    const [message] = await takeOne(subscription);
    await message.commit();
    const groups = await client.listGroups();
    assert.equal(groups.map((g) => [g.name, g.members]), [["billing", 1]]);
    const group = await client.describeGroup("billing");
    const partition = group.partitions.find((p) => p.partition === 1);
    assert.is(partition?.committedOffset, 1);
    await subscription.close();

    await client.deleteTopic("orders");
    assert.equal(await client.listTopics(), []);
  });
});

async function takeOne(
  subscription: Awaited<ReturnType<DakgharClient["subscribe"]>>,
) {
  const result = await subscription.next();
  assert.not.ok(result.done);
  return [result.value!];
}

test("DakgharClientError carries the broker's code over HTTP and WebSocket", async () => {
  await withBroker(async ({ client, running }) => {
    await client.createTopic("orders");

    const exists = await rejection(client.createTopic("orders"));
    assert.is(exists.code, "topic_exists");
    assert.is(exists.status, 409);

    const name = await rejection(client.createTopic("no/slash"));
    assert.is(name.code, "invalid_topic_name");

    assert.is(
      (await rejection(client.describeTopic("nope"))).code,
      "unknown_topic",
    );
    assert.is(
      (await rejection(client.describeGroup("nope"))).code,
      "unknown_group",
    );
    assert.is(
      (await rejection(client.read("orders", 0, { offset: 5 }))).code,
      "offset_out_of_range",
    );
    assert.is(
      (await rejection(client.publish("nope", { value: 1 }))).code,
      "unknown_topic",
    );

    const subscribe = await rejection(
      client.subscribe({ topic: "nope", group: "g" }),
    );
    assert.is(subscribe.code, "unknown_topic");
    assert.is(subscribe.status, 404);

    await client.connect();
    const viaSocket = await rejection(
      client.publish("nope", { value: 1 }, { via: "websocket" }),
    );
    assert.is(viaSocket.code, "unknown_topic");

    const offline = new DakgharClient({
      url: "http://127.0.0.1:1",
      WebSocket: WebSocketImpl,
    });
    assert.is((await rejection(offline.listTopics())).code, "network_error");
    assert.ok(running.port > 0);
  });
});

test("DakgharClient with a token passes the broker's auth", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "dakghar-client-"));
  const running = await startBroker({
    dataDir,
    port: 0,
    token: "secret",
    logger: silentLogger,
  });
  const client = new DakgharClient({
    url: running.url,
    token: "secret",
    WebSocket: WebSocketImpl,
  });
  try {
    await client.createTopic("orders");
    await client.connect();
    await client.publish("orders", { value: "a" });
    const subscription = await client.subscribe({
      topic: "orders",
      from: "earliest",
    });
    const [message] = await take(subscription, 1);
    assert.is(message.text(), "a");

    const stranger = new DakgharClient({
      url: running.url,
      WebSocket: WebSocketImpl,
    });
    const denied = await rejection(stranger.listTopics());
    assert.is(denied.code, "unauthorized");
    assert.is(denied.status, 401);
  } finally {
    await client.close();
    await running.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test("publish() of a value JSON cannot encode fails with invalid_argument", async () => {
  await withBroker(async ({ client }) => {
    await client.createTopic("orders");
    const error = await rejection(client.publish("orders", { value: 1n }));
    assert.is(error.code, "invalid_argument");
  });
});

test.run();
