import { suite } from "uvu";
import * as assert from "uvu/assert";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { silentLogger } from "../../src/logger.ts";
import { type RunningBroker, startBroker } from "../../src/server.ts";

// Group members over plain HTTP against a real broker: join, long-poll
// fetch, commit, rebalances, session timeouts and generation fencing.
const test = suite("http_members");

interface Fixture {
  running: RunningBroker;
  call(method: string, path: string, body?: unknown): Promise<Answer>;
}

interface Answer {
  status: number;
  // deno-lint-ignore no-explicit-any
  body: any;
}

interface Assignment {
  partition: number;
  offset: number;
}

async function withBroker(
  partitions: number,
  body: (fixture: Fixture) => Promise<void>,
): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), "dakghar-http-members-"));
  const running = await startBroker({
    dataDir,
    port: 0,
    logger: silentLogger,
  });
  const call = async (method: string, path: string, data?: unknown) => {
    const response = await fetch(`${running.url}${path}`, {
      method,
      headers: data === undefined ? {} : { "Content-Type": "application/json" },
      body: data === undefined ? undefined : JSON.stringify(data),
    });
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : null };
  };
  try {
    await running.broker.createTopic("orders", { partitions });
    await body({ running, call });
  } finally {
    await running.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

async function publish(
  fixture: Fixture,
  partition: number,
  values: string[],
): Promise<void> {
  const answer = await fixture.call("POST", "/topics/orders/records", {
    records: values.map((value) => ({ value, partition })),
  });
  assert.is(answer.status, 200, JSON.stringify(answer.body));
}

const partitionsOf = (assignment: Assignment[]) =>
  assignment.map((a) => a.partition);

/** Polls `check` until it holds; fails after `guardMs` so nothing hangs. */
async function eventually(
  check: () => Promise<boolean>,
  guardMs = 10_000,
): Promise<void> {
  const until = Date.now() + guardMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error("condition never held");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

test("POST /groups/:group/members joins, fetch returns records, commit stores offsets", async () => {
  await withBroker(2, async (fixture) => {
    await publish(fixture, 0, ["a", "b"]);
    await publish(fixture, 1, ["c"]);
    const joined = await fixture.call("POST", "/groups/billing/members", {
      topic: "orders",
      from: "earliest",
    });
    assert.is(joined.status, 201);
    assert.type(joined.body.memberId, "string");
    assert.is(joined.body.sessionTimeoutMs, 45_000);
    assert.is(joined.body.heartbeatMs, 5_000);
    assert.equal(joined.body.partitions, [
      { partition: 0, offset: 0 },
      { partition: 1, offset: 0 },
    ]);
    const member = `/groups/billing/members/${joined.body.memberId}`;

    const first = await fixture.call("POST", `${member}/fetch`, {
      maxRecords: 2,
    });
    assert.is(first.status, 200);
    assert.is(first.body.records.length, 2);
    const second = await fixture.call("POST", `${member}/fetch`, {});
    const all = [...first.body.records, ...second.body.records];
    assert.equal(
      all.map((r: { partition: number; offset: number; value: string }) =>
        `${r.partition}:${r.offset}:${r.value}`
      ).sort(),
      ["0:0:a", "0:1:b", "1:0:c"],
    );
    assert.equal(second.body.assignment, [
      { partition: 0, offset: 2 },
      { partition: 1, offset: 1 },
    ]);

    const committed = await fixture.call("POST", `${member}/commit`, {
      offsets: [{ partition: 0, offset: 2 }, { partition: 1, offset: 1 }],
      generation: second.body.generation,
    });
    assert.is(committed.status, 200, JSON.stringify(committed.body));
    const group = await fixture.call("GET", "/groups/billing");
    assert.equal(
      group.body.partitions.map((p: { committedOffset: number }) =>
        p.committedOffset
      ),
      [2, 1],
    );
    const beat = await fixture.call("POST", `${member}/heartbeat`);
    assert.is(beat.status, 200);
    assert.is(beat.body.generation, second.body.generation);
  });
});

test("POST /groups/:group/members/:member/fetch long-polls until a publish", async () => {
  await withBroker(1, async (fixture) => {
    const joined = await fixture.call("POST", "/groups/billing/members", {
      topic: "orders",
    });
    const member = `/groups/billing/members/${joined.body.memberId}`;
    const empty = await fixture.call("POST", `${member}/fetch`);
    assert.equal(empty.body.records, []);

    const waiting = fixture.call("POST", `${member}/fetch`, {
      maxWaitMs: 20_000,
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    await publish(fixture, 0, ["late"]);
    const woken = await waiting;
    assert.is(woken.status, 200);
    assert.equal(woken.body.records.map((r: { value: string }) => r.value), [
      "late",
    ]);
  });
});

test("POST /groups/:group/members with a second member splits the partitions", async () => {
  await withBroker(4, async (fixture) => {
    const a = await fixture.call("POST", "/groups/billing/members", {
      topic: "orders",
      memberId: "a",
    });
    assert.equal(partitionsOf(a.body.partitions), [0, 1, 2, 3]);
    const b = await fixture.call("POST", "/groups/billing/members", {
      topic: "orders",
      memberId: "b",
    });
    assert.is(b.status, 201);
    // a lets go at once (its revocation returns at once), so b gets its
    // share before the join answers.
    assert.is(b.body.partitions.length, 2);
    const fetched = await fixture.call(
      "POST",
      "/groups/billing/members/a/fetch",
    );
    const owned = [
      ...partitionsOf(fetched.body.assignment),
      ...partitionsOf(b.body.partitions),
    ].sort();
    assert.equal(owned, [0, 1, 2, 3]);
    assert.is(fetched.body.assignment.length, 2);
  });
});

test("POST /groups/:group/members: a member that stops polling expires and its partitions move", async () => {
  await withBroker(2, async (fixture) => {
    const quiet = await fixture.call("POST", "/groups/billing/members", {
      topic: "orders",
      memberId: "quiet",
      sessionTimeoutMs: 300,
    });
    assert.is(quiet.body.sessionTimeoutMs, 300);
    assert.is(quiet.body.heartbeatMs, 100);
    await fixture.call("POST", "/groups/billing/members", {
      topic: "orders",
      memberId: "busy",
    });
    await eventually(async () => {
      const fetched = await fixture.call(
        "POST",
        "/groups/billing/members/busy/fetch",
      );
      return fetched.body.assignment.length === 2;
    });
    const gone = await fixture.call(
      "POST",
      "/groups/billing/members/quiet/fetch",
    );
    assert.is(gone.status, 404);
    assert.is(gone.body.error.code, "not_found");
    const group = await fixture.call("GET", "/groups/billing");
    assert.equal(group.body.members.map((m: { id: string }) => m.id), [
      "busy",
    ]);
  });
});

test("DELETE /groups/:group/members/:member leaves; a new member resumes from the commit", async () => {
  await withBroker(1, async (fixture) => {
    await publish(fixture, 0, ["a", "b", "c"]);
    const first = await fixture.call("POST", "/groups/billing/members", {
      topic: "orders",
      from: "earliest",
    });
    const member = `/groups/billing/members/${first.body.memberId}`;
    const fetched = await fixture.call("POST", `${member}/fetch`, {
      maxRecords: 2,
    });
    assert.equal(fetched.body.records.map((r: { value: string }) => r.value), [
      "a",
      "b",
    ]);
    await fixture.call("POST", `${member}/commit`, {
      offsets: [{ partition: 0, offset: 2 }],
      generation: fetched.body.generation,
    });
    const left = await fixture.call("DELETE", member);
    assert.is(left.status, 204);
    const again = await fixture.call("DELETE", member);
    assert.is(again.status, 404);

    const second = await fixture.call("POST", "/groups/billing/members", {
      topic: "orders",
      from: "earliest",
    });
    assert.equal(second.body.partitions, [{ partition: 0, offset: 2 }]);
    const rest = await fixture.call(
      "POST",
      `/groups/billing/members/${second.body.memberId}/fetch`,
    );
    assert.equal(rest.body.records.map((r: { value: string }) => r.value), [
      "c",
    ]);
  });
});

test("POST /groups/:group/members/:member/commit refuses a stale generation and an unassigned partition", async () => {
  await withBroker(2, async (fixture) => {
    await publish(fixture, 0, ["a"]);
    const a = await fixture.call("POST", "/groups/billing/members", {
      topic: "orders",
      memberId: "a",
      from: "earliest",
    });
    const oldGeneration = a.body.generation;
    // Taking the member id over starts a new generation: the old one is fenced.
    const taken = await fixture.call("POST", "/groups/billing/members", {
      topic: "orders",
      memberId: "a",
      from: "earliest",
    });
    assert.ok(taken.body.generation > oldGeneration);
    const stale = await fixture.call(
      "POST",
      "/groups/billing/members/a/commit",
      { offsets: [{ partition: 0, offset: 1 }], generation: oldGeneration },
    );
    assert.is(stale.status, 409);
    assert.is(stale.body.error.code, "stale_generation");

    await fixture.call("POST", "/groups/billing/members", {
      topic: "orders",
      memberId: "b",
    });
    const owned = await fixture.call(
      "POST",
      "/groups/billing/members/a/heartbeat",
    );
    const other = partitionsOf(owned.body.assignment)[0] === 0 ? 1 : 0;
    const unassigned = await fixture.call(
      "POST",
      "/groups/billing/members/a/commit",
      { offsets: [{ partition: other, offset: 0 }] },
    );
    assert.is(unassigned.status, 409);
    assert.is(unassigned.body.error.code, "not_assigned");

    const unknown = await fixture.call(
      "POST",
      "/groups/billing/members/nobody/commit",
      { offsets: [] },
    );
    assert.is(unknown.status, 404);
  });
});

test("DELETE /topics/:topic ends a member's waiting fetch at once", async () => {
  await withBroker(2, async (fixture) => {
    const joined = await fixture.call("POST", "/groups/billing/members", {
      topic: "orders",
    });
    const member = `/groups/billing/members/${joined.body.memberId}`;
    const waiting = fixture.call("POST", `${member}/fetch`, {
      maxWaitMs: 30_000,
    });
    await new Promise((resolve) => setTimeout(resolve, 100));
    const deleted = await fixture.call("DELETE", "/topics/orders");
    assert.is(deleted.status, 204);
    // The delete removed the member: the fetch ends long before its 30 s
    // poll would, telling the member to join again.
    const ended = await waiting;
    assert.is(ended.status, 404, JSON.stringify(ended.body));
    assert.is(ended.body.error.code, "not_found");
    const created = await fixture.call("POST", "/topics", {
      name: "invoices",
    });
    assert.is(created.status, 201, JSON.stringify(created.body));
  });
});

test("POST /groups/:group/members/:member/fetch, heartbeat and commit answer not_found after the topic is deleted", async () => {
  await withBroker(1, async (fixture) => {
    const members: string[] = [];
    for (let i = 0; i < 2; i++) {
      const joined = await fixture.call("POST", "/groups/billing/members", {
        topic: "orders",
      });
      assert.is(joined.status, 201);
      members.push(`/groups/billing/members/${joined.body.memberId}`);
    }
    const deleted = await fixture.call("DELETE", "/topics/orders");
    assert.is(deleted.status, 204);
    // A topic of the same name is another topic: the members stay gone,
    // the one that owned the partition and the one that owned nothing.
    await fixture.running.broker.createTopic("orders", { partitions: 1 });
    for (const member of members) {
      for (
        const [path, body] of [
          ["fetch", { maxWaitMs: 0 }],
          ["heartbeat", undefined],
          ["commit", { offsets: [{ partition: 0, offset: 0 }] }],
        ] as const
      ) {
        const answer = await fixture.call("POST", `${member}/${path}`, body);
        assert.is(
          answer.status,
          404,
          `${path}: ${JSON.stringify(answer.body)}`,
        );
        assert.is(answer.body.error.code, "not_found");
      }
    }
  });
});

test("RunningBroker.stop answers a waiting member fetch with shutting_down", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "dakghar-http-members-"));
  const running = await startBroker({
    dataDir,
    port: 0,
    logger: silentLogger,
  });
  try {
    await running.broker.createTopic("orders", { partitions: 1 });
    const joined = await fetch(`${running.url}/groups/billing/members`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ topic: "orders" }),
    }).then((response) => response.json());
    const waiting = fetch(
      `${running.url}/groups/billing/members/${joined.memberId}/fetch`,
      {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ maxWaitMs: 30_000 }),
      },
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
    await running.stop();
    // Answered, not cut off, and not after its 30 s poll.
    const response = await waiting;
    assert.is(response.status, 503);
    assert.is((await response.json()).error.code, "shutting_down");
  } finally {
    await running.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test("POST /groups/:group/members/:member/fetch refuses maxRecords 0 and consumes nothing", async () => {
  await withBroker(1, async (fixture) => {
    await publish(fixture, 0, ["a"]);
    const joined = await fixture.call("POST", "/groups/billing/members", {
      topic: "orders",
      from: "earliest",
    });
    const member = `/groups/billing/members/${joined.body.memberId}`;
    const refused = await fixture.call("POST", `${member}/fetch`, {
      maxRecords: 0,
    });
    assert.is(refused.status, 400, JSON.stringify(refused.body));
    assert.is(refused.body.error.field, "maxRecords");
    const fetched = await fixture.call("POST", `${member}/fetch`, {});
    assert.equal(fetched.body.records.map((r: { value: string }) => r.value), [
      "a",
    ]);
  });
});

test("POST /groups/:group/members/:member/commit refuses an offset past the log end", async () => {
  await withBroker(1, async (fixture) => {
    await publish(fixture, 0, ["a"]);
    const joined = await fixture.call("POST", "/groups/billing/members", {
      topic: "orders",
      from: "earliest",
    });
    const member = `/groups/billing/members/${joined.body.memberId}`;
    const past = await fixture.call("POST", `${member}/commit`, {
      offsets: [{ partition: 0, offset: 999 }],
    });
    assert.is(past.status, 416, JSON.stringify(past.body));
    assert.is(past.body.error.code, "offset_out_of_range");
    assert.is(past.body.error.logEndOffset, 1);
    // The broker call WebSocket commits go through refuses it too.
    try {
      await fixture.running.broker.commit(
        "billing",
        "orders",
        0,
        2,
        joined.body.memberId,
        joined.body.generation,
      );
      assert.unreachable("commit past the log end was accepted");
    } catch (error) {
      assert.is((error as { code?: string }).code, "offset_out_of_range");
    }
    const atEnd = await fixture.call("POST", `${member}/commit`, {
      offsets: [{ partition: 0, offset: 1 }],
    });
    assert.is(atEnd.status, 200, JSON.stringify(atEnd.body));
    const group = await fixture.call("GET", "/groups/billing");
    assert.equal(group.body.partitions[0].committedOffset, 1);
    assert.equal(group.body.partitions[0].lag, 0);
  });
});

test("POST /groups/:group/members/:member/fetch reads only what a filtered stream group matches", async () => {
  await withBroker(1, async (fixture) => {
    const created = await fixture.call("PUT", "/groups/eu-billing", {
      topic: "orders",
      mode: "stream",
      filter: { tags: ["eu"] },
    });
    assert.is(created.status, 200, JSON.stringify(created.body));
    await fixture.call("POST", "/topics/orders/records", {
      records: [
        { value: "a", tags: ["eu"] },
        { value: "b", tags: ["us"] },
        { value: "c" },
        { value: "d", tags: ["eu", "vip"] },
        { value: "e", tags: ["us"] },
      ],
    });
    const joined = await fixture.call("POST", "/groups/eu-billing/members", {
      topic: "orders",
      from: "earliest",
    });
    assert.is(joined.status, 201, JSON.stringify(joined.body));
    const member = `/groups/eu-billing/members/${joined.body.memberId}`;
    const values: string[] = [];
    let assignment: Assignment[] = [];
    for (let i = 0; i < 20 && values.length < 2; i++) {
      const fetched = await fixture.call("POST", `${member}/fetch`, {
        maxWaitMs: 200,
      });
      assert.is(fetched.status, 200, JSON.stringify(fetched.body));
      for (const record of fetched.body.records) {
        assert.ok(record.tags.includes("eu"));
        values.push(record.value);
      }
      assignment = fetched.body.assignment;
    }
    assert.equal(values, ["a", "d"]);
    // The position is past what the filter skipped, up to the log end.
    const last = await fixture.call("POST", `${member}/fetch`, {});
    assert.equal(last.body.records, []);
    assert.ok(assignment[0].offset >= 4);
    assert.is(last.body.assignment[0].offset, 5);
  });
});

test.run();
