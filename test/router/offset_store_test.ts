import { suite } from "uvu";
import * as assert from "uvu/assert";
import { silentLogger } from "../../src/logger.ts";
import {
  OffsetStore,
  type StoredGroup,
} from "../../src/router/offset_store.ts";
import type { FileSystem } from "../../src/runtime/types.ts";
import { makeTempDir, removeTempDir } from "./_temp_dir.ts";
import { runtime as testRuntime } from "../../src/runtime/mod.ts";

const test = suite("offset_store");
let dir = "";

test.before.each(() => {
  dir = makeTempDir("offsets");
});
test.after.each(() => {
  removeTempDir(dir);
});

/** The real file system, counting atomic writes and holding each until released. */
function gatedFs() {
  const written: string[] = [];
  const gates: (() => void)[] = [];
  const fs: FileSystem = {
    ...testRuntime.fs,
    writeFileAtomicAsync: async (path, bytes) => {
      await new Promise<void>((resolve) => gates.push(resolve));
      written.push(new TextDecoder().decode(bytes));
      await testRuntime.fs.writeFileAtomicAsync(path, bytes);
    },
  };
  const release = async () => {
    while (gates.length === 0) await new Promise((r) => setTimeout(r, 1));
    gates.shift()!();
  };
  return { fs, written, release };
}

test("save() coalesces saves made while a write runs into one write", async () => {
  const { fs, written, release } = gatedFs();
  const store = new OffsetStore(fs, dir, silentLogger);
  store.load();
  const group: StoredGroup = { name: "g", mode: "stream", offsets: {} };
  const snapshot = () => structuredClone(group);
  const settled: string[] = [];

  group.offsets.t = { "0": 1 };
  const first = store.save("g", snapshot).then(() => settled.push("first"));
  group.offsets.t = { "0": 2 };
  const second = store.save("g", snapshot).then(() => settled.push("second"));
  group.offsets.t = { "0": 3 };
  const third = store.save("g", snapshot).then(() => settled.push("third"));

  await release();
  await first;
  assert.equal(settled, ["first"]);
  await release();
  await Promise.all([second, third]);
  assert.is(written.length, 2);
  assert.equal(JSON.parse(written[0]).offsets, { t: { "0": 1 } });
  assert.equal(JSON.parse(written[1]).offsets, { t: { "0": 3 } });
  assert.equal(store.load(), [{
    name: "g",
    mode: "stream",
    offsets: { t: { "0": 3 } },
  }]);
});

test("load() skips unreadable group files", () => {
  const store = new OffsetStore(testRuntime.fs, dir, silentLogger);
  store.load();
  testRuntime.fs.writeFileAtomic(
    `${dir}/groups/bad.json`,
    new Uint8Array([123]),
  );
  assert.equal(store.load(), []);
});

test("load() reads a queue group's settings and an old file as a stream group", async () => {
  const store = new OffsetStore(testRuntime.fs, dir, silentLogger);
  store.load();
  testRuntime.fs.writeFileAtomic(
    `${dir}/groups/old.json`,
    new TextEncoder().encode(
      JSON.stringify({ name: "old", mode: "stream", offsets: { t: { 0: 4 } } }),
    ),
  );
  const settings = {
    topic: "t",
    mode: "queue" as const,
    from: "earliest" as const,
    filter: { tags: ["eu"] },
    queue: {
      ackTimeoutMs: 100,
      maxDeliveries: 2,
      backoffInitialMs: 10,
      backoffMaxMs: 20,
      deadLetterTopic: "t.q.dlq",
      maxUnsettled: 50,
    },
  };
  await store.save("q", () => ({
    name: "q",
    mode: "queue",
    offsets: {},
    settings,
  }));
  const loaded = store.load().sort((a, b) => a.name < b.name ? -1 : 1);
  assert.equal(loaded, [
    { name: "old", mode: "stream", offsets: { t: { 0: 4 } } },
    { name: "q", mode: "queue", offsets: {}, settings },
  ]);
});

test.run();
