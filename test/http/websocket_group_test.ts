import { suite } from "uvu";
import * as assert from "uvu/assert";
import { type RouterActor, startRouter } from "../../actors/router_actor.ts";
import { createApp } from "../../src/http/app.ts";
import { encodeBatch } from "../../src/log/record_batch.ts";
import { silentLogger } from "../../src/logger.ts";
import { runtime } from "../../src/runtime/mod.ts";
import type { Server } from "../../src/runtime/types.ts";
import { makeTempDir, removeTempDir } from "../router/_temp_dir.ts";
import { connect, type Frame, type TestSocket } from "./_ws_client.ts";

// Consumer groups over WebSocket against a real router: cooperative
// rebalances under a publish stream, session timeouts, reconnects, zombie
// fencing, seeks on a live group and lag.
const test = suite("websocket_group");
const utf8 = (text: string) => new TextEncoder().encode(text);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Context {
  dir: string;
  broker: RouterActor;
  server: Server;
  url: string;
  sockets: TestSocket[];
}

async function start(partitions: number): Promise<Context> {
  const dir = makeTempDir("ws-group");
  const broker = await startRouter({
    dataDir: dir,
    runtime,
    logger: silentLogger,
    sessionTimeoutMs: 200,
  });
  await broker.createTopic("orders", { partitions });
  const app = createApp(broker, {
    log: silentLogger,
    webSocketFor: runtime.webSocketFor,
    webSocket: { fetchWaitMs: 200, retryMs: 50 },
  });
  const server = await runtime.serve(app, { hostname: "127.0.0.1", port: 0 });
  return {
    dir,
    broker,
    server,
    url: `127.0.0.1:${server.port}`,
    sockets: [],
  };
}

async function stop(context: Context): Promise<void> {
  for (const socket of context.sockets) await socket.close();
  await context.server.close();
  await context.broker.close();
  removeTempDir(context.dir);
}

/** Polls `check` every 10 ms, at most `tries` times. */
async function until(
  check: () => boolean | Promise<boolean>,
  what: string,
  tries = 1000,
): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (await check()) return;
    await sleep(10);
  }
  throw new Error(`Timed out waiting for ${what}`);
}

/** One stint of a member on a partition: from its assignment to its revoke. */
interface Stint {
  member: string;
  start: number;
  delivered: number[];
  /** Highest offset whose commit the broker acknowledged. */
  committed: number | undefined;
}

/** A group consumer driven by a frame pump; it commits every delivery. */
class Consumer {
  socket!: TestSocket;
  sub = "";
  memberId = "";
  generation = -1;
  readonly frames: Frame[] = [];
  readonly stints: Map<number, Stint[]>;
  readonly owned = new Set<number>();
  readonly revoked: number[][] = [];
  /** When each `records` frame arrived, per partition. */
  readonly arrivals: { at: number; partition: number }[] = [];
  #commits = new Map<number, { partition: number; offset: number }>();
  #nextId = 100;
  #pump: Promise<void> = Promise.resolve();

  constructor(readonly name: string, stints: Map<number, Stint[]>) {
    this.stints = stints;
  }

  async join(context: Context, memberId?: string): Promise<void> {
    this.socket = await connect(`ws://${context.url}/ws`);
    context.sockets.push(this.socket);
    this.socket.send({
      op: "subscribe",
      id: 1,
      topic: "orders",
      group: "g",
      from: "earliest",
      credit: 1_000_000,
      ...(memberId === undefined ? {} : { memberId }),
    });
    const subscribed = await this.socket.next();
    assert.is(subscribed.op, "subscribed", JSON.stringify(subscribed));
    this.sub = subscribed.sub as string;
    this.memberId = subscribed.memberId as string;
    this.#pump = this.#run();
  }

