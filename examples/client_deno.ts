/**
 * The client on Deno: tails a topic without a group, from the latest record
 * on, printing each one; Ctrl-C stops it. Deno has a global WebSocket and
 * fetch, so the client needs nothing passed in.
 *
 *   deno run -A examples/client_deno.ts [topic]
 *
 * DAKGHAR_URL changes the broker's address (default http://127.0.0.1:8080).
 */
import { createClient } from "../src/client/mod.ts";

// Typed here because tsc also compiles the examples, without Deno's types.
const { Deno } = globalThis as unknown as {
  Deno: {
    args: string[];
    env: { get(name: string): string | undefined };
    addSignalListener(signal: "SIGINT", handler: () => void): void;
  };
};

const topic = Deno.args[0] ?? "orders";
const client = createClient({
  url: Deno.env.get("DAKGHAR_URL") ?? "http://127.0.0.1:8080",
});

const subscription = await client.subscribe({
  topic,
  from: "latest",
  onEvent: (event) => {
    if (event.type === "disconnected") console.log("reconnecting…");
  },
});
Deno.addSignalListener("SIGINT", () => subscription.close());
console.log(`tailing ${topic}; publish to it from another terminal`);

for await (const message of subscription) {
  console.log(
    `${message.partition}@${message.offset} key=${message.key} ${message.text()}`,
  );
}
await client.close();
