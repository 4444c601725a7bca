/**
 * `dakghar groups list|describe`.
 */
import {
  expectPositionals,
  globalUsage,
  parseCommand,
  UsageError,
} from "./_args.ts";
import { callBroker } from "./_broker_api.ts";
import { standardOutput } from "./_output.ts";

/** The help text of `dakghar groups`. */
export const groupsUsage = `Usage:
  dakghar groups list [--json]     one name a line, or the JSON answer
  dakghar groups describe <group>  members, committed offsets and lag, as JSON

${globalUsage}`;

/**
 * Runs `dakghar groups <subcommand> …`.
 *
 * @param args the arguments after `groups`
 * @returns the exit code
 * @throws {UsageError} for a bad command line
 * @throws {BrokerError} when the broker answers with an error
 */
export async function runGroups(args: string[]): Promise<number> {
  const { values, positionals, connection } = parseCommand(args, {
    json: { type: "boolean" },
  });
  const output = standardOutput();
  if (values.help) {
    await output.write(`${groupsUsage}\n`);
    return 0;
  }
  const [subcommand, ...rest] = positionals;
  switch (subcommand) {
    case "list": {
      expectPositionals(rest, []);
      const answer = await callBroker<{ groups: { name: string }[] }>(
        connection,
        "GET",
        "/groups",
      );
      await output.write(
        values.json
          ? `${JSON.stringify(answer)}\n`
          : answer.groups.map((group) => `${group.name}\n`).join(""),
      );
      return 0;
    }
    case "describe": {
      expectPositionals(rest, ["group name"]);
      const answer = await callBroker(
        connection,
        "GET",
        `/groups/${encodeURIComponent(rest[0])}`,
      );
      await output.write(`${JSON.stringify(answer, null, 2)}\n`);
      return 0;
    }
    case undefined:
      throw new UsageError("Missing subcommand: list or describe");
    default:
      throw new UsageError(`Unknown subcommand: groups ${subcommand}`);
  }
}
