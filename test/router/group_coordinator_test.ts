import { suite } from "uvu";
import * as assert from "uvu/assert";
import type { MemberHandle, PartitionAssignment } from "../../src/broker.ts";
import { DakgharError, UnknownTopicError } from "../../src/errors.ts";
import { silentLogger } from "../../src/logger.ts";
import {
  GroupCoordinator,
  type LogRange,
  stickyAssign,
} from "../../src/router/group_coordinator.ts";
import { pickSeed, seededRandom } from "../log/_random.ts";
import { OffsetStore } from "../../src/router/offset_store.ts";
import { makeTempDir, removeTempDir } from "./_temp_dir.ts";
import { runtime as testRuntime } from "../../src/runtime/mod.ts";

const test = suite("group_coordinator");
let dir = "";
/** topic → log bounds per partition; tests edit it to move the logs. */
let logs: Map<string, LogRange[]>;

test.before.each(() => {
  dir = makeTempDir("groups");
  logs = new Map([
    ["orders", [
      { logStartOffset: 0, logEndOffset: 100 },
      { logStartOffset: 0, logEndOffset: 50 },
      { logStartOffset: 10, logEndOffset: 20 },
    ]],
  ]);
});
test.after.each(() => {
  removeTempDir(dir);
});

function coordinator(
  options: { sessionTimeoutMs?: number } = {},
): GroupCoordinator {
  const groups = new GroupCoordinator({
    sessionTimeoutMs: options.sessionTimeoutMs ?? 60_000,
    appendTimeAt: (_topic, _partition, offset) => Promise.resolve(offset),
    now: () => 1000,
    store: new OffsetStore(testRuntime.fs, dir, silentLogger),
    partitionCount: (topic) => {
      const ranges = logs.get(topic);
      if (ranges === undefined) throw new UnknownTopicError(topic);
      return ranges.length;
    },
    logRanges: (topic) => Promise.resolve(logs.get(topic)!),
    log: silentLogger,
  });
  groups.load();
  return groups;
}

/** A member that records what it is told. */
function member(id: string) {
  const events: string[] = [];
  const state = {
    generation: 0,
    assigned: [] as PartitionAssignment[],
    events,
  };
  const handle: MemberHandle = {
    id,
    onAssignment(a) {
      state.generation = a.generation;
      state.assigned = [...state.assigned, ...a.partitions];
      events.push(
        `assign ${a.generation} ${a.partitions.map((p) => p.partition)}`,
      );
    },
    onRevocation(r) {
      state.assigned = state.assigned.filter((p) =>
        !r.partitions.includes(p.partition)
      );
      events.push(`revoke ${r.generation} ${r.partitions}`);
    },
    onSeek(s) {
      state.generation = s.generation;
      events.push(`seek ${s.generation} ${s.partition}@${s.offset}`);
    },
  };
  return { handle, state };
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    return error instanceof DakgharError ? error.code : String(error);
  }
  return undefined;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test("stickyAssign() balances and keeps what members hold", () => {
  const seed = pickSeed();
  console.log(`stickyAssign seed ${seed}`);
  const random = seededRandom(seed);
  let previous = new Map<number, string>();
  let ids: string[] = [];
  for (let round = 0; round < 300; round++) {
    const count = 1 + Math.floor(random() * 12);
    if (ids.length > 0 && random() < 0.4) {
      ids = ids.filter((_, i) => i !== Math.floor(random() * ids.length));
    } else ids = [...ids, `m${round}`];
    const next = stickyAssign(ids, count, previous);
    const sizes = [...next.values()].map((p) => p.length);
    const all = [...next.values()].flat().sort((a, b) => a - b);
    if (ids.length > 0) {
      assert.ok(Math.max(...sizes) - Math.min(...sizes) <= 1, `seed ${seed}`);
      assert.equal(all, [...Array(count).keys()], `seed ${seed}`);
    }
    // A surviving member under its quota lost nothing it held.
    const quota = Math.ceil(count / Math.max(1, ids.length));
    for (const id of ids) {
      const held = [...previous].filter(([p, o]) => o === id && p < count)
        .map(([p]) => p);
      const now = next.get(id)!;
      if (held.length < quota) {
        assert.ok(held.every((p) => now.includes(p)), `seed ${seed} ${id}`);
      }
    }
    previous = new Map();
    for (const [id, partitions] of next) {
      for (const p of partitions) previous.set(p, id);
    }
  }
});

