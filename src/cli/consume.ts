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
  let nextId = 1;
  // Requests awaiting their reply (commits, unsubscribe), by id.
  const replies = new Map<number, (frame: Frame | undefined) => void>();
  // Where each partition this subscription reads stands, as frames arrive,
  // and the generation of the `assigned` or `seeked` it came from.
  const positions = new Map<number, number>();
  const generations = new Map<number, number>();
  const commitsInFlight = new Set<Promise<void>>();
  let assignedOnce = false;
  let stopping = false;
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
  const request = (frame: Record<string, unknown>) => {
    const id = nextId++;
    const reply = new Promise<Frame | undefined>((resolve) =>
      replies.set(id, resolve)
    );
    socket.send({ ...frame, id });
    return reply;
  };
  const settle = (id: unknown, frame: Frame | undefined) => {
    const resolve = replies.get(id as number);
    replies.delete(id as number);
    resolve?.(frame);
  };

  const writeRecords = async (frame: Frame, generation?: number) => {
    const records = frame.records as ConsumerRecord[];
    const partitionNumber = frame.partition as number;
    const take = max === undefined
      ? records
      : records.slice(0, Math.max(0, max - printed));
    if (take.length === 0 || output.isClosed()) return;
    await output.write(formatRecords(take, partitionNumber, format));
    if (output.isClosed()) return;
    printed += take.length;
    if (group !== undefined) {
      const committed = request({
        op: "commit",
        sub,
        partition: partitionNumber,
        offset: take[take.length - 1].offset + 1,
        ...(generation === undefined ? {} : { generation }),
      }).then((reply) => {
        // A commit refused after a rebalance or a seek: those records are
        // read again, as a group promises at-least-once.
        if (reply?.op === "error") {
          process.stderr.write(
            `dakghar consume: commit failed: ${reply.code}: ${reply.message}\n`,
          );
        }
      });
      commitsInFlight.add(committed);
      committed.finally(() => commitsInFlight.delete(committed));
    }
    const wanted = max === undefined
      ? take.length
      : Math.min(take.length, max - credited);
    if (wanted > 0 && !stopping) {
      credited += wanted;
      socket.send({ op: "credit", sub, records: wanted });
    }
    maybeFinish();
  };

  const onRecords = (frame: Frame) => {
    if (stopping) return;
    const partitionNumber = frame.partition as number;
    const records = frame.records as ConsumerRecord[];
    const generation = generations.get(partitionNumber);
    if (positions.has(partitionNumber) && records.length > 0) {
      positions.set(partitionNumber, records[records.length - 1].offset + 1);
    }
    writing = writing.then(() => writeRecords(frame, generation)).catch(
      finish,
    );
    if (values["no-follow"] && caughtUp()) finish(0);
  };
  socket.onClose = (code) => {
    for (const id of [...replies.keys()]) settle(id, undefined);
    finish(
      new BrokerError("closed", `The broker closed the connection: ${code}`),
    );
  };
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
          generations.set(start.partition, frame.generation as number);
        }
        maybeFinish();
        return;
      case "revoked":
        for (const p of frame.partitions as number[]) {
          positions.delete(p);
          generations.delete(p);
        }
        maybeFinish();
        return;
      case "seeked":
      case "reset":
        positions.set(frame.partition as number, frame.offset as number);
        if (frame.op === "seeked") {
          generations.set(
            frame.partition as number,
            frame.generation as number,
          );
        }
        maybeFinish();
        return;
      case "records":
        return onRecords(frame);
      case "committed":
      case "unsubscribed":
        return settle(frame.id, frame);
      case "error":
        return onError(frame);
    }
  };
  const onError = (frame: Frame) => {
    const error = new BrokerError(String(frame.code), String(frame.message));
    if (frame.id === "subscribe") return finish(error);
    if (frame.id !== undefined) return settle(frame.id, frame);
    if (frame.code === "unknown_topic" || frame.code === "unknown_partition") {
      return finish(error);
    }
    process.stderr.write(`dakghar consume: ${error.code}: ${error.message}\n`);
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

  // Stopping: print what arrived, let the commits land, then leave the group
  // at once; a dropped connection would hold its partitions for the session
  // timeout.
  const outcome = await finished;
  stopping = true;
  await writing;
  if (group !== undefined && sub !== undefined) {
    await withinMs(Promise.all(commitsInFlight), 5_000);
    await withinMs(request({ op: "unsubscribe", sub }), 5_000);
  }
  socket.onClose = () => {};
  socket.close();
  if (outcome instanceof Error) throw outcome;
  return outcome;
}

function withinMs(promise: Promise<unknown>, ms: number): Promise<unknown> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise((resolve) => timer = setTimeout(resolve, ms)),
  ]).finally(() => clearTimeout(timer));
}

/** One line per record: the value's bytes, or the JSON consumer record. */
function formatRecords(
  records: ConsumerRecord[],
  partition: number,
  format: "value" | "json",
): string | Uint8Array {
  if (format === "json") {
    return records.map((record) =>
      `${JSON.stringify({ partition, ...record })}\n`
    ).join("");
  }
  if (records.every((record) => record.valueEncoding !== "base64")) {
    return records.map((record) => `${record.value ?? ""}\n`).join("");
  }
  return Buffer.concat(records.flatMap((record) => [
    record.valueEncoding === "base64"
      ? Buffer.from(record.value ?? "", "base64")
      : Buffer.from(record.value ?? ""),
    newline,
  ]));
}

const newline = new Uint8Array([10]);
