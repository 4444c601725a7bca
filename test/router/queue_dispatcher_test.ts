import { suite } from "uvu";
import * as assert from "uvu/assert";
import type { QueueDelivery, QueueMemberHandle } from "../../src/broker.ts";
import type { DakgharError } from "../../src/errors.ts";
import { silentLogger } from "../../src/logger.ts";
import type { PartitionClient } from "../../src/router/partition_client.ts";
import { QueueDispatcher } from "../../src/router/queue_dispatcher.ts";

// The dispatcher against fake partitions that keep a toy cursor: offsets
// handed out in order, in flight per member until settled or released.
const test = suite("queue_dispatcher");

const RECORD_BYTES = 10;

interface Sent {
  type: string;
  [field: string]: unknown;
}

class FakePartition {
  readonly topic = "jobs";
  readonly sent: Sent[] = [];
  readonly inFlight = new Map<number, number>(); // offset → member
  next = 0;
  fetching = 0;
  maxConcurrentFetches = 0;
  /** Set by the test: called with every qready the "actor" would send. */
  onReady: () => void = () => {};
  saidNoMore = false;

  constructor(readonly partition: number, public end: number) {}

  append(count: number): void {
    this.end += count;
    if (this.saidNoMore) {
      this.saidNoMore = false;
      this.onReady();
    }
  }

  request(message: Sent): Promise<unknown> {
    this.sent.push(message);
    switch (message.type) {
      case "qfetch":
        return this.#fetch(message);
      case "qsettle": {
        const freed = new Map<number, number>();
        let settled = 0;
        const acks = message.acks as number[];
        for (let i = 0; i < acks.length; i += 3) {
          for (let o = acks[i]; o < acks[i] + acks[i + 1]; o++) {
            const member = this.inFlight.get(o);
            if (member === undefined) continue;
            this.inFlight.delete(o);
            settled++;
            freed.set(member, (freed.get(member) ?? 0) + 1);
          }
        }
        return Promise.resolve({
          type: "qsettled",
          settled,
          refused: [],
          freed: [...freed].flatMap(([m, n]) => [m, n, n * RECORD_BYTES]),
        });
      }
      case "qrelease":
        for (const [offset, member] of this.inFlight) {
          if (member === message.member) this.inFlight.delete(offset);
        }
        return Promise.resolve({
          type: "qsettled",
          settled: 0,
          refused: [],
          freed: [],
        });
      default:
        return Promise.reject(new Error(`unexpected ${message.type}`));
    }
  }

  async #fetch(message: Sent): Promise<unknown> {
    this.fetching++;
    this.maxConcurrentFetches = Math.max(
      this.maxConcurrentFetches,
      this.fetching,
    );
    await new Promise((resolve) => setTimeout(resolve, 0));
    this.fetching--;
    const count = Math.min(message.maxRecords as number, this.end - this.next);
    for (let i = 0; i < count; i++) {
      this.inFlight.set(this.next + i, message.member as number);
    }
    const first = this.next;
    this.next += count;
    const more = this.next < this.end;
    if (!more) this.saidNoMore = true;
    return {
      type: "deliveries",
      bytes: new Uint8Array(count * RECORD_BYTES),
      records: count,
      redelivered: [first],
      more,
    };
  }
}

function setup(partitionCount: number, backlog: number) {
  const partitions = Array.from(
    { length: partitionCount },
    (_, p) => new FakePartition(p, backlog),
  );
  const dispatcher = new QueueDispatcher({
    group: "workers",
    topic: "jobs",
    partitions: () => partitions as unknown as PartitionClient[],
    log: silentLogger,
  });
  for (const p of partitions) p.onReady = () => dispatcher.ready(p.partition);
  return { partitions, dispatcher };
}

function member(id: string) {
  const deliveries: QueueDelivery[] = [];
  const handle: QueueMemberHandle = {
    id,
    deliver: (delivery) => deliveries.push(delivery),
  };
  const records = () => deliveries.reduce((n, d) => n + d.records, 0);
  return { handle, deliveries, records };
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 5));

async function eventually(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (check()) return;
    await settle();
  }
  assert.unreachable(`never happened: ${what}`);
}

test("join() keeps 20 members on 4 partitions busy, one fetch per partition at a time", async () => {
  const { partitions, dispatcher } = setup(4, 1000);
  const members = Array.from({ length: 20 }, (_, i) => member(`m${i}`));
  for (const m of members) {
    dispatcher.join(m.handle, { prefetchRecords: 10 });
  }
  await eventually(
    () => members.every((m) => m.records() >= 5),
    "every member holds work",
  );
  await settle();
  for (const m of members) assert.ok(m.records() <= 10, "within prefetch");
  for (const p of partitions) {
    assert.is(p.maxConcurrentFetches, 1);
  }
  dispatcher.close();
});

