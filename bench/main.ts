/**
 * `npm run bench`: starts a broker as a child process on a fresh data
 * directory (default flush policy: fsync before ack) and measures publish
 * throughput over HTTP JSON and WebSocket msgpack, consume throughput from a
 * backlog and end-to-end latency at a steady rate, for 100-byte and 1 KiB
 * records. Each measurement runs `--runs` times; the table shows the median
 * and the min–max spread, and the ratio against the targets.
 *
 *   npm run bench -- --runs 1 --seconds 1 --only latency
 */
import { readFileSync, writeFileSync } from "node:fs";
import { availableParallelism, loadavg } from "node:os";
import { parseArgs } from "node:util";
import { type BrokerProcess, startBrokerProcess } from "./broker_process.ts";
import { measureConsume } from "./consume.ts";
import { measureQueueConsume } from "./queue_consume.ts";
import { type DelayFireResult, measureDelayFire } from "./delay_fire.ts";
import { type LatencyResult, measureLatency } from "./latency.ts";
import { BATCH_HEADER_BYTES } from "../src/mod.ts";
import { measureFsyncFloor } from "./fsync_floor.ts";
import { createTopic, deleteTopic } from "./load.ts";
import {
  measureHttpJsonPublish,
  measureWsPublish,
  publishBacklog,
  recordOverheadBytes,
} from "./publish.ts";
import { formatFigure, formatTable, type Spread, spread } from "./stats.ts";

const usage = `Usage: npm run bench -- [options]

Options:
  --runs <n>         runs of each measurement (5)
  --seconds <n>      seconds of each timed run (5)
  --only <names>     comma-separated substrings of case names, e.g. "ws-publish,latency-100b"
  --partitions <n>   partitions of every topic (1)
  --flush <policy>   topic flush policy: sync (fsync before ack) or interval (sync)
  --in-flight <n>    publish requests or frames awaiting their ack at once (8)
  --rate <n>         records per second for the latency runs (10000)
  --prefetch <n>     unsettled deliveries per queue member (1000)
  --queue-backlog <n> records in the queue-consume backlog (1000000)
  --delay-pending <n> delayed records each delay-fire run schedules (1000000)
  --delay-window <ms> window the delay-fire due times are spread over (3000)
  --json <file>      also write every run's figures to this file
  --profile <dir>    run the broker with --cpu-prof, writing profiles to <dir>
  -h, --help         show this text

Cases: http-json-*, ws-publish-*, consume-*, queue-consume-*, delay-fire-*,
fsync-floor-*, latency-*, each for 100b and 1kib (queue-consume and
delay-fire for 100b only). queue-consume reads a backlog of
--queue-backlog records through a fresh queue group per run, acking every
record. delay-fire schedules --delay-pending delayed records, all due within
--delay-window ms a little after the last is scheduled, and measures how
late each is appended (appendTime − due time); a quick run:
--only delay --runs 1 --delay-pending 10000. fsync-floor times append + fdatasync of one latency tick's batch
on the data directory's file system, without the broker: the disk's floor.
`;

/** What the command line asks for. */
interface BenchSettings {
  runs: number;
  seconds: number;
  only: string[];
  partitions: number;
  flush: "sync" | "interval";
  inFlight: number;
  rate: number;
  prefetch: number;
  queueBacklog: number;
  delayPending: number;
  delayWindowMs: number;
  json: string | undefined;
  profileDir: string | undefined;
}

type Kind =
  | "http-json"
  | "ws-publish"
  | "consume"
  | "queue-consume"
  | "delay-fire"
  | "fsync-floor"
  | "latency";

/** One measurement at one record size. */
interface BenchCase {
  name: string;
  kind: Kind;
  valueBytes: number;
}

/** Figures of one run, by metric name ("rec/s", "MB/s", "p50 ms", "p99 ms"). */
type RunFigures = Record<string, number>;

/** A goal from the brief, or a figure from another system for scale. */
interface Target {
  caseName: string;
  metric: string;
  value: number;
  /** Whether a larger figure is better (throughput) or a smaller one (latency). */
  higherIsBetter: boolean;
}

