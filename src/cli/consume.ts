/**
 * `dakghar consume <topic>`: subscribes over WebSocket and prints one record
 * a line. In a group it commits each batch once it is written out. It grants
 * credit only as records are written, so a slow pipe slows the broker's
 * sends, and with `--max` it never asks for more records than it prints.
 */
import { Buffer } from "node:buffer";
import process from "node:process";
import {
  type From,
  globalUsage,
  parseCommand,
  parseCount,
  parseFrom,
  UsageError,
} from "./_args.ts";
import {
  BrokerError,
  callBroker,
  type Frame,
  openSocket,
} from "./_broker_api.ts";
import { standardOutput } from "./_output.ts";

/** The help text of `dakghar consume`. */
export const consumeUsage = `Usage: dakghar consume <topic> [options]

Prints each record on its own line and follows the topic until interrupted.

Options:
  --group <group>       consume as a member of this group, committing as it goes
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

/** Credit granted at the start; more is granted as records are written. */
const CREDIT_WINDOW = 1000;

interface ConsumerRecord {
  offset: number;
  timestamp: number;
  key: string | null;
  value: string | null;
  headers: Record<string, string | null>;
  valueEncoding?: string;
}

interface PartitionStats {
  partition: number;
  highWatermark: number;
}

/**
 * Runs `dakghar consume …`.
 *
 * @param args the arguments after `consume`
 * @returns the exit code
 * @throws {UsageError} for a bad command line
 * @throws {BrokerError} when the broker answers with an error
 */
export async function runConsume(args: string[]): Promise<number> {
  const { values, positionals, connection } = parseCommand(args, {
    group: { type: "string" },
    from: { type: "string" },
    partition: { type: "string" },
    max: { type: "string" },
    "no-follow": { type: "boolean" },
    format: { type: "string" },
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
  const format = values.format ?? "value";
  if (format !== "value" && format !== "json") {
    throw new UsageError(`Cannot parse --format: ${format}`);
  }
  if (group !== undefined && typeof from !== "string") {
    throw new UsageError("A group starts from earliest or latest");
  }
  if (group !== undefined && partition !== undefined) {
    throw new UsageError("--partition reads without a group");
  }
  if (max === 0) return 0;

  // The log ends now: --no-follow stops there. It also fails fast on an
  // unknown topic with the HTTP error.
  const description = await callBroker<{ partitions: PartitionStats[] }>(
    connection,
    "GET",
    `/topics/${encodeURIComponent(topic)}`,
  );
  const endOffsets = new Map(
    description.partitions.map((stats) => [
      stats.partition,
      stats.highWatermark,
    ]),
  );
  const socket = await openSocket(connection);

  let printed = 0;
  let credited = Math.min(max ?? CREDIT_WINDOW, CREDIT_WINDOW);
  let sub: unknown;
  let commitId = 1;
  const commitsPending = new Map<number, () => void>();
  // Positions of the partitions this subscription reads now.
  const positions = new Map<number, number>();
  let assignedOnce = false;
  let writing: Promise<void> = Promise.resolve();

  let finish: (outcome: number | Error) => void = () => {};
  const finished = new Promise<number | Error>((resolve) => {
    finish = resolve;
  });
  const caughtUp = () =>
    assignedOnce &&
    [...positions].every(([p, offset]) => offset >= (endOffsets.get(p) ?? 0));
  const maybeFinish = () => {
    if (max !== undefined && printed >= max) finish(0);
    else if (values["no-follow"] && caughtUp()) finish(0);
  };

  const writeRecords = async (frame: Frame) => {
    const records = frame.records as ConsumerRecord[];
    const partitionNumber = frame.partition as number;
    const take = max === undefined
      ? records
      : records.slice(0, Math.max(0, max - printed));
    if (take.length === 0) return;
    const chunks: (string | Uint8Array)[] = take.map((record) =>
      format === "json"
        ? `${JSON.stringify({ partition: partitionNumber, ...record })}\n`
        : record.value === null
        ? "\n"
        : record.valueEncoding === "base64"
        ? Buffer.concat([Buffer.from(record.value, "base64"), newline])
        : `${record.value}\n`
    );
    await output.write(
      chunks.every((chunk) => typeof chunk === "string")
        ? chunks.join("")
        : Buffer.concat(
          chunks.map((chunk) =>
            typeof chunk === "string" ? Buffer.from(chunk) : chunk
          ),
        ),
    );
    if (output.isClosed()) return;
    printed += take.length;
    const next = take[take.length - 1].offset + 1;
    positions.set(partitionNumber, next);
    if (group !== undefined) {
      const id = commitId++;
      commitsPending.set(id, () => {});
      socket.send({
        op: "commit",
        id,
        sub,
        partition: partitionNumber,
        offset: next,
      });
    }
    const wanted = max === undefined
      ? take.length
      : Math.min(take.length, max - credited);
    if (wanted > 0) {
      credited += wanted;
      socket.send({ op: "credit", sub, records: wanted });
    }
    maybeFinish();
  };

  socket.onClose = (code) =>
    finish(
      new BrokerError("closed", `The broker closed the connection: ${code}`),
    );
  socket.onFrame = (frame) => {
    switch (frame.op) {
      case "subscribed":
        sub = frame.sub;
        return;
      case "assigned":
        assignedOnce = true;
        for (
          const start of frame.partitions as {
            partition: number;
            offset: number;
          }[]
        ) {
          positions.set(start.partition, start.offset);
        }
        maybeFinish();
        return;
      case "revoked":
        for (const p of frame.partitions as number[]) positions.delete(p);
        return;
      case "reset":
        positions.set(frame.partition as number, frame.offset as number);
        maybeFinish();
        return;
      case "records":
        writing = writing.then(() => writeRecords(frame)).catch(finish);
        return;
      case "committed":
        settleCommit(frame.id as number);
        return;
      case "error":
        return onError(frame);
    }
  };
  const settleCommit = (id: number) => {
    const settled = commitsPending.get(id);
    commitsPending.delete(id);
    settled?.();
  };
  const onError = (frame: Frame) => {
    const error = new BrokerError(String(frame.code), String(frame.message));
    if (frame.id === "subscribe") return finish(error);
    if (typeof frame.id === "number") {
      // A commit refused after a rebalance: the next owner reads those
      // records again, as a group promises at-least-once.
      settleCommit(frame.id);
      process.stderr.write(
        `dakghar: commit failed: ${error.code}: ${error.message}\n`,
      );
      return;
    }
    if (frame.code === "unknown_topic" || frame.code === "unknown_partition") {
      return finish(error);
    }
    process.stderr.write(`dakghar: ${error.code}: ${error.message}\n`);
  };

  process.on("SIGINT", () => finish(0));
  process.on("SIGTERM", () => finish(0));
  output.closed.then(() => finish(0));
  socket.send({
    op: "subscribe",
    id: "subscribe",
    topic,
    ...(group === undefined ? {} : { group }),
    from,
    ...(partition === undefined ? {} : { partitions: [partition] }),
    format: "json",
    credit: credited,
  });

  const outcome = await finished;
  socket.onClose = () => {};
  await settleCommits(socket, commitsPending);
  socket.close();
  if (outcome instanceof Error) throw outcome;
  return outcome;
}

const newline = new Uint8Array([10]);

/** Waits, briefly, for the broker to confirm the commits sent so far. */
async function settleCommits(
  socket: { onClose: (code: number) => void },
  pending: Map<number, () => void>,
): Promise<void> {
  if (pending.size === 0) return;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 5_000);
    const check = () => {
      if (pending.size > 0) return;
      clearTimeout(timer);
      resolve();
    };
    for (const id of pending.keys()) {
      pending.set(id, () => queueMicrotask(check));
    }
    socket.onClose = () => {
      clearTimeout(timer);
      resolve();
    };
  });
}