  async #run(): Promise<void> {
    for (;;) {
      let frame: Frame;
      try {
        frame = await this.socket.next();
      } catch {
        return; // closed
      }
      this.frames.push(frame);
      this.#handle(frame);
    }
  }

  #handle(frame: Frame): void {
    const partition = frame.partition as number;
    switch (frame.op) {
      case "assigned":
        this.generation = frame.generation as number;
        for (const p of frame.partitions as Frame[]) {
          this.owned.add(p.partition as number);
          const list = this.stints.get(p.partition as number) ?? [];
          list.push({
            member: this.name,
            start: p.offset as number,
            delivered: [],
            committed: undefined,
          });
          this.stints.set(p.partition as number, list);
        }
        return;
      case "revoked":
        this.revoked.push(frame.partitions as number[]);
        for (const p of frame.partitions as number[]) this.owned.delete(p);
        return;
      case "records": {
        this.arrivals.push({ at: Date.now(), partition });
        const stint = this.#stint(partition);
        const offsets = (frame.records as Frame[]).map((r) =>
          r.offset as number
        );
        stint.delivered.push(...offsets);
        const id = this.#nextId++;
        const offset = offsets.at(-1)! + 1;
        this.#commits.set(id, { partition, offset });
        this.socket.send({
          op: "commit",
          id,
          sub: this.sub,
          partition,
          offset,
        });
        return;
      }
      case "committed": {
        const commit = this.#commits.get(frame.id as number);
        if (commit === undefined) return; // sent by the test itself
        const stint = this.#stint(commit.partition);
        stint.committed = Math.max(stint.committed ?? 0, commit.offset);
        return;
      }
    }
  }

  #stint(partition: number): Stint {
    const mine = this.stints.get(partition)!.filter((s) =>
      s.member === this.name
    );
    return mine.at(-1)!;
  }

  async leave(): Promise<void> {
    this.socket.send({ op: "unsubscribe", id: 2, sub: this.sub });
    await until(
      () => this.frames.some((f) => f.op === "unsubscribed"),
      "unsubscribed",
    );
  }

  async close(): Promise<void> {
    await this.socket.close();
    await this.#pump;
  }
}

async function publishRound(broker: RouterActor, round: number, count: number) {
  await broker.publishRecords(
    "orders",
    Array.from({ length: count }, (_, partition) => ({
      partition,
      value: utf8(`r${round}`),
    })),
  );
}

test("joinGroup() under a publish stream: cooperative hand-overs, no loss, no pause", async () => {
  const context = await start(4);
  const stints = new Map<number, Stint[]>();
  const a = new Consumer("a", stints);
  const b = new Consumer("b", stints);
  const c = new Consumer("c", stints);
  const rounds = 60;
  const joinedAt: Record<string, number> = {};
  const publishedAt: number[] = [];
  try {
    await a.join(context, "a");
    for (let round = 0; round < rounds; round++) {
      await publishRound(context.broker, round, 4);
      publishedAt.push(Date.now());
      if (round === 10) {
        joinedAt.b = Date.now();
        await b.join(context, "b");
      }
      if (round === 25) {
        joinedAt.c = Date.now();
        await c.join(context, "c");
      }
      if (round === 40) await b.leave();
      await sleep(3);
    }
    const delivered = (p: number) =>
      new Set(stints.get(p)!.flatMap((s) => s.delivered));
    await until(
      () => [0, 1, 2, 3].every((p) => delivered(p).size === rounds),
      "every record",
    );

    let duplicates = 0;
    let uncommittedAtHandOver = 0;
    for (const [partition, list] of stints) {
      // Every record reached the group; each stint got its share in order.
      assert.equal(
        [...delivered(partition)].sort((x, y) => x - y),
        [...Array(rounds).keys()],
      );
      for (const stint of list) {
        stint.delivered.forEach((offset, i) =>
          assert.is(offset, stint.start + i, `${partition} ${stint.member}`)
        );
      }
      // A new owner starts at the last commit its predecessor got through,
      // so duplicates are exactly what it delivered but had not committed.
      for (let i = 1; i < list.length; i++) {
        const before = list[i - 1];
        const end = before.start + before.delivered.length;
        assert.is(list[i].start, before.committed ?? before.start);
        uncommittedAtHandOver += end - (before.committed ?? before.start);
        duplicates += Math.max(0, end - list[i].start);
      }
    }
    assert.ok(duplicates <= uncommittedAtHandOver);

    // a kept 0 and 1 from b's join on and heard exactly one revoke; c none.
    assert.equal(a.revoked, [[2, 3]]);
    assert.equal(c.revoked, []);
    assert.equal([...a.owned].sort(), [0, 1]);
    assert.equal(stints.get(0)!.map((s) => s.member), ["a"]);
    assert.equal(stints.get(1)!.map((s) => s.member), ["a"]);
    const description = await context.broker.describeGroup("g");
    assert.equal(description.members.map((m) => [m.id, m.partitions]), [
      [a.memberId, [0, 1]],
      [c.memberId, [2, 3]],
    ]);

    // How long a keeper waited for its next records after each join.
    const gaps = Object.entries(joinedAt).map(([who, at]) => {
      const next = a.arrivals.find((r) => r.at >= at);
      return `${who} joined: a's next records after ${
        next === undefined ? "none" : next.at - at
      } ms`;
    });
    // The longest a kept partition went without records, against the
    // longest gap between two publish rounds.
    const kept = a.arrivals.filter((r) => r.partition <= 1).map((r) => r.at);
    const longest = (times: number[]) =>
      times.slice(1).reduce((m, t, i) => Math.max(m, t - times[i]), 0);
    console.log(
      `websocket_group: ${duplicates} duplicates over ${
        [...stints.values()].reduce((n, l) => n + l.length - 1, 0)
      } hand-overs (bound ${uncommittedAtHandOver}); ${
        gaps.join("; ")
      }; longest gap in a's kept partitions ${
        longest(kept)
      } ms, between publish rounds ${longest(publishedAt)} ms`,
    );
  } finally {
    await stop(context);
  }
});

