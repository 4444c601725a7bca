import { suite } from "uvu";
import * as assert from "uvu/assert";
import type { QueueDelivery } from "../../src/broker.ts";
import {
  parsePrefetch,
  parseSettleFrame,
  type QueueSession,
  QueueSubscription,
} from "../../src/http/queue_subscription.ts";
import { encodeBatch, stampBatch } from "../../src/log/record_batch.ts";
import { silentLogger } from "../../src/logger.ts";
import { FakeBroker } from "./_fake_broker.ts";

const test = suite("queue_subscription");

test("parseSettleFrame() expands ack ranges and keeps every list's fields", () => {
  assert.equal(
    parseSettleFrame({
      acks: [[1, 10, 3, 2]],
      nacks: [[0, 4, 1, null], [0, 5, 2, 300, "busy"]],
      rejects: [[0, 6, 1], [0, 7, 1, "bad"]],
      extends: [[2, 8, 1, 5000]],
    }),
    [
      { partition: 1, offset: 10, attempt: 2, action: "ack" },
      { partition: 1, offset: 11, attempt: 2, action: "ack" },
      { partition: 1, offset: 12, attempt: 2, action: "ack" },
      { partition: 0, offset: 4, attempt: 1, action: "nack" },
      {
        partition: 0,
        offset: 5,
        attempt: 2,
        action: "nack",
        delayMs: 300,
        reason: "busy",
      },
      { partition: 0, offset: 6, attempt: 1, action: "reject" },
      { partition: 0, offset: 7, attempt: 1, action: "reject", reason: "bad" },
      { partition: 2, offset: 8, attempt: 1, action: "extend", delayMs: 5000 },
    ],
  );
});

test("parseSettleFrame() names what is wrong", () => {
  const problem = (frame: Record<string, unknown>) => {
    const result = parseSettleFrame(frame);
    assert.type(result, "string", JSON.stringify(frame));
    return result as string;
  };
  assert.match(problem({}), /expected acks, nacks, rejects or extends/);
  assert.match(problem({ acks: [] }), /expected acks/);
  assert.match(problem({ acks: {} }), /^acks: expected an array/);
  assert.match(problem({ acks: [5] }), /^acks\[0\]: expected an array/);
  assert.match(problem({ acks: [[0, 1.5, 1, 1]] }), /^acks\[0\]: partition/);
  assert.match(problem({ nacks: [[0, 0, 1, 5, "r", "x"]] }), /^nacks\[0\]/);
  assert.match(
    problem({ acks: [[0, 0, 1, 1]], extends: [[0, 0, 1, "1s"]] }),
    /^extends\[0\]: ms/,
  );
  assert.match(
    problem({ acks: [[0, 0, 60_000, 1], [0, 60_000, 60_000, 1]] }),
    /at most 100000 settlements/,
  );
});

test("parsePrefetch() fills defaults and bounds both limits", () => {
  assert.equal(parsePrefetch(undefined), { records: 1000, bytes: 1048576 });
  assert.equal(parsePrefetch({ records: 5 }), { records: 5, bytes: 1048576 });
  assert.type(parsePrefetch({ records: 0 }), "string");
  assert.type(parsePrefetch({ bytes: 65 * 1024 * 1024 }), "string");
  assert.type(parsePrefetch({ window: 5 }), "string");
  assert.type(parsePrefetch([]), "string");
});

/** A session whose socket congestion the test sets. */
function fakeSession() {
  const sent: Record<string, unknown>[] = [];
  let congested = false;
  let drain: (() => void) | undefined;
  const session: QueueSession & { closed: boolean } = {
    broker: new FakeBroker(),
    log: silentLogger,
    closed: false,
    send(frame) {
      sent.push(frame);
      return true;
    },
    sendError() {},
    forget() {},
    isCongested: () => congested,
    drained: () =>
      congested
        ? new Promise<void>((resolve) => drain = resolve)
        : Promise.resolve(),
  };
  return {
    session,
    sent,
    congest() {
      congested = true;
    },
    release() {
      congested = false;
      drain?.();
    },
  };
}

function delivery(offset: number, records = 1): QueueDelivery {
  const bytes = encodeBatch(
    Array.from({ length: records }, (_, i) => ({
      key: null,
      value: new TextEncoder().encode(`v${offset + i}`),
      headers: [],
      timestamp: 1,
    })),
  );
  stampBatch(bytes, 0, offset, 2);
  return { topic: "orders", partition: 0, bytes, redelivered: [], records };
}

test("QueueSubscription.deliver() holds deliveries while congested, within twice the prefetch", async () => {
  const { session, sent, congest, release } = fakeSession();
  const broker = session.broker as FakeBroker;
  await broker.createTopic("orders");
  await broker.createGroup("work", { topic: "orders", mode: "queue" });
  const subscription = new QueueSubscription(session, "s1", {
    group: "work",
    topic: "orders",
    mode: "queue",
    memberId: "m",
    format: "json",
    encoding: "utf8",
    prefetch: { records: 2, bytes: 1024 },
  });
  await subscription.start(1);
  assert.equal(sent.map((f) => f.op), ["subscribed"]);

  congest();
  for (let offset = 0; offset < 6; offset++) {
    subscription.deliver(delivery(offset));
  }
  assert.is(sent.length, 1);

  release();
  await new Promise((resolve) => setTimeout(resolve, 0));
  // Six came while congested; the two oldest were dropped past 2 × 2.
  const offsets = sent.slice(1).flatMap((frame) =>
    (frame.records as { offset: number }[]).map((r) => r.offset)
  );
  assert.equal(offsets, [2, 3, 4, 5]);

  // Not congested: straight out.
  subscription.deliver(delivery(6));
  assert.is(sent.length, 6);
  subscription.stop();
  subscription.deliver(delivery(7));
  assert.is(sent.length, 6);
});

test("QueueSubscription.deliver() bounds held deliveries by bytes too", async () => {
  const { session, sent, congest, release } = fakeSession();
  const broker = session.broker as FakeBroker;
  await broker.createTopic("orders");
  await broker.createGroup("work", { topic: "orders", mode: "queue" });
  const one = delivery(50, 10).bytes.length; // the largest of the six
  const subscription = new QueueSubscription(session, "s1", {
    group: "work",
    topic: "orders",
    mode: "queue",
    memberId: "m",
    format: "json",
    encoding: "utf8",
    // Records would allow all six; bytes allow about two deliveries' worth.
    prefetch: { records: 1000, bytes: one },
  });
  await subscription.start(1);
  congest();
  for (let i = 0; i < 6; i++) subscription.deliver(delivery(i * 10, 10));
  release();
  await new Promise((resolve) => setTimeout(resolve, 0));
  const firsts = sent.slice(1).map((frame) =>
    (frame.records as { offset: number }[])[0].offset
  );
  assert.equal(firsts, [40, 50]);
  subscription.stop();
});

test.run();
