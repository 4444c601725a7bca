import { suite } from "uvu";
import * as assert from "uvu/assert";
import { DEAD_LETTER_HEADERS } from "../../src/broker.ts";
import { createApp } from "../../src/http/app.ts";
import { silentLogger } from "../../src/logger.ts";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runtime } from "../../src/runtime/mod.ts";
import { startBroker } from "../../src/server.ts";
import { FakeBroker } from "../http/_fake_broker.ts";
import { runCli } from "./_run_cli.ts";

const test = suite("cli queues");

/**
 * The real front end on the in-memory FakeBroker, listening on 127.0.0.1
 * so that the CLI can run as a child process against it.
 */
async function withFakeBroker(
  run: (url: string, broker: FakeBroker) => Promise<void>,
) {
  const broker = new FakeBroker();
  await broker.createTopic("jobs", { partitions: 2 });
  const shutdown = new AbortController();
  const app = createApp(broker, {
    log: silentLogger,
    shutdown: shutdown.signal,
    webSocketFor: runtime.webSocketFor,
  });
  const server = await runtime.serve(app, { hostname: "127.0.0.1", port: 0 });
  try {
    await run(`http://127.0.0.1:${server.port}`, broker);
  } finally {
    shutdown.abort();
    await server.close();
  }
}

const encoder = new TextEncoder();

test("groups create makes a queue group with its settings; groups delete removes it", async () => {
  await withFakeBroker(async (url, broker) => {
    const created = await runCli(url, [
      "groups",
      "create",
      "mailer",
      "--topic",
      "jobs",
      "--mode",
      "queue",
      "--ack-timeout-ms",
      "5000",
      "--max-deliveries",
      "3",
      "--dead-letter-topic",
      "jobs.dead",
      "--tag",
      "eu",
      "--header",
      "type=order",
    ]);
    assert.is(created.code, 0, created.stderr);
    const settings = JSON.parse(String(created.stdout));
    assert.is(settings.mode, "queue");
    assert.equal(settings.filter, { tags: ["eu"], headers: { type: "order" } });
    assert.is(settings.queue.ackTimeoutMs, 5000);
    assert.is(settings.queue.maxDeliveries, 3);
    assert.is(settings.queue.deadLetterTopic, "jobs.dead");
    assert.is(broker.groupSettings("mailer")?.mode, "queue");

    const clash = await runCli(url, [
      "groups",
      "create",
      "mailer",
      "--topic",
      "jobs",
      "--mode",
      "key_shared",
    ]);
    assert.is(clash.code, 1);
    assert.match(clash.stderr, "group_exists");

    const deleted = await runCli(url, ["groups", "delete", "mailer"]);
    assert.is(deleted.code, 0, deleted.stderr);
    assert.is(broker.groupSettings("mailer"), undefined);
    const again = await runCli(url, ["groups", "delete", "mailer"]);
    assert.is(again.code, 3);
    assert.match(again.stderr, "unknown_group");
  });
});

test("groups create refuses a bad mode or a missing topic with exit 2", async () => {
  await withFakeBroker(async (url) => {
    const badMode = await runCli(url, [
      "groups",
      "create",
      "g",
      "--topic",
      "jobs",
      "--mode",
      "fifo",
    ]);
    assert.is(badMode.code, 2);
    assert.match(badMode.stderr, "Cannot parse --mode");
    const noTopic = await runCli(url, [
      "groups",
      "create",
      "g",
      "--mode",
      "queue",
    ]);
    assert.is(noTopic.code, 2);
    assert.match(noTopic.stderr, "Missing --topic");
  });
});

test("produce --delay-ms --tag prints each delayed record's id", async () => {
  await withFakeBroker(async (url, broker) => {
    const produced = await runCli(url, [
      "produce",
      "jobs",
      "--delay-ms",
      "60000",
      "--tag",
      "eu",
      "--tag",
      "vip",
      "--partition",
      "1",
      "one",
      "two",
    ]);
    assert.is(produced.code, 0, produced.stderr);
    const lines = String(produced.stdout).trim().split("\n").map((line) =>
      JSON.parse(line)
    );
    assert.is(lines.length, 2);
    for (const line of lines) {
      assert.is(line.partition, 1);
      assert.type(line.delayId, "string");
      assert.type(line.dueAt, "number");
    }
    const records = broker.published.flat();
    assert.is(records.length, 2);
    assert.is(records[0].delayMs, 60000);
    assert.equal(
      records[0].headers?.filter(([name]: [string, unknown]) =>
        name === "dakghar.tag"
      ).length,
      2,
    );

    const cancelled = await runCli(url, [
      "topics",
      "cancel-delayed",
      "jobs",
      lines[0].delayId,
    ]);
    assert.is(cancelled.code, 0, cancelled.stderr);
    const again = await runCli(url, [
      "topics",
      "cancel-delayed",
      "jobs",
      lines[0].delayId,
    ]);
    assert.is(again.code, 1);
    assert.match(again.stderr, "not_found");

    const plain = await runCli(url, ["produce", "jobs", "now"]);
    assert.is(plain.code, 0, plain.stderr);
    assert.is(plain.stdout.length, 0);
  });
});