test("subscribe() with a memberId: a reconnect inside the session timeout keeps its partitions, a silent member loses them after it", async () => {
  const context = await start(2);
  const stints = new Map<number, Stint[]>();
  const a = new Consumer("a", stints);
  const b = new Consumer("b", stints);
  try {
    await a.join(context, "member-a");
    await b.join(context, "member-b");
    assert.is(b.memberId, "member-b");
    await publishRound(context.broker, 0, 2);
    await until(() => b.stints.get(1)?.at(-1)?.committed === 1, "b commits");
    const oldGeneration = b.generation;

    // b's connection drops; within the timeout it comes back.
    await b.close();
    let description = await context.broker.describeGroup("g");
    await until(async () => {
      description = await context.broker.describeGroup("g");
      return description.members[1].connected === false;
    }, "b disconnected");
    assert.equal(
      description.members.map((m) => [m.id, m.connected, m.partitions]),
      [["member-a", true, [0]], ["member-b", false, [1]]],
    );
    const again = new Consumer("b", stints);
    await again.join(context, "member-b");
    await until(() => again.owned.has(1), "b's partition back");
    assert.is(stints.get(1)!.at(-1)!.start, 1);
    assert.ok(again.generation > oldGeneration);
    await sleep(300);
    assert.equal(a.revoked, [[1]]);
    assert.equal([...a.owned], [0]);

    // A second session with the same id fences the first (a zombie).
    const zombie = again;
    const fresh = new Consumer("b", stints);
    await fresh.join(context, "member-b");
    await until(() => zombie.revoked.length === 1, "zombie revoked");
    zombie.socket.send({
      op: "commit",
      id: 9,
      sub: zombie.sub,
      partition: 1,
      offset: 1,
    });
    await until(
      () => zombie.frames.some((f) => f.op === "error" && f.id === 9),
      "zombie commit refused",
    );
    assert.is(
      zombie.frames.find((f) => f.id === 9)!.code,
      "stale_generation",
    );

    // Now silence: the member's partitions wait 200 ms, then move to a.
    await fresh.close();
    await zombie.close();
    description = await context.broker.describeGroup("g");
    assert.is(description.partitions[1].owner, "member-b");
    await until(() => a.owned.has(1), "a takes partition 1");
    description = await context.broker.describeGroup("g");
    assert.equal(description.members.map((m) => m.id), ["member-a"]);
    assert.is(stints.get(1)!.at(-1)!.member, "a");
    assert.is(stints.get(1)!.at(-1)!.start, 1);
  } finally {
    await stop(context);
  }
});