test("joinGroup() moves only the partitions that change owner", async () => {
  const groups = coordinator();
  const [a, b, c] = ["a", "b", "c"].map(member);
  await groups.joinGroup("g", "orders", a.handle, "earliest");
  await groups.joinGroup("g", "orders", b.handle, "earliest");
  await groups.joinGroup("g", "orders", c.handle, "earliest");
  assert.equal(a.state.events, ["assign 1 0,1,2", "revoke 1 2", "revoke 1 1"]);
  assert.equal(b.state.events, ["assign 2 2"]);
  assert.equal(c.state.events, ["assign 3 1"]);
  await groups.leaveGroup("g", "a");
  // b and c keep theirs; a's partition goes to one of them, nobody is revoked.
  assert.equal(b.state.events, ["assign 2 2", "assign 4 0"]);
  assert.equal(c.state.events, ["assign 3 1"]);
  assert.equal(groups.listGroups(), [{
    name: "g",
    mode: "stream",
    generation: 4,
    members: 2,
  }]);
});

test("joinGroup() tells a member without partitions, once per change", async () => {
  const groups = coordinator();
  const [a, b, c, d] = ["a", "b", "c", "d"].map(member);
  for (const m of [a, b, c]) {
    await groups.joinGroup("g", "orders", m.handle, "earliest");
  }
  await groups.joinGroup("g", "orders", d.handle, "earliest");
  assert.equal(d.state.events, ["assign 4 "]);
  await groups.leaveGroup("g", "b");
  assert.equal(d.state.events, ["assign 4 ", "assign 5 2"]);
  await groups.joinGroup("g", "orders", b.handle, "earliest");
  assert.equal(b.state.events.at(-1), "assign 6 ");
  await groups.leaveGroup("g", "c");
  assert.equal(b.state.events.at(-1), "assign 7 1");
});

test("joinGroup() starts at the log start or end as the member asks", async () => {
  const groups = coordinator();
  const early = member("early");
  await groups.joinGroup("g1", "orders", early.handle, "earliest");
  assert.equal(early.state.assigned.map((p) => p.offset), [0, 0, 10]);
  const late = member("late");
  await groups.joinGroup("g2", "orders", late.handle, "latest");
  assert.equal(late.state.assigned.map((p) => p.offset), [100, 50, 20]);
});

test("joinGroup() keeps a start chosen earlier across rebalances", async () => {
  const groups = coordinator();
  const a = member("a");
  await groups.joinGroup("g", "orders", a.handle, "latest");
  logs.get("orders")![2].logEndOffset = 30;
  const b = member("b");
  await groups.joinGroup("g", "orders", b.handle, "earliest");
  assert.equal(b.state.assigned, [{ partition: 2, offset: 20 }]);
});

test("joinGroup() rejects an unknown topic", () => {
  const groups = coordinator();
  assert.is(
    codeOf(() => groups.joinGroup("g", "nope", member("a").handle, "earliest")),
    "unknown_topic",
  );
});

test("commit() checks generation and assignment", async () => {
  const groups = coordinator();
  const a = member("a");
  const b = member("b");
  await groups.joinGroup("g", "orders", a.handle, "earliest");
  const oldGeneration = a.state.generation;
  await groups.joinGroup("g", "orders", b.handle, "earliest");

  // a kept 0 and 1 and was never told of a new generation: still valid.
  await groups.commit("g", "orders", 0, 5, "a", oldGeneration);
  assert.is(
    codeOf(() => groups.commit("g", "orders", 2, 5, "a", oldGeneration)),
    "not_assigned",
  );
  assert.is(
    codeOf(() => groups.commit("g", "orders", 2, 15, "b", oldGeneration)),
    "stale_generation",
  );
  assert.is(
    codeOf(() => groups.commit("g", "orders", 2, 15, "b", 99)),
    "stale_generation",
  );
  assert.is(
    codeOf(() => groups.commit("nope", "orders", 0, 5, "a", oldGeneration)),
    "unknown_group",
  );
  await groups.commit("g", "orders", 2, 15, "b", b.state.generation);
  const description = await groups.describeGroup("g");
  assert.equal(description.partitions.map((p) => p.committedOffset), [
    5,
    null,
    15,
  ]);
});

