import { suite } from "uvu";
import * as assert from "uvu/assert";
import { type RouterActor, startRouter } from "../../actors/router_actor.ts";
import { DEAD_LETTER_HEADERS, type QueueDelivery } from "../../src/broker.ts";
import { decodeBatches } from "../../src/log/record_batch.ts";
import { createLogger, type LogFields } from "../../src/logger.ts";
import { runtime } from "../../src/runtime/mod.ts";
import { makeTempDir, removeTempDir } from "../router/_temp_dir.ts";

// Dead letters through the real router and partition workers: the settle
// answer waits for the letter, and a letter too large for a hand-made
// dead-letter topic lands once that topic is replaced.
const test = suite(`router_dead_letter (${runtime.name})`);
const text = (value: string) => new TextEncoder().encode(value);
const untext = (bytes: Uint8Array | null) =>
  bytes === null ? null : new TextDecoder().decode(bytes);

let dir = "";
let router: RouterActor | null = null;
let errors: { message: string; fields: LogFields }[] = [];

async function start(): Promise<RouterActor> {
  router = await startRouter({
    dataDir: dir,
    runtime,
    logger: createLogger((level, _scope, message, fields) => {
      if (level === "error") errors.push({ message, fields });
    }, "error"),
  });
  return router;
}

test.before.each(() => {
  dir = makeTempDir("router-dead-letter");
  errors = [];
});
test.after.each(async () => {
  await router?.close();
  router = null;
  removeTempDir(dir);
});

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function eventually(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (check()) return;
    await pause(20);
  }
  assert.unreachable(`never happened: ${what}`);
}

async function receiveOne(
  broker: RouterActor,
  group: string,
): Promise<{ offset: number; attempt: number }> {
  const deliveries: QueueDelivery[] = await broker.receive(group, {
    maxRecords: 1,
    maxBytes: 1 << 20,
    maxWaitMs: 5000,
  });
  assert.is(deliveries.length, 1);
  const [record] = decodeBatches(deliveries[0].bytes);
  return { offset: record.offset, attempt: 1 };
}

async function readLetters(broker: RouterActor, topic: string) {
  const read = await broker.read(topic, 0, 0, {
    maxBytes: 1 << 20,
    maxWaitMs: 0,
  });
  return decodeBatches(read.bytes);
}

test("settle() of a reject answers once the letter is in the dead-letter topic", async () => {
  const broker = await start();
  await broker.createTopic("jobs");
  await broker.createGroup("w", { topic: "jobs", mode: "queue" });
  await broker.publishRecords("jobs", [{ key: null, value: text("bad") }]);
  const got = await receiveOne(broker, "w");
  const result = await broker.settle("w", [{
    partition: 0,
    ...got,
    action: "reject",
    reason: "unparseable",
  }]);
  assert.equal(result.refused, []);
  // At once, as the README walkthrough reads it.
  const letters = await readLetters(broker, "jobs.w.dlq");
  assert.is(letters.length, 1);
  assert.is(untext(letters[0].value), "bad");
  const headers = new Map(letters[0].headers.map(([n, v]) => [n, untext(v)]));
  assert.is(headers.get(DEAD_LETTER_HEADERS.error), "unparseable");
});

test("settle() of a 100 KB reject into a too-small hand-made topic: append fails, is logged, and lands once the topic is recreated", async () => {
  const broker = await start();
  await broker.createTopic("jobs");
  await broker.createTopic("jobs.w.dlq", { maxMessageBytes: 1000 });
  await broker.createGroup("w", { topic: "jobs", mode: "queue" });
  const value = new Uint8Array(100 * 1024).fill(65);
  await broker.publishRecords("jobs", [{ key: null, value }]);
  const got = await receiveOne(broker, "w");
  const settling = broker.settle("w", [{
    partition: 0,
    ...got,
    action: "reject",
    reason: "too big to handle",
  }]);
  await eventually(
    () => errors.some((e) => e.message.includes("dead letters not appended")),
    "the failed append logged at error",
  );
  assert.is((await readLetters(broker, "jobs.w.dlq")).length, 0);
  await broker.deleteTopic("jobs.w.dlq");
  // The retry recreates the topic with room for the record and its headers.
  const result = await settling;
  assert.equal(result.refused, []);
  await eventually(
    () => broker.listTopics().some((t) => t.name === "jobs.w.dlq"),
    "recreated",
  );
  let letters = await readLetters(broker, "jobs.w.dlq");
  for (let i = 0; i < 250 && letters.length === 0; i++) {
    await pause(20);
    letters = await readLetters(broker, "jobs.w.dlq");
  }
  assert.is(letters.length, 1);
  assert.equal(letters[0].value, value);
  const dlq = await broker.describeTopic("jobs.w.dlq");
  assert.ok(dlq.config.maxMessageBytes > 100 * 1024);
  for (let i = 0; i < 250; i++) {
    const [q] = await broker.describeQueue("w");
    if (q.unsettled === 0 && q.deadLettered === 1) return;
    await pause(20);
  }
  assert.unreachable("the record never settled");
});

test.run();
