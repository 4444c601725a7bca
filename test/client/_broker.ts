/**
 * A broker and a client for client tests: the broker in-process on a fresh
 * data directory, the client with the global WebSocket on Deno and the `ws`
 * package on Node.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DakgharClient } from "../../src/client/client.ts";
import type { Subscription } from "../../src/client/subscription.ts";
import type { Message } from "../../src/client/subscription.ts";
import type { WebSocketConstructor } from "../../src/client/websocket_transport.ts";
import { type RunningBroker, startBroker } from "../../src/server.ts";
import { silentLogger } from "../../src/logger.ts";

/** The WebSocket class for this runtime. */
export const WebSocketImpl: WebSocketConstructor = "Deno" in globalThis
  ? (globalThis as unknown as { WebSocket: WebSocketConstructor }).WebSocket
  : (await import("ws")).default;

/** A running broker, its data directory and a client for it. */
export interface Fixture {
  running: RunningBroker;
  dataDir: string;
  client: DakgharClient;
  /** Makes another client for the same broker. */
  newClient(): DakgharClient;
}

/** Starts a broker on `port` (0: any) and the given directory. */
export function startTestBroker(
  dataDir: string,
  port = 0,
): Promise<RunningBroker> {
  return startBroker({ dataDir, port, logger: silentLogger });
}

/** Runs `body` against a fresh broker, then stops it and removes its data. */
export async function withBroker(
  body: (fixture: Fixture) => Promise<void>,
): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), "dakghar-client-"));
  const fixture: Fixture = {
    running: await startTestBroker(dataDir),
    dataDir,
    client: undefined as unknown as DakgharClient,
    newClient: () =>
      new DakgharClient({
        url: fixture.running.url,
        WebSocket: WebSocketImpl,
      }),
  };
  fixture.client = fixture.newClient();
  try {
    await body(fixture);
  } finally {
    await fixture.client.close();
    await fixture.running.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/**
 * Takes `count` messages from a subscription. Closes it after `guardMs`
 * without them, so a lost record fails the test instead of hanging it.
 */
export async function take(
  subscription: Subscription,
  count: number,
  guardMs = 20_000,
): Promise<Message[]> {
  const messages: Message[] = [];
  if (count === 0) return messages;
  const guard = setTimeout(() => subscription.close(), guardMs);
  try {
    while (messages.length < count) {
      const result = await subscription.next();
      if (result.done) break;
      messages.push(result.value);
    }
  } finally {
    clearTimeout(guard);
  }
  return messages;
}

/** Values of messages as text, by partition, in arrival order. */
export function offsetsByPartition(
  messages: Message[],
): Map<number, number[]> {
  const map = new Map<number, number[]>();
  for (const message of messages) {
    const list = map.get(message.partition) ?? [];
    list.push(message.offset);
    map.set(message.partition, list);
  }
  return map;
}

/** Every socket a {@linkcode trackedWebSocket} class opened, in order. */
export interface TrackedSockets {
  WebSocket: WebSocketConstructor;
  opened: { close(): void }[];
}

/** A WebSocket class that remembers its sockets, so tests can drop them. */
export function trackedWebSocket(): TrackedSockets {
  const opened: { close(): void }[] = [];
  const Base = WebSocketImpl as new (url: string) => { close(): void };
  class Tracked extends Base {
    constructor(url: string) {
      super(url);
      opened.push(this);
    }
  }
  return { WebSocket: Tracked, opened };
}
