import { suite } from "uvu";
import * as assert from "uvu/assert";
import { Buffer } from "node:buffer";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type RunningBroker, startBroker } from "../../src/server.ts";
import { runCli, spawnCli } from "./_run_cli.ts";

const test = suite("cli produce and consume");

async function withBroker(run: (running: RunningBroker) => Promise<void>) {
  const dataDir = mkdtempSync(join(tmpdir(), "dakghar-cli-consume-"));
  const running = await startBroker({ dataDir, port: 0 });
  try {
    await run(running);
  } finally {
    await running.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

async function createTopic(url: string, name: string, partitions = 1) {
  const response = await fetch(`${url}/topics`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name, partitions }),
  });
  assert.is(response.status, 201);
}

async function publish(url: string, topic: string, values: string[]) {
  const response = await fetch(`${url}/topics/${topic}/records`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ records: values.map((value) => ({ value })) }),
  });
  assert.is(response.status, 200);
}

test("produce from arguments and stdin; consume --max gives the bytes back", async () => {
  await withBroker(async ({ url }) => {
    await createTopic(url, "lines");
    const fromArgs = await runCli(url, ["produce", "lines", "one", "two 2"]);
    assert.is(fromArgs.code, 0, fromArgs.stderr);
    // An empty line, a carriage return, non-UTF-8 bytes and a last line
    // without its newline all come back as they went in.
    const stdin = Buffer.concat([
      Buffer.from("three\n\nfour\r\nnaïve ☃\n"),
      Buffer.from([0xff, 0xfe, 0x00, 0x41, 0x0a]),
      Buffer.from("last"),
    ]);
    const fromStdin = await runCli(url, ["produce", "lines"], stdin);
    assert.is(fromStdin.code, 0, fromStdin.stderr);
    assert.is(fromStdin.stdout.length, 0);

    const consumed = await runCli(url, ["consume", "lines", "--max", "8"]);
    assert.is(consumed.code, 0, consumed.stderr);
    assert.equal(
      consumed.stdout,
      Buffer.concat([Buffer.from("one\ntwo 2\n"), stdin, Buffer.from("\n")]),
    );

    const [second, noFollow, fromOffset] = await Promise.all([
      runCli(url, ["consume", "lines", "--from", "1", "--max", "1"]),
      runCli(url, ["consume", "lines", "--no-follow", "--format", "json"]),
      runCli(url, ["consume", "lines", "--from", "7", "--no-follow"]),
    ]);
    assert.is(String(second.stdout), "two 2\n");
    assert.is(noFollow.code, 0, noFollow.stderr);
    const records = String(noFollow.stdout).trim().split("\n").map((line) =>
      JSON.parse(line)
    );
    assert.equal(records.map((record) => record.offset), [
      0,
      1,
      2,
      3,
      4,
      5,
      6,
      7,
    ]);
    assert.is(records[0].partition, 0);
    assert.is(records[6].valueEncoding, "base64");
    assert.is(String(fromOffset.stdout), "last\n");
  });
});

test("produce --json, --key and --header; consume --format json shows them", async () => {
  await withBroker(async ({ url }) => {
    await createTopic(url, "orders", 3);
    const stdin = [
      JSON.stringify({ key: "c-42", value: { total: 12.5 } }),
      JSON.stringify({ value: "plain", headers: { trace: "abc" } }),
    ].join("\n");
    const [json, keyed] = await Promise.all([
      runCli(url, ["produce", "orders", "--json"], stdin),
      runCli(url, [
        "produce",
        "orders",
        "--key",
        "c-42",
        "--header",
        "source=cli",
        "--header",
        "eq=a=b",
        "v1",
      ]),
    ]);
    assert.is(json.code, 0, json.stderr);
    assert.is(keyed.code, 0, keyed.stderr);

    const consumed = await runCli(url, [
      "consume",
      "orders",
      "--max",
      "3",
      "--format",
      "json",
    ]);
    assert.is(consumed.code, 0, consumed.stderr);
    const records = String(consumed.stdout).trim().split("\n").map((line) =>
      JSON.parse(line)
    );
    const byValue = new Map(records.map((record) => [record.value, record]));
    assert.is(byValue.get('{"total":12.5}').key, "c-42");
    assert.equal(byValue.get("plain").headers, { trace: "abc" });
    assert.is(byValue.get("v1").key, "c-42");
    assert.equal(byValue.get("v1").headers, { source: "cli", eq: "a=b" });
    // The same key lands on the same partition.
    assert.is(
      byValue.get("v1").partition,
      byValue.get('{"total":12.5}').partition,
    );

    const [badJson, unknown, unknownConsume] = await Promise.all([
      runCli(url, ["produce", "orders", "--json"], "{not json\n"),
      runCli(url, ["produce", "missing", "x"]),
      runCli(url, ["consume", "missing", "--max", "1"]),
    ]);
    assert.is(badJson.code, 2);
    assert.match(badJson.stderr, "line 1");
    assert.is(unknown.code, 3);
    assert.match(unknown.stderr, "unknown_topic");
    assert.is(unknownConsume.code, 3);
  });
});

