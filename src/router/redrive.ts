/**
 * Redrive: republish a queue group's dead letters.
 *
 * The letters read are those past the group's redrive cursor (the
 * committed offsets of a stream group named `<group>.redrive` on the
 * dead-letter topic; `fromStart` ignores it) up to each partition's log end
 * when the redrive starts. Each matching letter goes, without its
 * `dakghar.dlq.*` headers, to the given topic or else to its source topic
 * (header `dakghar.dlq.topic`); then the cursor moves to those log ends.
 */
import {
  DEAD_LETTER_HEADERS,
  type ProducerRecord,
  type ReadResult,
  type RedriveOptions,
  type RedriveResult,
} from "../broker.ts";
import { DakgharError } from "../errors.ts";
import { decodeBatches, type DecodedRecord } from "../log/record_batch.ts";
import { forEachRecordStart } from "../log/record_pick.ts";
import { compileFilter } from "../queue/filter.ts";
import type { LogRange } from "./group_coordinator.ts";

const DEAD_LETTER_PREFIX = "dakghar.dlq.";

/** What a redrive asks of the router. */
export interface RedriveContext {
  group: string;
  deadLetterTopic: string;
  /** Log bounds per partition; throws UnknownTopicError for a missing topic. */
  logRanges(topic: string): Promise<LogRange[]>;
  /** Committed offset per partition of the cursor group (null: none). */
  committed(cursorGroup: string, topic: string): Promise<(number | null)[]>;
  read(topic: string, partition: number, offset: number): Promise<ReadResult>;
  publish(topic: string, records: ProducerRecord[]): Promise<void>;
  /** Moves the cursor group's committed offsets; resolves once on disk. */
  commit(
    cursorGroup: string,
    topic: string,
    positions: { partition: number; offset: number }[],
  ): Promise<void>;
}

/** The stream group keeping `group`'s redrive position. */
function redriveCursorGroup(group: string): string {
  return `${group}.redrive`;
}

/**
 * Republishes the letters and moves the cursor.
 *
 * @returns how many letters went out and how many the filter passed over
 * @throws DakgharError bad_request when a letter has no source topic and
 *   no `toTopic` was given; UnknownTopicError for a missing target
 */
export async function redrive(
  context: RedriveContext,
  options: RedriveOptions = {},
): Promise<RedriveResult> {
  const { deadLetterTopic } = context;
  const result: RedriveResult = { deadLetterTopic, redriven: 0, skipped: 0 };
  const cursorGroup = redriveCursorGroup(context.group);
  let ranges: LogRange[];
  try {
    ranges = await context.logRanges(deadLetterTopic);
  } catch (error) {
    if (error instanceof DakgharError && error.code === "unknown_topic") {
      return result; // nothing ever dead-lettered
    }
    throw error;
  }
  const committed = options.fromStart
    ? ranges.map(() => null)
    : await context.committed(cursorGroup, deadLetterTopic);

  // The same exact filter as subscriptions, on the letters' bytes.
  const matcher = compileFilter(options.filter ?? null);
  for (const [partition, range] of ranges.entries()) {
    const end = range.logEndOffset;
    let offset = Math.max(
      committed[partition] ?? range.logStartOffset,
      range.logStartOffset,
    );
    while (offset < end) {
      const read = await context.read(deadLetterTopic, partition, offset);
      const letters = decodeBatches(read.bytes).filter((r) =>
        r.offset >= offset && r.offset < end
      );
      if (letters.length === 0) break;
      const matching = new Set<number>();
      if (matcher !== null) {
        forEachRecordStart(read.bytes, (recordOffset, recordStart) => {
          if (matcher(read.bytes, recordStart)) matching.add(recordOffset);
        });
      }
      const byTopic = new Map<string, ProducerRecord[]>();
      for (const letter of letters) {
        if (matcher !== null && !matching.has(letter.offset)) {
          result.skipped++;
          continue;
        }
        const target = options.toTopic ?? sourceTopic(letter);
        if (target === undefined) {
          throw new DakgharError(
            "bad_request",
            `Cannot redrive ${deadLetterTopic}/${partition} offset ${letter.offset}: it names no source topic; give toTopic`,
            { topic: deadLetterTopic, partition, offset: letter.offset },
          );
        }
        let records = byTopic.get(target);
        if (records === undefined) {
          records = [];
          byTopic.set(target, records);
        }
        records.push({
          key: letter.key,
          value: letter.value,
          headers: letter.headers.filter(([name]) =>
            !name.startsWith(DEAD_LETTER_PREFIX)
          ),
          timestamp: letter.timestamp,
        });
      }
      for (const [topic, records] of byTopic) {
        await context.publish(topic, records);
        result.redriven += records.length;
      }
      offset = letters[letters.length - 1].offset + 1;
    }
  }

  await context.commit(
    cursorGroup,
    deadLetterTopic,
    ranges.map((range, partition) => ({
      partition,
      offset: range.logEndOffset,
    })),
  );
  return result;
}

const decoder = new TextDecoder();

function sourceTopic(letter: DecodedRecord): string | undefined {
  const header = letter.headers.find(([name]) =>
    name === DEAD_LETTER_HEADERS.topic
  );
  return header?.[1] == null ? undefined : decoder.decode(header[1]);
}
