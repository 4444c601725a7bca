/**
 * The client on Node 20+: creates a topic, publishes over HTTP and over the
 * WebSocket, reads a partition back, and consumes as the group `client-demo`
 * until it has seen what it published. Node 20 has no global WebSocket, so
 * the `ws` package is passed in.
 *
 *   npm start                                   # a broker, in another terminal
 *   npm run build && node build/examples/client_node.js
 *
 * DAKGHAR_URL changes the broker's address (default http://127.0.0.1:8080).
 */
import WebSocket from "ws";
import { createClient, DakgharClientError } from "../src/client/mod.ts";

const client = createClient({
  url: process.env.DAKGHAR_URL ?? "http://127.0.0.1:8080",
  WebSocket,
});

try {
  await client.createTopic("client-demo", { partitions: 2 });
} catch (error) {
  // Run twice, the topic exists: that is fine.
  if (!(error instanceof DakgharClientError && error.code === "topic_exists")) {
    throw error;
  }
}

const first = await client.publish("client-demo", {
  key: "customer-42",
  value: { total: 12.5 },
  headers: { source: "node" },
});
console.log(`published over HTTP to ${first.partition}@${first.offset}`);

await client.connect();
const batch = await client.publishBatch(
  "client-demo",
  Array.from({ length: 9 }, (_, n) => ({ key: "customer-7", value: `#${n}` })),
);
console.log(`published ${batch.length} over the WebSocket`);

const { records } = await client.read("client-demo", first.partition, {
  offset: first.offset,
  maxRecords: 1,
});
console.log("read back:", records[0].key, records[0].json());

const subscription = await client.subscribe({
  topic: "client-demo",
  group: "client-demo",
  from: "earliest",
});
let seen = 0;
for await (const message of subscription) {
  console.log(`${message.partition}@${message.offset} ${message.text()}`);
  if (++seen >= 10) break; // commits what was yielded, leaves the group
}
await client.close();