const sizes = [
  { label: "100b", bytes: 100 },
  { label: "1kib", bytes: 1024 },
];
const kinds: Kind[] = [
  "http-json",
  "ws-publish",
  "consume",
  "queue-consume",
  "delay-fire",
  "fsync-floor",
  "latency",
];

const targets: Target[] = [
  target("ws-publish-100b", "rec/s", 1_000_000),
  target("ws-publish-1kib", "MB/s", 400),
  target("http-json-100b", "rec/s", 200_000),
  target("consume-100b", "rec/s", 2_000_000),
  target("queue-consume-100b", "rec/s", 500_000),
  target("delay-fire-100b", "late p99 ms", 1000, false),
  target("latency-100b", "p50 ms", 0.5, false),
  target("latency-100b", "p99 ms", 3, false),
  target("latency-1kib", "p50 ms", 0.5, false),
  target("latency-1kib", "p99 ms", 3, false),
];

/** Figures measured on this machine by others, for scale; not measured here. */
const references: {
  name: string;
  recordsPerSecond: number;
  /** The case it compares with. */
  cases: string[];
}[] = [
  {
    name: "Redis Streams, fsync always",
    recordsPerSecond: 100_000,
    cases: ["ws-publish-100b", "http-json-100b"],
  },
  {
    name: "NATS JetStream, no fsync",
    recordsPerSecond: 160_000,
    cases: ["ws-publish-100b", "http-json-100b"],
  },
  {
    name: "RabbitMQ quorum queue, per-message ack",
    recordsPerSecond: 150_000,
    cases: ["queue-consume-100b"],
  },
];

/** Backlog records per second of `--seconds`, so a short run reads a small one. */
const backlogPerSecond: Record<string, number> = {
  "100b": 400_000,
  "1kib": 80_000,
};

function target(
  caseName: string,
  metric: string,
  value: number,
  higherIsBetter = true,
): Target {
  return { caseName, metric, value, higherIsBetter };
}

