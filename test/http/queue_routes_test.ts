import { suite } from "uvu";
import * as assert from "uvu/assert";
import { createApp } from "../../src/http/app.ts";
import { silentLogger } from "../../src/logger.ts";
import { runtime } from "../../src/runtime/mod.ts";
import { FakeBroker } from "./_fake_broker.ts";

const test = suite("queue_routes");

async function setup() {
  const broker = new FakeBroker();
  await broker.createTopic("orders", { partitions: 2 });
  const shutdown = new AbortController();
  const app = createApp(broker, {
    log: silentLogger,
    shutdown: shutdown.signal,
  });
  const call = async (
    method: string,
    path: string,
    body?: unknown,
    contentType = "application/json",
  ) => {
    const response = await app.request(`http://localhost${path}`, {
      method,
      headers: body === undefined ? {} : { "Content-Type": contentType },
      body: body === undefined
        ? undefined
        : typeof body === "string"
        ? body
        : JSON.stringify(body),
    });
    const text = await response.text();
    // deno-lint-ignore no-explicit-any
    const json: any = text === "" ? null : JSON.parse(text);
    return { status: response.status, body: json };
  };
  const publish = (records: unknown[]) =>
    call("POST", "/topics/orders/records", { records });
  return { broker, app, call, publish, shutdown };
}

type Setup = Awaited<ReturnType<typeof setup>>;

async function queueWithRecords(fixture: Setup, count = 3) {
  const created = await fixture.call("PUT", "/groups/work", {
    topic: "orders",
    mode: "queue",
  });
  assert.is(created.status, 200, JSON.stringify(created.body));
  await fixture.publish(
    Array.from({ length: count }, (_, i) => ({ value: `r${i}`, partition: 0 })),
  );
}

test("PUT /groups/:group creates a queue group and answers its settings", async () => {
  const { call } = await setup();
  const created = await call("PUT", "/groups/work", {
    topic: "orders",
    mode: "key_shared",
    filter: { tags: ["eu"] },
    ackTimeoutMs: 5000,
    deadLetterTopic: "orders.failed",
  });
  assert.is(created.status, 200);
  assert.is(created.body.name, "work");
  assert.is(created.body.mode, "key_shared");
  assert.equal(created.body.filter, { tags: ["eu"] });
  assert.is(created.body.queue.ackTimeoutMs, 5000);
  assert.is(created.body.queue.deadLetterTopic, "orders.failed");
  assert.is(created.body.queue.maxDeliveries, 5);

  // Same mode, topic and filter: the queue settings change.
  const again = await call("PUT", "/groups/work", {
    topic: "orders",
    mode: "key_shared",
    filter: { tags: ["eu"] },
    maxDeliveries: 2,
  });
  assert.is(again.status, 200);
  assert.is(again.body.queue.maxDeliveries, 2);

  const clash = await call("PUT", "/groups/work", {
    topic: "orders",
    mode: "queue",
    filter: { tags: ["eu"] },
  });
  assert.is(clash.status, 409);
  assert.is(clash.body.error.code, "group_exists");
});

test("PUT /groups/:group refuses bad bodies by field, and unknown topics", async () => {
  const { call } = await setup();
  const fieldOf = async (body: unknown) => {
    const answer = await call("PUT", "/groups/g", body);
    assert.is(answer.status, 400, JSON.stringify(body));
    assert.is(answer.body.error.code, "malformed_body");
    return answer.body.error.field;
  };
  assert.is(await fieldOf({ mode: "queue" }), "topic");
  assert.is(await fieldOf({ topic: "orders", mode: "fifo" }), "mode");
  assert.is(
    await fieldOf({ topic: "orders", mode: "queue", from: "middle" }),
    "from",
  );
  assert.is(
    await fieldOf({ topic: "orders", mode: "queue", filter: { tag: ["x"] } }),
    "filter",
  );
  assert.is(
    await fieldOf({ topic: "orders", mode: "queue", filter: { tags: [1] } }),
    "filter",
  );
  assert.is(
    await fieldOf({ topic: "orders", mode: "queue", ackTimeoutMs: -1 }),
    "ackTimeoutMs",
  );
  assert.is(
    await fieldOf({ topic: "orders", mode: "stream", maxDeliveries: 3 }),
    "maxDeliveries",
  );
  assert.is(
    await fieldOf({ topic: "orders", mode: "queue", colour: "red" }),
    "colour",
  );
  assert.is(await fieldOf("{not json"), "body");

  const unknown = await call("PUT", "/groups/g", {
    topic: "nope",
    mode: "queue",
  });
  assert.is(unknown.status, 404);
  assert.is(unknown.body.error.code, "unknown_topic");
});

