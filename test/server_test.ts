import { suite } from "uvu";
import * as assert from "uvu/assert";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { BATCH_MEDIA_TYPE } from "../src/http/app.ts";
import { decodeBatches } from "../src/log/record_batch.ts";
import { type RunningBroker, startBroker } from "../src/server.ts";
import { connect, type TestSocket } from "./http/_ws_client.ts";

const test = suite("server");

async function withBroker(
  run: (running: RunningBroker, dataDir: string) => Promise<void>,
  dataDir = mkdtempSync(join(tmpdir(), "dakghar-server-")),
  keep = false,
): Promise<void> {
  const running = await startBroker({ dataDir, port: 0 });
  try {
    await run(running, dataDir);
  } finally {
    await running.stop();
    if (!keep) rmSync(dataDir, { recursive: true, force: true });
  }
}

async function call(
  running: RunningBroker,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const response = await fetch(`${running.url}${path}`, {
    method,
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, json: text ? JSON.parse(text) : {} };
}

async function receiveRecords(socket: TestSocket, count: number) {
  const values: string[] = [];
  while (values.length < count) {
    const frame = await socket.next();
    if (frame.op !== "records") continue;
    for (const record of frame.records as { value: string }[]) {
      values.push(record.value);
    }
  }
  assert.is(values.length, count);
  return values;
}

test("startBroker() serves topics, records and reads over HTTP", async () => {
  await withBroker(async (running) => {
    const created = await call(running, "POST", "/topics", {
      name: "orders",
      partitions: 2,
    });
    assert.is(created.status, 201);

    const published = await call(running, "POST", "/topics/orders/records", {
      records: [
        { key: "c-1", value: { total: 1 }, partition: 0 },
        { value: "two", partition: 0 },
        { value: "three", partition: 1, headers: { h: "v" } },
      ],
    });
    assert.equal(published.json.offsets, [
      { partition: 0, offset: 0 },
      { partition: 0, offset: 1 },
      { partition: 1, offset: 0 },
    ]);

    const read = await call(
      running,
      "GET",
      "/topics/orders/partitions/0/records?offset=0",
    );
    const records = read.json.records as Record<string, unknown>[];
    assert.equal(records.map((r) => [r.offset, r.key, r.value]), [
      [0, "c-1", '{"total":1}'],
      [1, null, "two"],
    ]);
    assert.is(read.json.nextOffset, 2);
    assert.is(read.json.highWatermark, 2);

    const raw = await fetch(
      `${running.url}/topics/orders/partitions/1/records?offset=0`,
      { headers: { Accept: BATCH_MEDIA_TYPE } },
    );
    const decoded = decodeBatches(new Uint8Array(await raw.arrayBuffer()));
    assert.equal(decoded.map((r) => r.offset), [0]);
    assert.is(raw.headers.get("X-Dakghar-Next-Offset"), "1");

    const past = await call(
      running,
      "GET",
      "/topics/orders/partitions/1/records?offset=9",
    );
    assert.is(past.status, 416);
    assert.is(
      (past.json.error as { code: string }).code,
      "offset_out_of_range",
    );

    const missing = await call(running, "GET", "/topics/nope");
    assert.is(missing.status, 404);
  });
});

test("startBroker() answers a long-poll read when a record arrives", async () => {
  await withBroker(async (running) => {
    await call(running, "POST", "/topics", { name: "ticks" });
    const polling = call(
      running,
      "GET",
      "/topics/ticks/partitions/0/records?offset=0&maxWaitMs=10000",
    );
    await call(running, "POST", "/topics/ticks/records", { value: "tick" });
    const read = await polling;
    const records = read.json.records as { value: string }[];
    assert.equal(records.map((r) => r.value), ["tick"]);
    assert.is(read.json.nextOffset, 1);
  });
});

test("startBroker() keeps records across a restart on the same data dir", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "dakghar-server-"));
  try {
    await withBroker(
      async (running) => {
        await call(running, "POST", "/topics", { name: "audit" });
        await call(running, "POST", "/topics/audit/records", { value: "kept" });
      },
      dataDir,
      true,
    );
    await withBroker(
      async (running) => {
        const read = await call(
          running,
          "GET",
          "/topics/audit/partitions/0/records",
        );
        const records = read.json.records as { value: string }[];
        assert.equal(records.map((r) => r.value), ["kept"]);
      },
      dataDir,
      true,
    );
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test("startBroker() pushes records over WebSocket within the credit", async () => {
  await withBroker(async (running) => {
    await call(running, "POST", "/topics", { name: "events", partitions: 2 });
    const socket = await connect(`${running.url.replace("http", "ws")}/ws`);
    try {
      socket.send({
        op: "subscribe",
        id: 1,
        topic: "events",
        from: "earliest",
        credit: 3,
      });
      assert.is((await socket.next()).op, "subscribed");
      const assigned = await socket.next();
      assert.is(assigned.op, "assigned");

      socket.send({
        op: "publish",
        id: 2,
        topic: "events",
        records: ["a", "b", "c", "d", "e"].map((value) => ({
          value,
          partition: 0,
        })),
      });
      const values = await receiveRecords(socket, 3);
      assert.equal(values, ["a", "b", "c"]);
      socket.send({ op: "ping", id: "p" });
      const rest = [];
      for (;;) {
        const frame = await socket.next();
        if (frame.op === "pong") break;
        rest.push(frame);
      }
      assert.ok(rest.every((f) => f.op === "ack"), JSON.stringify(rest));
      socket.send({ op: "credit", sub: "s1", records: 10 });
      assert.equal(await receiveRecords(socket, 2), ["d", "e"]);
    } finally {
      await socket.close();
    }
  });
});

test("startBroker() runs consumer groups over WebSocket", async () => {
  await withBroker(async (running) => {
    await call(running, "POST", "/topics", { name: "jobs", partitions: 2 });
    await call(running, "POST", "/topics/jobs/records", {
      records: [{ value: "j0", partition: 0 }, { value: "j1", partition: 1 }],
    });
    const url = `${running.url.replace("http", "ws")}/ws`;
    const first = await connect(url);
    const second = await connect(url);
    try {
      first.send({
        op: "subscribe",
        id: 1,
        topic: "jobs",
        group: "workers",
        from: "earliest",
        credit: 10,
      });
      const { frame: assigned } = await first.nextOp("assigned");
      assert.is((assigned.partitions as unknown[]).length, 2);
      await receiveRecords(first, 2);

      first.send({ op: "commit", id: 2, sub: "s1", partition: 0, offset: 1 });
      const committed = await first.nextOp("committed");
      assert.is(committed.frame.id, 2);

      second.send({
        op: "subscribe",
        id: 1,
        topic: "jobs",
        group: "workers",
        from: "earliest",
        credit: 10,
      });
      const { frame: secondAssigned } = await second.nextOp("assigned");
      assert.is((secondAssigned.partitions as unknown[]).length, 1);
      await first.nextOp("revoked");

      const group = await call(running, "GET", "/groups/workers");
      assert.is((group.json.members as unknown[]).length, 2);
      const partitions = group.json.partitions as {
        partition: number;
        committedOffset: number | null;
      }[];
      assert.is(partitions.find((p) => p.partition === 0)?.committedOffset, 1);
    } finally {
      await first.close();
      await second.close();
    }
  });
});

test("dakghar serve logs where it listens and stops on SIGTERM", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "dakghar-cli-"));
  const root = fileURLToPath(new URL("..", import.meta.url));
  const deno = (globalThis as { Deno?: { execPath(): string } }).Deno;
  const [command, args] = deno
    ? [deno.execPath(), ["run", "-A", join(root, "src/main.ts")]]
    : [process.execPath, [join(root, "src/main.js")]];
  const child = spawn(command, [...args, "serve", "--port", "0"], {
    env: { ...process.env, DAKGHAR_DATA_DIR: dataDir },
    stdio: ["ignore", "ignore", "pipe"],
  });
  // Bound the test: a child that never starts or never stops is killed.
  const guard = setTimeout(() => child.kill("SIGKILL"), 20_000);
  try {
    let output = "";
    const url = await new Promise<string>((resolve, reject) => {
      child.stderr!.on("data", (chunk) => {
        output += String(chunk);
        const match = /listening url=(\S+) dataDir=(\S+)/.exec(output);
        if (match) resolve(match[1]);
      });
      child.on("exit", () => reject(new Error(`exited early: ${output}`)));
    });
    assert.match(output, `dataDir=${dataDir}`);
    const health = await fetch(`${url}/health`);
    assert.equal(await health.json(), { status: "ok" });

    const exited = new Promise<number | null>((resolve) =>
      child.on("close", (code) => resolve(code))
    );
    child.kill("SIGTERM");
    const code = await exited;
    assert.match(output, /stopping signal=SIGTERM/);
    assert.match(output, /router closed/);
    // Deno's node:child_process reports the signal sent rather than the
    // exit code; Deno.Command and Node both see 0.
    if (!deno) assert.is(code, 0);
  } finally {
    clearTimeout(guard);
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test("POST /topics/:topic/records takes timestamps far apart and writes nothing for an oversize record", async () => {
  await withBroker(async (running) => {
    await call(running, "POST", "/topics", {
      name: "times",
      partitions: 2,
      maxMessageBytes: 1000,
    });
    const spread = await call(running, "POST", "/topics/times/records", {
      records: [
        { value: "a", partition: 0 },
        { value: "b", partition: 0, timestamp: 0 },
        { value: "c", partition: 1, timestamp: 4_000_000_000 },
      ],
    });
    assert.is(spread.status, 200);
    const read = await call(
      running,
      "GET",
      "/topics/times/partitions/0/records?offset=0",
    );
    const records = read.json.records as { value: string; timestamp: number }[];
    assert.equal(records.map((r) => r.value), ["a", "b"]);
    assert.is(records[1].timestamp, 0);

    const tooLarge = await call(running, "POST", "/topics/times/records", {
      records: [
        { value: "fits", partition: 0 },
        { value: "x".repeat(2000), partition: 1 },
      ],
    });
    assert.is(tooLarge.status, 413);
    assert.is(
      (tooLarge.json.error as { code: string }).code,
      "record_too_large",
    );
    const after = await call(running, "GET", "/topics/times");
    const partitions = after.json.partitions as { logEndOffset: number }[];
    assert.equal(partitions.map((p) => p.logEndOffset), [2, 1]);
  });
});

test.run();
