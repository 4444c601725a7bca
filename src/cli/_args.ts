/**
 * What every `dakghar` command shares: exit codes, the global options
 * (`--url`, `--token`, `--help`), argument parsing with node:util parseArgs,
 * and the parsers for counts and start positions.
 */
import process from "node:process";
import { parseArgs, type ParseArgsConfig } from "node:util";
import type { RecordFilter } from "../broker.ts";
import type { DakgharClientError } from "../client/errors.ts";

/**
 * Exit codes of every command:
 *
 *   0  done
 *   1  the broker answered with an error, or it cannot be reached
 *   2  a usage error: an unknown command or option, a bad value
 *   3  the topic, partition or group does not exist
 */
export const exitCodes = {
  ok: 0,
  failure: 1,
  usage: 2,
  notFound: 3,
} as const;

/** Error codes that mean "no such thing": the CLI exits 3 for them. */
export const notFoundCodes: ReadonlySet<string> = new Set([
  "unknown_topic",
  "unknown_partition",
  "unknown_group",
]);

/**
 * The `code: message` a failed client call shows on stderr. A broker that
 * never answered reads `unreachable`, with the system's reason (refused,
 * unknown host) rather than fetch's bare "fetch failed".
 *
 * @param error what the client threw
 * @returns the text, without the command's prefix
 */
export function describeClientError(error: DakgharClientError): string {
  if (error.code !== "network_error") return `${error.code}: ${error.message}`;
  const reason = (error.cause as { cause?: { message?: string } } | undefined)
    ?.cause?.message;
  return `unreachable: ${error.message}${reason ? ` (${reason})` : ""}`;
}

/** A command line that does not parse; exits 2 with the command's usage. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** Where the broker is and how to authenticate. */
export interface Connection {
  /** The broker's base URL, without a trailing slash. */
  url: string;
  token: string | undefined;
}

/** The usage lines of the options every command takes. */
export const globalUsage = `Global options (environment variable in brackets):
  --url <url>        the broker [DAKGHAR_URL] (http://127.0.0.1:8080)
  --token <secret>   bearer token [DAKGHAR_TOKEN]
  -h, --help         show this text`;

type Options = NonNullable<ParseArgsConfig["options"]>;

const globalOptions = {
  url: { type: "string" },
  token: { type: "string" },
  help: { type: "boolean", short: "h" },
} satisfies Options;

/** The values parseArgs gives for a set of options plus the global ones. */
// deno-lint-ignore no-explicit-any
export type Values = Record<string, any>;

/** A parsed command line. */
export interface ParsedCommand {
  values: Values;
  positionals: string[];
  connection: Connection;
}

/**
 * Parses a command's arguments (after the command words) with its own
 * options and the global ones. Unknown options are usage errors.
 *
 * @param args the arguments
 * @param options the command's options, in parseArgs form
 * @returns the values, positionals and connection settings
 * @throws {UsageError} for an unknown option or a missing option value
 */
export function parseCommand(args: string[], options: Options): ParsedCommand {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: { ...globalOptions, ...options },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const values = parsed.values as Values;
  const env = (name: string) => process.env[name] || undefined;
  const url = (values.url ?? env("DAKGHAR_URL") ?? "http://127.0.0.1:8080")
    .replace(/\/+$/, "");
  if (!/^https?:\/\/./.test(url)) {
    throw new UsageError(`Cannot parse URL: ${url}`);
  }
  return {
    values,
    positionals: parsed.positionals,
    connection: { url, token: values.token ?? env("DAKGHAR_TOKEN") },
  };
}

/**
 * Parses a non-negative integer option.
 *
 * @param text the option's text, or undefined when absent
 * @param name the option, for the message
 * @returns the number, or undefined when absent
 * @throws {UsageError} when it is not a non-negative integer
 */
export function parseCount(
  text: string | undefined,
  name: string,
): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text))) {
    throw new UsageError(`Cannot parse --${name}: ${text}`);
  }
  return Number(text);
}

/**
 * Parses an integer option that may be -1 (unlimited), as retention is.
 *
 * @param text the option's text, or undefined when absent
 * @param name the option, for the message
 * @returns the number, or undefined when absent
 * @throws {UsageError} when it is not an integer
 */
export function parseInteger(
  text: string | undefined,
  name: string,
): number | undefined {
  if (text === undefined) return undefined;
  if (!/^-?\d+$/.test(text) || !Number.isSafeInteger(Number(text))) {
    throw new UsageError(`Cannot parse --${name}: ${text}`);
  }
  return Number(text);
}

/** A start position as the WebSocket `subscribe` frame takes it. */
export type From =
  | "earliest"
  | "latest"
  | { offset: number }
  | { timestamp: number };

/**
 * Parses `earliest`, `latest`, an offset (`42`) or an ISO 8601 time
 * (`2026-12-04T10:00:00Z`).
 *
 * @param text the option's text
 * @param name the option, for the message
 * @returns the start position
 * @throws {UsageError} when it is none of these
 */
export function parseFrom(text: string, name: string): From {
  if (text === "earliest" || text === "latest") return text;
  if (/^\d+$/.test(text)) return { offset: Number(text) };
  // Only strings that look like a date: Date.parse takes "1" as a year.
  const timestamp = /^\d{4}-\d{2}-\d{2}/.test(text) ? Date.parse(text) : NaN;
  if (Number.isNaN(timestamp)) {
    throw new UsageError(
      `Cannot parse --${name}: ${text} (earliest, latest, an offset or an ISO time)`,
    );
  }
  return { timestamp };
}

/**
 * Checks the number of positionals a command got.
 *
 * @param positionals the positionals
 * @param names what each one is, for the message
 * @throws {UsageError} when there are more or fewer
 */
export function expectPositionals(positionals: string[], names: string[]) {
  if (positionals.length < names.length) {
    throw new UsageError(`Missing ${names[positionals.length]}`);
  }
  if (positionals.length > names.length) {
    throw new UsageError(
      `Unexpected argument: ${positionals[names.length]}`,
    );
  }
}

/**
 * Parses repeated `--header name=value` options into a map.
 *
 * @param texts the options' texts, or undefined when absent
 * @returns name to value (the last wins); empty when none
 * @throws {UsageError} for one without `=` or a name
 */
export function parseHeaders(
  texts: string[] | undefined,
): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const text of texts ?? []) {
    const equals = text.indexOf("=");
    if (equals <= 0) {
      throw new UsageError(`Cannot parse --header: ${text} (name=value)`);
    }
    headers[text.slice(0, equals)] = text.slice(equals + 1);
  }
  return headers;
}

/**
 * The exact filter of repeated `--tag` and `--header name=value` options.
 *
 * @param tags the `--tag` values, or undefined
 * @param headers the `--header` values, or undefined
 * @returns the filter, or undefined when neither was given
 * @throws {UsageError} for a header without `=` or a name
 */
export function parseFilter(
  tags: string[] | undefined,
  headers: string[] | undefined,
): RecordFilter | undefined {
  if (!tags?.length && !headers?.length) return undefined;
  return {
    ...(tags?.length ? { tags } : {}),
    ...(headers?.length ? { headers: parseHeaders(headers) } : {}),
  };
}
