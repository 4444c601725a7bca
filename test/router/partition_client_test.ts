import { suite } from "uvu";
import * as assert from "uvu/assert";
import {
  decode,
  encode,
  type InitPost,
  type PartitionMessage,
  type RouterMessage,
  send,
  wrapMessagePort,
} from "../../src/envelope.ts";
import { DakgharError } from "../../src/errors.ts";
import { defaultPartitionLogConfig } from "../../src/log/partition_log.ts";
import { silentLogger } from "../../src/logger.ts";
import { PartitionClient } from "../../src/router/partition_client.ts";
import type { PortLike, WorkerHandle } from "../../src/runtime/types.ts";

// A fake actor on the main thread behind real MessagePorts: it answers
// stats with its start count and holds reads until told otherwise.
const test = suite("partition_client");

interface FakeActor {
  port: PortLike | null;
  exit: (error: Error | undefined) => void;
  received: RouterMessage[];
}

function fakeRuntime() {
  const actors: FakeActor[] = [];
  let failNextStart = false;
  const startWorker = (): WorkerHandle => {
    if (failNextStart) {
      failNextStart = false;
      throw new Error("no threads left");
    }
    const exitHandlers: ((error: Error | undefined) => void)[] = [];
    const actor: FakeActor = {
      port: null,
      exit: (error) => exitHandlers.forEach((h) => h(error)),
      received: [],
    };
    const start = actors.length + 1;
    actors.push(actor);
    const reply = (message: PartitionMessage) => send(actor.port!, message);
    return {
      postMessage(message) {
        const { init, port } = message as InitPost;
        const initMessage = decode<RouterMessage>(init);
        actor.port = wrapMessagePort(port);
        actor.port.onMessage((data) => {
          const request = decode<RouterMessage>(data);
          actor.received.push(request);
          if (request.type === "stats") {
            reply({
              type: "stats",
              id: request.id,
              stats: {
                partition: 0,
                logStartOffset: 0,
                logEndOffset: start,
                highWatermark: start,
                bytes: 0,
                segments: 1,
              },
            });
          }
          if (request.type === "close") {
            reply({ type: "closed", id: request.id });
          }
        });
        reply({
          type: "ready",
          id: initMessage.id,
          stats: {
            partition: 0,
            logStartOffset: 0,
            logEndOffset: start,
            highWatermark: start,
            bytes: 0,
            segments: 1,
          },
          recovery: {
            clean: true,
            segments: 1,
            segmentsChecked: 0,
            bytesTruncated: 0,
            indexesRebuilt: 0,
            filesDeleted: 0,
            corruptions: [],
            logEndOffset: start,
          },
        });
      },
      onMessage(handler) {
        const { data } = encode({ type: "started" });
        queueMicrotask(() => handler(data));
      },
      close() {},
      onExit(handler) {
        exitHandlers.push(handler);
      },
      terminate: () => Promise.resolve(),
    };
  };
  return {
    actors,
    startWorker,
    failNextStart: () => {
      failNextStart = true;
    },
  };
}

function client(startWorker: () => WorkerHandle): PartitionClient {
  return new PartitionClient({
    topic: "t",
    partition: 0,
    dir: "/nowhere/t/0",
    config: defaultPartitionLogConfig,
    startWorker,
    log: silentLogger,
  });
}

async function codeOf(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
  } catch (error) {
    return error instanceof DakgharError ? error.code : String(error);
  }
  return undefined;
}

test("start() resolves with the actor's stats from ready", async () => {
  const runtime = fakeRuntime();
  const partition = client(runtime.startWorker);
  assert.is((await partition.start()).logEndOffset, 1);
  assert.is((await partition.request({ type: "stats" })).stats.logEndOffset, 1);
  await partition.close(false);
  assert.equal(runtime.actors[0].received.map((m) => m.type), [
    "stats",
    "close",
  ]);
});

test("request() fails pending requests when the actor dies and waits for the restart", async () => {
  const runtime = fakeRuntime();
  const partition = client(runtime.startWorker);
  await partition.start();
  const held = partition.request({
    type: "read",
    offset: 0,
    maxBytes: 10,
    maxWaitMs: 1000,
  });
  await partition.request({ type: "stats" });
  runtime.actors[0].exit(new Error("boom"));
  assert.is(await codeOf(held), "partition_unavailable");

  // Made during the backoff: sent to the next actor once it starts.
  const reply = await partition.request({ type: "stats" });
  assert.is(reply.stats.logEndOffset, 2);
  assert.is(runtime.actors.length, 2);
  await partition.close(false);
});

test("start() retries when the worker cannot be started", async () => {
  const runtime = fakeRuntime();
  runtime.failNextStart();
  const partition = client(runtime.startWorker);
  assert.is(await codeOf(partition.start()), "partition_unavailable");
  const reply = await partition.request({ type: "stats" });
  assert.is(reply.stats.logEndOffset, 1);
  await partition.close(false);
});

test("request() after close() fails with partition_unavailable", async () => {
  const runtime = fakeRuntime();
  const partition = client(runtime.startWorker);
  await partition.start();
  await partition.close(false);
  assert.is(
    await codeOf(partition.request({ type: "stats" })),
    "partition_unavailable",
  );
});

test.run();
