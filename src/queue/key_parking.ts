/**
 * key_shared order (docs/queues.md, "Delivering"): the unsettled records of
 * each key, in offset order. Only the first of a key may be delivered; the
 * others are parked behind it until it is settled.
 */
import { readI32 } from "../log/_bytes.ts";

/**
 * The key of the record whose recordLength field is at `recordStart`, as a
 * string of one char per byte, or null when it has none (such a record is
 * its own key).
 */
export function keyAt(bytes: Uint8Array, recordStart: number): string | null {
  const length = readI32(bytes, recordStart + 12);
  if (length < 0) return null;
  const from = recordStart + 16;
  let key = "";
  for (let i = 0; i < length; i += 4096) {
    key += String.fromCharCode(
      ...bytes.subarray(from + i, from + Math.min(length, i + 4096)),
    );
  }
  return key;
}

/** Unsettled records per key. */
export class KeyParking {
  readonly #queues = new Map<string, number[]>();
  readonly #keyOf = new Map<number, string>();

  /** Records tracked. */
  get size(): number {
    return this.#keyOf.size;
  }

  /**
   * Adds `offset` behind the unsettled records of `key`.
   *
   * @returns true when an earlier record of the key is unsettled: park it
   */
  park(offset: number, key: string): boolean {
    this.#keyOf.set(offset, key);
    const queue = this.#queues.get(key);
    if (queue === undefined) {
      this.#queues.set(key, [offset]);
      return false;
    }
    queue.push(offset);
    return true;
  }

  /**
   * `offset` is settled or gone.
   *
   * @returns the offset that now heads its key, when `offset` headed it; else -1
   */
  release(offset: number): number {
    const key = this.#keyOf.get(offset);
    if (key === undefined) return -1;
    this.#keyOf.delete(offset);
    const queue = this.#queues.get(key)!;
    const at = queue.indexOf(offset);
    if (at >= 0) queue.splice(at, 1);
    if (queue.length === 0) {
      this.#queues.delete(key);
      return -1;
    }
    return at === 0 ? queue[0] : -1;
  }
}
