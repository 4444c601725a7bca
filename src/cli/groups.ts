/**
 * `dakghar groups list|describe|seek|create|delete`.
 */
import type { GroupMode, QueueSettings } from "../broker.ts";
import {
  expectPositionals,
  globalUsage,
  parseCommand,
  parseCount,
  parseFilter,
  parseFrom,
  UsageError,
} from "./_args.ts";
import { DakgharClient } from "../client/client.ts";
import { standardOutput } from "./_output.ts";

/** The help text of `dakghar groups`. */
export const groupsUsage = `Usage:
  dakghar groups list [--json]     one name a line, or the JSON answer
  dakghar groups describe <group>  members, committed offsets and lag, as JSON
  dakghar groups seek <group> --topic <topic> --to <position> [--partition <n> ...]
      moves the group's committed offsets, also while members consume:
      --to earliest, latest, an offset or an ISO time; --partition repeats
      (default: every partition). Prints the new offsets as JSON.
  dakghar groups create <group> --topic <topic> --mode queue|key_shared|stream
      [--from earliest|latest] [--tag <tag> ...] [--header <name=value> ...]
      [--ack-timeout-ms <n>] [--max-deliveries <n>] [--dead-letter-topic <topic>]
      [--backoff-initial-ms <n>] [--backoff-max-ms <n>] [--max-unsettled <n>]
      creates a group with a mode, or changes an existing one's queue
      settings (mode, topic and filter are fixed: another one exits 1 with
      group_exists). --tag and --header make the group's filter. Prints the
      settings as JSON.
  dakghar groups delete <group>    removes the group, its members and state

${globalUsage}`;

/**
 * Runs `dakghar groups <subcommand> …`.
 *
 * @param args the arguments after `groups`
 * @returns the exit code
 * @throws {UsageError} for a bad command line
 * @throws {DakgharClientError} when the broker answers with an error or
 *   cannot be reached
 */
export async function runGroups(args: string[]): Promise<number> {
  const { values, positionals, connection } = parseCommand(args, {
    json: { type: "boolean" },
    topic: { type: "string" },
    to: { type: "string" },
    partition: { type: "string", multiple: true },
    mode: { type: "string" },
    from: { type: "string" },
    tag: { type: "string", multiple: true },
    header: { type: "string", multiple: true },
    "ack-timeout-ms": { type: "string" },
    "max-deliveries": { type: "string" },
    "dead-letter-topic": { type: "string" },
    "backoff-initial-ms": { type: "string" },
    "backoff-max-ms": { type: "string" },
    "max-unsettled": { type: "string" },
  });
  const output = standardOutput();
  if (values.help) {
    await output.write(`${groupsUsage}\n`);
    return 0;
  }
  const [subcommand, ...rest] = positionals;
  const client = new DakgharClient(connection);
  switch (subcommand) {
    case "list": {
      expectPositionals(rest, []);
      const groups = await client.listGroups();
      await output.write(
        values.json
          ? `${JSON.stringify({ groups })}\n`
          : groups.map((group) => `${group.name}\n`).join(""),
      );
      return 0;
    }
    case "describe": {
      expectPositionals(rest, ["group name"]);
      const answer = await client.describeGroup(rest[0]);
      await output.write(`${JSON.stringify(answer, null, 2)}\n`);
      return 0;
    }
    case "seek": {
      expectPositionals(rest, ["group name"]);
      if (values.topic === undefined) throw new UsageError("Missing --topic");
      if (values.to === undefined) throw new UsageError("Missing --to");
      const to = parseFrom(values.to, "to");
      const partitions = (values.partition as string[] | undefined)?.map(
        (text) => parseCount(text, "partition")!,
      );
      const answer = await client.seekGroup(
        rest[0],
        values.topic,
        to,
        partitions,
      );
      await output.write(`${JSON.stringify(answer, null, 2)}\n`);
      return 0;
    }
    case "create": {
      expectPositionals(rest, ["group name"]);
      if (values.topic === undefined) throw new UsageError("Missing --topic");
      const mode = values.mode as string | undefined;
      if (mode === undefined) throw new UsageError("Missing --mode");
      if (!groupModes.includes(mode as GroupMode)) {
        throw new UsageError(
          `Cannot parse --mode: ${mode} (queue, key_shared or stream)`,
        );
      }
      const from = values.from as string | undefined;
      if (from !== undefined && from !== "earliest" && from !== "latest") {
        throw new UsageError(
          `Cannot parse --from: ${from} (earliest or latest)`,
        );
      }
      const filter = parseFilter(values.tag, values.header);
      const answer = await client.createGroup(rest[0], {
        topic: values.topic,
        mode: mode as GroupMode,
        ...(from === undefined ? {} : { from }),
        ...(filter === undefined ? {} : { filter }),
        ...queueSettings(values),
      });
      await output.write(`${JSON.stringify(answer, null, 2)}\n`);
      return 0;
    }
    case "delete": {
      expectPositionals(rest, ["group name"]);
      await client.deleteGroup(rest[0]);
      return 0;
    }
    case undefined:
      throw new UsageError(
        "Missing subcommand: list, describe, seek, create or delete",
      );
    default:
      throw new UsageError(`Unknown subcommand: groups ${subcommand}`);
  }
}

const groupModes: GroupMode[] = ["queue", "key_shared", "stream"];

/** The queue settings given on the command line, by their option names. */
function queueSettings(
  values: Record<string, string | undefined>,
): Partial<QueueSettings> {
  const settings: Partial<QueueSettings> = {};
  const counts = {
    ackTimeoutMs: "ack-timeout-ms",
    maxDeliveries: "max-deliveries",
    backoffInitialMs: "backoff-initial-ms",
    backoffMaxMs: "backoff-max-ms",
    maxUnsettled: "max-unsettled",
  } as const;
  for (const [field, option] of Object.entries(counts)) {
    const count = parseCount(values[option], option);
    if (count !== undefined) settings[field as keyof typeof counts] = count;
  }
  const deadLetterTopic = values["dead-letter-topic"];
  if (deadLetterTopic !== undefined) settings.deadLetterTopic = deadLetterTopic;
  return settings;
}
