/**
 * Publish throughput: JSON record batches over HTTP, and producer-framed
 * record batches in msgpack WebSocket frames. Request bodies are built once
 * before the clock starts, so the figures show the broker's cost, not the
 * load generator's.
 */
import { type BatchRecord, encodeBatch } from "../src/mod.ts";
import { BenchSocket } from "./bench_socket.ts";
import { pipeline, type Throughput, valueText, withTimeout } from "./load.ts";

/** Settings shared by the publish measurements. */
export interface PublishSettings {
  url: string;
  topic: string;
  /** Bytes of each record's value. */
  valueBytes: number;
  seconds: number;
  /** Requests or frames awaiting their ack at once. */
  inFlight: number;
}

/** Bytes of a record in a batch besides its value: lengths, deltas, null key, no headers. */
export const recordOverheadBytes = 4 + 4 + 4 + 4 + 4 + 2;

/** Records per WebSocket frame, so a frame carries about 128 KiB. */
export function recordsPerFrame(valueBytes: number): number {
  return Math.max(
    1,
    Math.floor(128 * 1024 / (valueBytes + recordOverheadBytes)),
  );
}

/** A record value of `valueBytes` ASCII bytes. */
export function benchValue(valueBytes: number): Uint8Array {
  return new TextEncoder().encode(valueText(valueBytes));
}

/** One record batch of `count` records, all with the same value. */
export function benchBatch(count: number, value: Uint8Array): Uint8Array {
  const now = Date.now();
  const records: BatchRecord[] = Array.from({ length: count }, () => ({
    key: null,
    value,
    headers: [],
    timestamp: now,
  }));
  return encodeBatch(records);
}

/**
 * POSTs `{records: [...]}` bodies of `recordsPerRequest` JSON records to
 * `/topics/:topic/records` with `inFlight` requests at a time.
 */
export async function measureHttpJsonPublish(
  settings: PublishSettings,
  recordsPerRequest = 500,
): Promise<Throughput> {
  const { url, topic, valueBytes, seconds, inFlight } = settings;
  const value = valueText(valueBytes);
  const body = JSON.stringify({
    records: Array.from({ length: recordsPerRequest }, () => ({ value })),
  });
  const target = `${url}/topics/${topic}/records`;
  const post = async () => {
    const response = await fetch(target, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body,
      signal: AbortSignal.timeout(30_000),
    });
    const text = await response.text();
    if (response.status !== 200) {
      throw new Error(`Publish failed: ${response.status} ${text}`);
    }
    return recordsPerRequest;
  };

  const deadline = performance.now() + seconds * 1000;
  const { records, seconds: elapsed } = await withTimeout(
    pipeline(inFlight, deadline, Number.MAX_SAFE_INTEGER, post),
    seconds * 1000 + 60_000,
    "HTTP JSON publish",
  );
  return { records, valueBytes: records * valueBytes, seconds: elapsed };
}

/**
 * Sends msgpack `publish` frames with a pre-framed `batch` over one
 * WebSocket, `inFlight` frames awaiting their ack at a time.
 */
export async function measureWsPublish(
  settings: PublishSettings,
): Promise<Throughput> {
  const { url, topic, valueBytes, seconds, inFlight } = settings;
  const socket = await BenchSocket.open(url);
  try {
    const deadline = performance.now() + seconds * 1000;
    const { records, seconds: elapsed } = await withTimeout(
      publishFrames(socket, topic, valueBytes, inFlight, deadline, Infinity),
      seconds * 1000 + 60_000,
      "WebSocket publish",
    );
    return { records, valueBytes: records * valueBytes, seconds: elapsed };
  } finally {
    await socket.close();
  }
}

/**
 * Publishes `count` records (rounded up to whole frames) over a WebSocket,
 * untimed, as the backlog for the consume measurement.
 *
 * @returns how many records were published
 */
export async function publishBacklog(
  url: string,
  topic: string,
  valueBytes: number,
  count: number,
  inFlight: number,
): Promise<number> {
  const socket = await BenchSocket.open(url);
  try {
    const { records } = await withTimeout(
      publishFrames(socket, topic, valueBytes, inFlight, Infinity, count),
      600_000,
      "backlog publish",
    );
    return records;
  } finally {
    await socket.close();
  }
}

function publishFrames(
  socket: BenchSocket,
  topic: string,
  valueBytes: number,
  inFlight: number,
  deadline: number,
  recordsMax: number,
): Promise<{ records: number; seconds: number }> {
  const perFrame = recordsPerFrame(valueBytes);
  const batch = benchBatch(perFrame, benchValue(valueBytes));
  const framesMax = Math.ceil(recordsMax / perFrame);
  return pipeline(inFlight, deadline, framesMax, async () => {
    const ack = await socket.request({ op: "publish", topic, batch });
    if (ack.op !== "ack") throw new Error(`Unexpected reply: ${ack.op}`);
    return perFrame;
  });
}
