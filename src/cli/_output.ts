/**
 * Standard output for commands that print data: writes that wait when the
 * pipe is full, and a signal when the reader has gone (EPIPE, as after
 * `| head -3`), so that a command can stop and exit 0.
 */
import process from "node:process";
import { toConsumerRecords } from "../http/json_records.ts";

/** Standard output as a command sees it. */
export interface Output {
  /** Writes text or bytes; resolves once the pipe accepts more. */
  write(data: string | Uint8Array): Promise<void>;
  /** Resolves when the reader has closed standard output. */
  readonly closed: Promise<void>;
  /** Whether the reader has closed standard output. */
  isClosed(): boolean;
}

let shared: Output | undefined;

/**
 * The process's standard output, wrapped once.
 *
 * @returns the output
 */
export function standardOutput(): Output {
  if (shared) return shared;
  const stdout = process.stdout;
  let isClosed = false;
  let markClosed = () => {};
  const closed = new Promise<void>((resolve) => {
    markClosed = () => {
      isClosed = true;
      resolve();
    };
  });
  stdout.on("error", (error: NodeJS.ErrnoException) => {
    // Any write failure means nobody reads on: stop as for EPIPE.
    if (error.code !== "EPIPE") process.stderr.write(`${error.message}\n`);
    markClosed();
  });
  shared = {
    closed,
    isClosed: () => isClosed,
    write(data) {
      if (isClosed) return Promise.resolve();
      return new Promise<void>((resolve) => {
        let flushed = false;
        try {
          flushed = stdout.write(data);
        } catch {
          markClosed();
          flushed = true;
        }
        if (flushed) resolve();
        else {
          const done = () => {
            stdout.off("drain", done);
            resolve();
          };
          stdout.on("drain", done);
          closed.then(done);
        }
      });
    },
  };
  return shared;
}

/** What {@linkcode formatRecords} needs of a consumed record. */
export interface PrintableRecord {
  partition: number;
  offset: number;
  timestamp: number;
  keyBytes: Uint8Array | null;
  value: Uint8Array | null;
  headerBytes: [string, Uint8Array | null][];
}

/**
 * One line per record: the value's bytes, or the consumer JSON record of
 * docs/protocol.md with its partition (and whatever `extra` adds, such as a
 * delivery's attempt), as the broker writes it.
 */
export function formatRecords<T extends PrintableRecord>(
  records: T[],
  format: "value" | "json",
  extra: (record: T) => Record<string, unknown> = () => ({}),
): string | Uint8Array {
  if (format === "json") {
    const consumer = toConsumerRecords(records.map((record) => ({
      offset: record.offset,
      timestamp: record.timestamp,
      key: record.keyBytes,
      value: record.value,
      headers: record.headerBytes,
      // The consumer record has no append time; the batch's is not kept.
      appendTime: record.timestamp,
    })));
    return consumer.map((json, index) =>
      `${
        JSON.stringify({
          partition: records[index].partition,
          ...extra(records[index]),
          ...json,
        })
      }\n`
    ).join("");
  }
  let length = 0;
  for (const record of records) length += (record.value?.length ?? 0) + 1;
  const bytes = new Uint8Array(length);
  let at = 0;
  for (const record of records) {
    if (record.value !== null) bytes.set(record.value, at);
    at += (record.value?.length ?? 0) + 1;
    bytes[at - 1] = 10;
  }
  return bytes;
}

/** Settles with `promise`, or after `ms` at the latest (never rejects on its own). */
export function withinMs(
  promise: Promise<unknown>,
  ms: number,
): Promise<unknown> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise((resolve) => timer = setTimeout(resolve, ms)),
  ]).finally(() => clearTimeout(timer));
}

/** What {@linkcode takeBatch} reads from: a subscription's iterator. */
export interface BufferedIterator<T> {
  next(): Promise<IteratorResult<T>>;
  /** Records already received and not yet taken. */
  readonly buffered: number;
}

/**
 * Waits for the next record, then takes whatever else has already arrived,
 * up to `limit` in all, so one write (and one commit or settle) covers them.
 *
 * @returns the records; `done` when the iteration ended; `stopped` with
 *   what `stop` gave when it settled first
 */
export async function takeBatch<T, S>(
  subscription: BufferedIterator<T>,
  stop: Promise<S>,
  limit: number,
): Promise<{ records: T[] } | { done: true } | { stopped: S }> {
  const first = await Promise.race([
    subscription.next(),
    stop.then((code) => ({ stopped: code })),
  ]);
  if ("stopped" in first) return first;
  if (first.done) return { done: true };
  const records = [first.value];
  while (records.length < limit && subscription.buffered > 0) {
    const next = await subscription.next();
    if (next.done) break;
    records.push(next.value);
  }
  return { records };
}
