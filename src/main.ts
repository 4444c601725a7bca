#!/usr/bin/env node
/**
 * The command line: `dakghar <command> [options]`. `serve` runs a broker;
 * the other commands talk to one over HTTP and WebSocket.
 *
 *   node build/src/main.js serve --port 8080 --data-dir ./data
 *   deno run -A src/main.ts topics create orders --partitions 3
 *
 * Data goes to stdout, diagnostics to stderr. Exit codes are in
 * src/cli/_args.ts (`exitCodes`): 0 ok, 1 broker or runtime error, 2 usage
 * error, 3 unknown topic, partition or group.
 */
import process from "node:process";
import {
  describeClientError,
  exitCodes,
  globalUsage,
  notFoundCodes,
  UsageError,
} from "./cli/_args.ts";
import { DakgharClientError } from "./client/errors.ts";

const usage = `Usage: dakghar <command> [options]

Commands:
  serve                     run a broker (dakghar serve --help)
  topics create <name>      create a topic
  topics list               list topics
  topics describe <name>    a topic and its partitions
  topics delete <name>      delete a topic and its records
  topics cancel-delayed <name> <delayId>
                            cancel a delayed record before it is due
  produce <topic> [value…]  publish values, or stdin lines
  consume <topic>           print records, following the topic (--group g
                            --mode queue: as a queue member, acking each)
  groups list               list consumer groups
  groups describe <group>   a group's members, offsets and lag
  groups seek <group>       move a group's committed offsets
  groups create <group>     create a stream, queue or key_shared group
  groups delete <group>     delete a group and its state
  dlq list --group <group>  print a queue group's dead letters
  dlq redrive --group <g>   republish dead letters

Run \`dakghar <command> --help\` for a command's options.

${globalUsage}

Exit codes: 0 ok, 1 broker or runtime error, 2 usage error,
3 unknown topic, partition or group.`;

/** Each command's module, loaded only when run: serve pulls in the broker. */
const commands: Record<
  string,
  () => Promise<{ run(args: string[]): Promise<number>; usage: string }>
> = {
  topics: async () => {
    const { runTopics, topicsUsage } = await import("./cli/topics.ts");
    return { run: runTopics, usage: topicsUsage };
  },
  produce: async () => {
    const { runProduce, produceUsage } = await import("./cli/produce.ts");
    return { run: runProduce, usage: produceUsage };
  },
  consume: async () => {
    const { runConsume, consumeUsage } = await import("./cli/consume.ts");
    return { run: runConsume, usage: consumeUsage };
  },
  groups: async () => {
    const { runGroups, groupsUsage } = await import("./cli/groups.ts");
    return { run: runGroups, usage: groupsUsage };
  },
  dlq: async () => {
    const { runDlq, dlqUsage } = await import("./cli/dlq.ts");
    return { run: runDlq, usage: dlqUsage };
  },
};

async function main(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  if (name === "serve") {
    // serve exits the process itself, when the broker stops.
    await (await import("./cli/serve.ts")).runServe(rest);
    return -1;
  }
  if (name === undefined || name === "-h" || name === "--help") {
    (name === undefined ? console.error : console.log)(usage);
    return name === undefined ? exitCodes.usage : exitCodes.ok;
  }
  const load = commands[name];
  if (load === undefined) {
    console.error(`dakghar: Unknown command: ${name}\n\n${usage}`);
    return exitCodes.usage;
  }
  const command = await load();
  try {
    return await command.run(rest);
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(
        `dakghar ${name}: ${error.message}\nRun \`dakghar ${name} --help\` for usage.`,
      );
      return exitCodes.usage;
    }
    if (error instanceof DakgharClientError) {
      console.error(`dakghar ${name}: ${describeClientError(error)}`);
      return notFoundCodes.has(error.code)
        ? exitCodes.notFound
        : exitCodes.failure;
    }
    console.error(
      `dakghar ${name}: ${
        error instanceof Error ? error.stack ?? error.message : error
      }`,
    );
    return exitCodes.failure;
  }
}

main(process.argv.slice(2)).then(
  // The socket and stdin would keep the process alive: exit once done.
  (code) => code >= 0 && process.exit(code),
  (error) => {
    console.error(error instanceof Error ? error.stack : error);
    process.exit(exitCodes.failure);
  },
);
