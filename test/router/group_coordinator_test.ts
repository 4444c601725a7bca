import { suite } from "uvu";
import * as assert from "uvu/assert";
import type { MemberHandle, PartitionAssignment } from "../../src/broker.ts";
import { DakgharError, UnknownTopicError } from "../../src/errors.ts";
import { silentLogger } from "../../src/logger.ts";
import {
  GroupCoordinator,
  type LogRange,
  rangeAssign,
} from "../../src/router/group_coordinator.ts";
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

function coordinator(): GroupCoordinator {
  const groups = new GroupCoordinator({
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
      state.assigned = a.partitions;
      events.push(
        `assign ${a.generation} ${a.partitions.map((p) => p.partition)}`,
      );
    },
    onRevocation(r) {
      state.assigned = [];
      events.push(`revoke ${r.generation} ${r.partitions}`);
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

test("rangeAssign() splits partitions into contiguous ranges", () => {
  assert.equal([...rangeAssign(["a", "b"], 5)], [["a", [0, 1, 2]], [
    "b",
    [3, 4],
  ]]);
  assert.equal([...rangeAssign(["a", "b", "c"], 2)], [["a", [0]], ["b", [1]], [
    "c",
    [],
  ]]);
});

test("joinGroup() revokes and reassigns on every join and leave", async () => {
  const groups = coordinator();
  const a = member("a");
  const b = member("b");
  await groups.joinGroup("g", "orders", a.handle, "earliest");
  await groups.joinGroup("g", "orders", b.handle, "earliest");
  await groups.leaveGroup("g", "a");
  assert.equal(a.state.events, [
    "assign 1 0,1,2",
    "revoke 1 0,1,2",
    "assign 2 0,1",
    "revoke 2 0,1",
  ]);
  assert.equal(b.state.events, ["assign 2 2", "revoke 2 2", "assign 3 0,1,2"]);
  assert.equal(groups.listGroups(), [{
    name: "g",
    mode: "stream",
    generation: 3,
    members: 1,
  }]);
});

test("joinGroup() tells a member without partitions, once per change", async () => {
  const groups = coordinator();
  const [a, b, c, d, e] = ["a", "b", "c", "d", "e"].map(member);
  for (const m of [b, c, d]) {
    await groups.joinGroup("g", "orders", m.handle, "earliest");
  }
  await groups.joinGroup("g", "orders", a.handle, "earliest");
  assert.equal(d.state.events.slice(-2), ["revoke 3 2", "assign 4 "]);
  assert.equal(d.state.assigned, []);

  await groups.joinGroup("g", "orders", e.handle, "earliest");
  assert.equal(e.state.events, ["assign 5 "]);
  assert.equal(d.state.events.slice(-1), ["assign 4 "]);

  await groups.leaveGroup("g", "a");
  await groups.leaveGroup("g", "e");
  assert.equal(d.state.events.slice(-1), ["assign 7 2"]);
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
  logs.get("orders")![0].logEndOffset = 150;
  const b = member("b");
  await groups.joinGroup("g", "orders", b.handle, "earliest");
  assert.equal(a.state.assigned, [{ partition: 0, offset: 100 }, {
    partition: 1,
    offset: 50,
  }]);
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
  const generation = b.state.generation;

  assert.is(
    codeOf(() => groups.commit("g", "orders", 0, 5, "a", oldGeneration)),
    "stale_generation",
  );
  assert.is(
    codeOf(() => groups.commit("g", "orders", 2, 5, "a", generation)),
    "not_assigned",
  );
  assert.is(
    codeOf(() => groups.commit("nope", "orders", 0, 5, "a", generation)),
    "unknown_group",
  );
  await groups.commit("g", "orders", 2, 15, "b", generation);
});

test("commit() from inside onRevocation uses the ending generation", async () => {
  const groups = coordinator();
  const commits: Promise<void>[] = [];
  const a = member("a");
  const handle: MemberHandle = {
    ...a.handle,
    onRevocation(r) {
      for (const partition of r.partitions) {
        commits.push(
          groups.commit("g", r.topic, partition, 7, "a", r.generation),
        );
      }
    },
  };
  await groups.joinGroup("g", "orders", handle, "earliest");
  await groups.joinGroup("g", "orders", member("b").handle, "earliest");
  await Promise.all(commits);
  assert.is(commits.length, 3);
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
  assert.equal(
    description.partitions.map((p) => [p.committedOffset, p.lag, p.owner]),
    [
      [42, 58, "a"],
      [30, 20, "a"],
      [null, 10, "a"],
    ],
  );
  assert.equal(description.members, [{
    id: "a",
    topic: "orders",
    partitions: [0, 1, 2],
  }]);
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

test.run();
