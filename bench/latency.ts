/**
 * End-to-end latency at a steady rate: a publisher socket sends every
 * millisecond the records due by then, each value starting with its send
 * time (float64 from `performance.now()`), and a subscriber socket in the
 * same process reads them back as batches. Latency is receive time minus
 * send time, so it covers the frame to the broker, the append and fsync,
 * the high watermark advance, the fetch and the push back.
 */
import { forEachRecord } from "../src/mod.ts";
import { BenchSocket, type Frame } from "./bench_socket.ts";
import { benchBatch, benchValue } from "./publish.ts";
import { quantile } from "./stats.ts";
import { sleep, withTimeout } from "./load.ts";

/** Settings of one latency run. */
export interface LatencySettings {
  url: string;
  topic: string;
  valueBytes: number;
  seconds: number;
  /** Records per second the publisher keeps to. */
  ratePerSecond: number;
}

/** What one latency run saw. */
export interface LatencyResult {
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Records measured (sent after the warm-up). */
  samples: number;
  /** Records sent over the whole run. */
  sent: number;
  /** Records sent but not received by the end of the grace period. */
  missing: number;
  /** The rate the publisher actually kept, records per second. */
  achievedRate: number;
  /** Publish to ack (append and fsync, without the way back to a consumer), after the warm-up. */
  ackP50Ms: number;
  ackP99Ms: number;
}

/** Frames awaiting their ack beyond which the publisher skips a tick. */
const framesInFlightMax = 1000;
/** A stalled timer must not turn into one huge burst. */
const recordsPerTickMax = 1000;
const graceMs = 3000;

/**
 * Runs the publisher and the subscriber for `settings.seconds`, skipping the
 * first second (or a fifth of a short run) as warm-up.
 */
export async function measureLatency(
  settings: LatencySettings,
): Promise<LatencyResult> {
  const { url, topic, valueBytes, seconds, ratePerSecond } = settings;
  const warmupMs = Math.min(1000, seconds * 200);
  const samples = new Float64Array(Math.ceil(ratePerSecond * seconds) + 1000);
  let sampleCount = 0;
  const ackSamples = new Float64Array(Math.ceil(seconds * 1000) + 1000);
  let ackCount = 0;
  let received = 0;
  let failure: Error | undefined;

  // Subscribe first, from the end of the log, and wait for the assignment:
  // fetching starts at the offsets it names.
  const consumer = await BenchSocket.open(url);
  const publisher = await BenchSocket.open(url);
  try {
    let assigned = () => {};
    const assignment = new Promise<void>((resolve) => assigned = resolve);
    let measureFrom = Infinity;
    consumer.onFrame = (frame: Frame) => {
      if (frame.op === "assigned") assigned();
      else if (frame.op === "batch") {
        const now = performance.now();
        forEachRecord(frame.bytes as Uint8Array, (record) => {
          received++;
          const value = record.value!;
          const sentAt = new DataView(value.buffer, value.byteOffset, 8)
            .getFloat64(0, true);
          if (sentAt >= measureFrom && sampleCount < samples.length) {
            samples[sampleCount++] = now - sentAt;
          }
        });
      } else if (frame.op === "error") {
        failure ??= new Error(`Subscriber got ${frame.code}: ${frame.message}`);
      }
    };
    await consumer.request({
      op: "subscribe",
      topic,
      from: "latest",
      format: "batch",
      credit: samples.length * 2,
    });
    await withTimeout(assignment, 10_000, "latency subscription assignment");

    // Publish at the rate until the end of the run.
    const start = performance.now();
    measureFrom = start + warmupMs;
    const end = start + seconds * 1000;
    let sent = 0;
    let finished = () => {};
    const publishing = new Promise<void>((resolve) => finished = resolve);
    const tick = () => {
      const now = performance.now();
      if (now >= end || failure) {
        clearInterval(timer);
        finished();
        return;
      }
      const due = Math.min(
        recordsPerTickMax,
        Math.floor((now - start) * ratePerSecond / 1000) - sent,
      );
      if (due <= 0 || publisher.pendingCount >= framesInFlightMax) return;
      // All records of a tick share one send time.
      const value = benchValue(valueBytes);
      const sentAt = performance.now();
      new DataView(value.buffer).setFloat64(0, sentAt, true);
      const batch = benchBatch(due, value);
      sent += due;
      publisher.request({ op: "publish", topic, batch }).then(() => {
        if (sentAt >= measureFrom && ackCount < ackSamples.length) {
          ackSamples[ackCount++] = performance.now() - sentAt;
        }
      }, (error) => {
        failure ??= error as Error;
      });
    };
    const timer = setInterval(tick, 1);
    await publishing;
    const achievedRate = sent / ((performance.now() - start) / 1000);

    // Give the last records time to come back.
    const graceEnd = performance.now() + graceMs;
    while (received < sent && performance.now() < graceEnd && !failure) {
      await sleep(10);
    }
    if (failure) throw failure;

    const sorted = samples.subarray(0, sampleCount).sort();
    const acks = ackSamples.subarray(0, ackCount).sort();
    return {
      p50Ms: quantile(sorted, 0.5),
      p99Ms: quantile(sorted, 0.99),
      maxMs: sampleCount > 0 ? sorted[sampleCount - 1] : NaN,
      samples: sampleCount,
      sent,
      missing: Math.max(0, sent - received),
      achievedRate,
      ackP50Ms: quantile(acks, 0.5),
      ackP99Ms: quantile(acks, 0.99),
    };
  } finally {
    await Promise.all([publisher.close(), consumer.close()]);
  }
}
