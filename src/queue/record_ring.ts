/**
 * Per-record state of a queue cursor's window in typed arrays, indexed by
 * `offset & mask`: a ring that covers [floor, end) of the partition and
 * doubles when the window outgrows it, so no object is made per record.
 */

/** Where a record stands in its group (see the table in queue_cursor.ts). */
export const RecordState = {
  FREE: 0,
  PENDING: 1,
  IN_FLIGHT: 2,
  EXPIRED: 3,
  NACKED: 4,
  PARKED: 5,
  DEAD: 6,
  SETTLED: 7,
} as const;

const CAPACITY_MIN = 1024;

/** The typed arrays of one cursor's window. */
export class RecordRing {
  mask = CAPACITY_MIN - 1;
  /** A {@linkcode RecordState} per record. */
  state = new Uint8Array(CAPACITY_MIN);
  /** Deliveries so far. */
  attempt = new Uint32Array(CAPACITY_MIN);
  /** The member of the current delivery. */
  member = new Int32Array(CAPACITY_MIN);
  /** In flight: the ack deadline; nacked: when it is due again. */
  deadline = new Float64Array(CAPACITY_MIN);
  /** The record's size; once delivered, the bytes charged to its member. */
  bytes = new Uint32Array(CAPACITY_MIN);
  /** Records in the window per state (FREE is not meaningful). */
  readonly counts = new Int32Array(8);

  /** Sets the state of the record in `slot`, keeping the counts. */
  setState(slot: number, state: number): void {
    this.counts[this.state[slot]]--;
    this.counts[state]++;
    this.state[slot] = state;
  }

  /** Forgets the record in `slot`: it left the window. */
  clear(slot: number): void {
    this.counts[this.state[slot]]--;
    this.counts[RecordState.FREE]++;
    this.state[slot] = RecordState.FREE;
    this.attempt[slot] = 0;
  }

  /** Grows the ring, when needed, so that offsets [floor, to) fit; [floor, end) keep their state. */
  reserve(floor: number, end: number, to: number): void {
    let capacity = this.mask + 1;
    if (to - floor <= capacity) return;
    while (to - floor > capacity) capacity *= 2;
    const mask = capacity - 1;
    const state = new Uint8Array(capacity);
    const attempt = new Uint32Array(capacity);
    const member = new Int32Array(capacity);
    const deadline = new Float64Array(capacity);
    const bytes = new Uint32Array(capacity);
    for (let offset = floor; offset < end; offset++) {
      const from = offset & this.mask;
      const into = offset & mask;
      state[into] = this.state[from];
      attempt[into] = this.attempt[from];
      member[into] = this.member[from];
      deadline[into] = this.deadline[from];
      bytes[into] = this.bytes[from];
    }
    this.mask = mask;
    this.state = state;
    this.attempt = attempt;
    this.member = member;
    this.deadline = deadline;
    this.bytes = bytes;
  }
}
