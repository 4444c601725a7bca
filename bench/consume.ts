/**
 * Consume throughput: one WebSocket subscriber with `format: "batch"` reads
 * a backlog from the earliest offset, with credit for all of it at once, and
 * counts records from the batch headers until it has them all.
 */
import { batchLength, batchRecordCount } from "../src/mod.ts";
import { BenchSocket, type Frame } from "./bench_socket.ts";
import type { Throughput } from "./load.ts";

/** Settings of one consume run. */
export interface ConsumeSettings {
  url: string;
  topic: string;
  valueBytes: number;
  /** Records in the backlog; the run ends when it has read them all. */
  backlogRecords: number;
  /** The run ends early, with what it got, after this long. */
  timeoutSeconds: number;
}

/** Counts records in concatenated batches without decoding them. */
export function countRecords(bytes: Uint8Array): number {
  let records = 0;
  for (let position = 0; position < bytes.length;) {
    records += batchRecordCount(bytes, position);
    position += batchLength(bytes, position);
  }
  return records;
}

/**
 * Reads the whole backlog of `settings.topic` once.
 *
 * @returns the records read and the seconds from `subscribe` to the last one;
 *   `complete` is false when the timeout cut the run short
 */
export async function measureConsume(
  settings: ConsumeSettings,
): Promise<Throughput & { complete: boolean }> {
  const { url, topic, valueBytes, backlogRecords, timeoutSeconds } = settings;
  const socket = await BenchSocket.open(url);
  try {
    let records = 0;
    let last = 0;
    let failure: Error | undefined;
    let finish = () => {};
    const done = new Promise<void>((resolve) => finish = resolve);
    const timer = setTimeout(finish, timeoutSeconds * 1000);
    socket.onFrame = (frame: Frame) => {
      if (frame.op === "batch") {
        records += countRecords(frame.bytes as Uint8Array);
        last = performance.now();
        if (records >= backlogRecords) finish();
      } else if (frame.op === "error") {
        failure = new Error(`Consume failed: ${frame.code}: ${frame.message}`);
        finish();
      }
    };

    const start = performance.now();
    await socket.request({
      op: "subscribe",
      topic,
      from: "earliest",
      format: "batch",
      credit: backlogRecords,
    });
    await done;
    clearTimeout(timer);
    if (failure) throw failure;
    return {
      records,
      valueBytes: records * valueBytes,
      seconds: ((records > 0 ? last : performance.now()) - start) / 1000,
      complete: records >= backlogRecords,
    };
  } finally {
    await socket.close();
  }
}
