/**
 * key_shared order (docs/queues.md, "Delivering"): the unsettled records of
 * each key, in offset order. Only the first of a key may be delivered; the
 * others are parked behind it until it is settled.
 */

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
