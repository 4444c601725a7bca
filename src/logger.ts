/**
 * Structured, levelled logging. A logger is passed in and scoped; nothing in
 * `src/` or `actors/` writes to the console directly. One line per event:
 *
 *   2026-12-04T16:50:01.123Z INFO  segment roll topic=orders partition=0 baseOffset=1200
 *
 * Per-record detail belongs at debug or trace, never on a hot path at info.
 */

/** Severity, lowest first. */
export type LogLevel = "trace" | "debug" | "info" | "warn" | "error";

const levelRank: Record<LogLevel, number> = {
  trace: 0,
  debug: 1,
  info: 2,
  warn: 3,
  error: 4,
};

/** Key-value context attached to a line. */
export type LogFields = Record<string, unknown>;

/** Where finished lines go; the entry point passes one that writes to stderr. */
export type LogSink = (
  level: LogLevel,
  scope: string,
  message: string,
  fields: LogFields,
) => void;

/** A scoped logger. */
export interface Logger {
  trace(message: string, fields?: LogFields): void;
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
  /** A child logger whose lines carry `name` and `fields` as well. */
  scope(name: string, fields?: LogFields): Logger;
  isEnabled(level: LogLevel): boolean;
}

/**
 * Creates a logger that passes lines at or above `minLevel` to `sink`.
 *
 * @param sink where lines go
 * @param minLevel the lowest level passed on
 * @returns the root logger
 * @example
 * ```ts
 * const log = createLogger(textSink((line) => console.error(line)), "info");
 * log.scope("segment", { partition: 0 }).info("roll", { baseOffset: 1200 });
 * ```
 */
export function createLogger(
  sink: LogSink,
  minLevel: LogLevel = "info",
  scopeName = "",
  baseFields: LogFields = {},
): Logger {
  const min = levelRank[minLevel];
  const emit = (level: LogLevel) => (message: string, fields?: LogFields) => {
    if (levelRank[level] < min) return;
    sink(level, scopeName, message, { ...baseFields, ...fields });
  };
  return {
    trace: emit("trace"),
    debug: emit("debug"),
    info: emit("info"),
    warn: emit("warn"),
    error: emit("error"),
    scope: (name, fields) =>
      createLogger(
        sink,
        minLevel,
        scopeName ? `${scopeName}.${name}` : name,
        { ...baseFields, ...fields },
      ),
    isEnabled: (level) => levelRank[level] >= min,
  };
}

/** A logger that drops everything; for tests and benchmarks. */
export const silentLogger: Logger = createLogger(() => {}, "error");

/**
 * A sink that formats one text line per event and hands it to `write`.
 *
 * @param write receives each finished line, without a newline
 * @returns a sink for {@linkcode createLogger}
 */
export function textSink(write: (line: string) => void): LogSink {
  return (level, scope, message, fields) => {
    let line = `${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${
      scope ? scope + " " : ""
    }${message}`;
    for (const [key, value] of Object.entries(fields)) {
      line += ` ${key}=${formatValue(value)}`;
    }
    write(line);
  };
}

function formatValue(value: unknown): string {
  if (typeof value === "string") {
    return /^[\w./:@-]*$/.test(value) && value !== ""
      ? value
      : JSON.stringify(value);
  }
  if (value instanceof Error) return JSON.stringify(value.message);
  return JSON.stringify(value) ?? String(value);
}

/** Parses a level name from configuration; throws RangeError on anything else. */
export function parseLogLevel(value: string): LogLevel {
  if (value in levelRank) return value as LogLevel;
  throw new RangeError(`Cannot parse log level: ${value}`);
}
