/**
 * Group settings: defaults, range checks, and the cursor configuration a
 * queue or key_shared group's settings give every partition actor.
 *
 * A group's mode, topic and filter are fixed when it is created; creating
 * it again with the same three only replaces its queue settings.
 */
import type {
  GroupCreateRequest,
  GroupMode,
  GroupSettings,
  QueueSettings,
} from "../broker.ts";
import type { QueueCursorConfig } from "../envelope.ts";
import { DakgharError } from "../errors.ts";
import { sameFilter, validateFilter } from "../queue/filter.ts";

const DAY_MS = 24 * 60 * 60 * 1000;

/** Queue settings of a group created without them, but for the dead-letter topic. */
const defaultQueueSettings: Readonly<
  Omit<QueueSettings, "deadLetterTopic">
> = Object.freeze({
  ackTimeoutMs: 30_000,
  maxDeliveries: 5,
  backoffInitialMs: 1_000,
  backoffMaxMs: 60_000,
  maxUnsettled: 1_000_000,
});

/** Retention of a dead-letter topic created on first use. */
export const deadLetterRetentionMs = 14 * DAY_MS;

// Inclusive bounds of the numeric queue settings.
const limits: Record<
  Exclude<keyof QueueSettings, "deadLetterTopic">,
  { min: number; max: number }
> = {
  ackTimeoutMs: { min: 1, max: 12 * 60 * 60 * 1000 },
  maxDeliveries: { min: 1, max: 1_000_000 },
  backoffInitialMs: { min: 0, max: DAY_MS },
  backoffMaxMs: { min: 0, max: DAY_MS },
  maxUnsettled: { min: 1, max: 100_000_000 },
};

const modes: readonly GroupMode[] = ["stream", "queue", "key_shared"];

/** True for the modes whose records are settled one by one. */
export function isQueueMode(mode: GroupMode): mode is "queue" | "key_shared" {
  return mode === "queue" || mode === "key_shared";
}

/** The default dead-letter topic of `group` reading `topic`. */
function defaultDeadLetterTopic(topic: string, group: string): string {
  return `${topic}.${group}.dlq`;
}

/**
 * Fills in defaults and checks every field of a create request. Queue
 * settings not given are taken from `current` (an update), else defaults.
 *
 * @throws DakgharError bad_request naming the field
 */
export function resolveGroupSettings(
  group: string,
  request: GroupCreateRequest,
  current?: QueueSettings,
): GroupSettings {
  if (typeof request !== "object" || request === null) {
    throw badField("request", request, "expected an object");
  }
  const { topic, mode } = request;
  if (typeof topic !== "string" || topic === "") {
    throw badField("topic", topic, "expected a topic name");
  }
  if (!modes.includes(mode)) {
    throw badField("mode", mode, 'expected "stream", "queue" or "key_shared"');
  }
  const from = request.from ?? "earliest";
  if (from !== "earliest" && from !== "latest") {
    throw badField("from", from, 'expected "earliest" or "latest"');
  }
  const filter = request.filter == null ? null : validateFilter(request.filter);
  const settings: GroupSettings = { topic, mode, from, filter };
  if (!isQueueMode(mode)) {
    if (request.queue !== undefined) {
      throw badField("queue", request.queue, "only for queue groups");
    }
    return settings;
  }

  const given = request.queue ?? {};
  if (typeof given !== "object" || given === null) {
    throw badField("queue", given, "expected an object");
  }
  const queue: QueueSettings = {
    ...defaultQueueSettings,
    deadLetterTopic: defaultDeadLetterTopic(topic, group),
    ...current,
  };
  for (const [key, value] of Object.entries(given)) {
    if (value === undefined) continue;
    if (key === "deadLetterTopic") {
      if (typeof value !== "string" || value === "" || value === topic) {
        throw badField(
          key,
          value,
          "expected a topic name other than the group's",
        );
      }
      queue.deadLetterTopic = value;
      continue;
    }
    if (!Object.hasOwn(limits, key)) {
      throw badField(key, value, "unknown setting");
    }
    const limit = limits[key as keyof typeof limits];
    if (
      typeof value !== "number" || !Number.isInteger(value) ||
      value < limit.min || value > limit.max
    ) {
      throw badField(
        key,
        value,
        `expected an integer in [${limit.min}, ${limit.max}]`,
      );
    }
    queue[key as keyof typeof limits] = value;
  }
  if (queue.backoffMaxMs < queue.backoffInitialMs) {
    throw badField(
      "backoffMaxMs",
      queue.backoffMaxMs,
      `expected at least backoffInitialMs (${queue.backoffInitialMs})`,
    );
  }
  settings.queue = queue;
  return settings;
}

/** True when two groups agree on what is fixed at creation. */
export function sameIdentity(a: GroupSettings, b: GroupSettings): boolean {
  return a.mode === b.mode && a.topic === b.topic &&
    sameFilter(a.filter, b.filter);
}

/** What every partition actor of a queue group's topic runs its cursor with. */
export function cursorConfig(settings: GroupSettings): QueueCursorConfig {
  const queue = settings.queue;
  if (queue === undefined || !isQueueMode(settings.mode)) {
    throw new TypeError(`Not a queue group: mode ${settings.mode}`);
  }
  return {
    mode: settings.mode,
    from: settings.from,
    ackTimeoutMs: queue.ackTimeoutMs,
    maxDeliveries: queue.maxDeliveries,
    backoffInitialMs: queue.backoffInitialMs,
    backoffMaxMs: queue.backoffMaxMs,
    maxUnsettled: queue.maxUnsettled,
    filter: settings.filter,
  };
}

function badField(field: string, value: unknown, expected: string) {
  return new DakgharError(
    "bad_request",
    `Invalid group setting ${field}: ${JSON.stringify(value)}, ${expected}`,
    { field, value },
  );
}