test("join() never hands a member more than its prefetch; settle() frees room", async () => {
  const { partitions, dispatcher } = setup(1, 100);
  const m = member("a");
  dispatcher.join(m.handle, { prefetchRecords: 8 });
  await eventually(() => m.records() === 8, "first prefetch");
  await settle();
  assert.is(m.records(), 8);

  // Ack the first four as one run: the fake sees one triple.
  const result = await dispatcher.settle(
    [0, 1, 2, 3].map((offset) => ({
      partition: 0,
      offset,
      attempt: 1,
      action: "ack" as const,
    })),
  );
  assert.equal(result, { settled: 4, refused: [] });
  const qsettle = partitions[0].sent.find((s) => s.type === "qsettle")!;
  assert.equal(qsettle.acks, [0, 4, 1]);

  // A range entry continues the run of the entries before it.
  const ranged = await dispatcher.settle([
    { partition: 0, offset: 4, attempt: 1, action: "ack" },
    { partition: 0, offset: 5, attempt: 1, action: "ack", count: 2 },
  ]);
  assert.is(ranged.settled, 3);
  const second = partitions[0].sent.filter((s) => s.type === "qsettle")[1];
  assert.equal(second.acks, [4, 3, 1]);
  await eventually(() => m.records() === 15, "room refilled");
  await settle();
  assert.is(partitions[0].inFlight.size, 8);
  dispatcher.close();
});

test("receive() waits for a partition that said no more until qready, and stops at maxRecords", async () => {
  const { partitions, dispatcher } = setup(2, 0);
  const waiting = dispatcher.receive({
    maxRecords: 3,
    maxBytes: 1 << 20,
    maxWaitMs: 5000,
  });
  await settle();
  partitions[1].append(5);
  const deliveries = await waiting;
  assert.is(deliveries.length, 1);
  assert.is(deliveries[0].partition, 1);
  assert.is(deliveries[0].records, 3);
  assert.is(
    partitions[1].sent.filter((s) => s.type === "qfetch").at(-1)!.member,
    0,
  );

  const empty = await dispatcher.receive({
    maxRecords: 3,
    maxBytes: 1 << 20,
    maxWaitMs: 0,
  });
  assert.is(empty.reduce((n, d) => n + d.records, 0), 2);
  dispatcher.close();
});

test("receive() ends empty when its signal aborts", async () => {
  const { dispatcher } = setup(1, 0);
  const abort = new AbortController();
  const waiting = dispatcher.receive({
    maxRecords: 1,
    maxBytes: 1 << 20,
    maxWaitMs: 60_000,
    signal: abort.signal,
  });
  await settle();
  abort.abort();
  assert.equal(await waiting, []);
  dispatcher.close();
});

test("receive() refuses maxRecords outside 1..1000", async () => {
  const { dispatcher } = setup(1, 0);
  try {
    await dispatcher.receive({ maxRecords: 0, maxBytes: 1, maxWaitMs: 0 });
    assert.unreachable("accepted");
  } catch (error) {
    assert.is((error as DakgharError).code, "bad_request");
  }
});

test("leave() releases the member on every partition and its share goes to the others", async () => {
  const { partitions, dispatcher } = setup(2, 4);
  const a = member("a");
  dispatcher.join(a.handle, { prefetchRecords: 100 });
  await eventually(() => a.records() === 8, "a holds everything");
  dispatcher.leave("a");
  for (const p of partitions) {
    const release = p.sent.find((s) => s.type === "qrelease");
    assert.ok(release, `partition ${p.partition} released`);
    assert.is(release!.member, 1);
  }
  dispatcher.close();
});

test("join() with a member id already present replaces it under a new number", () => {
  const { partitions, dispatcher } = setup(1, 0);
  const first = member("a");
  const second = member("a");
  dispatcher.join(first.handle);
  dispatcher.join(second.handle);
  assert.is(dispatcher.size, 1);
  assert.is(
    partitions[0].sent.find((s) => s.type === "qrelease")!.member,
    1,
  );
  dispatcher.leave("a", first.handle); // stale handle: no-op
  assert.is(dispatcher.size, 1);
  dispatcher.close();
});

test("restarted() gives members back the prefetch held on that partition", async () => {
  const { partitions, dispatcher } = setup(1, 10);
  const m = member("a");
  dispatcher.join(m.handle, { prefetchRecords: 4 });
  await eventually(() => m.records() === 4, "first prefetch");
  // The actor lost its in-flight records; it would deliver them again.
  partitions[0].inFlight.clear();
  partitions[0].next = 0;
  dispatcher.restarted(0);
  await eventually(() => m.records() === 8, "delivered again");
  dispatcher.close();
});

test("settle() refuses a partition the topic does not have", async () => {
  const { dispatcher } = setup(1, 0);
  const result = await dispatcher.settle([
    { partition: 3, offset: 0, attempt: 1, action: "ack" },
  ]);
  assert.equal(result, {
    settled: 0,
    refused: [{
      partition: 3,
      offset: 0,
      attempt: 1,
      code: "unknown_partition",
    }],
  });
});

test.run();