function parseSettings(args: string[]): BenchSettings | "help" {
  const { values } = parseArgs({
    args,
    options: {
      runs: { type: "string", default: "5" },
      seconds: { type: "string", default: "5" },
      only: { type: "string" },
      partitions: { type: "string", default: "1" },
      flush: { type: "string", default: "sync" },
      "in-flight": { type: "string", default: "8" },
      rate: { type: "string", default: "10000" },
      prefetch: { type: "string", default: "1000" },
      "queue-backlog": { type: "string", default: "1000000" },
      "delay-pending": { type: "string", default: "1000000" },
      "delay-window": { type: "string", default: "3000" },
      json: { type: "string" },
      profile: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return "help";
  return {
    runs: positiveNumber(values.runs, "runs", true),
    seconds: positiveNumber(values.seconds, "seconds", false),
    only: values.only?.split(",").map((name) => name.trim()).filter(Boolean) ??
      [],
    partitions: positiveNumber(values.partitions, "partitions", true),
    flush: flushPolicy(values.flush),
    inFlight: positiveNumber(values["in-flight"], "in-flight", true),
    rate: positiveNumber(values.rate, "rate", true),
    prefetch: positiveNumber(values.prefetch, "prefetch", true),
    queueBacklog: positiveNumber(
      values["queue-backlog"],
      "queue-backlog",
      true,
    ),
    delayPending: positiveNumber(
      values["delay-pending"],
      "delay-pending",
      true,
    ),
    delayWindowMs: positiveNumber(values["delay-window"], "delay-window", true),
    json: values.json,
    profileDir: values.profile,
  };
}

function flushPolicy(text: string): "sync" | "interval" {
  if (text === "sync" || text === "interval") return text;
  throw new RangeError(`Cannot parse --flush: ${text}`);
}

function positiveNumber(text: string, name: string, integer: boolean): number {
  const value = Number(text);
  if (!(value > 0) || (integer && !Number.isInteger(value))) {
    throw new RangeError(`Cannot parse --${name}: ${text}`);
  }
  return value;
}

function selectedCases(only: string[]): BenchCase[] {
  // The queue and delay cases move a million records each: at 100 B only.
  const hundredOnly: Kind[] = ["queue-consume", "delay-fire"];
  const cases = kinds.flatMap((kind) =>
    sizes.filter((size) => !hundredOnly.includes(kind) || size.label === "100b")
      .map((size) => ({
        name: `${kind}-${size.label}`,
        kind,
        valueBytes: size.bytes,
      }))
  );
  if (only.length === 0) return cases;
  const chosen = cases.filter((c) =>
    only.some((part) => c.name.includes(part))
  );
  if (chosen.length === 0) {
    throw new RangeError(
      `Cannot find a case matching --only ${only.join(",")}`,
    );
  }
  return chosen;
}

/** Runs every run of one case against the broker; topics are deleted after use. */
async function runCase(
  broker: BrokerProcess,
  benchCase: BenchCase,
  settings: BenchSettings,
): Promise<RunFigures[]> {
  const { url } = broker;
  const { name, kind, valueBytes } = benchCase;
  const { seconds, inFlight } = settings;
  const topicConfig = {
    partitions: settings.partitions,
    flush: settings.flush,
  };
  const figures: RunFigures[] = [];

  if (kind === "consume" || kind === "queue-consume") {
    // Both read one backlog per case, published untimed; a queue run uses
    // a fresh group, so every run reads all of it.
    const topic = `${name}-backlog`;
    await createTopic(url, topic, topicConfig);
    try {
      const size = name.slice(name.lastIndexOf("-") + 1);
      const wanted = kind === "consume"
        ? Math.ceil(backlogPerSecond[size] * seconds)
        : settings.queueBacklog;
      const backlogStart = performance.now();
      const backlog = await publishBacklog(
        url,
        topic,
        valueBytes,
        wanted,
        inFlight,
      );
      progress(
        `${name}: backlog of ${backlog} records published in ${
          ((performance.now() - backlogStart) / 1000).toFixed(1)
        } s (untimed)`,
      );
      for (let run = 1; run <= settings.runs; run++) {
        const result = kind === "consume"
          ? await measureConsume({
            url,
            topic,
            valueBytes,
            backlogRecords: backlog,
            timeoutSeconds: Math.max(30, seconds * 10),
          })
          : await measureQueueConsume({
            url,
            topic,
            group: `${name}-run-${run}-${Date.now()}`,
            valueBytes,
            backlogRecords: backlog,
            prefetch: settings.prefetch,
            timeoutSeconds: Math.max(60, seconds * 20),
          });
        if (!result.complete) {
          progress(
            `${name}: run ${run} timed out with ${result.records} of ${backlog}`,
          );
        }
        figures.push(reportThroughput(name, run, result));
      }
    } finally {
      await deleteTopic(url, topic);
    }
    return figures;
  }

  if (kind === "delay-fire") {
    for (let run = 1; run <= settings.runs; run++) {
      const topic = `${name}-r${run}`;
      await createTopic(url, topic, topicConfig);
      try {
        const result = await measureDelayFire({
          url,
          topic,
          topicConfig,
          pending: settings.delayPending,
          valueBytes,
          inFlight,
          recordsPerFrame: 2000,
          windowMs: settings.delayWindowMs,
          leadMs: 2000,
          graceSeconds: Math.max(30, seconds * 6),
        });
        figures.push(reportDelayFire(name, run, result));
      } finally {
        await deleteTopic(url, topic);
      }
    }
    return figures;
  }

  if (kind === "fsync-floor") {
    const tickRecords = Math.max(1, Math.round(settings.rate / 1000));
    const writeBytes = BATCH_HEADER_BYTES +
      tickRecords * (valueBytes + recordOverheadBytes);
    for (let run = 1; run <= settings.runs; run++) {
      const result = measureFsyncFloor(writeBytes, seconds);
      progress(
        `${name} run ${run}: ${result.count} appends of ${writeBytes} B + fdatasync, p50 ${
          result.p50Ms.toFixed(3)
        } ms, p99 ${result.p99Ms.toFixed(3)} ms`,
      );
      figures.push({ "p50 ms": result.p50Ms, "p99 ms": result.p99Ms });
    }
    return figures;
  }

  for (let run = 1; run <= settings.runs; run++) {
    const topic = `${name}-r${run}`;
    await createTopic(url, topic, topicConfig);
    try {
      if (kind === "latency") {
        const result = await measureLatency({
          url,
          topic,
          valueBytes,
          seconds,
          ratePerSecond: settings.rate,
        });
        figures.push(reportLatency(name, run, result));
        continue;
      }
      const publishSettings = { url, topic, valueBytes, seconds, inFlight };
      const result = kind === "http-json"
        ? await measureHttpJsonPublish(publishSettings)
        : await measureWsPublish(publishSettings);
      figures.push(reportThroughput(name, run, result));
    } finally {
      await deleteTopic(url, topic);
    }
  }
  return figures;
}

function reportThroughput(
  name: string,
  run: number,
  result: { records: number; valueBytes: number; seconds: number },
): RunFigures {
  const figures = {
    "rec/s": result.records / result.seconds,
    "MB/s": result.valueBytes / result.seconds / 1e6,
  };
  progress(
    `${name} run ${run}: ${result.records} records in ${
      result.seconds.toFixed(2)
    } s = ${formatFigure(figures["rec/s"])} rec/s, ${
      formatFigure(figures["MB/s"])
    } MB/s`,
  );
  return figures;
}

function reportDelayFire(
  name: string,
  run: number,
  result: DelayFireResult,
): RunFigures {
  const ms = (value: number) => value.toFixed(1);
  progress(
    `${name} run ${run}: ${result.scheduled} delayed records scheduled in ${
      result.scheduleSeconds.toFixed(2)
    } s (${
      formatFigure(result.scheduled / result.scheduleSeconds)
    } rec/s), ${result.dueBeforeScheduled} due before the last was scheduled`,
  );
  progress(
    `  fired ${result.fired}, missing ${result.missing}; appendTime − due p50 ${
      ms(result.p50Ms)
    } ms, p99 ${ms(result.p99Ms)} ms, max ${ms(result.maxMs)} ms, min ${
      ms(result.minMs)
    } ms; read − due p99 ${ms(result.receiveP99Ms)} ms; fired at ${
      formatFigure(result.fireRate)
    } rec/s from the window's opening`,
  );
  return {
    "late p50 ms": result.p50Ms,
    "late p99 ms": result.p99Ms,
    "late max ms": result.maxMs,
    "read p99 ms": result.receiveP99Ms,
    "schedule s": result.scheduleSeconds,
    "schedule rec/s": result.scheduled / result.scheduleSeconds,
    "fire rec/s": result.fireRate,
    "missing": result.missing,
  };
}

function reportLatency(
  name: string,
  run: number,
  result: LatencyResult,
): RunFigures {
  const ms = (value: number) => value.toFixed(3);
  progress(
    `${name} run ${run}: end to end p50 ${ms(result.p50Ms)} ms, p99 ${
      ms(result.p99Ms)
    } ms, max ${ms(result.maxMs)} ms over ${result.samples} records`,
  );
  progress(
    `  publish to ack p50 ${ms(result.ackP50Ms)} ms, p99 ${
      ms(result.ackP99Ms)
    } ms; rate kept ${
      Math.round(result.achievedRate)
    }/s; missing ${result.missing}`,
  );
  return {
    "p50 ms": result.p50Ms,
    "p99 ms": result.p99Ms,
    "ack p50 ms": result.ackP50Ms,
    "ack p99 ms": result.ackP99Ms,
  };
}

function progress(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** The result table: one row per case and metric. */
function resultTable(results: Map<string, RunFigures[]>): string {
  const rows = [[
    "case",
    "metric",
    "median",
    "min–max",
    "target",
    "ratio",
    "meets",
  ]];
  for (const [name, runs] of results) {
    if (runs.length === 0) continue;
    for (const metric of Object.keys(runs[0])) {
      const figures = spread(runs.map((run) => run[metric]));
      const goal = targets.find((t) =>
        t.caseName === name && t.metric === metric
      );
      rows.push([
        name,
        metric,
        formatFigure(figures.median),
        `${formatFigure(figures.min)}–${formatFigure(figures.max)}`,
        goal ? formatFigure(goal.value) : "",
        goal ? `${(figures.median / goal.value).toFixed(2)}×` : "",
        goal ? (meets(figures, goal) ? "yes" : "no") : "",
      ]);
    }
  }
  return formatTable(rows);
}

function meets(figures: Spread, goal: Target): boolean {
  return goal.higherIsBetter
    ? figures.median >= goal.value
    : figures.median <= goal.value;
}

/** Figures at 100 B against the reference systems. */
function scaleLines(results: Map<string, RunFigures[]>): string[] {
  const lines: string[] = [];
  for (
    const name of ["ws-publish-100b", "http-json-100b", "queue-consume-100b"]
  ) {
    const runs = results.get(name);
    if (!runs || runs.length === 0) continue;
    const median = spread(runs.map((run) => run["rec/s"])).median;
    const ratios = references.filter((reference) =>
      reference.cases.includes(name)
    ).map((reference) =>
      `${
        (median / reference.recordsPerSecond).toFixed(2)
      }× ${reference.name} (~${formatFigure(reference.recordsPerSecond)} rec/s)`
    );
    lines.push(`${name} ${formatFigure(median)} rec/s = ${ratios.join(", ")}`);
  }
  return lines;
}

function machineLines(): string[] {
  let cpu = "unknown";
  try {
    cpu = /^model name\s*:\s*(.*)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))
      ?.[1] ?? cpu;
  } catch {
    // Not Linux: the CPU model stays unknown.
  }
  return [
    `date ${new Date().toISOString()}`,
    `cpus ${availableParallelism()} (${cpu})`,
    `node ${process.version}`,
    `load average at start ${loadavg().map((l) => l.toFixed(2)).join(" ")}`,
  ];
}

async function main(): Promise<number> {
  let settings: BenchSettings | "help";
  let cases: BenchCase[];
  try {
    settings = parseSettings(process.argv.slice(2));
    if (settings === "help") {
      process.stdout.write(usage);
      return 0;
    }
    cases = selectedCases(settings.only);
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n\n${usage}`);
    return 2;
  }

  const machine = machineLines();
  const broker = await startBrokerProcess({ profileDir: settings.profileDir });
  progress(
    `broker pid ${broker.pid} at ${broker.url}, data in ${broker.dataDir}`,
  );
  const interrupted = () => {
    progress("interrupted: stopping the broker");
    broker.stop(5_000).finally(() => process.exit(130));
  };
  process.once("SIGINT", interrupted);
  process.once("SIGTERM", interrupted);

  const results = new Map<string, RunFigures[]>();
  let failed = 0;
  try {
    for (const benchCase of cases) {
      try {
        results.set(benchCase.name, await runCase(broker, benchCase, settings));
      } catch (error) {
        failed++;
        progress(`${benchCase.name} failed: ${(error as Error).message}`);
        progress(broker.recentLog().slice(-10).join("\n"));
      }
    }
  } finally {
    await broker.stop();
  }

  const s = settings;
  const out = [
    "",
    `Dakghar bench: ${s.runs} run(s) of ${s.seconds} s, ${s.partitions} partition(s), ` +
    `${s.inFlight} in flight, ${
      s.flush === "sync" ? "fsync before ack" : "flush on an interval"
    }`,
    ...machine,
    "",
    resultTable(results),
    "",
    "MB/s counts record values only (1 MB = 10^6 bytes). Ratio is median / target.",
    ...scaleLines(results).map((line) => `For scale: ${line}`),
    "",
  ];
  process.stdout.write(out.join("\n"));
  if (settings.json !== undefined) {
    writeFileSync(
      settings.json,
      JSON.stringify(
        { settings, machine, results: Object.fromEntries(results) },
        null,
        2,
      ),
    );
  }
  return failed > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (error) => {
    process.stderr.write(`${(error as Error).stack ?? error}\n`);
    process.exit(1);
  },
);