test("consume --group commits: a second run gets only the records produced since", async () => {
  await withBroker(async ({ url }) => {
    await createTopic(url, "events", 2);
    await publish(url, "events", ["a", "b", "c"]);
    const first = await runCli(url, [
      "consume",
      "events",
      "--group",
      "g",
      "--max",
      "3",
    ]);
    assert.is(first.code, 0, first.stderr);
    assert.equal(String(first.stdout).split("\n").sort(), ["", "a", "b", "c"]);

    await publish(url, "events", ["d", "e"]);
    const second = await runCli(url, [
      "consume",
      "events",
      "--group",
      "g",
      "--no-follow",
    ]);
    assert.is(second.code, 0, second.stderr);
    assert.equal(String(second.stdout).split("\n").sort(), ["", "d", "e"]);

    const [list, described, unknown] = await Promise.all([
      runCli(url, ["groups", "list"]),
      runCli(url, ["groups", "describe", "g"]),
      runCli(url, ["groups", "describe", "missing"]),
    ]);
    assert.is(String(list.stdout), "g\n");
    const group = JSON.parse(String(described.stdout));
    for (const partition of group.partitions) assert.is(partition.lag, 0);
    assert.is(unknown.code, 3);

    const sought = await runCli(url, [
      "groups",
      "seek",
      "g",
      "--topic",
      "events",
      "--to",
      "earliest",
    ]);
    assert.is(sought.code, 0, sought.stderr);
    assert.equal(
      JSON.parse(String(sought.stdout)).partitions.map((
        p: { offset: number },
      ) => p.offset),
      [0, 0],
    );
    const [again, seekUsage, seekUnknown] = await Promise.all([
      runCli(url, ["consume", "events", "--group", "g", "--no-follow"]),
      runCli(url, ["groups", "seek", "g", "--topic", "events"]),
      runCli(url, ["groups", "seek", "g", "--topic", "nope", "--to", "0"]),
    ]);
    assert.equal(String(again.stdout).split("\n").sort(), [
      "",
      "a",
      "b",
      "c",
      "d",
      "e",
    ]);
    assert.is(seekUsage.code, 2);
    assert.is(seekUnknown.code, 3);
  });
});

test("consume exits 0 when its reader closes stdout", async () => {
  await withBroker(async ({ url }) => {
    await createTopic(url, "stream");
    await publish(url, "stream", ["1", "2", "3", "4"]);
    const child = spawnCli(url, ["consume", "stream"]);
    child.stdin!.end();
    const exited = new Promise<number | null>((resolve) =>
      child.on("close", (code) => resolve(code))
    );
    // Read as `head -3` does, then close the pipe.
    await new Promise<void>((resolve) => {
      let text = "";
      child.stdout!.on("data", (chunk) => {
        text += String(chunk);
        if (text.split("\n").length > 3) resolve();
      });
    });
    child.stdout!.destroy();
    // The consumer notices on its next write, as any Unix filter does.
    let exitedYet = false;
    exited.then(() => exitedYet = true);
    for (let round = 0; round < 100 && !exitedYet; round++) {
      await publish(url, "stream", [`more ${round}`]);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.is(await exited, 0);
  });
});

test.run();
