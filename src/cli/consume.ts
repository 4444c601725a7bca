/**
 * `dakghar consume <topic>`: subscribes with the client and prints one record
 * a line. In a group it commits each batch once it is written out, under the
 * generation the records were fetched in. It takes records from the
 * subscription only as it writes them, so a slow pipe slows the broker's
 * sends, and with `--max` it buffers no more records than it prints.
 */
import process from "node:process";
import { DakgharClient } from "../client/client.ts";
import { DakgharClientError } from "../client/errors.ts";
import type {
  Message,
  Subscription,
  SubscriptionEvent,
} from "../client/subscription.ts";
import type { WebSocketConstructor } from "../client/websocket_transport.ts";
import {
  describeClientError,
  type From,
  globalUsage,
  parseCommand,
  parseCount,
  parseFilter,
  parseFrom,
  UsageError,
} from "./_args.ts";
import { runQueueConsume } from "./consume_queue.ts";
import {
  formatRecords,
  standardOutput,
  takeBatch,
  withinMs,
} from "./_output.ts";

/** The help text of `dakghar consume`. */
export const consumeUsage = `Usage: dakghar consume <topic> [options]

Prints each record on its own line and follows the topic until interrupted.

Options:
  --group <group>       consume as a member of this group, committing as it goes
  --mode queue|key_shared
                        with --group: join as a queue (or key_shared) member,
                        creating the group with default settings if needed;
                        each record is acked once printed
  --queue               the same as --mode queue
  --tag <tag>           only records with this tag (repeat: all of them)
  --header <name=value> only records with this header value (repeat: all)
  --from <position>     earliest, latest, an offset or an ISO time (earliest);
                        a group takes earliest or latest, for partitions it
                        never committed
  --partition <n>       read only this partition (not with --group)
  --max <n>             exit after n records
  --no-follow           exit once caught up with the end of the log as it was
                        at the start
  --format value|json   the value as text, or the consumer JSON record with
                        its partition (value)

${globalUsage}`;

/** Most records received and not yet printed. */
const BUFFER_RECORDS = 1000;
/** How long leaving waits for commits and for the broker's goodbye. */
const LEAVE_WAIT_MS = 5_000;

/** Fetch errors after which following the topic cannot go on. */
const fatalFetchCodes = new Set(["unknown_topic", "unknown_partition"]);

/**
 * Runs `dakghar consume …`.
 *
 * @param args the arguments after `consume`
 * @returns the exit code
 * @throws {UsageError} for a bad command line
 * @throws {DakgharClientError} when the broker answers with an error or the
 *   connection drops
 */
