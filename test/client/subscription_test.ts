import { suite } from "uvu";
import * as assert from "uvu/assert";
import type { OutgoingRecord } from "../../src/client/records.ts";
import type { SubscriptionEvent } from "../../src/client/subscription.ts";
import { DakgharClient } from "../../src/client/client.ts";
import {
  offsetsByPartition,
  startTestBroker,
  take,
  trackedWebSocket,
  withBroker,
} from "./_broker.ts";

const test = suite("Subscription");

function numbered(from: number, count: number): OutgoingRecord[] {
  return Array.from({ length: count }, (_, index) => ({
    key: `k-${from + index}`,
    value: `v-${from + index}`,
  }));
}

/** Offsets run from `start` without a gap or a repeat, per partition. */
function assertContiguous(
  byPartition: Map<number, number[]>,
  start = new Map<number, number>(),
): void {
  for (const [partition, offsets] of byPartition) {
    const first = start.get(partition) ?? 0;
    assert.equal(
      offsets,
      offsets.map((_, index) => first + index),
      `partition ${partition}`,
    );
  }
}

test("subscribe() in a group receives everything published", async () => {
  await withBroker(async ({ client }) => {
    await client.createTopic("orders", { partitions: 3 });
    await client.publishBatch("orders", numbered(0, 150));
    const subscription = await client.subscribe({
      topic: "orders",
      group: "email",
      from: "earliest",
      bufferSize: 16,
    });
    await client.publishBatch("orders", numbered(150, 150));

    const messages = await take(subscription, 300);
    assert.is(messages.length, 300);
    assert.equal(
      messages.map((m) => m.text()).sort(),
      numbered(0, 300).map((r) => r.value as string).sort(),
    );
    assertContiguous(offsetsByPartition(messages));
    assert.ok(subscription.bufferedPeak <= 16, `${subscription.bufferedPeak}`);
    await subscription.close();
  });
});

test("subscribe() never buffers more than bufferSize records", async () => {
  await withBroker(async ({ client }) => {
    await client.createTopic("orders", { partitions: 2 });
    await client.publishBatch("orders", numbered(0, 400));
    const subscription = await client.subscribe({
      topic: "orders",
      from: "earliest",
      bufferSize: 10,
    });
    let peak = 0;
    let seen = 0;
    for await (const _message of subscription) {
      peak = Math.max(peak, subscription.buffered);
      // A slow consumer: the broker must wait for credit, not push on.
      if (++seen % 50 === 0) await new Promise((r) => setTimeout(r, 20));
      if (seen === 400) break;
    }
    assert.is(seen, 400);
    assert.ok(peak <= 10, `${peak}`);
    assert.ok(subscription.bufferedPeak <= 10, `${subscription.bufferedPeak}`);
    assert.ok(subscription.bufferedPeak > 0);
  });
});

test("commit() lets a second subscription resume where the first stopped", async () => {
  await withBroker(async ({ client, newClient }) => {
    await client.createTopic("orders", { partitions: 1 });
    await client.publishBatch("orders", numbered(0, 100));

    const first = await client.subscribe({
      topic: "orders",
      group: "billing",
      from: "earliest",
      autoCommit: false,
    });
    const head = await take(first, 40);
    await head[29].commit();
    assert.equal(
      (await client.describeGroup("billing")).partitions[0]
        .committedOffset,
      30,
    );
    await first.commit();
    assert.equal(
      (await client.describeGroup("billing")).partitions[0]
        .committedOffset,
      40,
    );
    await first.close();

    const other = newClient();
    const second = await other.subscribe({
      topic: "orders",
      group: "billing",
      from: "earliest",
    });
    const rest = await take(second, 60);
    assert.equal(
      rest.map((m) => m.offset),
      numbered(40, 60).map((_, i) => 40 + i),
    );
    await second.close(); // commits what it yielded
    assert.equal(
      (await other.describeGroup("billing")).partitions[0]
        .committedOffset,
      100,
    );
    await other.close();
  });
});

test("subscribe() without a group reads from an offset", async () => {
  await withBroker(async ({ client }) => {
    await client.createTopic("orders", { partitions: 2 });
    await client.publishBatch(
      "orders",
      numbered(0, 20).map((r, i) => ({ ...r, partition: i % 2 })),
    );
    const events: SubscriptionEvent[] = [];
    const subscription = await client.subscribe({
      topic: "orders",
      from: { offset: 5 },
      partitions: [1],
      onEvent: (event) => events.push(event),
    });
    const messages = await take(subscription, 5);
    assert.equal(messages.map((m) => [m.partition, m.offset]), [
      [1, 5],
      [1, 6],
      [1, 7],
      [1, 8],
      [1, 9],
    ]);
    assert.equal(events[0], {
      type: "assigned",
      generation: 0,
      partitions: [{ partition: 1, offset: 5 }],
    });
    assert.equal(subscription.positions(), new Map([[1, 10]]));
    await subscription.close();
    assert.ok((await subscription.next()).done);
  });
});