test("dlq list prints letters with provenance; dlq redrive prints the counts", async () => {
  await withFakeBroker(async (url, broker) => {
    await broker.createGroup("mailer", { topic: "jobs", mode: "queue" });
    const empty = await runCli(url, ["dlq", "list", "--group", "mailer"]);
    assert.is(empty.code, 0, empty.stderr);
    assert.is(empty.stdout.length, 0);

    await broker.createTopic("jobs.mailer.dlq", { partitions: 1 });
    const provenance = (offset: number): [string, Uint8Array][] =>
      Object.entries({
        [DEAD_LETTER_HEADERS.topic]: "jobs",
        [DEAD_LETTER_HEADERS.partition]: "1",
        [DEAD_LETTER_HEADERS.offset]: `${offset}`,
        [DEAD_LETTER_HEADERS.group]: "mailer",
        [DEAD_LETTER_HEADERS.deliveries]: "5",
        [DEAD_LETTER_HEADERS.reason]: "max_deliveries",
        [DEAD_LETTER_HEADERS.error]: "smtp down",
        [DEAD_LETTER_HEADERS.firstFailedAt]: "1700000000000",
        "dakghar.tag": "eu",
        type: "order",
      }).map(([name, value]) => [name, encoder.encode(value)]);
    await broker.publishRecords("jobs.mailer.dlq", [
      { value: encoder.encode("a"), headers: provenance(7) },
      { value: encoder.encode("b"), headers: provenance(8) },
      { value: encoder.encode("c"), headers: provenance(9) },
    ]);

    const listed = await runCli(url, [
      "dlq",
      "list",
      "--group",
      "mailer",
      "--max",
      "2",
    ]);
    assert.is(listed.code, 0, listed.stderr);
    const letters = String(listed.stdout).trim().split("\n").map((line) =>
      JSON.parse(line)
    );
    assert.is(letters.length, 2);
    assert.equal(letters[0].source, { topic: "jobs", partition: 1, offset: 7 });
    assert.is(letters[0].partition, 0);
    assert.is(letters[0].offset, 0);
    assert.is(letters[0].group, "mailer");
    assert.is(letters[0].deliveries, 5);
    assert.is(letters[0].reason, "max_deliveries");
    assert.is(letters[0].error, "smtp down");
    assert.is(letters[0].firstFailedAt, 1700000000000);
    assert.is(letters[0].value, "a");
    assert.equal(letters[0].headers, { type: "order" });
    assert.equal(letters[0].tags, ["eu"]);
    assert.is(letters[1].source.offset, 8);

    const redriven = await runCli(url, [
      "dlq",
      "redrive",
      "--group",
      "mailer",
      "--to",
      "jobs",
      "--tag",
      "eu",
      "--from-start",
    ]);
    assert.is(redriven.code, 0, redriven.stderr);
    assert.equal(JSON.parse(String(redriven.stdout)), {
      deadLetterTopic: "jobs.mailer.dlq",
      redriven: 0,
      skipped: 0,
    });
    assert.equal(broker.queues.redriveCalls.at(-1)?.options, {
      toTopic: "jobs",
      filter: { tags: ["eu"] },
      fromStart: true,
    });

    const unknown = await runCli(url, ["dlq", "list", "--group", "nope"]);
    assert.is(unknown.code, 3);
    const missing = await runCli(url, ["dlq", "redrive"]);
    assert.is(missing.code, 2);
  });
});

test("consume --mode queue prints and acks; the next member gets only the rest", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "dakghar-cli-queue-"));
  const running = await startBroker({ dataDir, port: 0, logger: silentLogger });
  try {
    const { url } = running;
    await running.broker.createTopic("jobs", { partitions: 2 });
    const produced = await runCli(
      url,
      ["produce", "jobs", "--tag", "eu"],
      "a\nb\nc\nd\ne\n",
    );
    assert.is(produced.code, 0, produced.stderr);

    const first = await runCli(url, [
      "consume",
      "jobs",
      "--group",
      "workers",
      "--mode",
      "queue",
      "--max",
      "3",
      "--format",
      "json",
    ]);
    assert.is(first.code, 0, first.stderr);
    const records = String(first.stdout).trim().split("\n").map((line) =>
      JSON.parse(line)
    );
    assert.is(records.length, 3);
    for (const record of records) {
      assert.is(record.attempt, 1);
      assert.type(record.partition, "number");
    }
    assert.is(running.broker.groupSettings("workers")?.mode, "queue");

    // Without --mode: the group is a queue, so it joins as a queue member.
    const second = await runCli(url, [
      "consume",
      "jobs",
      "--group",
      "workers",
      "--max",
      "2",
    ]);
    assert.is(second.code, 0, second.stderr);
    const values = [
      ...records.map((record) => record.value),
      ...String(second.stdout).trim().split("\n"),
    ];
    assert.equal(values.sort(), ["a", "b", "c", "d", "e"]);
  } finally {
    await running.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test.run();
