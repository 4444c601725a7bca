/**
 * Queue-group consume throughput: one WebSocket member of a fresh queue
 * group reads a backlog with per-record acknowledgement. Every delivered
 * record is acked by its own offset and attempt; a `settle` frame carries
 * the acks of one `deliveries` frame as ranges of consecutive offsets (the
 * broker still settles each record on its own). The run ends when the
 * broker confirms the settlement of the last record (`settled`, which comes
 * once the group's state covering it is on disk).
 */
import { batchBaseOffset, batchLength, batchRecordCount } from "../src/mod.ts";
import { BenchSocket, type Frame } from "./bench_socket.ts";
import type { Throughput } from "./load.ts";

/** Settings of one queue consume run. */
export interface QueueConsumeSettings {
  url: string;
  topic: string;
  /** A group name not used before: each run starts from the earliest offset. */
  group: string;
  valueBytes: number;
  /** Records in the backlog; the run ends when every one is acked. */
  backlogRecords: number;
  /** Most unsettled deliveries at once (the member's prefetch). */
  prefetch: number;
  /** The run ends early, with what it got, after this long. */
  timeoutSeconds: number;
}

/** Creates a queue group on `topic` reading from its earliest offset. */
async function createQueueGroup(
  url: string,
  group: string,
  topic: string,
): Promise<void> {
  const response = await fetch(`${url}/groups/${group}`, {
    method: "PUT",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ topic, mode: "queue", from: "earliest" }),
    signal: AbortSignal.timeout(30_000),
  });
  if (!response.ok) {
    throw new Error(
      `Cannot create group ${group}: ${response.status} ${await response
        .text()}`,
    );
  }
}

/**
 * The acks for every record of a `deliveries` frame: tuples [partition,
 * offset, count, attempt] per run of consecutive offsets with one attempt.
 */
function acksFor(
  partition: number,
  bytes: Uint8Array,
  redelivered: number[],
): number[][] {
  const attempts = new Map<number, number>();
  for (let i = 0; i < redelivered.length; i += 2) {
    attempts.set(redelivered[i], redelivered[i + 1]);
  }
  const acks: number[][] = [];
  let last: number[] | undefined;
  for (let position = 0; position < bytes.length;) {
    const base = batchBaseOffset(bytes, position);
    const count = batchRecordCount(bytes, position);
    for (let offset = base; offset < base + count; offset++) {
      const attempt = attempts.get(offset) ?? 1;
      if (
        last !== undefined && last[1] + last[2] === offset &&
        last[3] === attempt
      ) {
        last[2]++;
      } else {
        last = [partition, offset, 1, attempt];
        acks.push(last);
      }
    }
    position += batchLength(bytes, position);
  }
  return acks;
}

/**
 * Consumes and acks the whole backlog once through a queue group.
 *
 * @returns records acked and the seconds from `subscribe` to the broker's
 *   confirmation of the last ack; `complete` is false after a timeout
 */
export async function measureQueueConsume(
  settings: QueueConsumeSettings,
): Promise<Throughput & { complete: boolean }> {
  const { url, topic, group, valueBytes, backlogRecords, timeoutSeconds } =
    settings;
  await createQueueGroup(url, group, topic);
  const socket = await BenchSocket.open(url);
  try {
    let acked = 0;
    let failure: Error | undefined;
    let finish = () => {};
    const done = new Promise<void>((resolve) => finish = resolve);
    const timer = setTimeout(finish, timeoutSeconds * 1000);
    let lastSettle: Promise<Frame> | undefined;
    socket.onFrame = (frame: Frame) => {
      if (frame.op === "deliveries") {
        const sub = frame.sub;
        const acks = acksFor(
          frame.partition as number,
          frame.bytes as Uint8Array,
          (frame.redelivered as number[] | undefined) ?? [],
        );
        for (const ack of acks) acked += ack[2];
        if (acked >= backlogRecords) {
          lastSettle = socket.request({ op: "settle", sub, acks });
          lastSettle.then(finish, (error) => {
            failure = error;
            finish();
          });
        } else {
          socket.send({ op: "settle", sub, acks });
        }
      } else if (frame.op === "settled" || frame.op === "error") {
        failure = new Error(
          `Queue consume failed: ${JSON.stringify(frame).slice(0, 300)}`,
        );
        finish();
      }
    };

    const start = performance.now();
    await socket.request({
      op: "subscribe",
      topic,
      group,
      format: "batch",
      prefetch: { records: settings.prefetch, bytes: 64 * 1024 * 1024 },
    });
    await done;
    const end = performance.now();
    clearTimeout(timer);
    if (failure) throw failure;
    return {
      records: acked,
      valueBytes: acked * valueBytes,
      seconds: (end - start) / 1000,
      complete: acked >= backlogRecords && lastSettle !== undefined,
    };
  } finally {
    await socket.close();
  }
}
