/**
 * Delayed delivery under load: schedules many delayed records over a
 * WebSocket (JSON records with `deliverAt`, in big frames with a bounded
 * number awaiting their ack), all due in a window that opens a little after
 * the last one is scheduled, spread evenly over it. An ungrouped subscriber
 * (from latest, batch format) reads them back as the broker fires them.
 *
 * Lateness = the appendTime of the batch a record was fired in − the due
 * time it was scheduled for. Each value starts with its due time in decimal
 * (`<epoch ms>|padding`), so the due time is known per record without the
 * ack. Both clocks are the broker machine's wall clock (`Date.now()`), as
 * the bench runs beside the broker.
 *
 * The window must open after the last record is scheduled, so a short
 * calibration first schedules a slice of the records, due an hour later,
 * on a scratch topic that is then deleted; its rate sets how far ahead the
 * window opens.
 */
import { forEachRecord } from "../src/mod.ts";
import { BenchSocket, type Frame } from "./bench_socket.ts";
import {
  type BenchTopicConfig,
  createTopic,
  deleteTopic,
  pipeline,
  sleep,
  valueText,
  withTimeout,
} from "./load.ts";
import { quantile } from "./stats.ts";

/** Settings of one delay-fire run. */
export interface DelayFireSettings {
  url: string;
  /** A fresh topic the run schedules into and reads from. */
  topic: string;
  /** Settings of the scratch topic the calibration uses. */
  topicConfig: BenchTopicConfig;
  /** Delayed records to schedule. */
  pending: number;
  /** Bytes of each value (at least 20: the due time and a separator). */
  valueBytes: number;
  /** Publish frames awaiting their ack at once. */
  inFlight: number;
  /** Records per publish frame. */
  recordsPerFrame: number;
  /** Width of the window the due times are spread over, ms. */
  windowMs: number;
  /** Gap between the planned end of scheduling and the window's opening, ms. */
  leadMs: number;
  /** The run gives up this long after the window closes, with what it got. */
  graceSeconds: number;
}

/** What one delay-fire run saw. */
export interface DelayFireResult {
  /** Records acked as scheduled. */
  scheduled: number;
  /** Seconds from the first publish frame to the last ack. */
  scheduleSeconds: number;
  /** Records whose due time passed before the last one was scheduled: the window opened too early for them. */
  dueBeforeScheduled: number;
  /** Records fired and read back. */
  fired: number;
  /** appendTime − due time, ms. */
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** The earliest firing relative to its due time (negative: early). */
  minMs: number;
  /** Time the subscriber read a record − its due time, p99 ms. */
  receiveP99Ms: number;
  /** Scheduled records not read back by the end of the grace period. */
  missing: number;
  /** Records fired per second from the window's opening to the last appendTime. */
  fireRate: number;
}

/** The scheduling rate is taken as this fraction of the calibration's, for headroom. */
const rateHeadroom = 0.7;
const calibrationRecordsMax = 50_000;
const hourMs = 3_600_000;

/**
 * Publishes `count` delayed records to `topic`, record i due at `dueOf(i)`.
 *
 * @returns records acked and the seconds from the first frame to the last ack
 */
async function schedule(
  socket: BenchSocket,
  topic: string,
  count: number,
  settings: DelayFireSettings,
  dueOf: (index: number) => number,
): Promise<{ records: number; seconds: number }> {
  const padding = valueText(settings.valueBytes);
  const perFrame = settings.recordsPerFrame;
  const frames = Math.ceil(count / perFrame);
  let nextFrame = 0;
  return await pipeline(settings.inFlight, Infinity, frames, async () => {
    const first = nextFrame++ * perFrame;
    const last = Math.min(count, first + perFrame);
    const records = [];
    for (let i = first; i < last; i++) {
      const dueAt = dueOf(i);
      const head = `${dueAt}|`;
      records.push({
        value: head + padding.slice(head.length),
        deliverAt: dueAt,
      });
    }
    const ack = await socket.request({ op: "publish", topic, records });
    const offsets = ack.offsets as { offset: number }[];
    // A broker that appended instead of holding the records back would
    // make every lateness negative: fail loudly instead.
    if (offsets.length !== records.length || offsets[0].offset !== -1) {
      throw new Error(
        `Publish of delayed records was not held back: ${
          JSON.stringify(offsets.slice(0, 2))
        }`,
      );
    }
    return records.length;
  });
}

