/**
 * Helpers for tests of queue groups through the real router: delivered
 * records as plain values, settlements for them, receiving, waiting.
 */
import * as assert from "uvu/assert";
import type { RouterActor } from "../../actors/router_actor.ts";
import type {
  QueueDelivery,
  QueueMemberHandle,
  Settlement,
} from "../../src/broker.ts";
import { decodeBatches } from "../../src/log/record_batch.ts";

export const text = (value: string) => new TextEncoder().encode(value);
export const untext = (bytes: Uint8Array | null) =>
  bytes === null ? null : new TextDecoder().decode(bytes);

/** One delivered record: where it is, its attempt, key, value and headers. */
export interface Got {
  partition: number;
  offset: number;
  attempt: number;
  key: string | null;
  value: string | null;
  headers: [string, string | null][];
}

/** The records of one delivery, with their attempts. */
export function unpack(delivery: QueueDelivery): Got[] {
  const attempts = new Map<number, number>();
  for (let i = 0; i < delivery.redelivered.length; i += 2) {
    attempts.set(delivery.redelivered[i], delivery.redelivered[i + 1]);
  }
  return decodeBatches(delivery.bytes).map((record) => ({
    partition: delivery.partition,
    offset: record.offset,
    attempt: attempts.get(record.offset) ?? 1,
    key: untext(record.key),
    value: untext(record.value),
    headers: record.headers.map(([name, value]) => [name, untext(value)]),
  }));
}

/** What an anonymous receiver gets now, or within `maxWaitMs`. */
export async function receiveAll(
  broker: RouterActor,
  group: string,
  maxWaitMs = 0,
): Promise<Got[]> {
  const deliveries = await broker.receive(group, {
    maxRecords: 1000,
    maxBytes: 1 << 20,
    maxWaitMs,
  });
  return deliveries.flatMap(unpack);
}

/** One settlement of `action` per record. */
export function settlements(
  got: Got[],
  action: Settlement["action"],
  extra: Partial<Settlement> = {},
): Settlement[] {
  return got.map((g) => ({
    partition: g.partition,
    offset: g.offset,
    attempt: g.attempt,
    action,
    ...extra,
  }));
}

export const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `attempt` every 20 ms until it gives a value; fails after 10 s. */
export async function eventually<T>(
  attempt: () => Promise<T | undefined> | T | undefined,
  what: string,
): Promise<T> {
  for (let i = 0; i < 500; i++) {
    const result = await attempt();
    if (result !== undefined) return result;
    await pause(20);
  }
  return assert.unreachable(`never happened: ${what}`) as never;
}

/** A queue member that records its deliveries and may settle them itself. */
export function queueMember(
  id: string,
  onRecords: (got: Got[]) => void = () => {},
): QueueMemberHandle & { got: Got[] } {
  const got: Got[] = [];
  return {
    id,
    got,
    deliver(delivery) {
      const records = unpack(delivery);
      got.push(...records);
      onRecords(records);
    },
  };
}
