/**
 * `dakghar topics create|list|describe|delete|cancel-delayed`.
 */
import {
  expectPositionals,
  globalUsage,
  parseCommand,
  parseCount,
  parseInteger,
  UsageError,
} from "./_args.ts";
import { DakgharClient } from "../client/client.ts";
import { DakgharClientError } from "../client/errors.ts";
import { standardOutput } from "./_output.ts";

/** The help text of `dakghar topics`. */
export const topicsUsage = `Usage:
  dakghar topics create <name> [options]
      --partitions <n>          number of partitions (1)
      --retention-ms <n>        delete closed segments older than this; -1 never (7 days)
      --retention-bytes <n>     per partition; -1 unlimited (-1)
      --max-message-bytes <n>   largest record (1048576)
      --flush sync|interval     fsync before each ack, or every flushIntervalMs (sync)
  dakghar topics list [--json]  one name a line, or the JSON answer
  dakghar topics describe <name>  the topic with its partitions, as JSON
  dakghar topics delete <name>
  dakghar topics cancel-delayed <name> <delayId>
      cancels a delayed record before it is due (produce --delay-ms prints
      its delayId); exits 1 with not_found when none is pending

${globalUsage}`;

/**
 * Runs `dakghar topics <subcommand> …`.
 *
 * @param args the arguments after `topics`
 * @returns the exit code
 * @throws {UsageError} for a bad command line
 * @throws {DakgharClientError} when the broker answers with an error or
 *   cannot be reached
 */
export async function runTopics(args: string[]): Promise<number> {
  const { values, positionals, connection } = parseCommand(args, {
    partitions: { type: "string" },
    "retention-ms": { type: "string" },
    "retention-bytes": { type: "string" },
    "max-message-bytes": { type: "string" },
    flush: { type: "string" },
    json: { type: "boolean" },
  });
  const output = standardOutput();
  if (values.help) {
    await output.write(`${topicsUsage}\n`);
    return 0;
  }
  const [subcommand, ...rest] = positionals;
  const client = new DakgharClient(connection);
  switch (subcommand) {
    case "create": {
      expectPositionals(rest, ["topic name"]);
      const flush = values.flush;
      if (flush !== undefined && flush !== "sync" && flush !== "interval") {
        throw new UsageError(`Cannot parse --flush: ${flush}`);
      }
      const settings = {
        partitions: parseCount(values.partitions, "partitions"),
        retentionMs: parseInteger(values["retention-ms"], "retention-ms"),
        retentionBytes: parseInteger(
          values["retention-bytes"],
          "retention-bytes",
        ),
        maxMessageBytes: parseCount(
          values["max-message-bytes"],
          "max-message-bytes",
        ),
        flush,
      };
      await client.createTopic(
        rest[0],
        Object.fromEntries(
          Object.entries(settings).filter(([, value]) => value !== undefined),
        ),
      );
      return 0;
    }
    case "list": {
      expectPositionals(rest, []);
      const topics = await client.listTopics();
      await output.write(
        values.json
          ? `${JSON.stringify({ topics })}\n`
          : topics.map((topic) => `${topic.name}\n`).join(""),
      );
      return 0;
    }
    case "describe": {
      expectPositionals(rest, ["topic name"]);
      const answer = await client.describeTopic(rest[0]);
      await output.write(`${JSON.stringify(answer, null, 2)}\n`);
      return 0;
    }
    case "delete": {
      expectPositionals(rest, ["topic name"]);
      await client.deleteTopic(rest[0]);
      return 0;
    }
    case "cancel-delayed": {
      expectPositionals(rest, ["topic name", "delay id"]);
      if (!(await client.cancelDelayed(rest[0], rest[1]))) {
        throw new DakgharClientError(
          "not_found",
          `No delayed record ${rest[1]} is pending in ${rest[0]}`,
        );
      }
      return 0;
    }
    case undefined:
      throw new UsageError(
        "Missing subcommand: create, list, describe, delete or cancel-delayed",
      );
    default:
      throw new UsageError(`Unknown subcommand: topics ${subcommand}`);
  }
}
