/**
 * `dakghar consume <topic> --group <group> --mode queue|key_shared`: joins
 * the group as a queue member (creating it with default settings when it
 * does not exist), prints each delivery on its own line and acks it once it
 * is written out. Acks of one write leave in one settle frame.
 *
 * With `--max n` the member's prefetch is n (at most 1000), so that leaving
 * releases no more deliveries than it must: each released one counts as an
 * attempt toward the group's delivery limit.
 */
import process from "node:process";
import type { RecordFilter } from "../broker.ts";
import { DakgharClient } from "../client/client.ts";
import { DakgharClientError } from "../client/errors.ts";
import type {
  QueueMessage,
  QueueSubscription,
} from "../client/queue_subscription.ts";
import type { WebSocketConstructor } from "../client/websocket_transport.ts";
import { type Connection, describeClientError } from "./_args.ts";
import {
  formatRecords,
  standardOutput,
  takeBatch,
  withinMs,
} from "./_output.ts";

/** What `consume` parsed for a queue member. */
export interface QueueConsumeOptions {
  connection: Connection;
  topic: string;
  group: string;
  mode: "queue" | "key_shared";
  max: number | undefined;
  format: "value" | "json";
  filter: RecordFilter | undefined;
  WebSocket: WebSocketConstructor;
}

/** Most deliveries in flight to the member. */
const PREFETCH_RECORDS = 1000;
/** How long leaving waits for the acks' answers and the broker's goodbye. */
const LEAVE_WAIT_MS = 5_000;

/**
 * Consumes as a queue or key_shared member until `max` records were
 * printed, the reader goes away or a signal comes.
 *
 * @param options the parsed command line
 * @returns the exit code: 0, or 1 when an ack was refused
 * @throws {DakgharClientError} when the broker refuses the subscription or
 *   the connection drops
 */
export async function runQueueConsume(
  options: QueueConsumeOptions,
): Promise<number> {
  const { topic, group, mode, max, format, filter } = options;
  const output = standardOutput();
  const client = new DakgharClient({
    ...options.connection,
    WebSocket: options.WebSocket,
  });
  // Fails fast on an unknown topic with the HTTP error.
  await client.describeTopic(topic);

  let stop: (outcome: number | Error) => void = () => {};
  const stopped = new Promise<number | Error>((resolve) => stop = resolve);
  process.on("SIGINT", () => stop(0));
  process.on("SIGTERM", () => stop(0));
  output.closed.then(() => stop(0));

  const subscription: QueueSubscription = await client.subscribe({
    topic,
    group,
    mode,
    prefetch: { records: Math.min(max ?? PREFETCH_RECORDS, PREFETCH_RECORDS) },
    ...(filter === undefined ? {} : { filter }),
    // A CLI run that loses its broker says so and exits 1.
    reconnect: false,
    onEvent: (event) => {
      if (event.type === "error") {
        process.stderr.write(
          `dakghar consume: ${describeClientError(event.error)}\n`,
        );
      }
    },
  });

  let refusedAcks = 0;
  // Acks not answered yet: bounded by the prefetch, as each leaves the set.
  const acks = new Set<Promise<void>>();
  const ack = (message: QueueMessage) => {
    const answered: Promise<void> = message.ack().catch((error) => {
      if (!(error instanceof DakgharClientError)) throw error;
      refusedAcks++;
      process.stderr.write(
        `dakghar consume: ack of ${message.partition}/${message.offset} failed: ${error.code}: ${error.message}\n`,
      );
    }).finally(() => acks.delete(answered));
    acks.add(answered);
  };

  let outcome: number | Error = 0;
  let printed = 0;
  try {
    while (max === undefined || printed < max) {
      // Whatever else has arrived goes out in the same write.
      const taken = await takeBatch(
        subscription,
        stopped,
        max === undefined ? Infinity : max - printed,
      );
      if ("stopped" in taken) {
        outcome = taken.stopped;
        break;
      }
      if ("done" in taken) break;
      const batch = taken.records;
      await output.write(formatRecords(batch, format, (message) => ({
        attempt: message.attempt,
      })));
      // Not written means not handled: the broker delivers them again.
      if (output.isClosed()) break;
      printed += batch.length;
      for (const message of batch) ack(message);
    }
  } catch (error) {
    outcome = error as Error;
  }

  await withinMs(
    subscription.flush().then(() => Promise.all([...acks])),
    LEAVE_WAIT_MS,
  );
  await withinMs(subscription.close(), LEAVE_WAIT_MS);
  if (outcome instanceof Error) throw outcome;
  return outcome === 0 && refusedAcks > 0 ? 1 : outcome;
}
