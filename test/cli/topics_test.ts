import { suite } from "uvu";
import * as assert from "uvu/assert";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type RunningBroker, startBroker } from "../../src/server.ts";
import { runCli } from "./_run_cli.ts";

const test = suite("cli topics");

async function withBroker(run: (running: RunningBroker) => Promise<void>) {
  const dataDir = mkdtempSync(join(tmpdir(), "dakghar-cli-topics-"));
  const running = await startBroker({ dataDir, port: 0 });
  try {
    await run(running);
  } finally {
    await running.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

test("topics create, list, describe and delete exit 0, 1 or 3", async () => {
  await withBroker(async ({ url }) => {
    const created = await runCli(url, [
      "topics",
      "create",
      "orders",
      "--partitions",
      "3",
      "--retention-ms=-1",
      "--flush",
      "interval",
    ]);
    assert.is(created.code, 0, created.stderr);
    assert.is(created.stdout.length, 0);

    const [again, list, described, unknown] = await Promise.all([
      runCli(url, ["topics", "create", "orders"]),
      runCli(url, ["topics", "list"]),
      runCli(url, ["topics", "describe", "orders"]),
      runCli(url, ["topics", "describe", "missing"]),
    ]);
    assert.is(again.code, 1);
    assert.match(again.stderr, "topic_exists");
    assert.is(list.code, 0);
    assert.is(String(list.stdout), "orders\n");
    assert.is(described.code, 0);
    const topic = JSON.parse(String(described.stdout));
    assert.is(topic.partitions.length, 3);
    assert.is(topic.config.retentionMs, -1);
    assert.is(topic.config.flush, "interval");
    assert.is(unknown.code, 3);
    assert.match(unknown.stderr, "unknown_topic");

    const deleted = await runCli(url, ["topics", "delete", "orders"]);
    assert.is(deleted.code, 0, deleted.stderr);
    const [deletedAgain, empty] = await Promise.all([
      runCli(url, ["topics", "delete", "orders"]),
      runCli(url, ["topics", "list", "--json"]),
    ]);
    assert.is(deletedAgain.code, 3);
    assert.equal(JSON.parse(String(empty.stdout)), { topics: [] });
  });
});

test("dakghar exits 2 for usage errors and 0 for --help", async () => {
  await withBroker(async ({ url }) => {
    const usageErrors = [
      [],
      ["nonsense"],
      ["topics"],
      ["topics", "create"],
      ["topics", "create", "t", "--partitions", "many"],
      ["topics", "create", "t", "--flush", "never"],
      ["topics", "list", "--bogus"],
      ["produce"],
      ["consume", "t", "--format", "xml"],
      ["consume", "t", "--from", "yesterday"],
      ["consume", "t", "--group", "g", "--from", "5"],
      ["groups", "describe"],
    ];
    const results = await Promise.all(
      usageErrors.map((args) => runCli(url, args)),
    );
    for (const [index, result] of results.entries()) {
      assert.is(result.code, 2, usageErrors[index].join(" "));
      assert.is(result.stdout.length, 0);
      assert.ok(result.stderr.length > 0);
    }

    const helps = await Promise.all(
      [["--help"], ["topics", "-h"], ["consume", "--help"], ["serve", "-h"]]
        .map((args) => runCli(url, args)),
    );
    for (const help of helps) {
      assert.is(help.code, 0);
      assert.match(String(help.stdout), /^Usage:[\s\S]*dakghar/);
    }
  });
});

test("dakghar exits 1 when the broker cannot be reached or refuses the token", async () => {
  await withBroker(async ({ url }) => {
    const [unreachable] = await Promise.all([
      runCli(url, ["topics", "list", "--url", "http://127.0.0.1:1"]),
    ]);
    assert.is(unreachable.code, 1);
    assert.match(unreachable.stderr, "unreachable");
  });
  const dataDir = mkdtempSync(join(tmpdir(), "dakghar-cli-topics-"));
  const running = await startBroker({ dataDir, port: 0, token: "s3cret" });
  try {
    const [refused, accepted] = await Promise.all([
      runCli(running.url, ["topics", "list", "--token", "wrong"]),
      runCli(running.url, ["topics", "list", "--token", "s3cret"]),
    ]);
    assert.is(refused.code, 1);
    assert.match(refused.stderr, "unauthorized");
    assert.is(accepted.code, 0, accepted.stderr);
  } finally {
    await running.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test.run();
