/**
 * The sparse time index of one segment, `<base>.timeindex`.
 *
 * ```
 * entry, 12 bytes, little-endian
 *  0  8  appendTime       ms since epoch, two 32-bit halves
 *  8  4  relativeOffset   base offset of the batch − segment base offset
 * ```
 *
 * An entry is written beside an offset index entry whenever that batch's
 * appendTime is greater than the previous entry's, so both fields strictly
 * increase and every relativeOffset here is also in the offset index. Like
 * the offset index it is append-only, never fsynced and rebuilt from the
 * segment when its shape is wrong.
 */
import type { FileHandle, FileSystem } from "../runtime/types.ts";

/** Bytes per entry. */
export const TIME_INDEX_ENTRY_BYTES = 12;

const TWO_32 = 0x1_0000_0000;

/** A time index backed by its file. */
export class TimeIndex {
  readonly path: string;
  #file: FileHandle;
  #times: Float64Array;
  #relativeOffsets: Uint32Array;
  #count = 0;
  #torn = false;
  #scratch = new Uint8Array(TIME_INDEX_ENTRY_BYTES);
  #scratchView = new DataView(this.#scratch.buffer);

  private constructor(path: string, file: FileHandle) {
    this.path = path;
    this.#file = file;
    this.#times = new Float64Array(32);
    this.#relativeOffsets = new Uint32Array(32);
  }

  /**
   * Opens (creating if missing) and loads the time index at `path`.
   *
   * @param fs where the file lives
   * @param path the `.timeindex` file
   * @returns the index with every whole entry loaded
   */
  static open(fs: FileSystem, path: string): TimeIndex {
    const index = new TimeIndex(path, fs.open(path, "readWrite"));
    const size = index.#file.size();
    const count = Math.floor(size / TIME_INDEX_ENTRY_BYTES);
    index.#torn = size !== count * TIME_INDEX_ENTRY_BYTES;
    const bytes = new Uint8Array(count * TIME_INDEX_ENTRY_BYTES);
    index.#file.read(bytes, 0);
    const view = new DataView(bytes.buffer);
    index.#grow(count);
    for (let i = 0; i < count; i++) {
      const p = i * TIME_INDEX_ENTRY_BYTES;
      index.#times[i] = view.getUint32(p, true) +
        view.getInt32(p + 4, true) * TWO_32;
      index.#relativeOffsets[i] = view.getUint32(p + 8, true);
    }
    index.#count = count;
    return index;
  }

  /** Number of entries. */
  get count(): number {
    return this.#count;
  }

  /** The appendTime of entry `i`. */
  timeAt(i: number): number {
    return this.#times[i];
  }

  /** The relative offset of entry `i`. */
  relativeOffsetAt(i: number): number {
    return this.#relativeOffsets[i];
  }

  /** appendTime of the last entry, or -Infinity when empty. */
  get lastTime(): number {
    return this.#count === 0 ? -Infinity : this.#times[this.#count - 1];
  }

  /**
   * Adds an entry in memory and at the end of the file.
   *
   * @throws {Error} when the file write fails
   */
  append(appendTime: number, relativeOffset: number): void {
    const view = this.#scratchView;
    view.setUint32(0, appendTime >>> 0, true);
    view.setInt32(4, Math.floor(appendTime / TWO_32), true);
    view.setUint32(8, relativeOffset, true);
    this.#file.write(this.#scratch, this.#count * TIME_INDEX_ENTRY_BYTES);
    this.#grow(this.#count + 1);
    this.#times[this.#count] = appendTime;
    this.#relativeOffsets[this.#count] = relativeOffset;
    this.#count++;
  }

  /**
   * The last entry whose appendTime is < `timestamp`.
   *
   * @returns the entry number, or -1 when none is (start at the segment's first batch)
   */
  lastEntryBefore(timestamp: number): number {
    let low = 0;
    let high = this.#count - 1;
    let found = -1;
    while (low <= high) {
      const middle = (low + high) >>> 1;
      if (this.#times[middle] < timestamp) {
        found = middle;
        low = middle + 1;
      } else high = middle - 1;
    }
    return found;
  }

  /**
   * True when the file is whole entries, both fields strictly increase and
   * every relative offset lies before `relativeEnd`.
   */
  isSane(relativeEnd: number): boolean {
    if (this.#torn) return false;
    for (let i = 0; i < this.#count; i++) {
      if (this.#relativeOffsets[i] >= relativeEnd) return false;
      if (
        i > 0 && (this.#times[i] <= this.#times[i - 1] ||
          this.#relativeOffsets[i] <= this.#relativeOffsets[i - 1])
      ) return false;
    }
    return true;
  }

  /** True when the entries equal `pairs` (appendTime, relativeOffset, ...). */
  equals(pairs: number[]): boolean {
    if (this.#torn || pairs.length !== 2 * this.#count) return false;
    for (let i = 0; i < this.#count; i++) {
      if (
        this.#times[i] !== pairs[2 * i] ||
        this.#relativeOffsets[i] !== pairs[2 * i + 1]
      ) return false;
    }
    return true;
  }

  /** Replaces the file and the entries with `pairs` (appendTime, relativeOffset, ...). */
  rewrite(pairs: number[]): void {
    this.#file.truncate(0);
    this.#count = 0;
    this.#torn = false;
    const count = pairs.length / 2;
    const bytes = new Uint8Array(count * TIME_INDEX_ENTRY_BYTES);
    const view = new DataView(bytes.buffer);
    this.#grow(count);
    for (let i = 0; i < count; i++) {
      const time = pairs[2 * i];
      const p = i * TIME_INDEX_ENTRY_BYTES;
      view.setUint32(p, time >>> 0, true);
      view.setInt32(p + 4, Math.floor(time / TWO_32), true);
      view.setUint32(p + 8, pairs[2 * i + 1], true);
      this.#times[i] = time;
      this.#relativeOffsets[i] = pairs[2 * i + 1];
    }
    this.#file.write(bytes, 0);
    this.#count = count;
  }

  close(): void {
    this.#file.close();
  }

  #grow(count: number): void {
    if (count <= this.#times.length) return;
    let length = this.#times.length;
    while (length < count) length *= 2;
    const times = new Float64Array(length);
    times.set(this.#times.subarray(0, this.#count));
    this.#times = times;
    const relativeOffsets = new Uint32Array(length);
    relativeOffsets.set(this.#relativeOffsets.subarray(0, this.#count));
    this.#relativeOffsets = relativeOffsets;
  }
}