test("GET /groups/:group adds settings and queue progress; DELETE removes it", async () => {
  const fixture = await setup();
  await queueWithRecords(fixture, 2);
  const described = await fixture.call("GET", "/groups/work");
  assert.is(described.status, 200);
  assert.is(described.body.mode, "queue");
  assert.is(described.body.settings.topic, "orders");
  assert.is(described.body.queue.length, 2);
  assert.is(described.body.queue[0].partition, 0);

  assert.is((await fixture.call("DELETE", "/groups/work")).status, 204);
  const gone = await fixture.call("DELETE", "/groups/work");
  assert.is(gone.status, 404);
  assert.is(gone.body.error.code, "unknown_group");
  assert.is((await fixture.call("GET", "/groups/work")).status, 404);
});

test("POST /groups/:group/receive hands out records with attempt and receipt", async () => {
  const fixture = await setup();
  await fixture.call("PUT", "/groups/work", { topic: "orders", mode: "queue" });
  await fixture.publish([
    { value: "a", partition: 1, tags: ["eu"], headers: { type: "order" } },
    { value: "b", partition: 1 },
  ]);
  const received = await fixture.call("POST", "/groups/work/receive", {
    maxRecords: 5,
  });
  assert.is(received.status, 200);
  const [a, b] = received.body.records;
  assert.is(received.body.records.length, 2);
  assert.equal(
    { ...a, timestamp: 0 },
    {
      topic: "orders",
      partition: 1,
      offset: 0,
      timestamp: 0,
      key: null,
      value: "a",
      headers: { type: "order" },
      tags: ["eu"],
      attempt: 1,
      receipt: "1.0.1",
    },
  );
  assert.is(b.receipt, "1.1.1");
  assert.not.ok("tags" in b);

  // Nothing left: an empty body (no content type) asks for defaults.
  const empty = await fixture.call("POST", "/groups/work/receive");
  assert.equal(empty.body, { records: [] });
});

test("POST /groups/:group/receive checks its body", async () => {
  const fixture = await setup();
  await queueWithRecords(fixture);
  for (
    const [body, field] of [
      [{ maxRecords: 0 }, "maxRecords"],
      [{ maxRecords: 1001 }, "maxRecords"],
      [{ maxWaitMs: 30_001 }, "maxWaitMs"],
      [{ encoding: "hex" }, "encoding"],
      [[], "body"],
    ] as const
  ) {
    const answer = await fixture.call("POST", "/groups/work/receive", body);
    assert.is(answer.status, 400);
    assert.is(answer.body.error.field, field);
  }
  // curl -d sends form encoding: the JSON body is read all the same.
  const limited = await fixture.call(
    "POST",
    "/groups/work/receive",
    '{"maxRecords":1}',
    "application/x-www-form-urlencoded",
  );
  assert.is(limited.body.records.length, 1);
  // fetch with a JSON content type and no body: the defaults.
  const empty = await fixture.call("POST", "/groups/work/receive", "");
  assert.is(empty.status, 200, JSON.stringify(empty.body));
  assert.is(empty.body.records.length, 2); // the rest, up to the default 10
  const redrive = await fixture.call(
    "POST",
    "/groups/work/dead-letters/redrive",
    "",
  );
  assert.is(redrive.status, 200, JSON.stringify(redrive.body));
});

test("POST /groups/:group/receive on a stream group is a bad request", async () => {
  const { call } = await setup();
  await call("PUT", "/groups/s", { topic: "orders", mode: "stream" });
  const answer = await call("POST", "/groups/s/receive", {});
  assert.is(answer.status, 400);
  assert.is(answer.body.error.code, "bad_request");
  const missing = await call("POST", "/groups/nope/receive", {});
  assert.is(missing.status, 404);
  assert.is(missing.body.error.code, "unknown_group");
});

test("POST /groups/:group/receive long-polls until a publish", async () => {
  const fixture = await setup();
  await fixture.call("PUT", "/groups/work", { topic: "orders", mode: "queue" });
  const waiting = fixture.call("POST", "/groups/work/receive", {
    maxWaitMs: 10_000,
  });
  await new Promise((resolve) => setTimeout(resolve, 20));
  await fixture.publish([{ value: "late" }]);
  const answer = await waiting;
  assert.is(answer.status, 200);
  assert.is(answer.body.records[0].value, "late");
});