test("commit() from inside onRevocation still counts", async () => {
  const groups = coordinator();
  const commits: Promise<void>[] = [];
  const a = member("a");
  const handle: MemberHandle = {
    ...a.handle,
    onRevocation(r) {
      for (const partition of r.partitions) {
        commits.push(
          groups.commit("g", r.topic, partition, 17, "a", r.generation),
        );
      }
    },
  };
  await groups.joinGroup("g", "orders", handle, "earliest");
  const b = member("b");
  await groups.joinGroup("g", "orders", b.handle, "earliest");
  await Promise.all(commits);
  assert.is(commits.length, 1);
  assert.equal(b.state.assigned, [{ partition: 2, offset: 17 }]);
});

test("joinGroup() hands a partition over only after the owner lets go", async () => {
  const groups = coordinator();
  let letGo = () => {};
  const a = member("a");
  const handle: MemberHandle = {
    ...a.handle,
    onRevocation(r) {
      a.handle.onRevocation(r);
      return new Promise<void>((resolve) => letGo = resolve);
    },
  };
  await groups.joinGroup("g", "orders", handle, "earliest");
  const b = member("b");
  await groups.joinGroup("g", "orders", b.handle, "earliest");
  assert.equal(b.state.events, ["assign 2 "]);
  // Still a's until it lets go: its commit counts, b's would not.
  await groups.commit("g", "orders", 2, 12, "a", a.state.generation);
  assert.is(
    codeOf(() => groups.commit("g", "orders", 2, 12, "b", b.state.generation)),
    "not_assigned",
  );
  let description = await groups.describeGroup("g");
  assert.is(description.partitions[2].owner, null);

  letGo();
  await sleep(5);
  assert.equal(b.state.events, ["assign 2 ", "assign 2 2"]);
  assert.equal(b.state.assigned, [{ partition: 2, offset: 12 }]);
  assert.is(
    codeOf(() => groups.commit("g", "orders", 2, 13, "a", a.state.generation)),
    "not_assigned",
  );
  description = await groups.describeGroup("g");
  assert.is(description.partitions[2].owner, "b");
  await groups.close();
});

test("joinGroup() moves a partition whose owner never lets go after the session timeout", async () => {
  const groups = coordinator({ sessionTimeoutMs: 30 });
  const a = member("a");
  await groups.joinGroup("g", "orders", {
    ...a.handle,
    onRevocation: () => new Promise<void>(() => {}),
  }, "earliest");
  const b = member("b");
  await groups.joinGroup("g", "orders", b.handle, "earliest");
  assert.equal(b.state.events, ["assign 2 "]);
  await sleep(80);
  assert.equal(b.state.events, ["assign 2 ", "assign 2 2"]);
  await groups.close();
});

test("disconnect() keeps the partitions for the session timeout, then moves them", async () => {
  const groups = coordinator({ sessionTimeoutMs: 40 });
  const [a, b] = ["a", "b"].map(member);
  await groups.joinGroup("g", "orders", a.handle, "earliest");
  await groups.joinGroup("g", "orders", b.handle, "earliest");
  groups.disconnect("g", "b", b.handle);
  let description = await groups.describeGroup("g");
  assert.equal(description.members.map((m) => [m.id, m.connected]), [
    ["a", true],
    ["b", false],
  ]);
  assert.is(description.partitions[2].owner, "b");
  await sleep(100);
  assert.equal(a.state.events, ["assign 1 0,1,2", "revoke 1 2", "assign 3 2"]);
  description = await groups.describeGroup("g");
  assert.equal(description.members.map((m) => m.id), ["a"]);
  await groups.close();
});

