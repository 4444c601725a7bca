/**
 * Picks a partition for a record: the explicit partition when given, else a
 * stable hash of the key, else round robin.
 *
 * The hash is Kafka's murmur2 (seed 0x9747b28c, sign bit cleared, modulo
 * the partition count), so a key lands on the same partition number as with
 * Kafka's default partitioner for the same partition count. Changing the
 * partition count moves keys, as in Kafka.
 */

const SEED = 0x9747b28c;
const M = 0x5bd1e995;

/**
 * Kafka's murmur2 hash of `key`, as a signed 32-bit integer.
 *
 * @example
 * ```ts
 * murmur2(new TextEncoder().encode("21")); // -973932308, as in Kafka
 * ```
 */
export function murmur2(key: Uint8Array): number {
  const length = key.length;
  let h = (SEED ^ length) | 0;
  const whole = length & ~3;

  for (let i = 0; i < whole; i += 4) {
    let k = key[i] | (key[i + 1] << 8) | (key[i + 2] << 16) |
      (key[i + 3] << 24);
    k = Math.imul(k, M);
    k ^= k >>> 24;
    k = Math.imul(k, M);
    h = Math.imul(h, M);
    h ^= k;
  }

  // The tail, 1 to 3 bytes, falls through like Kafka's switch.
  const rest = length & 3;
  if (rest === 3) h ^= key[whole + 2] << 16;
  if (rest >= 2) h ^= key[whole + 1] << 8;
  if (rest >= 1) {
    h ^= key[whole];
    h = Math.imul(h, M);
  }

  h ^= h >>> 13;
  h = Math.imul(h, M);
  h ^= h >>> 15;
  return h | 0;
}

/**
 * The partition for `key` among `partitionCount`: Kafka's
 * `toPositive(murmur2(key)) % partitionCount`.
 */
export function partitionForKey(
  key: Uint8Array,
  partitionCount: number,
): number {
  return (murmur2(key) & 0x7fffffff) % partitionCount;
}

/** Chooses partitions for one topic; keeps the round-robin position. */
export class Partitioner {
  #next = 0;

  /**
   * @param partitionCount partitions of the topic, ≥ 1
   */
  constructor(readonly partitionCount: number) {
    if (!Number.isInteger(partitionCount) || partitionCount < 1) {
      throw new RangeError(
        `Cannot create a partitioner: partition count ${partitionCount}`,
      );
    }
  }

  /**
   * The partition for a record or batch: `key`'s hash when it has one,
   * else the next in round-robin order.
   */
  choose(key: Uint8Array | null | undefined): number {
    if (key != null) return partitionForKey(key, this.partitionCount);
    const partition = this.#next;
    this.#next = (this.#next + 1) % this.partitionCount;
    return partition;
  }
}