test("POST /groups/:group/receive answers 503 shutting_down when the broker stops", async () => {
  const fixture = await setup();
  await fixture.call("PUT", "/groups/work", { topic: "orders", mode: "queue" });
  const waiting = fixture.call("POST", "/groups/work/receive", {
    maxWaitMs: 10_000,
  });
  await new Promise((resolve) => setTimeout(resolve, 20));
  fixture.shutdown.abort();
  const answer = await waiting;
  assert.is(answer.status, 503);
  assert.is(answer.body.error.code, "shutting_down");
  const later = await fixture.call("POST", "/groups/work/receive", {});
  assert.is(later.status, 503);
});

test("POST /groups/:group/ack settles by receipt and refuses a stale one", async () => {
  const fixture = await setup();
  await queueWithRecords(fixture, 2);
  const first = await fixture.call("POST", "/groups/work/receive", {});
  const [r0, r1] = first.body.records.map((r: { receipt: string }) =>
    r.receipt
  );
  assert.equal([r0, r1], ["0.0.1", "0.1.1"]);

  const acked = await fixture.call("POST", "/groups/work/ack", {
    receipts: [r0],
  });
  assert.equal(acked.body, { settled: 1, refused: [] });

  // The ack timeout passes: r1 is delivered again, with attempt 2.
  fixture.broker.queues.expireAll("work");
  const again = await fixture.call("POST", "/groups/work/receive", {});
  assert.equal(
    again.body.records.map((r: { receipt: string; attempt: number }) => [
      r.receipt,
      r.attempt,
    ]),
    [["0.1.2", 2]],
  );

  const stale = await fixture.call("POST", "/groups/work/ack", {
    receipts: [r1],
  });
  assert.is(stale.status, 409);
  assert.is(stale.body.error.code, "stale_receipt");
  assert.equal(
    stale.body.error.refused.map((r: { receipt: string }) => r.receipt),
    [
      r1,
    ],
  );

  // One taken, one refused: 200 with the refusal listed.
  const mixed = await fixture.call("POST", "/groups/work/ack", {
    receipts: ["0.1.2", r0],
  });
  assert.is(mixed.status, 200);
  assert.is(mixed.body.settled, 1);
  assert.equal(mixed.body.refused.map((r: { code: string }) => r.code), [
    "stale_receipt",
  ]);
});

test("POST /groups/:group/ack refuses malformed receipts as malformed_body", async () => {
  const fixture = await setup();
  await queueWithRecords(fixture, 1);
  for (
    const receipts of [
      [],
      "0.0.1",
      ["0.0"],
      ["0.0.0"],
      ["00.1.1"],
      ["0.01.1"],
      ["0.0.1.1"],
      ["a.b.c"],
      [" 0.0.1"],
      [7],
      ["0.99999999999999999.1"],
    ]
  ) {
    const answer = await fixture.call("POST", "/groups/work/ack", {
      receipts,
    });
    assert.is(answer.status, 400, JSON.stringify(receipts));
    assert.is(answer.body.error.code, "malformed_body");
    assert.is(answer.body.error.field, "receipts");
  }
  assert.is(fixture.broker.queues.settleCalls.length, 0);
});

test("POST /groups/:group/nack, extend and reject pass their fields to settle", async () => {
  const fixture = await setup();
  await queueWithRecords(fixture, 3);
  await fixture.call("POST", "/groups/work/receive", {});
  const nacked = await fixture.call("POST", "/groups/work/nack", {
    receipts: ["0.0.1"],
    delayMs: 2500,
    reason: "busy",
  });
  assert.is(nacked.status, 200);
  const extended = await fixture.call("POST", "/groups/work/extend", {
    receipts: ["0.1.1"],
    ms: 60_000,
  });
  assert.is(extended.status, 200);
  const rejected = await fixture.call("POST", "/groups/work/reject", {
    receipts: ["0.2.1"],
    reason: "bad input",
  });
  assert.is(rejected.status, 200);
  assert.equal(
    fixture.broker.queues.settleCalls.map((call) => call.settlements),
    [
      [{
        partition: 0,
        offset: 0,
        attempt: 1,
        action: "nack",
        delayMs: 2500,
        reason: "busy",
      }],
      [{
        partition: 0,
        offset: 1,
        attempt: 1,
        action: "extend",
        delayMs: 60_000,
      }],
      [{
        partition: 0,
        offset: 2,
        attempt: 1,
        action: "reject",
        reason: "bad input",
      }],
    ],
  );

  for (
    const [action, body, field] of [
      ["extend", { receipts: ["0.1.1"] }, "ms"],
      ["extend", { receipts: ["0.1.1"], ms: 13 * 3_600_000 }, "ms"],
      ["nack", { receipts: ["0.1.1"], delayMs: -5 }, "delayMs"],
      ["reject", { receipts: ["0.1.1"], reason: 5 }, "reason"],
      ["ack", { receipts: ["0.1.1"], reason: "x" }, "reason"],
    ] as const
  ) {
    const answer = await fixture.call("POST", `/groups/work/${action}`, body);
    assert.is(answer.status, 400, JSON.stringify(body));
    assert.is(answer.body.error.field, field);
  }
});

