import { suite } from "uvu";
import * as assert from "uvu/assert";
import type { PartitionMessage } from "../../src/envelope.ts";
import { DakgharError } from "../../src/errors.ts";
import { createLogger, silentLogger } from "../../src/logger.ts";
import { DeadLetterSink } from "../../src/router/dead_letters.ts";
import type { PartitionClient } from "../../src/router/partition_client.ts";

const test = suite("dead_letters");

type QueueDead = Extract<PartitionMessage, { type: "qdead" }>;

const notice: QueueDead = {
  type: "qdead",
  group: "w",
  seq: 7,
  bytes: new Uint8Array([1, 2, 3]),
  records: 1,
};

function fakeClient(partition: number) {
  const sent: unknown[] = [];
  const client = {
    topic: "jobs",
    partition,
    epoch: 1,
    request(message: unknown) {
      sent.push(message);
      return Promise.resolve({
        type: "qsettled",
        settled: 1,
        refused: [],
        freed: [3, 1, 10],
      });
    },
  };
  return { client, sent };
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function eventually(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (check()) return;
    await pause(5);
  }
  assert.unreachable(`never happened: ${what}`);
}

test("accept() creates the topic, appends to the same partition, then answers qdeadDone", async () => {
  const steps: string[] = [];
  const settled: number[][] = [];
  const sink = new DeadLetterSink({
    deadLetterTopic: (group) => `jobs.${group}.dlq`,
    ensureTopic: (name, source) => {
      steps.push(`ensure ${name} from ${source}`);
      return Promise.resolve();
    },
    append: (topic, partition, bytes) => {
      steps.push(`append ${topic}/${partition} ${bytes.length}`);
      return Promise.resolve();
    },
    settled: (_group, _partition, reply) => settled.push(reply.freed),
    log: silentLogger,
  });
  const { client, sent } = fakeClient(2);
  sink.accept(client as unknown as PartitionClient, notice, 1);
  await eventually(() => settled.length === 1, "settled");
  assert.equal(steps, ["ensure jobs.w.dlq from jobs", "append jobs.w.dlq/2 3"]);
  assert.equal(sent, [{ type: "qdeadDone", group: "w", seq: 7 }]);
  assert.equal(settled, [[3, 1, 10]]);
  sink.close();
});

test("accept() retries a failed append, and gives up once the actor restarted", async () => {
  let failures = 2;
  let appends = 0;
  const sink = new DeadLetterSink({
    deadLetterTopic: () => "dlq",
    ensureTopic: () => Promise.resolve(),
    append: () => {
      appends++;
      if (failures-- > 0) {
        return Promise.reject(new DakgharError("storage_error", "disk full"));
      }
      return Promise.resolve();
    },
    settled: () => {},
    retryMinMs: 1,
    log: silentLogger,
  });
  const { client, sent } = fakeClient(0);
  sink.accept(client as unknown as PartitionClient, notice, 1);
  await eventually(() => sent.length === 1, "done after retries");
  assert.is(appends, 3);

  // A restarted actor sends its letters again itself.
  failures = Infinity;
  appends = 0;
  sink.accept(client as unknown as PartitionClient, notice, 1);
  await eventually(() => appends >= 2, "retrying");
  client.epoch = 2;
  const seen = appends;
  await pause(30);
  assert.ok(appends <= seen + 1, "stopped retrying");
  assert.is(sent.length, 1);
  sink.close();
});

test("accept() retries with the letters intact after an append took (transferred) them, logging at error", async () => {
  const seen: number[][] = [];
  const logged: { level: string; message: string; error: unknown }[] = [];
  const bytes = new Uint8Array(200 * 1024).fill(7);
  const sink = new DeadLetterSink({
    deadLetterTopic: () => "dlq",
    ensureTopic: () => Promise.resolve(),
    append: (_topic, _partition, given) => {
      seen.push([given.length, given[0], given[given.length - 1]]);
      // As posting to a worker with a transfer list does.
      structuredClone(given.buffer, { transfer: [given.buffer] });
      if (seen.length === 1) {
        return Promise.reject(
          new DakgharError("record_too_large", "too large"),
        );
      }
      return Promise.resolve();
    },
    settled: () => {},
    retryMinMs: 1,
    log: createLogger((level, _scope, message, fields) =>
      logged.push({ level, message, error: fields.error })
    ),
  });
  const { client, sent } = fakeClient(0);
  sink.accept(
    client as unknown as PartitionClient,
    { ...notice, bytes },
    1,
  );
  await eventually(() => sent.length === 1, "appended on retry");
  assert.equal(seen, [[bytes.length, 7, 7], [bytes.length, 7, 7]]);
  assert.is(bytes.length, 200 * 1024, "the notice's bytes were not taken");
  const failure = logged.find((l) => l.message.includes("not appended"));
  assert.ok(failure);
  assert.is(failure.level, "error");
  assert.ok(
    failure.error instanceof DakgharError &&
      failure.error.code === "record_too_large",
  );
  sink.close();
});

test("accept() drops letters of a deleted group", async () => {
  let appended = false;
  const sink = new DeadLetterSink({
    deadLetterTopic: () => undefined,
    ensureTopic: () => Promise.resolve(),
    append: () => {
      appended = true;
      return Promise.resolve();
    },
    settled: () => {},
    log: silentLogger,
  });
  sink.accept(fakeClient(0).client as unknown as PartitionClient, notice, 1);
  await pause(10);
  assert.not.ok(appended);
  sink.close();
});

test.run();
