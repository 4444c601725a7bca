/**
 * A binary min-heap of fixed-width number tuples kept in one flat array, so
 * that a queue cursor's timers and redelivery order allocate no object per
 * entry. Entries compare field by field, first field first.
 */
export class NumberHeap {
  readonly width: number;
  #items: number[] = [];

  /** @param width numbers per entry, at least 1 */
  constructor(width: number) {
    if (!(width >= 1)) throw new RangeError(`Heap width below 1: ${width}`);
    this.width = width;
  }

  /** Entries held. */
  get size(): number {
    return this.#items.length / this.width;
  }

  /** Field `field` of the smallest entry; undefined when empty. */
  peek(field = 0): number | undefined {
    return this.#items.length === 0 ? undefined : this.#items[field];
  }

  /** Adds an entry of `width` numbers. */
  push(a: number, b = 0, c = 0): void {
    const items = this.#items;
    const width = this.width;
    items.push(a);
    if (width > 1) items.push(b);
    if (width > 2) items.push(c);
    let child = items.length / width - 1;
    while (child > 0) {
      const parent = (child - 1) >> 1;
      if (this.#compare(parent, child) <= 0) break;
      this.#swap(parent, child);
      child = parent;
    }
  }

  /**
   * Removes the smallest entry, copying its fields into `into`.
   *
   * @returns false when the heap was empty
   */
  pop(into?: number[]): boolean {
    const items = this.#items;
    const width = this.width;
    if (items.length === 0) return false;
    if (into !== undefined) {
      for (let f = 0; f < width; f++) into[f] = items[f];
    }
    const last = items.length - width;
    for (let f = 0; f < width; f++) items[f] = items[last + f];
    items.length = last;
    const count = last / width;
    let parent = 0;
    for (;;) {
      const left = 2 * parent + 1;
      if (left >= count) break;
      const right = left + 1;
      const smaller = right < count && this.#compare(right, left) < 0
        ? right
        : left;
      if (this.#compare(parent, smaller) <= 0) break;
      this.#swap(parent, smaller);
      parent = smaller;
    }
    return true;
  }

  /** Removes every entry. */
  clear(): void {
    this.#items.length = 0;
  }

  #compare(i: number, j: number): number {
    const items = this.#items;
    const width = this.width;
    for (let f = 0; f < width; f++) {
      const difference = items[i * width + f] - items[j * width + f];
      if (difference !== 0) return difference;
    }
    return 0;
  }

  #swap(i: number, j: number): void {
    const items = this.#items;
    const width = this.width;
    for (let f = 0; f < width; f++) {
      const swap = items[i * width + f];
      items[i * width + f] = items[j * width + f];
      items[j * width + f] = swap;
    }
  }
}