test("seekGroup() and seek() move a live member back; its commits keep the seek", async () => {
  await withBroker(async ({ client }) => {
    await client.createTopic("orders", { partitions: 1 });
    await client.publishBatch("orders", numbered(0, 20));
    const events: SubscriptionEvent[] = [];
    const subscription = await client.subscribe({
      topic: "orders",
      group: "audit",
      from: "earliest",
      bufferSize: 4,
      autoCommit: false,
      onEvent: (event) => events.push(event),
    });
    const first = await take(subscription, 20);
    await first[19].commit();

    const moved = await client.seekGroup("audit", "orders", { offset: 5 });
    assert.equal(moved.partitions, [{ partition: 0, offset: 5 }]);
    const again = await take(subscription, 15);
    assert.equal(
      again.map((m) => m.offset),
      numbered(5, 15).map((_, i) => 5 + i),
    );
    const seeked = events.find((event) => event.type === "seeked");
    assert.equal(seeked, {
      type: "seeked",
      partition: 0,
      offset: 5,
      generation: moved.generation,
    });
    await again[4].commit();
    assert.is(
      (await client.describeGroup("audit")).partitions[0].committedOffset,
      10,
    );

    const rewound = await subscription.seek("earliest");
    assert.equal(rewound.partitions, [{ partition: 0, offset: 0 }]);
    const replay = await take(subscription, 20);
    assert.equal(replay.map((m) => m.offset), numbered(0, 20).map((_, i) => i));
    await subscription.close();
  });
});

test("subscribe() in a group rejoins as the same member after its socket drops", async () => {
  await withBroker(async ({ client, running }) => {
    await client.createTopic("orders", { partitions: 2 });
    await client.publishBatch("orders", numbered(0, 100));
    const sockets = trackedWebSocket();
    const consumer = new DakgharClient({
      url: running.url,
      WebSocket: sockets.WebSocket,
    });
    const events: string[] = [];
    const subscription = await consumer.subscribe({
      topic: "orders",
      group: "email",
      from: "earliest",
      bufferSize: 8,
      autoCommit: false,
      reconnect: { initialDelayMs: 10, maxDelayMs: 50 },
      onEvent: (event) => events.push(event.type),
    });
    const memberId = subscription.memberId;
    assert.type(memberId, "string");
    const before = await take(subscription, 30);
    await before[before.length - 1].commit();

    // The broker holds a dropped member's partitions for its session
    // timeout (45 s): only the same member id gets them back at once.
    sockets.opened[0].close();
    await client.publishBatch("orders", numbered(100, 50));
    const after = await take(subscription, 120);
    const all = [...before, ...after];
    assert.is(all.length, 150);
    assertContiguous(offsetsByPartition(all));
    assert.ok(events.includes("reconnected"), events.join());
    assert.is(subscription.memberId, memberId);
    const group = await client.describeGroup("email");
    assert.equal(group.members.map((m) => m.id), [memberId]);
    await consumer.close();
  });
});

for (const grouped of [true, false]) {
  const label = grouped ? "in a group" : "without a group";
  test(`subscribe() ${label} resumes after a broker restart with no gap and no loss`, async () => {
    await withBroker(async (fixture) => {
      const { client } = fixture;
      await client.createTopic("orders", { partitions: 2 });
      await client.publishBatch("orders", numbered(0, 100));
      const events: string[] = [];
      const subscription = await client.subscribe({
        topic: "orders",
        ...(grouped ? { group: "email" } : {}),
        from: "earliest",
        bufferSize: 8,
        autoCommitIntervalMs: 50,
        reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
        onEvent: (event) => events.push(event.type),
      });
      const before = await take(subscription, 60);

      // Stop the broker under the subscription and start it again on the
      // same data directory and port.
      const port = fixture.running.port;
      await fixture.running.stop();
      fixture.running = await startTestBroker(fixture.dataDir, port);
      await client.publishBatch("orders", numbered(100, 100));

      const after = await take(subscription, 140);
      const all = [...before, ...after];
      assert.is(all.length, 200);
      assert.equal(
        all.map((m) => m.text()).sort(),
        numbered(0, 200).map((r) => r.value as string).sort(),
      );
      assertContiguous(offsetsByPartition(all));
      assert.ok(events.includes("disconnected"), events.join());
      assert.ok(events.includes("reconnected"), events.join());
      await subscription.close();
    });
  });
}

test("subscribe() from latest in a group commits its start, so records published after it are kept", async () => {
  await withBroker(async ({ client }) => {
    await client.createTopic("orders", { partitions: 1 });
    await client.publishBatch("orders", numbered(0, 5));
    const subscription = await client.subscribe({
      topic: "orders",
      group: "late",
      from: "latest",
      autoCommitIntervalMs: 20,
    });
    let committed: number | null | undefined;
    for (let i = 0; i < 200 && committed !== 5; i++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
      committed = (await client.describeGroup("late")).partitions[0]
        ?.committedOffset;
    }
    assert.is(committed, 5);
    await subscription.close();
  });
});

test.run();
