/**
 * `dakghar serve [options]`: runs a broker in this process. Every option can
 * also come from an environment variable; a flag wins over the variable.
 *
 *   node build/src/main.js serve --port 8080 --data-dir ./data
 *   deno run -A src/main.ts serve
 */
import { parseArgs } from "node:util";
import {
  createLogger,
  type LogLevel,
  parseLogLevel,
  textSink,
} from "../logger.ts";
import { runtime } from "../runtime/mod.ts";
import { type RunningBroker, startBroker } from "../server.ts";
import { defaultMaxPartitions } from "../../actors/router_actor.ts";
import { DakgharError } from "../errors.ts";

/** The help text of `dakghar serve`. */
export const serveUsage = `Usage: dakghar serve [options]

Options (environment variable in brackets):
  --port <n>             TCP port to listen on, 0 for any free one [DAKGHAR_PORT] (8080)
  --host <address>       interface to listen on; 0.0.0.0 for every one [DAKGHAR_HOST] (127.0.0.1)
  --data-dir <path>      where topics and groups are stored [DAKGHAR_DATA_DIR] (./data)
  --auto-create-topics   create a topic on its first publish [DAKGHAR_AUTO_CREATE_TOPICS]
  --max-partitions <n>   most partitions across all topics [DAKGHAR_MAX_PARTITIONS] (256)
  --session-timeout-ms <n>
                         how long a disconnected group member keeps its
                         partitions [DAKGHAR_SESSION_TIMEOUT_MS] (45000)
  --token <secret>       require "Authorization: Bearer <secret>" [DAKGHAR_TOKEN]
  --log-level <level>    trace, debug, info, warn or error [DAKGHAR_LOG_LEVEL] (info)
  -h, --help             show this text
`;

/** The settings of `dakghar serve`, after flags and environment are merged. */
interface ServeSettings {
  port: number;
  host: string;
  dataDir: string;
  autoCreateTopics: boolean;
  maxPartitions: number;
  sessionTimeoutMs: number;
  token: string | undefined;
  logLevel: LogLevel;
}

function parseSettings(args: string[]): ServeSettings | "help" {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      port: { type: "string" },
      host: { type: "string" },
      "data-dir": { type: "string" },
      "auto-create-topics": { type: "boolean" },
      "max-partitions": { type: "string" },
      "session-timeout-ms": { type: "string" },
      token: { type: "string" },
      "log-level": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return "help";
  if (positionals.length !== 0) {
    throw new RangeError(`Unexpected argument: ${positionals[0]}`);
  }

  const env = (name: string) => runtime.env(`DAKGHAR_${name}`) || undefined;
  const port = parseWholeNumber(
    values.port ?? env("PORT") ?? "8080",
    "port",
    0,
    65535,
  );
  const maxPartitions = parseWholeNumber(
    values["max-partitions"] ?? env("MAX_PARTITIONS") ??
      String(defaultMaxPartitions),
    "max partitions",
    1,
  );
  const sessionTimeoutMs = parseWholeNumber(
    values["session-timeout-ms"] ?? env("SESSION_TIMEOUT_MS") ?? "45000",
    "session timeout",
    0,
  );
  const autoCreate = env("AUTO_CREATE_TOPICS");
  return {
    port,
    host: values.host ?? env("HOST") ?? "127.0.0.1",
    dataDir: values["data-dir"] ?? env("DATA_DIR") ?? "./data",
    autoCreateTopics: values["auto-create-topics"] ??
      (autoCreate !== undefined && autoCreate !== "0" &&
        autoCreate !== "false"),
    maxPartitions,
    sessionTimeoutMs,
    token: values.token ?? env("TOKEN"),
    logLevel: parseLogLevel(values["log-level"] ?? env("LOG_LEVEL") ?? "info"),
  };
}

/** Parses a whole number in [min, max]; throws RangeError naming `what`. */
function parseWholeNumber(
  text: string,
  what: string,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  const value = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!(value >= min && value <= max)) {
    throw new RangeError(`Cannot parse ${what}: ${text}`);
  }
  return value;
}

/**
 * Runs `dakghar serve …` until SIGINT or SIGTERM, then exits the process.
 *
 * @param args the arguments after `serve`
 */
export async function runServe(args: string[]): Promise<void> {
  let settings: ServeSettings | "help";
  try {
    settings = parseSettings(args);
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${serveUsage}`);
    runtime.exit(2);
  }
  if (settings === "help") {
    console.log(serveUsage);
    return;
  }

  const log = createLogger(
    textSink((line) => console.error(line)),
    settings.logLevel,
  );
  // Signals are handled from the start: one that arrives while the broker
  // starts stops it as soon as it is up.
  const started: { running?: RunningBroker; signal?: string } = {};
  const stop = (broker: RunningBroker, signal: string) => {
    log.info("stopping", { signal });
    broker.stop().then(
      () => runtime.exit(0),
      (error) => {
        log.error("stop failed", { error });
        runtime.exit(1);
      },
    );
  };
  runtime.onSignal((signal) => {
    // A second signal means the graceful close is taking too long.
    if (started.signal !== undefined) runtime.exit(1);
    started.signal = signal;
    if (started.running) stop(started.running, signal);
  });

  let running: RunningBroker;
  try {
    running = await startBroker({
      dataDir: settings.dataDir,
      port: settings.port,
      hostname: settings.host,
      token: settings.token,
      autoCreateTopics: settings.autoCreateTopics,
      maxPartitions: settings.maxPartitions,
      sessionTimeoutMs: settings.sessionTimeoutMs,
      logger: log,
      runtime,
    });
  } catch (error) {
    // An expected failure (a locked data directory, a port in use) is one
    // line; anything else keeps its stack.
    console.error(
      error instanceof DakgharError
        ? `Cannot start: ${error.message}`
        : error instanceof Error
        ? error.stack ?? error.message
        : error,
    );
    runtime.exit(1);
  }
  log.info("listening", {
    url: running.url,
    dataDir: settings.dataDir,
    runtime: runtime.name,
    auth: settings.token === undefined ? "none" : "bearer",
  });
  started.running = running;
  if (started.signal !== undefined) stop(running, started.signal);
}
