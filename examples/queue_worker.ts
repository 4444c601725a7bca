/**
 * A queue worker: publishes a few jobs to `jobs` (one of them delayed, one
 * that always fails), consumes them as a member of the queue group
 * `workers` with the client, acks what works and nacks what fails. The
 * failing job is redelivered with its attempt raised until the group's
 * delivery limit (3 here) sends it to the dead-letter topic, which the
 * worker then reads back with its provenance headers. Run two of them and
 * the group hands each job to one of them.
 *
 *   deno run -A examples/queue_worker.ts
 *   npm run build && node build/examples/queue_worker.js
 *
 * DAKGHAR_URL changes the broker's address (default http://127.0.0.1:8080).
 */
import process from "node:process";
import {
  createClient,
  DakgharClientError,
  type WebSocketConstructor,
} from "../src/client/mod.ts";

// Browsers and Deno have a global WebSocket; Node 20 takes the `ws` package.
const WebSocket: WebSocketConstructor =
  (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket ??
    (await import("ws")).default;
const client = createClient({
  url: process.env.DAKGHAR_URL ?? "http://127.0.0.1:8080",
  WebSocket,
});

try {
  await client.createTopic("jobs", { partitions: 2 });
} catch (error) {
  // Run twice, the topic exists: that is fine.
  if (!(error instanceof DakgharClientError && error.code === "topic_exists")) {
    throw error;
  }
}
// Creating it again with the same mode only updates the queue settings.
const group = await client.createGroup("workers", {
  topic: "jobs",
  mode: "queue",
  maxDeliveries: 3,
  backoffInitialMs: 100,
  backoffMaxMs: 1_000,
});
console.log(`dead letters go to ${group.queue!.deadLetterTopic}`);

const run = Date.now().toString(36);
const [, , , delayed] = await client.publishBatch("jobs", [
  { value: { run, job: "resize", image: 1 } },
  { value: { run, job: "resize", image: 2 } },
  { value: { run, job: "explode" }, tags: ["flaky"] },
  { value: { run, job: "report" }, delayMs: 500 },
]);
console.log(`report delayed as ${delayed.delayId}, due ${delayed.dueAt}`);

const queue = await client.subscribe({
  topic: "jobs",
  group: "workers",
  mode: "queue",
  prefetch: { records: 10 },
});
// Three good jobs acked and the bad one given up on: this run is done.
let done = 0;
for await (const message of queue) {
  const job = message.json<{ run: string; job: string }>();
  if (job.run !== run) {
    message.ack(); // left over from an earlier run
    continue;
  }
  if (job.job === "explode") {
    console.log(`explode failed (attempt ${message.attempt})`);
    message.nack({ reason: "it exploded" });
    if (message.attempt === group.queue!.maxDeliveries) done++;
  } else {
    console.log(`${job.job} done (attempt ${message.attempt})`);
    message.ack();
    done++;
  }
  if (done === 4) break;
}
await queue.close();

// The last nack dead-letters the job; its letter carries where it came from.
const topic = group.queue!.deadLetterTopic;
for (let attempts = 0; attempts < 50; attempts++) {
  const letters = [];
  const partitions = await client.describeTopic(topic).then(
    (described) => described.partitions,
    // Created with the first letter: not there yet.
    () => [],
  );
  if (partitions.length === 0) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    continue;
  }
  for (const { partition } of partitions) {
    const { records } = await client.read(topic, partition, { maxWaitMs: 100 });
    letters.push(...records);
  }
  const letter = letters.find((record) =>
    record.json<{ run: string }>().run === run
  );
  if (letter !== undefined) {
    const h = letter.headers;
    console.log(
      `dead letter from ${h["dakghar.dlq.topic"]}/${
        h["dakghar.dlq.partition"]
      }@${h["dakghar.dlq.offset"]}: ${h["dakghar.dlq.reason"]} after ${
        h["dakghar.dlq.deliveries"]
      } deliveries, last error "${h["dakghar.dlq.error"]}"`,
    );
    break;
  }
}
await client.close();