test("seekGroup() moves a live member to earliest, latest, an offset or a time", async () => {
  const context = await start(2);
  const { broker } = context;
  const times: number[] = [];
  // Three batches of three records on partition 0, appended apart in time.
  for (let batch = 0; batch < 3; batch++) {
    const result = await broker.publish(
      "orders",
      encodeBatch([0, 1, 2].map((i) => ({
        key: null,
        value: utf8(`b${batch}-${i}`),
        headers: [],
        timestamp: 1,
      }))),
      { partition: 0 },
    );
    times.push(result.appendTime);
    await sleep(5);
  }
  const stints = new Map<number, Stint[]>();
  const a = new Consumer("a", stints);
  const admin = await connect(`ws://${context.url}/ws`);
  context.sockets.push(admin);
  try {
    await a.join(context, "a");
    await until(() => stints.get(0)?.at(-1)?.committed === 9, "a caught up");

    let lag = (await broker.describeGroup("g")).partitions[0];
    assert.equal([lag.lag, lag.lagMs], [0, 0]);

    const cases: [unknown, number][] = [
      ["earliest", 0],
      ["latest", 9],
      [{ offset: 4 }, 4], // inside the second batch
      [{ offset: 1000 }, 9], // clamped to the log end
      [{ timestamp: times[0] - 1000 }, 0], // before the first record
      [{ timestamp: times[0] + 1 }, 3], // between batches
      [{ timestamp: times[2] + 1000 }, 9], // after the last
    ];
    let id = 10;
    for (const [to, offset] of cases) {
      const seekId = id++;
      const before = a.frames.length;
      admin.send({
        op: "seek",
        id: seekId,
        group: "g",
        topic: "orders",
        partitions: [0],
        to,
      });
      const { frame: moved } = await admin.nextOp("moved");
      assert.is(moved.id, seekId);
      assert.equal(moved.partitions, [{ partition: 0, offset }]);
      await until(
        () => a.frames.slice(before).some((f) => f.op === "seeked"),
        "seeked",
      );
      const at = a.frames.findIndex((f, i) => i >= before && f.op === "seeked");
      const seeked = a.frames[at];
      assert.equal(
        [seeked.partition, seeked.offset, seeked.generation],
        [0, offset, moved.generation],
        JSON.stringify(to),
      );
      const committed = (await broker.describeGroup("g")).partitions[0];
      if (offset < 9) {
        // The fetch continues from the seek: the next records start there.
        // Frames after `seeked` come from the new position only.
        await until(
          () =>
            a.frames.slice(at).some((f) =>
              f.op === "records" && f.partition === 0
            ),
          "records after seek",
        );
        const first = a.frames.slice(at).find((f) =>
          f.op === "records" && f.partition === 0
        )!;
        assert.is((first.records as Frame[])[0].offset, offset);
      } else {
        assert.is(committed.committedOffset, 9);
      }
    }

    // Fencing: seek back, then commit positions from before the seek.
    const seekId = id++;
    admin.send({
      op: "seek",
      id: seekId,
      group: "g",
      topic: "orders",
      partitions: [0],
      to: { offset: 2 },
    });
    const { frame: moved } = await admin.nextOp("moved");
    await until(
      () => a.frames.some((f) => f.op === "seeked" && f.offset === 2),
      "seeked to 2",
    );
    a.socket.send({
      op: "commit",
      id: 50,
      sub: a.sub,
      partition: 0,
      offset: 9,
    });
    a.socket.send({
      op: "commit",
      id: 51,
      sub: a.sub,
      partition: 0,
      offset: 9,
      generation: (moved.generation as number) - 1,
    });
    await until(
      () => [50, 51].every((n) => a.frames.some((f) => f.id === n)),
      "fenced commits answered",
    );
    for (const n of [50, 51]) {
      assert.is(a.frames.find((f) => f.id === n)!.code, "stale_generation");
    }
    a.socket.send({
      op: "commit",
      id: 52,
      sub: a.sub,
      partition: 0,
      offset: 3,
      generation: moved.generation,
    });
    await until(() => a.frames.some((f) => f.id === 52), "commit answered");
    assert.is(a.frames.find((f) => f.id === 52)!.op, "committed");
    assert.is(
      (await broker.describeGroup("g")).partitions[0].committedOffset,
      3,
    );

    // The HTTP route, on a partition with records not consumed: lag shows.
    await broker.publish(
      "orders",
      encodeBatch([{ key: null, value: utf8("x"), headers: [], timestamp: 1 }]),
      { partition: 1 },
    );
    const response = await fetch(`http://${context.url}/groups/g/seek`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ topic: "orders", partitions: [1], to: "latest" }),
    });
    assert.is(response.status, 200);
    const body = await response.json();
    assert.equal(body.partitions, [{ partition: 1, offset: 1 }]);
    const bad = await fetch(`http://${context.url}/groups/g/seek`, {
      method: "POST",
      body: JSON.stringify({ topic: "orders", to: "middle" }),
    });
    assert.is(bad.status, 400);
    await bad.body?.cancel();
    await broker.publish(
      "orders",
      encodeBatch([{ key: null, value: utf8("y"), headers: [], timestamp: 1 }]),
      { partition: 1 },
    );
    // Partition 0, where commits stopped at 3: 6 records, as old as the
    // second batch.
    lag = (await (await fetch(`http://${context.url}/groups/g`)).json())
      .partitions[0];
    const after = Date.now();
    assert.is(lag.lag, 9 - 3);
    assert.ok(lag.lagMs > 0 && lag.lagMs <= after - times[1], `${lag.lagMs}`);
  } finally {
    await a.close();
    await stop(context);
  }
});

test.run();