test("POST /groups/:group/dead-letters/redrive passes its options", async () => {
  const fixture = await setup();
  await queueWithRecords(fixture, 1);
  const answer = await fixture.call(
    "POST",
    "/groups/work/dead-letters/redrive",
    { toTopic: "orders.retry", filter: { headers: { type: "x" } } },
  );
  assert.is(answer.status, 200);
  assert.equal(answer.body, {
    deadLetterTopic: "orders.work.dlq",
    redriven: 0,
    skipped: 0,
  });
  const bare = await fixture.call("POST", "/groups/work/dead-letters/redrive");
  assert.is(bare.status, 200);
  assert.equal(fixture.broker.queues.redriveCalls.map((c) => c.options), [
    { toTopic: "orders.retry", filter: { headers: { type: "x" } } },
    {},
  ]);
  const bad = await fixture.call(
    "POST",
    "/groups/work/dead-letters/redrive",
    { fromStart: "yes" },
  );
  assert.is(bad.body.error.field, "fromStart");
});

test("POST /topics/:topic/records answers delayed positions; DELETE .../delayed/:delayId cancels", async () => {
  const fixture = await setup();
  const before = Date.now();
  const published = await fixture.publish([
    { value: "now", partition: 0 },
    { value: "later", partition: 1, delayMs: 60_000 },
    { value: "at", deliverAt: "2100-01-01T00:00:00Z" },
  ]);
  // 2100 is more than 90 days ahead.
  assert.is(published.status, 400);
  assert.is(published.body.error.field, "records[2].deliverAt");

  const ok = await fixture.publish([
    { value: "now", partition: 0 },
    { value: "later", partition: 1, delayMs: 60_000, tags: ["eu"] },
  ]);
  assert.is(ok.status, 200);
  const [now, later] = ok.body.offsets;
  assert.equal(now, { partition: 0, offset: 0 });
  assert.is(later.partition, 1);
  assert.is(later.offset, -1);
  assert.type(later.delayId, "string");
  assert.ok(later.dueAt >= before + 60_000);
  const [, record] = fixture.broker.published[0];
  assert.is(record.delayMs, 60_000);

  const path = `/topics/orders/delayed/${later.delayId}`;
  assert.is((await fixture.call("DELETE", path)).status, 204);
  const again = await fixture.call("DELETE", path);
  assert.is(again.status, 404);
  assert.is(again.body.error.code, "not_found");
  const unknown = await fixture.call("DELETE", "/topics/nope/delayed/x");
  assert.is(unknown.body.error.code, "unknown_topic");
});

test("POST /groups/:group/receive stops waiting when the client goes away", async () => {
  const broker = new FakeBroker();
  await broker.createTopic("orders");
  await broker.createGroup("work", { topic: "orders", mode: "queue" });
  const app = createApp(broker, { log: silentLogger });
  const server = await runtime.serve(app, { hostname: "127.0.0.1", port: 0 });
  try {
    const client = new AbortController();
    const answer = fetch(
      `http://127.0.0.1:${server.port}/groups/work/receive`,
      {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ maxWaitMs: 30_000 }),
        signal: client.signal,
      },
    ).catch(() => "aborted");
    const receivers = broker.queues.group("work").receivers;
    for (let i = 0; i < 500 && receivers.size === 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.is(receivers.size, 1);
    client.abort();
    assert.is(await answer, "aborted");
    for (let i = 0; i < 500 && receivers.size > 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.is(receivers.size, 0);
  } finally {
    await server.close();
  }
});

test.run();
