/**
 * The pending delayed records of one partition, in memory: per record only
 * its due time, where its journal entry lies, and its id in a map for
 * cancels. The record bytes stay on disk. Fields live in typed arrays
 * indexed by slot, and a binary heap of slots orders them by due time and
 * then schedule order, so a million pending records cost a few tens of
 * bytes each plus the id string and give the garbage collector no objects
 * to trace.
 */

/** A slot's state. */
const FREE = 0;
/** Waiting for its due time; may be cancelled. */
const PENDING = 1;
/** Taken by a firing: no longer cancellable, not in the heap. */
const FIRING = 2;
/** Cancelled while in the heap; freed when the heap reaches it. */
const CANCELLED = 3;

/** The slots of one firing, and how many journal bytes their entries take. */
export interface DueRecords {
  slots: number[];
  bytes: number;
}

/** Pending delayed records ordered by due time. */
export class DueQueue {
  #due = new Float64Array(1024);
  #order = new Float64Array(1024);
  #position = new Float64Array(1024);
  #length = new Uint32Array(1024);
  #state = new Uint8Array(1024);
  #ids = new Map<string, number>();
  #heap = new Int32Array(1024);
  #heapSize = 0;
  #free: number[] = [];
  #used = 0;
  #nextOrder = 0;
  #liveBytes = 0;

  /** Records not yet appended: pending and firing. */
  get size(): number {
    return this.#ids.size;
  }

  /** Journal bytes of the entries of records not yet appended. */
  get liveBytes(): number {
    return this.#liveBytes;
  }

  /**
   * Adds a record due at `due` whose journal entry is `length` bytes at
   * `position`.
   *
   * @throws {RangeError} when `id` is already present
   */
  add(id: string, due: number, position: number, length: number): number {
    if (this.#ids.has(id)) {
      throw new RangeError(`Cannot add a delayed record twice: ${id}`);
    }
    const slot = this.#allocate();
    this.#due[slot] = due;
    this.#order[slot] = this.#nextOrder++;
    this.#position[slot] = position;
    this.#length[slot] = length;
    this.#state[slot] = PENDING;
    this.#ids.set(id, slot);
    this.#liveBytes += length;
    this.#push(slot);
    return slot;
  }

  /** The slot of a record not yet appended, or -1. */
  slotOf(id: string): number {
    return this.#ids.get(id) ?? -1;
  }

  /** True when the record is pending (not firing) and can be cancelled. */
  isPending(id: string): boolean {
    const slot = this.#ids.get(id);
    return slot !== undefined && this.#state[slot] === PENDING;
  }

  /**
   * Removes a pending or firing record: cancelled, or appended to the log.
   * Its heap entry, if any, is dropped when the heap reaches it.
   *
   * @returns false when the id is unknown
   */
  remove(id: string): boolean {
    const slot = this.#ids.get(id);
    if (slot === undefined) return false;
    this.#ids.delete(id);
    this.#liveBytes -= this.#length[slot];
    if (this.#state[slot] === FIRING) this.#release(slot);
    else this.#state[slot] = CANCELLED;
    return true;
  }

  /** Due time of the earliest pending record, or Infinity when none. */
  nextDue(): number {
    this.#dropCancelled();
    return this.#heapSize === 0 ? Infinity : this.#due[this.#heap[0]];
  }

  /**
   * Takes pending records due at or before `now`, earliest first, at most
   * `maxRecords` of them and, past the first, at most `maxBytes` of journal
   * entries. They stay counted until {@linkcode remove}d or handed back
   * with {@linkcode restore}.
   */
  takeDue(now: number, maxRecords: number, maxBytes: number): DueRecords {
    const slots: number[] = [];
    let bytes = 0;
    while (slots.length < maxRecords) {
      this.#dropCancelled();
      if (this.#heapSize === 0) break;
      const slot = this.#heap[0];
      if (this.#due[slot] > now) break;
      if (slots.length > 0 && bytes + this.#length[slot] > maxBytes) break;
      this.#pop();
      this.#state[slot] = FIRING;
      slots.push(slot);
      bytes += this.#length[slot];
    }
    return { slots, bytes };
  }

  /** Puts a firing record back as pending, with its old due time and order. */
  restore(slot: number): void {
    if (this.#state[slot] !== FIRING) return;
    this.#state[slot] = PENDING;
    this.#push(slot);
  }

  /** Where the slot's journal entry lies. */
  entryOf(slot: number): { position: number; length: number } {
    return { position: this.#position[slot], length: this.#length[slot] };
  }

  /** The slot's due time. */
  dueOf(slot: number): number {
    return this.#due[slot];
  }

  /** Moves the slot's journal entry, after a compaction. */
  move(slot: number, position: number): void {
    this.#position[slot] = position;
  }

  #allocate(): number {
    const reused = this.#free.pop();
    if (reused !== undefined) return reused;
    if (this.#used === this.#due.length) this.#grow();
    return this.#used++;
  }

  #release(slot: number): void {
    this.#state[slot] = FREE;
    this.#free.push(slot);
  }

  #grow(): void {
    const capacity = this.#due.length * 2;
    const grow = <T extends Float64Array | Uint32Array | Uint8Array>(
      old: T,
      make: new (n: number) => T,
    ): T => {
      const next = new make(capacity);
      next.set(old);
      return next;
    };
    this.#due = grow(this.#due, Float64Array);
    this.#order = grow(this.#order, Float64Array);
    this.#position = grow(this.#position, Float64Array);
    this.#length = grow(this.#length, Uint32Array);
    this.#state = grow(this.#state, Uint8Array);
  }

  #dropCancelled(): void {
    while (this.#heapSize > 0 && this.#state[this.#heap[0]] === CANCELLED) {
      this.#release(this.#pop());
    }
  }

  // A binary min-heap of slots by (due, order).

  #before(a: number, b: number): boolean {
    const dueA = this.#due[a];
    const dueB = this.#due[b];
    return dueA < dueB || (dueA === dueB && this.#order[a] < this.#order[b]);
  }

  #push(slot: number): void {
    if (this.#heapSize === this.#heap.length) {
      const grown = new Int32Array(this.#heap.length * 2);
      grown.set(this.#heap);
      this.#heap = grown;
    }
    const heap = this.#heap;
    let i = this.#heapSize++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#before(slot, heap[parent])) break;
      heap[i] = heap[parent];
      i = parent;
    }
    heap[i] = slot;
  }

  #pop(): number {
    const heap = this.#heap;
    const top = heap[0];
    const last = heap[--this.#heapSize];
    let i = 0;
    const size = this.#heapSize;
    while (true) {
      let child = 2 * i + 1;
      if (child >= size) break;
      if (child + 1 < size && this.#before(heap[child + 1], heap[child])) {
        child++;
      }
      if (!this.#before(heap[child], last)) break;
      heap[i] = heap[child];
      i = child;
    }
    if (size > 0) heap[i] = last;
    return top;
  }
}