test("joinGroup() with the id of a disconnected member gives its partitions back", async () => {
  const groups = coordinator({ sessionTimeoutMs: 40 });
  const [a, b] = ["a", "b"].map(member);
  await groups.joinGroup("g", "orders", a.handle, "earliest");
  await groups.joinGroup("g", "orders", b.handle, "earliest");
  await groups.commit("g", "orders", 2, 14, "b", b.state.generation);
  const oldGeneration = b.state.generation;
  groups.disconnect("g", "b", b.handle);
  const again = member("b");
  await groups.joinGroup("g", "orders", again.handle, "earliest");
  assert.equal(again.state.assigned, [{ partition: 2, offset: 14 }]);
  await sleep(80);
  // The timeout was cancelled; nobody else got partition 2.
  assert.equal(a.state.events, ["assign 1 0,1,2", "revoke 1 2"]);
  // The old session is a zombie: fenced.
  assert.is(
    codeOf(() => groups.commit("g", "orders", 2, 15, "b", oldGeneration)),
    "stale_generation",
  );
  await groups.commit("g", "orders", 2, 15, "b", again.state.generation);
  // The old handle leaving does not remove the new one.
  await groups.leaveGroup("g", "b", b.handle);
  groups.disconnect("g", "b", b.handle);
  assert.equal((await groups.describeGroup("g")).members.length, 2);
  await groups.close();
});

test("joinGroup() with the id of a live member fences the old handle", async () => {
  const groups = coordinator();
  const old = member("a");
  await groups.joinGroup("g", "orders", old.handle, "earliest");
  const fresh = member("a");
  await groups.joinGroup("g", "orders", fresh.handle, "earliest");
  assert.equal(old.state.events, ["assign 1 0,1,2", "revoke 1 0,1,2"]);
  assert.equal(fresh.state.events, ["assign 2 0,1,2"]);
  assert.is(
    codeOf(() => groups.commit("g", "orders", 0, 1, "a", 1)),
    "stale_generation",
  );
  await groups.commit("g", "orders", 0, 1, "a", 2);
});

test("seek() moves offsets, tells owners and fences older commits", async () => {
  const groups = coordinator();
  const [a, b] = ["a", "b"].map(member);
  await groups.joinGroup("g", "orders", a.handle, "earliest");
  await groups.joinGroup("g", "orders", b.handle, "earliest");
  const before = a.state.generation;
  const generation = await groups.seek("g", "orders", [
    { partition: 0, offset: 40 },
    { partition: 2, offset: 11 },
  ]);
  assert.equal(a.state.events.at(-1), `seek ${generation} 0@40`);
  assert.equal(b.state.events.at(-1), `seek ${generation} 2@11`);
  const description = await groups.describeGroup("g");
  assert.equal(description.partitions.map((p) => p.committedOffset), [
    40,
    null,
    11,
  ]);
  // A commit of a position delivered before the seek would undo it.
  assert.is(
    codeOf(() => groups.commit("g", "orders", 0, 90, "a", before)),
    "stale_generation",
  );
  // Partition 1 was not sought: the old generation still counts there.
  await groups.commit("g", "orders", 1, 3, "a", before);
  await groups.commit("g", "orders", 0, 41, "a", generation);
  assert.is(
    codeOf(() => groups.seek("g", "orders", [{ partition: 3, offset: 0 }])),
    "unknown_partition",
  );
});

test("seek() during a hand-over: the next owner starts at the seek", async () => {
  const groups = coordinator();
  let letGo = () => {};
  const a = member("a");
  await groups.joinGroup("g", "orders", {
    ...a.handle,
    onRevocation: (r) => {
      a.handle.onRevocation(r);
      return new Promise<void>((resolve) => letGo = resolve);
    },
  }, "earliest");
  const b = member("b");
  await groups.joinGroup("g", "orders", b.handle, "earliest");
  const before = a.state.generation;
  await groups.seek("g", "orders", [{ partition: 2, offset: 18 }]);
  // The releasing owner hears no seek and cannot commit over it.
  assert.not.ok(a.state.events.some((e) => e.startsWith("seek")));
  assert.is(
    codeOf(() => groups.commit("g", "orders", 2, 19, "a", before)),
    "stale_generation",
  );
  letGo();
  await sleep(5);
  assert.equal(b.state.assigned, [{ partition: 2, offset: 18 }]);
  await groups.close();
});

test("seek() on a group without members creates its offsets", async () => {
  const groups = coordinator();
  await groups.seek("fresh", "orders", [{ partition: 1, offset: 7 }]);
  const a = member("a");
  await groups.joinGroup("fresh", "orders", a.handle, "latest");
  assert.equal(a.state.assigned.map((p) => p.offset), [100, 7, 20]);
});

