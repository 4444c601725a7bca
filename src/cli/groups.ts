/**
 * `dakghar groups list|describe|seek`.
 */
import {
  expectPositionals,
  globalUsage,
  parseCommand,
  parseCount,
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
    case undefined:
      throw new UsageError("Missing subcommand: list, describe or seek");
    default:
      throw new UsageError(`Unknown subcommand: groups ${subcommand}`);
  }
}
