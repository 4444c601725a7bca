/**
 * The sparse offset index of one segment, `<base>.index`.
 *
 * ```
 * entry, 8 bytes, little-endian
 *  0  4  relativeOffset   offset − segment base offset
 *  4  4  position         byte position in `.log` of the batch holding that offset
 * ```
 *
 * One entry for the first batch at or after every `indexIntervalBytes` of
 * log; the first batch of a segment has none, position 0 being implicit.
 * The file is append-only and never fsynced: it carries no checksum because
 * it is cheaper to rebuild from the segment than to trust, so recovery
 * checks its shape ({@linkcode OffsetIndex.isSane}) and rebuilds it when it
 * is missing, the wrong length, out of order or pointing past the segment.
 * All entries are also held in memory, so a lookup is a binary search.
 */
import type { FileHandle, FileSystem } from "../runtime/types.ts";

/** Bytes per entry. */
export const OFFSET_INDEX_ENTRY_BYTES = 8;

/** An offset index backed by its file. */
export class OffsetIndex {
  readonly path: string;
  #file: FileHandle;
  /** Pairs: relativeOffset at 2i, position at 2i + 1. */
  #entries: Uint32Array;
  #count = 0;
  /** The file's length was not a whole number of entries when loaded. */
  #torn = false;
  #scratch = new Uint8Array(OFFSET_INDEX_ENTRY_BYTES);
  #scratchView = new DataView(this.#scratch.buffer);

  private constructor(path: string, file: FileHandle) {
    this.path = path;
    this.#file = file;
    this.#entries = new Uint32Array(64);
  }

  /**
   * Opens (creating if missing) and loads the index at `path`.
   *
   * @param fs where the file lives
   * @param path the `.index` file
   * @returns the index with every whole entry loaded
   */
  static open(fs: FileSystem, path: string): OffsetIndex {
    const index = new OffsetIndex(path, fs.open(path, "readWrite"));
    const size = index.#file.size();
    const count = Math.floor(size / OFFSET_INDEX_ENTRY_BYTES);
    index.#torn = size !== count * OFFSET_INDEX_ENTRY_BYTES;
    const bytes = new Uint8Array(count * OFFSET_INDEX_ENTRY_BYTES);
    index.#file.read(bytes, 0);
    const view = new DataView(bytes.buffer);
    index.#grow(count);
    for (let i = 0; i < count; i++) {
      index.#entries[2 * i] = view.getUint32(8 * i, true);
      index.#entries[2 * i + 1] = view.getUint32(8 * i + 4, true);
    }
    index.#count = count;
    return index;
  }

  /** Number of entries. */
  get count(): number {
    return this.#count;
  }

  /** The relative offset of entry `i`. */
  relativeOffsetAt(i: number): number {
    return this.#entries[2 * i];
  }

  /** The log position of entry `i`. */
  positionAt(i: number): number {
    return this.#entries[2 * i + 1];
  }

  /** Position of the last entry, or 0 (the implicit first entry) when empty. */
  get lastPosition(): number {
    return this.#count === 0 ? 0 : this.#entries[2 * this.#count - 1];
  }

  /** Relative offset of the last entry, or 0 when empty. */
  get lastRelativeOffset(): number {
    return this.#count === 0 ? 0 : this.#entries[2 * this.#count - 2];
  }

  /**
   * Adds an entry in memory and at the end of the file.
   *
   * @throws {Error} when the file write fails
   */
  append(relativeOffset: number, position: number): void {
    this.#scratchView.setUint32(0, relativeOffset, true);
    this.#scratchView.setUint32(4, position, true);
    this.#file.write(this.#scratch, this.#count * OFFSET_INDEX_ENTRY_BYTES);
    this.#grow(this.#count + 1);
    this.#entries[2 * this.#count] = relativeOffset;
    this.#entries[2 * this.#count + 1] = position;
    this.#count++;
  }

  /**
   * The last entry whose relative offset is ≤ `relativeOffset`.
   *
   * @returns the entry number, or -1 when every entry is larger (use position 0)
   */
  floorEntry(relativeOffset: number): number {
    let low = 0;
    let high = this.#count - 1;
    let found = -1;
    while (low <= high) {
      const middle = (low + high) >>> 1;
      if (this.#entries[2 * middle] <= relativeOffset) {
        found = middle;
        low = middle + 1;
      } else high = middle - 1;
    }
    return found;
  }

  /** Position of the batch to start scanning from for `relativeOffset`. */
  floorPosition(relativeOffset: number): number {
    const entry = this.floorEntry(relativeOffset);
    return entry < 0 ? 0 : this.#entries[2 * entry + 1];
  }

  /**
   * True when the file is whole entries, strictly increasing in both
   * fields, and every position lies before `logBytes` and every relative
   * offset before `relativeEnd`.
   */
  isSane(logBytes: number, relativeEnd: number): boolean {
    if (this.#torn) return false;
    for (let i = 0; i < this.#count; i++) {
      const relative = this.#entries[2 * i];
      const position = this.#entries[2 * i + 1];
      if (position >= logBytes || relative >= relativeEnd) return false;
      if (
        i > 0 && (relative <= this.#entries[2 * i - 2] ||
          position <= this.#entries[2 * i - 1])
      ) return false;
    }
    return true;
  }

  /** True when the entries equal `pairs` (relativeOffset, position, ...). */
  equals(pairs: number[]): boolean {
    if (this.#torn || pairs.length !== 2 * this.#count) return false;
    for (let i = 0; i < pairs.length; i++) {
      if (this.#entries[i] !== pairs[i]) return false;
    }
    return true;
  }

  /** Replaces the file and the entries with `pairs` (relativeOffset, position, ...). */
  rewrite(pairs: number[]): void {
    const count = pairs.length / 2;
    const bytes = new Uint8Array(count * OFFSET_INDEX_ENTRY_BYTES);
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < pairs.length; i++) {
      view.setUint32(4 * i, pairs[i], true);
    }
    this.#file.truncate(0);
    this.#count = 0;
    this.#file.write(bytes, 0);
    this.#grow(count);
    this.#entries.set(pairs);
    this.#count = count;
    this.#torn = false;
  }

  close(): void {
    this.#file.close();
  }

  #grow(count: number): void {
    if (2 * count <= this.#entries.length) return;
    let length = this.#entries.length;
    while (length < 2 * count) length *= 2;
    const entries = new Uint32Array(length);
    entries.set(this.#entries.subarray(0, 2 * this.#count));
    this.#entries = entries;
  }
}
