/**
 * `dakghar dlq list|redrive`: a queue group's dead letters. They live in an
 * ordinary topic (the group's `deadLetterTopic`), read here over HTTP from
 * its log start; each letter carries its provenance as headers
 * (`DEAD_LETTER_HEADERS` in src/broker.ts).
 */
import { DEAD_LETTER_HEADERS } from "../broker.ts";
import { DakgharClient } from "../client/client.ts";
import { DakgharClientError } from "../client/errors.ts";
import type { ConsumedRecord } from "../client/records.ts";
import { toConsumerRecords } from "../http/json_records.ts";
import {
  expectPositionals,
  globalUsage,
  parseCommand,
  parseCount,
  parseFilter,
  UsageError,
} from "./_args.ts";
import { standardOutput } from "./_output.ts";

/** The help text of `dakghar dlq`. */
export const dlqUsage = `Usage:
  dakghar dlq list --group <group> [--max <n>]
      prints the group's dead letters, oldest first per partition, one JSON
      object a line: the letter's partition and offset in the dead-letter
      topic, its source (topic, partition, offset), group, deliveries,
      reason (rejected or max_deliveries), error, firstFailedAt, and the
      record's key, value, headers and tags. Nothing when there are none.
  dakghar dlq redrive --group <group> [--to <topic>] [--tag <tag> ...]
      [--header <name=value> ...] [--from-start]
      republishes dead letters not redriven before (all with --from-start)
      to their source topic, or --to; --tag and --header pick only the
      matching ones. Prints {deadLetterTopic, redriven, skipped} as JSON.

${globalUsage}`;

/** Records asked for per read of the dead-letter topic. */
const READ_RECORDS = 500;

/** Provenance header names, without the headers shown with the record. */
const provenanceHeaders = new Set<string>(Object.values(DEAD_LETTER_HEADERS));

/**
 * Runs `dakghar dlq <subcommand> …`.
 *
 * @param args the arguments after `dlq`
 * @returns the exit code
 * @throws {UsageError} for a bad command line
 * @throws {DakgharClientError} when the broker answers with an error or
 *   cannot be reached
 */
export async function runDlq(args: string[]): Promise<number> {
  const { values, positionals, connection } = parseCommand(args, {
    group: { type: "string" },
    max: { type: "string" },
    to: { type: "string" },
    tag: { type: "string", multiple: true },
    header: { type: "string", multiple: true },
    "from-start": { type: "boolean" },
  });
  const output = standardOutput();
  if (values.help) {
    await output.write(`${dlqUsage}\n`);
    return 0;
  }
  const [subcommand, ...rest] = positionals;
  const group = values.group as string | undefined;
  const client = new DakgharClient(connection);
  switch (subcommand) {
    case "list": {
      expectPositionals(rest, []);
      if (group === undefined) throw new UsageError("Missing --group");
      const max = parseCount(values.max, "max");
      await listLetters(client, group, max, output.write);
      return 0;
    }
    case "redrive": {
      expectPositionals(rest, []);
      if (group === undefined) throw new UsageError("Missing --group");
      const filter = parseFilter(values.tag, values.header);
      const answer = await client.redrive(group, {
        ...(values.to === undefined ? {} : { toTopic: values.to }),
        ...(filter === undefined ? {} : { filter }),
        ...(values["from-start"] ? { fromStart: true } : {}),
      });
      await output.write(`${JSON.stringify(answer)}\n`);
      return 0;
    }
    case undefined:
      throw new UsageError("Missing subcommand: list or redrive");
    default:
      throw new UsageError(`Unknown subcommand: dlq ${subcommand}`);
  }
}

/** Prints up to `max` letters of `group`'s dead-letter topic. */
async function listLetters(
  client: DakgharClient,
  group: string,
  max: number | undefined,
  write: (text: string) => Promise<void>,
): Promise<void> {
  const description = await client.describeGroup(group);
  const topic = description.settings?.queue?.deadLetterTopic;
  if (topic === undefined) {
    throw new DakgharClientError(
      "bad_request",
      `Group ${group} is a ${description.mode} group: it has no dead letters`,
    );
  }
  let partitions;
  try {
    partitions = (await client.describeTopic(topic)).partitions;
  } catch (error) {
    // The topic is created with the first letter: none yet.
    if (error instanceof DakgharClientError && error.code === "unknown_topic") {
      return;
    }
    throw error;
  }

  let left = max ?? Infinity;
  for (const stats of partitions) {
    let offset = stats.logStartOffset;
    while (left > 0 && offset < stats.highWatermark) {
      const page = await client.read(topic, stats.partition, {
        offset,
        maxRecords: Math.min(READ_RECORDS, left),
      });
      if (page.records.length === 0 || page.nextOffset <= offset) break;
      const letters = page.records.slice(0, left);
      await write(
        letters.map((letter) => `${formatLetter(letter)}\n`).join(""),
      );
      left -= letters.length;
      offset = page.nextOffset;
    }
  }
}

/** A letter as one JSON line: where it is, where it came from, the record. */
function formatLetter(letter: ConsumedRecord): string {
  const [record] = toConsumerRecords([{
    offset: letter.offset,
    timestamp: letter.timestamp,
    key: letter.keyBytes,
    value: letter.value,
    // Tags come out as `tags`, as in every consumer record.
    headers: letter.headerBytes.filter(([name]) =>
      !provenanceHeaders.has(name)
    ),
    appendTime: letter.timestamp,
  }]);
  const header = (name: string) => letter.headers[name] ?? null;
  const number = (name: string) => {
    const text = header(name);
    return text === null ? null : Number(text);
  };
  const { offset: _offset, ...body } = record;
  return JSON.stringify({
    partition: letter.partition,
    offset: letter.offset,
    source: {
      topic: header(DEAD_LETTER_HEADERS.topic),
      partition: number(DEAD_LETTER_HEADERS.partition),
      offset: number(DEAD_LETTER_HEADERS.offset),
    },
    group: header(DEAD_LETTER_HEADERS.group),
    deliveries: number(DEAD_LETTER_HEADERS.deliveries),
    reason: header(DEAD_LETTER_HEADERS.reason),
    error: header(DEAD_LETTER_HEADERS.error),
    firstFailedAt: number(DEAD_LETTER_HEADERS.firstFailedAt),
    ...body,
  });
}
