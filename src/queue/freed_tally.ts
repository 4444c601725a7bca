/**
 * Sums released deliveries per member as the flat triples [member, records,
 * bytes] that `qsettled.freed` and `qfreed.freed` carry. Members are few,
 * so a linear scan with the last member cached beats a Map on the ack path.
 */
export class FreedTally {
  #triples: number[] = [];
  #last = -1;

  /** Counts one record of `bytes` bytes given back by `member`. */
  add(member: number, bytes: number): void {
    const triples = this.#triples;
    let at = this.#last;
    if (at < 0 || triples[at] !== member) {
      at = -1;
      for (let i = 0; i < triples.length; i += 3) {
        if (triples[i] === member) {
          at = i;
          break;
        }
      }
      if (at < 0) {
        at = triples.length;
        triples.push(member, 0, 0);
      }
      this.#last = at;
    }
    triples[at + 1]++;
    triples[at + 2] += bytes;
  }

  /** True when nothing was counted. */
  get empty(): boolean {
    return this.#triples.length === 0;
  }

  /** The triples counted so far. */
  triples(): number[] {
    return this.#triples;
  }
}
