import { suite } from "uvu";
import * as assert from "uvu/assert";
import { DakgharError } from "../../src/errors.ts";
import {
  cursorConfig,
  resolveGroupSettings,
  sameIdentity,
} from "../../src/router/group_settings.ts";

const test = suite("group_settings");

function fieldOf(run: () => unknown): unknown {
  try {
    run();
  } catch (error) {
    assert.instance(error, DakgharError);
    assert.is((error as DakgharError).code, "bad_request");
    return (error as DakgharError).context.field;
  }
  return assert.unreachable("accepted");
}

test("resolveGroupSettings() fills in the queue defaults", () => {
  const settings = resolveGroupSettings("mailer", {
    topic: "orders",
    mode: "queue",
  });
  assert.equal(settings, {
    topic: "orders",
    mode: "queue",
    from: "earliest",
    filter: null,
    queue: {
      ackTimeoutMs: 30_000,
      maxDeliveries: 5,
      backoffInitialMs: 1_000,
      backoffMaxMs: 60_000,
      deadLetterTopic: "orders.mailer.dlq",
      maxUnsettled: 1_000_000,
    },
  });
  assert.equal(cursorConfig(settings), {
    mode: "queue",
    from: "earliest",
    ackTimeoutMs: 30_000,
    maxDeliveries: 5,
    backoffInitialMs: 1_000,
    backoffMaxMs: 60_000,
    maxUnsettled: 1_000_000,
    filter: null,
  });
});

test("resolveGroupSettings() keeps current queue settings not given again", () => {
  const first = resolveGroupSettings("g", {
    topic: "t",
    mode: "key_shared",
    queue: { ackTimeoutMs: 500, deadLetterTopic: "dead" },
  });
  const second = resolveGroupSettings("g", {
    topic: "t",
    mode: "key_shared",
    queue: { maxDeliveries: 2 },
  }, first.queue);
  assert.is(second.queue!.ackTimeoutMs, 500);
  assert.is(second.queue!.deadLetterTopic, "dead");
  assert.is(second.queue!.maxDeliveries, 2);
});

test("resolveGroupSettings() names the field out of range", () => {
  const base = { topic: "t", mode: "queue" as const };
  assert.is(
    fieldOf(() =>
      resolveGroupSettings("g", { ...base, queue: { ackTimeoutMs: 0 } })
    ),
    "ackTimeoutMs",
  );
  assert.is(
    fieldOf(() =>
      resolveGroupSettings("g", { ...base, queue: { maxDeliveries: 1.5 } })
    ),
    "maxDeliveries",
  );
  assert.is(
    fieldOf(() =>
      resolveGroupSettings("g", {
        ...base,
        queue: { backoffInitialMs: 10, backoffMaxMs: 5 },
      })
    ),
    "backoffMaxMs",
  );
  assert.is(
    fieldOf(() =>
      resolveGroupSettings("g", {
        ...base,
        queue: { bogus: 1 } as unknown as { maxUnsettled: number },
      })
    ),
    "bogus",
  );
  assert.is(
    fieldOf(() =>
      resolveGroupSettings("g", { ...base, mode: "fifo" as "queue" })
    ),
    "mode",
  );
  assert.is(
    fieldOf(() =>
      resolveGroupSettings("g", { ...base, from: "middle" as "latest" })
    ),
    "from",
  );
  assert.throws(() =>
    resolveGroupSettings("g", {
      ...base,
      filter: { tags: [3] } as unknown as { tags: string[] },
    })
  );
});

test("sameIdentity() compares mode, topic and filter, not queue settings", () => {
  const a = resolveGroupSettings("g", {
    topic: "t",
    mode: "queue",
    filter: { tags: ["eu", "vip"] },
  });
  const b = resolveGroupSettings("g", {
    topic: "t",
    mode: "queue",
    filter: { tags: ["vip", "eu"] },
    queue: { ackTimeoutMs: 5 },
  });
  assert.ok(sameIdentity(a, b));
  assert.not.ok(sameIdentity(a, { ...b, mode: "key_shared" }));
  assert.not.ok(sameIdentity(a, { ...b, filter: null }));
  assert.not.ok(sameIdentity(a, { ...b, topic: "u" }));
});

test.run();