test("commit() persists offsets that a new coordinator loads", async () => {
  const groups = coordinator();
  const a = member("a");
  await groups.joinGroup("g", "orders", a.handle, "earliest");
  await Promise.all([
    groups.commit("g", "orders", 0, 40, "a", a.state.generation),
    groups.commit("g", "orders", 1, 30, "a", a.state.generation),
    groups.commit("g", "orders", 0, 42, "a", a.state.generation),
  ]);
  await groups.close();

  const reloaded = coordinator();
  const again = member("a");
  await reloaded.joinGroup("g", "orders", again.handle, "latest");
  assert.equal(again.state.assigned.map((p) => p.offset), [42, 30, 20]);
  const description = await reloaded.describeGroup("g");
  // The fake append time of a record is its offset; the clock reads 1000.
  assert.equal(
    description.partitions.map((p) => [
      p.committedOffset,
      p.lag,
      p.lagMs,
      p.owner,
    ]),
    [
      [42, 58, 958, "a"],
      [30, 20, 970, "a"],
      [null, 10, 990, "a"],
    ],
  );
  assert.equal(description.members, [{
    id: "a",
    topic: "orders",
    partitions: [0, 1, 2],
    connected: true,
  }]);
  await reloaded.commit("g", "orders", 1, 50, "a", again.state.generation);
  assert.is((await reloaded.describeGroup("g")).partitions[1].lagMs, 0);
});

test("joinGroup() clamps committed offsets into the log", async () => {
  const groups = coordinator();
  const a = member("a");
  await groups.joinGroup("g", "orders", a.handle, "earliest");
  await groups.commit("g", "orders", 0, 90, "a", a.state.generation);
  await groups.commit("g", "orders", 2, 12, "a", a.state.generation);
  await groups.leaveGroup("g", "a");

  // Retention passed offset 12 on partition 2; partition 0 was truncated.
  logs.get("orders")![0].logEndOffset = 80;
  logs.get("orders")![2].logStartOffset = 15;
  const b = member("b");
  await groups.joinGroup("g", "orders", b.handle, "earliest");
  assert.equal(b.state.assigned.map((p) => p.offset), [80, 0, 15]);
});

test("forgetTopic() revokes its members and drops its offsets", async () => {
  const groups = coordinator();
  const a = member("a");
  await groups.joinGroup("g", "orders", a.handle, "earliest");
  await groups.commit("g", "orders", 0, 5, "a", a.state.generation);
  logs.delete("orders");
  await groups.forgetTopic("orders");
  assert.equal(a.state.events.at(-1), "revoke 1 0,1,2");
  assert.equal(groups.listGroups(), []);
});

test("saveSettings() persists a queue group; joinGroup() refuses it; deleteGroup() drops it", async () => {
  const groups = coordinator();
  const settings = {
    topic: "orders",
    mode: "queue" as const,
    from: "earliest" as const,
    filter: null,
    queue: {
      ackTimeoutMs: 100,
      maxDeliveries: 2,
      backoffInitialMs: 10,
      backoffMaxMs: 20,
      deadLetterTopic: "orders.q.dlq",
      maxUnsettled: 50,
    },
  };
  await groups.saveSettings("q", settings);
  assert.throws(
    () => groups.joinGroup("q", "orders", member("a").handle, "earliest"),
    (error: DakgharError) => error.code === "bad_request",
  );
  await groups.close();

  const reloaded = coordinator();
  assert.equal(reloaded.groupInfo("q"), {
    mode: "queue",
    settings,
    topics: [],
  });
  assert.equal(reloaded.listGroups(), [{
    name: "q",
    mode: "queue",
    generation: 0,
    members: 0,
  }]);
  assert.equal((await reloaded.describeGroup("q")).settings, settings);
  await reloaded.deleteGroup("q");
  assert.is(reloaded.groupInfo("q"), undefined);
  try {
    await reloaded.deleteGroup("q");
    assert.unreachable("deleted twice");
  } catch (error) {
    assert.is((error as DakgharError).code, "unknown_group");
  }
  await reloaded.close();
  assert.equal(coordinator().listGroups(), []);
});

test.run();