/** Scheduled records per second, from a slice due an hour later on a scratch topic. */
async function calibrate(
  socket: BenchSocket,
  settings: DelayFireSettings,
): Promise<number> {
  const scratch = `${settings.topic}-calibration`;
  await createTopic(settings.url, scratch, settings.topicConfig);
  try {
    const count = Math.min(
      calibrationRecordsMax,
      Math.max(settings.recordsPerFrame, Math.ceil(settings.pending / 20)),
    );
    const dueAt = Date.now() + hourMs;
    const result = await schedule(
      socket,
      scratch,
      count,
      settings,
      () => dueAt,
    );
    return result.records / result.seconds;
  } finally {
    await deleteTopic(settings.url, scratch);
  }
}

/** The due time at the start of a value `<epoch ms>|…`. */
function dueTimeOf(value: Uint8Array): number {
  let due = 0;
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (c < 48 || c > 57) break;
    due = due * 10 + (c - 48);
  }
  return due;
}

/**
 * Schedules `settings.pending` delayed records, reads them back as they
 * fire and measures how late each was appended.
 */
export async function measureDelayFire(
  settings: DelayFireSettings,
): Promise<DelayFireResult> {
  const { url, topic, pending, windowMs } = settings;
  if (settings.valueBytes < 20) {
    throw new RangeError("delay-fire values need at least 20 bytes");
  }
  const lateness = new Float64Array(pending);
  const receiveLateness = new Float64Array(pending);
  let fired = 0;
  let lastAppendTime = 0;
  let failure: Error | undefined;

  const consumer = await BenchSocket.open(url);
  const publisher = await BenchSocket.open(url);
  try {
    const rate = await calibrate(publisher, settings) * rateHeadroom;

    let assigned = () => {};
    const assignment = new Promise<void>((resolve) => assigned = resolve);
    consumer.onFrame = (frame: Frame) => {
      if (frame.op === "assigned") assigned();
      else if (frame.op === "batch") {
        const now = Date.now();
        forEachRecord(frame.bytes as Uint8Array, (record) => {
          if (fired >= pending) return;
          const due = dueTimeOf(record.value!);
          lateness[fired] = record.appendTime - due;
          lastAppendTime = Math.max(lastAppendTime, record.appendTime);
          receiveLateness[fired] = now - due;
          fired++;
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
      credit: pending * 2,
    });
    await withTimeout(assignment, 10_000, "delay-fire subscription assignment");

    const start = Date.now();
    const windowOpens = start + Math.ceil(pending / rate * 1000) +
      settings.leadMs;
    const dueOf = (i: number) =>
      windowOpens + Math.floor(i * windowMs / pending);
    const scheduled = await schedule(
      publisher,
      topic,
      pending,
      settings,
      dueOf,
    );
    const scheduledAt = Date.now();
    let dueBeforeScheduled = 0;
    for (let i = 0; i < pending && dueOf(i) < scheduledAt; i++) {
      dueBeforeScheduled++;
    }

    const giveUpAt = windowOpens + windowMs + settings.graceSeconds * 1000;
    while (fired < scheduled.records && Date.now() < giveUpAt && !failure) {
      await sleep(20);
    }
    if (failure) throw failure;

    const sorted = lateness.subarray(0, fired).sort();
    const received = receiveLateness.subarray(0, fired).sort();
    return {
      scheduled: scheduled.records,
      scheduleSeconds: scheduled.seconds,
      dueBeforeScheduled,
      fired,
      p50Ms: quantile(sorted, 0.5),
      p99Ms: quantile(sorted, 0.99),
      maxMs: fired > 0 ? sorted[fired - 1] : NaN,
      minMs: fired > 0 ? sorted[0] : NaN,
      receiveP99Ms: quantile(received, 0.99),
      missing: Math.max(0, scheduled.records - fired),
      fireRate: fired / (Math.max(1, lastAppendTime - windowOpens) / 1000),
    };
  } finally {
    await Promise.all([publisher.close(), consumer.close()]);
  }
}
