/**
 * Topic metadata: names, settings and their files.
 *
 * Each topic keeps its settings in data/topics/<topic>/topic.json, written
 * atomically, next to one directory per partition:
 *
 *   { "name": "orders", "createdAt": 1796400000000,
 *     "config": { "partitions": 3, "retentionMs": 604800000, ... } }
 *
 * A topic directory without a readable topic.json is skipped with a warning
 * rather than guessed at: it is what a crash during create leaves behind.
 */
import type { TopicConfig, TopicDescription } from "../broker.ts";
import { DakgharError } from "../errors.ts";
import type { Logger } from "../logger.ts";
import type { FileSystem } from "../runtime/types.ts";

const DAY_MS = 24 * 60 * 60 * 1000;
const MiB = 1024 * 1024;

/** Settings of a topic created with no options. */
export const defaultTopicConfig: Readonly<TopicConfig> = Object.freeze({
  partitions: 1,
  retentionMs: 7 * DAY_MS,
  retentionBytes: -1,
  maxMessageBytes: 1 * MiB,
  flush: "sync",
  flushIntervalMs: 1000,
  segmentBytes: 128 * MiB,
  segmentMs: 7 * DAY_MS,
  retentionDropsUnsettled: false,
});

// Inclusive bounds; `unlimited` allows -1 as well.
const limits: Record<
  Exclude<keyof TopicConfig, "flush" | "retentionDropsUnsettled">,
  { min: number; max: number; unlimited?: true }
> = {
  partitions: { min: 1, max: 1024 },
  retentionMs: { min: 1, max: Number.MAX_SAFE_INTEGER, unlimited: true },
  retentionBytes: { min: 1, max: Number.MAX_SAFE_INTEGER, unlimited: true },
  maxMessageBytes: { min: 64, max: 64 * MiB },
  flushIntervalMs: { min: 1, max: 60 * 60 * 1000 },
  segmentBytes: { min: 1024, max: 1024 * MiB },
  segmentMs: { min: 1, max: Number.MAX_SAFE_INTEGER },
};

const namePattern = /^[A-Za-z0-9._-]{1,200}$/;

/**
 * Checks a topic name: 1 to 200 of `[A-Za-z0-9._-]`, not "." or "..", not
 * starting with "__" (reserved for internal topics).
 *
 * @throws DakgharError invalid_topic_name
 */
export function validateTopicName(name: unknown): string {
  if (
    typeof name !== "string" || !namePattern.test(name) || name === "." ||
    name === ".." || name.startsWith("__")
  ) {
    throw new DakgharError(
      "invalid_topic_name",
      `Invalid topic name: ${JSON.stringify(name)}`,
      { topic: name },
    );
  }
  return name;
}

/**
 * Fills in defaults and checks every setting.
 *
 * @param options settings given by a client; unknown keys are rejected
 * @param defaults settings for keys not given
 * @throws DakgharError invalid_config naming the setting
 */
export function resolveTopicConfig(
  options: Partial<TopicConfig> = {},
  defaults: Readonly<TopicConfig> = defaultTopicConfig,
): TopicConfig {
  const config: TopicConfig = { ...defaults };
  for (const [key, value] of Object.entries(options)) {
    if (value === undefined) continue;
    if (key === "flush") {
      if (value !== "sync" && value !== "interval") {
        throw invalidConfig(key, value, 'expected "sync" or "interval"');
      }
      config.flush = value;
      continue;
    }
    if (key === "retentionDropsUnsettled") {
      if (typeof value !== "boolean") {
        throw invalidConfig(key, value, "expected true or false");
      }
      config.retentionDropsUnsettled = value;
      continue;
    }
    // Own keys only: `constructor` or `__proto__` would find Object.prototype.
    if (!Object.hasOwn(limits, key)) {
      throw invalidConfig(key, value, "unknown setting");
    }
    const limit = limits[key as keyof typeof limits];
    const ok = typeof value === "number" && Number.isInteger(value) &&
      ((value >= limit.min && value <= limit.max) ||
        (limit.unlimited === true && value === -1));
    if (!ok) {
      const range = `an integer in [${limit.min}, ${limit.max}]${
        limit.unlimited ? " or -1" : ""
      }`;
      throw invalidConfig(key, value, `expected ${range}`);
    }
    config[key as keyof typeof limits] = value as number;
  }
  return config;
}

