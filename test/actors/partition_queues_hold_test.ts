import { suite } from "uvu";
import * as assert from "uvu/assert";
import {
  PartitionQueues,
  type QueueLog,
} from "../../actors/partition_queues.ts";
import type {
  PartitionMessage,
  QueueCursorConfig,
} from "../../src/envelope.ts";
import { silentLogger } from "../../src/logger.ts";
import { runtime } from "../../src/runtime/mod.ts";
import type { FileSystem } from "../../src/runtime/types.ts";
import { MemoryLog, textRecord } from "../queue/_memory_log.ts";
import { makeTempDir, removeTempDir } from "../router/_temp_dir.ts";

// PartitionQueues in this thread, its messages collected: how a qsettle
// answer waits for the dead letters it made.
const test = suite("partition_queues_hold");

let dir = "";
/** State writes not finished: a dropped group's is not awaited by close(). */
let writing = 0;
const fs: FileSystem = Object.create(runtime.fs);
fs.writeFileAtomicAsync = (path, bytes) => {
  writing++;
  return runtime.fs.writeFileAtomicAsync(path, bytes).finally(() => writing--);
};

test.before.each(() => {
  dir = makeTempDir("queues-hold");
});
test.after.each(async () => {
  await eventually(() => writing === 0, "state writes finished");
  removeTempDir(dir);
});

const config: QueueCursorConfig = {
  mode: "queue",
  from: "earliest",
  ackTimeoutMs: 30_000,
  maxDeliveries: 2,
  backoffInitialMs: 1,
  backoffMaxMs: 1,
  maxUnsettled: 1_000_000,
  filter: null,
};

function setup(settleWaitsMs?: number) {
  const memory = new MemoryLog();
  memory.append([textRecord("a"), textRecord("b"), textRecord("c")]);
  const log = Object.assign(memory, {
    get logEndOffset() {
      return memory.highWatermark;
    },
  }) as MemoryLog & QueueLog;
  const sent: PartitionMessage[] = [];
  const queues = new PartitionQueues({
    fs,
    dir,
    topic: "orders",
    partition: 0,
    log: silentLogger,
    partitionLog: () => log,
    send: (message) => sent.push(message),
    fatal: (error) => {
      throw error;
    },
    settleWaitsMs,
  });
  return { queues, sent };
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function eventually(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (check()) return;
    await pause(5);
  }
  assert.unreachable(`never happened: ${what}`);
}

const answer = (sent: PartitionMessage[], id: number) =>
  sent.find((m) => "id" in m && m.id === id);
const deads = (sent: PartitionMessage[]) =>
  sent.filter((m) => m.type === "qdead") as Extract<
    PartitionMessage,
    { type: "qdead" }
  >[];

async function fetchAll(queues: PartitionQueues, sent: PartitionMessage[]) {
  queues.handle({ type: "qconfig", id: 1, group: "g", config });
  await eventually(() => answer(sent, 1) !== undefined, "configured");
  queues.handle({
    type: "qfetch",
    id: 2,
    group: "g",
    member: 1,
    maxRecords: 10,
    maxBytes: 1 << 20,
  });
}

test("qsettle with a reject is answered after the letter's qdeadDone, not before", async () => {
  const { queues, sent } = setup();
  try {
    await fetchAll(queues, sent);
    queues.handle({
      type: "qsettle",
      id: 3,
      group: "g",
      acks: [0, 1, 1],
      items: [{ offset: 1, attempt: 1, action: "reject", reason: "bad" }],
    });
    assert.is(deads(sent).length, 1);
    // A later settle's answer means the reject's state write finished too.
    queues.handle({
      type: "qsettle",
      id: 5,
      group: "g",
      acks: [2, 1, 1],
      items: [],
    });
    await eventually(() => answer(sent, 5) !== undefined, "plain ack answered");
    assert.is(answer(sent, 3), undefined, "answered before the letter");

    queues.handle({
      type: "qdeadDone",
      id: 6,
      group: "g",
      seq: deads(sent)[0].seq,
    });
    await eventually(() => answer(sent, 3) !== undefined, "reject answered");
    const ids = sent.filter((m) => m.type === "qsettled").map((m) =>
      "id" in m ? m.id : 0
    );
    assert.ok(ids.indexOf(6) < ids.indexOf(3), "after qdeadDone's answer");
    const reply = answer(sent, 3)!;
    assert.ok(reply.type === "qsettled" && reply.settled === 2);
  } finally {
    await queues.close();
  }
});

test("qsettle with a nack at the delivery limit waits for its letter too", async () => {
  const { queues, sent } = setup();
  try {
    await fetchAll(queues, sent);
    queues.handle({
      type: "qsettle",
      id: 3,
      group: "g",
      acks: [],
      items: [{ offset: 0, attempt: 1, action: "nack", delayMs: 0 }],
    });
    await eventually(() => answer(sent, 3) !== undefined, "first nack");
    assert.is(deads(sent).length, 0);
    queues.handle({
      type: "qfetch",
      id: 4,
      group: "g",
      member: 1,
      maxRecords: 10,
      maxBytes: 1 << 20,
    });
    // Deliveries go out once their attempts are written.
    await eventually(() => answer(sent, 4) !== undefined, "second delivery");
    queues.handle({
      type: "qsettle",
      id: 5,
      group: "g",
      acks: [],
      items: [{ offset: 0, attempt: 2, action: "nack" }],
    });
    assert.is(deads(sent).length, 1, "second delivery was the last");
    await pause(20);
    assert.is(answer(sent, 5), undefined);
    queues.handle({
      type: "qdeadDone",
      id: 6,
      group: "g",
      seq: deads(sent)[0].seq,
    });
    await eventually(() => answer(sent, 5) !== undefined, "answered");
  } finally {
    await queues.close();
  }
});

test("qsettle is answered anyway after settleWaitsMs when the letter never lands", async () => {
  const { queues, sent } = setup(30);
  try {
    await fetchAll(queues, sent);
    queues.handle({
      type: "qsettle",
      id: 3,
      group: "g",
      acks: [],
      items: [{ offset: 0, attempt: 1, action: "reject" }],
    });
    await eventually(() => answer(sent, 3) !== undefined, "answered");
    queues.handle({ type: "qdescribe", id: 4, group: "g" });
    const stats = answer(sent, 4);
    assert.ok(stats?.type === "qstats");
    assert.is(stats.stats.deadLettered, 0, "the letter is still pending");
  } finally {
    await queues.close();
  }
});

test("qconfig null answers a held qsettle at once", async () => {
  const { queues, sent } = setup();
  try {
    await fetchAll(queues, sent);
    queues.handle({
      type: "qsettle",
      id: 3,
      group: "g",
      acks: [],
      items: [{ offset: 0, attempt: 1, action: "reject" }],
    });
    queues.handle({ type: "qconfig", id: 4, group: "g", config: null });
    assert.ok(answer(sent, 3) !== undefined, "answered");
    // A write in flight puts the file back, then removes it.
    await eventually(() => writing === 0, "write finished");
    assert.equal(runtime.fs.list(`${dir}/queues`), []);
  } finally {
    await queues.close();
  }
});

test.run();