export async function runConsume(args: string[]): Promise<number> {
  const { values, positionals, connection } = parseCommand(args, {
    group: { type: "string" },
    from: { type: "string" },
    partition: { type: "string" },
    max: { type: "string" },
    "no-follow": { type: "boolean" },
    format: { type: "string" },
    mode: { type: "string" },
    queue: { type: "boolean" },
    tag: { type: "string", multiple: true },
    header: { type: "string", multiple: true },
  });
  const output = standardOutput();
  if (values.help) {
    await output.write(`${consumeUsage}\n`);
    return 0;
  }
  if (positionals.length !== 1) {
    throw new UsageError(
      positionals.length === 0
        ? "Missing topic"
        : `Unexpected argument: ${positionals[1]}`,
    );
  }
  const topic = positionals[0];
  const group = values.group as string | undefined;
  const from: From = parseFrom(values.from ?? "earliest", "from");
  const partition = parseCount(values.partition, "partition");
  const max = parseCount(values.max, "max");
  const noFollow = values["no-follow"] === true;
  const format: "value" | "json" = values.format ?? "value";
  if (format !== "value" && format !== "json") {
    throw new UsageError(`Cannot parse --format: ${format}`);
  }
  if (group !== undefined && typeof from !== "string") {
    throw new UsageError("A group starts from earliest or latest");
  }
  if (group !== undefined && partition !== undefined) {
    throw new UsageError("--partition reads without a group");
  }
  const filter = parseFilter(values.tag, values.header);
  const asQueueMember = async (
    group: string,
    mode: "queue" | "key_shared",
  ): Promise<number> =>
    runQueueConsume({
      connection,
      topic,
      group,
      mode,
      max,
      format,
      filter,
      WebSocket: await webSocketClass(),
    });
  const mode = (values.mode as string | undefined) ??
    (values.queue ? "queue" : undefined);
  if (mode !== undefined && mode !== "stream") {
    if (mode !== "queue" && mode !== "key_shared") {
      throw new UsageError(
        `Cannot parse --mode: ${mode} (queue, key_shared or stream)`,
      );
    }
    if (group === undefined) {
      throw new UsageError(`--mode ${mode} needs --group`);
    }
    if (values.from !== undefined) {
      throw new UsageError("A queue member takes no --from");
    }
    if (noFollow) throw new UsageError("A queue member takes no --no-follow");
    if (max === 0) return 0;
    return asQueueMember(group, mode);
  }
  if (max === 0) return 0;

  const client = new DakgharClient({
    ...connection,
    WebSocket: await webSocketClass(),
  });
  // The log ends now: --no-follow stops there. It also fails fast on an
  // unknown topic with the HTTP error.
  const description = await client.describeTopic(topic);
  const endOffsets = new Map(
    description.partitions.map((stats) => [
      stats.partition,
      stats.highWatermark,
    ]),
  );

  let stop: (outcome: number | Error) => void = () => {};
  const stopped = new Promise<number | Error>((resolve) => stop = resolve);
  // What this subscription reads: the union of its `assigned` minus its
  // `revoked` (docs/protocol.md). Positions of partitions it lost stay in
  // the subscription's map and must not hold --no-follow back.
  const owned = new Set<number>();
  let assignedOnce = false;
  // Set once subscribed; events that come before must not read it.
  let subscription: Subscription | undefined = undefined;
  const caughtUp = () => {
    if (!assignedOnce || subscription === undefined) return false;
    const positions = subscription.positions();
    return [...owned].every((p) =>
      (positions.get(p) ?? 0) >= (endOffsets.get(p) ?? 0)
    );
  };
  const onEvent = (event: SubscriptionEvent) => {
    switch (event.type) {
      case "assigned":
        assignedOnce = true;
        for (const start of event.partitions) owned.add(start.partition);
        break;
      case "revoked":
        for (const p of event.partitions) owned.delete(p);
        break;
      case "error":
        if (fatalFetchCodes.has(event.error.code)) return stop(event.error);
        process.stderr.write(
          `dakghar consume: ${describeClientError(event.error)}\n`,
        );
        return;
    }
    if (noFollow && caughtUp()) stop(0);
  };

  process.on("SIGINT", () => stop(0));
  process.on("SIGTERM", () => stop(0));
  output.closed.then(() => stop(0));
  try {
    subscription = await client.subscribe({
      topic,
      ...(group === undefined ? {} : { group }),
      from,
      ...(partition === undefined ? {} : { partitions: [partition] }),
      ...(filter === undefined ? {} : { filter }),
      bufferSize: Math.min(max ?? BUFFER_RECORDS, BUFFER_RECORDS),
      // Commits follow what is written, not what is taken from the iterator.
      autoCommit: false,
      // A CLI run that loses its broker says so and exits 1.
      reconnect: false,
      onEvent,
    });
  } catch (error) {
    // A group created as a queue: consume as its member, as --mode says.
    const groupMode = error instanceof DakgharClientError
      ? error.context.mode
      : undefined;
    if (
      group === undefined || values.from !== undefined || noFollow ||
      (groupMode !== "queue" && groupMode !== "key_shared")
    ) throw error;
    return asQueueMember(group, groupMode);
  }
  // `assigned` may have come with the subscription's confirmation.
  if (noFollow && caughtUp()) stop(0);

  const commitsInFlight = new Set<Promise<void>>();
  const commit = (message: Message) => {
    const committed = message.commit().catch((error) => {
      // A commit refused after a rebalance or a seek: those records are
      // read again, as a group promises at-least-once.
      if (!(error instanceof DakgharClientError)) throw error;
      process.stderr.write(
        `dakghar consume: commit failed: ${error.code}: ${error.message}\n`,
      );
    });
    commitsInFlight.add(committed);
    committed.finally(() => commitsInFlight.delete(committed));
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
      await output.write(formatRecords(batch, format));
      if (output.isClosed()) break;
      printed += batch.length;
      if (group !== undefined) {
        const lastPerPartition = new Map<number, Message>();
        for (const message of batch) {
          lastPerPartition.set(message.partition, message);
        }
        for (const message of lastPerPartition.values()) commit(message);
      }
      if (noFollow && caughtUp()) break;
    }
  } catch (error) {
    outcome = error as Error;
  }

  // Stopping: let the commits land, then leave the group at once; a dropped
  // connection would hold its partitions for the session timeout.
  await withinMs(Promise.all(commitsInFlight), LEAVE_WAIT_MS);
  await withinMs(subscription.close(), LEAVE_WAIT_MS);
  if (outcome instanceof Error) throw outcome;
  return outcome;
}

/** The global WebSocket on Deno; Node 20 has none, so there `ws`. */
async function webSocketClass(): Promise<WebSocketConstructor> {
  const global = (globalThis as { WebSocket?: WebSocketConstructor })
    .WebSocket;
  if (global !== undefined) return global;
  return (await import("ws")).WebSocket as unknown as WebSocketConstructor;
}