function invalidConfig(key: string, value: unknown, expected: string) {
  return new DakgharError(
    "invalid_config",
    `Invalid topic setting ${key}: ${JSON.stringify(value)}, ${expected}`,
    { setting: key, value },
  );
}

/** The topics on disk and in memory. Used by the router only. */
export class TopicStore {
  readonly #fs: FileSystem;
  readonly #topicsDir: string;
  readonly #log: Logger;
  readonly #topics = new Map<string, TopicDescription>();

  /**
   * @param fs file system
   * @param dataDir the broker's data directory; topics live in its `topics/`
   * @param log where skipped directories are reported
   */
  constructor(fs: FileSystem, dataDir: string, log: Logger) {
    this.#fs = fs;
    this.#topicsDir = `${dataDir}/topics`;
    this.#log = log;
  }

  /** Reads every topic.json under topics/. Returns the topics found, by name. */
  load(): TopicDescription[] {
    this.#fs.mkdirs(this.#topicsDir);
    this.#topics.clear();
    for (const entry of this.#fs.list(this.#topicsDir)) {
      if (!entry.isDirectory) continue;
      const path = `${this.#topicsDir}/${entry.name}/topic.json`;
      try {
        const parsed = JSON.parse(
          new TextDecoder().decode(this.#fs.readFile(path)),
        ) as TopicDescription;
        validateTopicName(parsed.name);
        if (parsed.name !== entry.name) {
          throw new Error(`name ${parsed.name} does not match its directory`);
        }
        const description = {
          name: parsed.name,
          createdAt: parsed.createdAt,
          config: resolveTopicConfig(parsed.config),
        };
        this.#topics.set(description.name, description);
      } catch (error) {
        this.#log.warn("skipping topic directory", { path, error });
      }
    }
    return this.list();
  }

  /** Every topic, sorted by name. */
  list(): TopicDescription[] {
    return [...this.#topics.values()].sort((a, b) =>
      a.name < b.name ? -1 : a.name > b.name ? 1 : 0
    );
  }

  get(name: string): TopicDescription | undefined {
    return this.#topics.get(name);
  }

  /** Directory of one partition's segments. */
  partitionDir(name: string, partition: number): string {
    return `${this.#topicsDir}/${name}/${partition}`;
  }

  /**
   * Validates, then writes topic.json atomically.
   *
   * @throws DakgharError invalid_topic_name, invalid_config, topic_exists
   */
  create(
    name: string,
    options: Partial<TopicConfig> | undefined,
    now: number,
    defaults?: Readonly<TopicConfig>,
  ): TopicDescription {
    validateTopicName(name);
    const config = resolveTopicConfig(options, defaults);
    if (this.#topics.has(name)) {
      throw new DakgharError("topic_exists", `Topic exists: ${name}`, {
        topic: name,
      });
    }
    const description: TopicDescription = { name, createdAt: now, config };
    const dir = `${this.#topicsDir}/${name}`;
    // A directory without topic.json is a delete or create cut short; its
    // segments must not reappear in the new topic.
    if (this.#fs.exists(dir)) this.#fs.remove(dir);
    this.#fs.mkdirs(dir);
    this.#fs.writeFileAtomic(
      `${dir}/topic.json`,
      new TextEncoder().encode(JSON.stringify(description, null, 2) + "\n"),
    );
    this.#topics.set(name, description);
    return description;
  }

  /**
   * Forgets a topic and removes its directory. topic.json goes first, so a
   * crash halfway leaves a directory that load() skips.
   */
  delete(name: string): void {
    const dir = `${this.#topicsDir}/${name}`;
    this.#topics.delete(name);
    this.#fs.remove(`${dir}/topic.json`);
    this.#fs.syncDirectory(dir);
    this.#fs.remove(dir);
    this.#fs.syncDirectory(this.#topicsDir);
  }
}
