/**
 * `dakghar produce <topic>`: publishes the values given as arguments, or one
 * record per line of standard input. Lines are sent in batches of up to 500
 * records, or whatever arrived within 50 ms, one request at a time so that
 * records keep their order.
 */
import process from "node:process";
import { DakgharClient } from "../client/client.ts";
import { errorFromBody } from "../client/errors.ts";
import type { OutgoingRecord } from "../client/records.ts";
import { DakgharError } from "../errors.ts";
import { parseProducerRecord } from "../http/json_records.ts";
import {
  globalUsage,
  parseCommand,
  parseCount,
  parseHeaders,
  UsageError,
} from "./_args.ts";
import { standardOutput } from "./_output.ts";

/** The help text of `dakghar produce`. */
export const produceUsage =
  `Usage: dakghar produce <topic> [options] [value ...]

Publishes each value argument as a record; with none, each line of standard
input (without its newline, bytes kept as they are).

Options:
  --key <key>              every record's key (picks the partition)
  --header <name=value>    a header on every record; repeat for more
  --partition <n>          publish to this partition instead of by key
  --tag <tag>              a tag on every record (filters select on it);
                           repeat for more
  --delay-ms <n>           hold every record back n ms: it is appended, and
                           visible to consumers, when due
  --deliver-at <time>      hold every record back until this broker time
                           (ms since epoch or ISO 8601); wins over --delay-ms
  --json                   each line or value is a producer JSON record
                           {"key":…,"value":…,"headers":{…}} (docs/protocol.md)

Delayed records print one JSON line each, {"partition","delayId","dueAt"}:
the delayId cancels the record before it is due (DELETE
/topics/<topic>/delayed/<delayId>). Other records print nothing.

${globalUsage}`;

/** Most records in one request. */
const BATCH_RECORDS_MAX = 500;
/** How long a record read from stdin waits for more before it is sent. */
const BATCH_LINGER_MS = 50;

/** A producer JSON record as written on a `--json` line (docs/protocol.md). */
type ProducerRecord = Record<string, unknown>;

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Runs `dakghar produce …`.
 *
 * @param args the arguments after `produce`
 * @returns the exit code
 * @throws {UsageError} for a bad command line or a bad JSON record
 * @throws {DakgharClientError} when the broker answers with an error or
 *   cannot be reached, or a `--json` record is malformed
 */
export async function runProduce(args: string[]): Promise<number> {
  const { values, positionals, connection } = parseCommand(args, {
    key: { type: "string" },
    header: { type: "string", multiple: true },
    partition: { type: "string" },
    json: { type: "boolean" },
    tag: { type: "string", multiple: true },
    "delay-ms": { type: "string" },
    "deliver-at": { type: "string" },
  });
  if (values.help) {
    await standardOutput().write(`${produceUsage}\n`);
    return 0;
  }
  const [topic, ...argumentValues] = positionals;
  if (topic === undefined) throw new UsageError("Missing topic");

  const headers = parseHeaders(values.header);
  const delayMs = parseCount(values["delay-ms"], "delay-ms");
  const deliverAt = parseDeliverAt(values["deliver-at"]);
  const tags = values.tag as string[] | undefined;
  const defaults: ProducerRecord = {
    ...(tags === undefined ? {} : { tags }),
    ...(delayMs === undefined ? {} : { delayMs }),
    ...(deliverAt === undefined ? {} : { deliverAt }),
    ...(values.key === undefined ? {} : { key: values.key }),
    ...(Object.keys(headers).length ? { headers } : {}),
    ...(values.partition === undefined
      ? {}
      : { partition: parseCount(values.partition, "partition") }),
  };
  const toRecord = (line: Uint8Array, lineNumber: number): OutgoingRecord => {
    if (values.json) {
      return toOutgoingRecord(
        { ...defaults, ...parseJsonRecord(line, lineNumber) },
        lineNumber,
      );
    }
    let value: string | Uint8Array;
    try {
      value = utf8.decode(line);
    } catch {
      // Not UTF-8: the client sends the exact bytes, as base64.
      value = line.slice();
    }
    return { ...defaults, value } as OutgoingRecord;
  };

  const client = new DakgharClient(connection);
  const output = standardOutput();
  const publish = async (records: OutgoingRecord[]) => {
    const positions = await client.publishBatch(topic, records, {
      via: "http",
    });
    const delayed = positions.filter((position) =>
      position.delayId !== undefined
    );
    if (delayed.length > 0) {
      await output.write(
        delayed.map(({ partition, delayId, dueAt }) =>
          `${JSON.stringify({ partition, delayId, dueAt })}\n`
        ).join(""),
      );
    }
  };

  if (argumentValues.length > 0) {
    const encoder = new TextEncoder();
    await publish(
      argumentValues.map((value, index) =>
        toRecord(encoder.encode(value), index + 1)
      ),
    );
    return 0;
  }
  await publishLines(toRecord, publish);
  return 0;
}

