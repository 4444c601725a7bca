/**
 * Received messages waiting for the iterator, and the one reader waiting
 * for them: what stream and queue subscriptions share beneath `next()`.
 */

/** A first-in first-out buffer with one waiting reader. */
export class PullBuffer<T> {
  #items: T[] = [];
  #head = 0;
  #waiter: (() => void) | undefined;

  /** Messages waiting. */
  get size(): number {
    return this.#items.length - this.#head;
  }

  push(item: T): void {
    this.#items.push(item);
  }

  /** The oldest message, or undefined when none waits. */
  take(): T | undefined {
    if (this.#head >= this.#items.length) return undefined;
    const item = this.#items[this.#head++];
    // Drop the taken front now and then, not on every take.
    if (this.#head >= 1024 && this.#head * 2 >= this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return item;
  }

  /** The messages waiting, oldest first (a copy). */
  waiting(): T[] {
    return this.#items.slice(this.#head);
  }

  /** Replaces what waits, e.g. with `waiting()` filtered. */
  replace(items: T[]): void {
    this.#items = items;
    this.#head = 0;
  }

  clear(): void {
    this.replace([]);
  }

  /** Resolves at the next {@linkcode wake}. */
  wait(): Promise<void> {
    return new Promise((resolve) => this.#waiter = resolve);
  }

  /** Lets the waiting reader look again. */
  wake(): void {
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.();
  }
}
