import { suite } from "uvu";
import * as assert from "uvu/assert";
import { DakgharError } from "../../src/errors.ts";
import { silentLogger } from "../../src/logger.ts";
import { runtime } from "../../src/runtime/mod.ts";
import {
  defaultTopicConfig,
  resolveTopicConfig,
  TopicStore,
  validateTopicName,
} from "../../src/router/topic_store.ts";
import { makeTempDir, removeTempDir } from "./_temp_dir.ts";

const test = suite("topic_store");
let dir = "";

test.before.each(() => {
  dir = makeTempDir("topics");
});
test.after.each(() => {
  removeTempDir(dir);
});

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    return error instanceof DakgharError ? error.code : String(error);
  }
  return undefined;
}

test("validateTopicName() accepts the allowed characters only", () => {
  assert.is(validateTopicName("orders.v2_eu-1"), "orders.v2_eu-1");
  for (
    const bad of ["", ".", "..", "__internal", "a/b", "a b", "x".repeat(201)]
  ) {
    assert.is(codeOf(() => validateTopicName(bad)), "invalid_topic_name", bad);
  }
  assert.is(codeOf(() => validateTopicName("x".repeat(200))), undefined);
});

test("resolveTopicConfig() fills defaults and checks ranges", () => {
  const config = resolveTopicConfig({ partitions: 3, flush: "interval" });
  assert.equal(config, {
    ...defaultTopicConfig,
    partitions: 3,
    flush: "interval",
  });
  assert.is(resolveTopicConfig({ retentionMs: -1 }).retentionMs, -1);
  assert.is(defaultTopicConfig.retentionDropsUnsettled, false);
  assert.is(
    resolveTopicConfig({ retentionDropsUnsettled: true })
      .retentionDropsUnsettled,
    true,
  );
  const bad: Record<string, unknown>[] = [
    { partitions: 0 },
    { partitions: 1.5 },
    { partitions: 5000 },
    { retentionBytes: -2 },
    { maxMessageBytes: "big" },
    { segmentBytes: 10 },
    { flush: "never" },
    { retentionDropsUnsettled: "yes" },
    { colour: "red" },
  ];
  for (const options of bad) {
    assert.is(
      codeOf(() => resolveTopicConfig(options)),
      "invalid_config",
      JSON.stringify(options),
    );
  }
});

test("resolveTopicConfig() rejects keys inherited from Object.prototype", () => {
  for (
    const key of ["__proto__", "constructor", "toString", "hasOwnProperty"]
  ) {
    // JSON.parse makes `__proto__` an own key, as a request body would.
    const options = JSON.parse(`{"${key}": 5}`);
    try {
      resolveTopicConfig(options);
      assert.unreachable(key);
    } catch (error) {
      assert.instance(error, DakgharError, key);
      const { code, context, message } = error as DakgharError;
      assert.is(code, "invalid_config", key);
      assert.is(context.setting, key);
      assert.match(message, "unknown setting");
    }
  }
});

test("create() persists topic.json and load() reads it back", () => {
  const store = new TopicStore(runtime.fs, dir, silentLogger);
  store.load();
  const created = store.create("orders", { partitions: 2 }, 1234);
  assert.equal(created, {
    name: "orders",
    createdAt: 1234,
    config: { ...defaultTopicConfig, partitions: 2 },
  });
  assert.ok(runtime.fs.exists(`${dir}/topics/orders/topic.json`));
  assert.is(store.partitionDir("orders", 1), `${dir}/topics/orders/1`);

  const reloaded = new TopicStore(runtime.fs, dir, silentLogger);
  assert.equal(reloaded.load(), [created]);
});

test("create() rejects a topic that exists", () => {
  const store = new TopicStore(runtime.fs, dir, silentLogger);
  store.load();
  store.create("orders", {}, 1);
  assert.is(codeOf(() => store.create("orders", {}, 2)), "topic_exists");
});

test("load() skips a directory without a readable topic.json", () => {
  const store = new TopicStore(runtime.fs, dir, silentLogger);
  store.load();
  store.create("good", {}, 1);
  runtime.fs.mkdirs(`${dir}/topics/half/0`);
  runtime.fs.mkdirs(`${dir}/topics/torn`);
  runtime.fs.writeFileAtomic(
    `${dir}/topics/torn/topic.json`,
    new TextEncoder().encode("{"),
  );
  const names = new TopicStore(runtime.fs, dir, silentLogger).load().map((
    t,
  ) => t.name);
  assert.equal(names, ["good"]);
});

test("delete() removes the topic and its directory; list() is sorted", () => {
  const store = new TopicStore(runtime.fs, dir, silentLogger);
  store.load();
  store.create("b", {}, 1);
  store.create("a", {}, 1);
  runtime.fs.mkdirs(store.partitionDir("b", 0));
  assert.equal(store.list().map((t) => t.name), ["a", "b"]);
  store.delete("b");
  assert.equal(store.list().map((t) => t.name), ["a"]);
  assert.not.ok(runtime.fs.exists(`${dir}/topics/b`));
  assert.equal(
    new TopicStore(runtime.fs, dir, silentLogger).load().map((t) => t.name),
    ["a"],
  );
});

test.run();