/**
 * `--deliver-at` as ms since epoch: digits, or an ISO 8601 time with a zone
 * (`Z` or `±hh:mm`), as the broker requires; a time without one would be
 * read in this machine's zone, not the broker's.
 */
function parseDeliverAt(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (/^\d+$/.test(text)) return Number(text);
  const time = /^\d{4}-\d{2}-\d{2}T.*(Z|[+-]\d{2}:\d{2})$/.test(text)
    ? Date.parse(text)
    : NaN;
  if (Number.isNaN(time)) {
    throw new UsageError(
      `Cannot parse --deliver-at: ${text} (ms since epoch or an ISO time with a zone, e.g. 2026-12-05T09:00:00Z)`,
    );
  }
  return time;
}

/** The named fields of a JSON record that are present, passed on as they are. */
function pick(
  json: ProducerRecord,
  names: string[],
): Record<string, unknown> {
  const picked: Record<string, unknown> = {};
  for (const name of names) {
    if (json[name] !== undefined) picked[name] = json[name];
  }
  return picked;
}

function parseJsonRecord(line: Uint8Array, lineNumber: number) {
  let record: unknown;
  try {
    record = JSON.parse(new TextDecoder().decode(line));
  } catch (error) {
    throw new UsageError(
      `Cannot parse JSON record on line ${lineNumber}: ${
        (error as Error).message
      }`,
    );
  }
  if (typeof record !== "object" || record === null || Array.isArray(record)) {
    throw new UsageError(
      `Cannot parse JSON record on line ${lineNumber}: not an object`,
    );
  }
  return record as ProducerRecord;
}

/**
 * The client's record for a producer JSON record, read with the broker's own
 * parser so that `keyEncoding` and `valueEncoding` mean what they mean over
 * HTTP. A malformed record fails as the broker would have refused it.
 */
function toOutgoingRecord(
  json: ProducerRecord,
  lineNumber: number,
): OutgoingRecord {
  let parsed;
  try {
    parsed = parseProducerRecord(json, `line ${lineNumber}: `, {}, 0);
  } catch (error) {
    if (!(error instanceof DakgharError)) throw error;
    throw errorFromBody(error.toJSON().error);
  }
  return {
    key: parsed.key,
    value: parsed.value,
    ...(json.headers === undefined
      ? {}
      : { headers: json.headers as Record<string, string | null> }),
    ...(parsed.partition === undefined ? {} : { partition: parsed.partition }),
    ...pick(json, ["tags", "delayMs", "deliverAt"]),
    // Without one the broker stamps the record, as it does over HTTP.
    ...(json.timestamp === undefined ? {} : { timestamp: parsed.timestamp }),
  };
}

/** Reads stdin line by line and publishes the lines in batches. */
async function publishLines(
  toRecord: (line: Uint8Array, lineNumber: number) => OutgoingRecord,
  publish: (records: OutgoingRecord[]) => Promise<unknown>,
): Promise<void> {
  let batch: OutgoingRecord[] = [];
  let lineNumber = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let sending: Promise<unknown> = Promise.resolve();
  let requestsQueued = 0;
  let failure: { error: unknown } | undefined;

  const flush = () => {
    clearTimeout(timer);
    timer = undefined;
    if (batch.length === 0) return;
    const records = batch;
    batch = [];
    requestsQueued += 1;
    sending = sending
      .then(() => failure ? undefined : publish(records))
      .catch((error) => {
        failure ??= { error };
      })
      .finally(() => requestsQueued -= 1);
  };
  const add = (line: Uint8Array) => {
    lineNumber += 1;
    batch.push(toRecord(line, lineNumber));
    if (batch.length >= BATCH_RECORDS_MAX) flush();
    else timer ??= setTimeout(flush, BATCH_LINGER_MS);
  };

  let rest = new Uint8Array(0);
  for await (const chunk of process.stdin as AsyncIterable<Uint8Array>) {
    if (failure) break;
    let bytes = chunk;
    if (rest.length > 0) {
      bytes = new Uint8Array(rest.length + chunk.length);
      bytes.set(rest);
      bytes.set(chunk, rest.length);
    }
    let start = 0;
    for (
      let newline = bytes.indexOf(10);
      newline !== -1;
      newline = bytes.indexOf(10, start)
    ) {
      add(bytes.subarray(start, newline));
      start = newline + 1;
    }
    rest = bytes.slice(start);
    // Reading waits while batches queue up: memory stays bounded.
    if (requestsQueued > 1) await sending;
  }
  if (rest.length > 0 && !failure) add(rest);
  flush();
  await sending;
  if (failure) throw failure.error;
}
