/**
 * The delay journal of one partition: an append-only file of entries under
 * `<partition dir>/delayed/`, replayed on open, rewritten with only the
 * pending records when mostly dead (compaction).
 *
 * ```
 * File journal-<generation>.log, entries back to back, little-endian
 *  0  4 length       bytes after this field
 *  4  4 crc          CRC-32C of the bytes after this field
 *  8  1 type
 * 1 schedule   9 8 due (float64, broker ms)  17 1 idLength, id (ASCII),
 *              then the record as a one-record batch, delay-id header added
 * 2 cancel     9 1 idLength, id
 * 3 intent     9 4 seq  13 8 logEndOffset (float64)  21 4 count,
 *              then count × (1 idLength, id): about to append these
 * 4 fired      9 4 seq  13 4 count, then count × (1 idLength, id): intent
 *              seq is finished; these ids were appended (count 0: all of them)
 * ```
 *
 * A torn or garbled tail (a crash in the middle of a write) ends the
 * replay: the file is cut there. Compaction writes `journal-<g+1>.tmp`,
 * fsyncs it, renames it to `.log`, fsyncs the directory and removes the
 * old generation; on open the highest `.log` wins and leftovers go.
 */
import { crc32c } from "../log/_crc32c.ts";
import type { FileHandle, FileSystem } from "../runtime/types.ts";
import type { Logger } from "../logger.ts";
import { readU32, writeU32 } from "../log/_bytes.ts";

/** Entry types. */
export const ENTRY_SCHEDULE = 1;
/** A pending record was cancelled. */
export const ENTRY_CANCEL = 2;
/** Records are about to be appended to the log. */
export const ENTRY_INTENT = 3;
/** An intent is finished. */
export const ENTRY_FIRED = 4;

/** Largest entry accepted on replay; anything larger is garbage. */
const ENTRY_BYTES_MAX = 1 << 30;
const READ_CHUNK_BYTES = 1 << 22;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function frame(body: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(8 + body.length);
  writeU32(bytes, 0, 4 + body.length);
  bytes.set(body, 8);
  writeU32(bytes, 4, crc32c(bytes, 8, bytes.length));
  return bytes;
}

function idBytes(id: string): Uint8Array {
  const bytes = encoder.encode(id);
  if (bytes.length > 255) {
    throw new RangeError(`Delay id too long: ${bytes.length} bytes`);
  }
  return bytes;
}

/** A schedule entry: the record as a one-record batch, due at `due`. */
export function scheduleEntry(
  id: string,
  due: number,
  batch: Uint8Array,
): Uint8Array {
  const name = idBytes(id);
  const body = new Uint8Array(10 + name.length + batch.length);
  body[0] = ENTRY_SCHEDULE;
  new DataView(body.buffer).setFloat64(1, due, true);
  body[9] = name.length;
  body.set(name, 10);
  body.set(batch, 10 + name.length);
  return frame(body);
}

/** A cancel entry. */
export function cancelEntry(id: string): Uint8Array {
  const name = idBytes(id);
  const body = new Uint8Array(2 + name.length);
  body[0] = ENTRY_CANCEL;
  body[1] = name.length;
  body.set(name, 2);
  return frame(body);
}

function idListBody(
  type: number,
  head: (view: DataView) => void,
  headBytes: number,
  ids: string[],
): Uint8Array {
  const names = ids.map(idBytes);
  const size = names.reduce((n, name) => n + 1 + name.length, headBytes + 4);
  const body = new Uint8Array(size);
  const view = new DataView(body.buffer);
  body[0] = type;
  head(view);
  view.setUint32(headBytes, ids.length, true);
  let p = headBytes + 4;
  for (const name of names) {
    body[p] = name.length;
    body.set(name, p + 1);
    p += 1 + name.length;
  }
  return frame(body);
}

/** An intent entry: `ids` are about to be appended at `logEndOffset` or later. */
export function intentEntry(
  seq: number,
  logEndOffset: number,
  ids: string[],
): Uint8Array {
  return idListBody(
    ENTRY_INTENT,
    (view) => {
      view.setUint32(1, seq, true);
      view.setFloat64(5, logEndOffset, true);
    },
    13,
    ids,
  );
}

/** A fired entry: intent `seq` is finished, `ids` appended (empty: all). */
export function firedEntry(seq: number, ids: string[]): Uint8Array {
  return idListBody(
    ENTRY_FIRED,
    (view) => view.setUint32(1, seq, true),
    5,
    ids,
  );
}

/** One entry as replay sees it; byte fields are copies or strings. */
export type JournalEntry =
  | { type: 1; id: string; due: number; position: number; length: number }
  | { type: 2; id: string }
  | { type: 3; seq: number; logEndOffset: number; ids: string[] }
  | { type: 4; seq: number; ids: string[] };

/**
 * Parses the entry body in [start, end) of `bytes` (type byte first).
 * Returns null for an unknown type or a body that does not fit.
 */
function parseEntry(
  bytes: Uint8Array,
  start: number,
  end: number,
  position: number,
): JournalEntry | null {
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  const readId = (p: number): [string, number] | null => {
    const length = bytes[p];
    if (p + 1 + length > end) return null;
    return [
      decoder.decode(bytes.subarray(p + 1, p + 1 + length)),
      p + 1 + length,
    ];
  };
  const readIds = (p: number): string[] | null => {
    if (p + 4 > end) return null;
    const count = view.getUint32(p, true);
    const ids: string[] = [];
    p += 4;
    for (let i = 0; i < count; i++) {
      if (p >= end) return null;
      const read = readId(p);
      if (read === null) return null;
      ids.push(read[0]);
      p = read[1];
    }
    return p === end ? ids : null;
  };

  switch (bytes[start]) {
    case ENTRY_SCHEDULE: {
      if (end - start < 10) return null;
      const read = readId(start + 9);
      if (read === null) return null;
      return {
        type: 1,
        id: read[0],
        due: view.getFloat64(start + 1, true),
        position,
        length: end - start + 8,
      };
    }
    case ENTRY_CANCEL: {
      if (end - start < 2) return null;
      const read = readId(start + 1);
      return read && read[1] === end ? { type: 2, id: read[0] } : null;
    }
    case ENTRY_INTENT: {
      if (end - start < 13) return null;
      const ids = readIds(start + 13);
      if (ids === null) return null;
      return {
        type: 3,
        seq: view.getUint32(start + 1, true),
        logEndOffset: view.getFloat64(start + 5, true),
        ids,
      };
    }
    case ENTRY_FIRED: {
      if (end - start < 5) return null;
      const ids = readIds(start + 5);
      if (ids === null) return null;
      return { type: 4, seq: view.getUint32(start + 1, true), ids };
    }
    default:
      return null;
  }
}

/**
 * Reads a schedule entry back: its id and the one-record batch.
 *
 * @param entry the whole entry as written, length field included
 * @throws {RangeError} when it is not an intact schedule entry
 */
export function readScheduleEntry(
  entry: Uint8Array,
): { id: string; due: number; batch: Uint8Array } {
  if (
    entry.length < 18 || readU32(entry, 0) !== entry.length - 4 ||
    readU32(entry, 4) !== crc32c(entry, 8, entry.length) ||
    entry[8] !== ENTRY_SCHEDULE
  ) {
    throw new RangeError("Delay journal entry is not an intact schedule entry");
  }
  const idLength = entry[17];
  return {
    id: decoder.decode(entry.subarray(18, 18 + idLength)),
    due: new DataView(entry.buffer, entry.byteOffset).getFloat64(9, true),
    batch: entry.subarray(18 + idLength),
  };
}

/**
 * Calls `visit` with every intact entry of the file in order: its body
 * [start, end) in a buffer reused between calls, and its position in the
 * file. Returns where the intact entries end.
 */
function scanFile(
  file: FileHandle,
  visit: (
    bytes: Uint8Array,
    start: number,
    end: number,
    position: number,
  ) => void,
): number {
  const size = file.size();
  let buffer = new Uint8Array(Math.min(READ_CHUNK_BYTES, Math.max(size, 8)));
  let bufferAt = 0;
  let have = 0;
  while (true) {
    let read = -1;
    if (bufferAt + have < size && have < buffer.length) {
      read = file.read(buffer.subarray(have), bufferAt + have);
      have += read;
    }
    let p = 0;
    while (have - p >= 8) {
      const length = readU32(buffer, p);
      if (length < 5 || length > ENTRY_BYTES_MAX) return bufferAt + p;
      if (have - p < 4 + length) break;
      if (readU32(buffer, p + 4) !== crc32c(buffer, p + 8, p + 4 + length)) {
        return bufferAt + p;
      }
      visit(buffer, p + 8, p + 4 + length, bufferAt + p);
      p += 4 + length;
    }
    if (bufferAt + have >= size || read === 0) return bufferAt + p;

    // Keep the partial entry and read on, growing for a large one.
    const needed = have - p >= 4 ? 4 + readU32(buffer, p) : 8;
    if (needed > ENTRY_BYTES_MAX) return bufferAt + p;
    if (needed > buffer.length) {
      const grown = new Uint8Array(needed);
      grown.set(buffer.subarray(p, have));
      buffer = grown;
    } else buffer.copyWithin(0, p, have);
    bufferAt += p;
    have -= p;
  }
}

/** The journal file of one partition's delayed records. */
export class DelayJournal {
  readonly #fs: FileSystem;
  readonly #dir: string;
  readonly #log: Logger;
  #generation: number;
  #file: FileHandle;
  #size: number;
  #syncRunning: Promise<void> | null = null;
  #syncQueued: Promise<void> | null = null;

  private constructor(
    fs: FileSystem,
    dir: string,
    log: Logger,
    generation: number,
    file: FileHandle,
  ) {
    this.#fs = fs;
    this.#dir = dir;
    this.#log = log;
    this.#generation = generation;
    this.#file = file;
    this.#size = file.size();
  }

  /**
   * Opens the journal in `dir` (created if missing), removing files a
   * compaction left behind.
   */
  static open(fs: FileSystem, dir: string, log: Logger): DelayJournal {
    fs.mkdirs(dir);
    let generation = 0;
    const generations: number[] = [];
    for (const entry of fs.list(dir)) {
      const match = /^journal-(\d+)\.(log|tmp)$/.exec(entry.name);
      if (!match || !entry.isFile) continue;
      if (match[2] === "tmp") fs.remove(`${dir}/${entry.name}`);
      else generations.push(Number(match[1]));
    }
    generations.sort((a, b) => a - b);
    if (generations.length > 0) generation = generations.at(-1)!;
    for (const old of generations.slice(0, -1)) {
      fs.remove(`${dir}/${journalName(old)}`);
    }
    const created = generations.length === 0;
    if (created) generation = 1;
    const file = fs.open(`${dir}/${journalName(generation)}`, "readWrite");
    if (created) fs.syncDirectory(dir);
    return new DelayJournal(fs, dir, log, generation, file);
  }

  /** Bytes in the journal file. */
  get size(): number {
    return this.#size;
  }

  /** True while an fsync runs or waits. */
  get syncing(): boolean {
    return this.#syncRunning !== null || this.#syncQueued !== null;
  }

  /**
   * Calls `visit` with every entry in order; cuts a torn or garbled tail
   * (bad length or CRC) and skips intact entries it does not understand.
   */
  replay(visit: (entry: JournalEntry) => void): void {
    const end = scanFile(this.#file, (bytes, start, stop, position) => {
      const entry = parseEntry(bytes, start, stop, position);
      // Intact but not understood: written by a newer version. Skipped
      // rather than cut, since what follows it is good.
      if (entry === null) {
        this.#log.warn("delay journal entry of unknown form skipped", {
          path: this.#file.path,
          position,
          type: bytes[start],
        });
      } else visit(entry);
    });
    if (end < this.#size) {
      this.#log.warn("delay journal cut at a torn or garbled entry", {
        path: this.#file.path,
        position: end,
        bytes: this.#size - end,
      });
      this.#file.truncate(end);
      this.#file.syncNow();
      this.#size = end;
    }
  }

  /**
   * Appends entries (written back to back); returns where they start. Not
   * durable until a {@linkcode sync} started afterwards resolves.
   */
  append(entries: Uint8Array): number {
    const position = this.#size;
    this.#file.write(entries, position);
    this.#size += entries.length;
    return position;
  }

  /** Reads `length` bytes at `position`. */
  read(position: number, length: number): Uint8Array {
    const bytes = new Uint8Array(length);
    const read = this.#file.read(bytes, position);
    if (read !== length) {
      throw new RangeError(
        `Delay journal read short: ${read} of ${length} bytes at ${position} in ${this.#file.path}`,
      );
    }
    return bytes;
  }

  /**
   * Resolves once every byte appended before the call is durable.
   * Concurrent callers share fsyncs: at most one runs and one waits.
   */
  sync(): Promise<void> {
    if (this.#syncQueued) return this.#syncQueued;
    if (this.#syncRunning === null) return this.#startSync();
    const queued: Promise<void> = this.#syncRunning.then(
      (): Promise<void> => this.#startQueued(queued),
      (): Promise<void> => this.#startQueued(queued),
    );
    this.#syncQueued = queued;
    return queued;
  }

  #startQueued(queued: Promise<void>): Promise<void> {
    if (this.#syncQueued === queued) this.#syncQueued = null;
    return this.#startSync();
  }

  #startSync(): Promise<void> {
    const running = this.#file.sync().finally(() => {
      if (this.#syncRunning === running) this.#syncRunning = null;
    });
    this.#syncRunning = running;
    return running;
  }

  /** Synchronous fsync, for close and recovery. */
  syncNow(): void {
    this.#file.syncNow();
  }

  /**
   * Rewrites the journal with only the schedule entries `keep` accepts.
   * `keep` gets each entry's id and position; the new positions of the
   * kept entries are passed to `moved` only once the new file is in place.
   * Call it with no fsync running and no intent unfinished.
   */
  compact(
    keep: (id: string, position: number) => boolean,
    moved: (id: string, position: number) => void,
  ): void {
    const next = this.#generation + 1;
    const tmpPath = `${this.#dir}/journal-${next}.tmp`;
    this.#fs.remove(tmpPath);
    const out = this.#fs.open(tmpPath, "readWrite");
    const moves: [string, number][] = [];
    let written = 0;
    try {
      // Copy kept entries through a buffer so that writes are large.
      let pending = new Uint8Array(1 << 20);
      let used = 0;
      const flush = () => {
        out.write(pending.subarray(0, used), written);
        written += used;
        used = 0;
      };
      scanFile(this.#file, (bytes, start, end, position) => {
        if (bytes[start] !== ENTRY_SCHEDULE) return;
        const entry = parseEntry(bytes, start, end, position);
        if (entry === null || entry.type !== ENTRY_SCHEDULE) return;
        if (!keep(entry.id, position)) return;
        const length = end - start + 8;
        if (used + length > pending.length) flush();
        if (length > pending.length) pending = new Uint8Array(length);
        moves.push([entry.id, written + used]);
        pending.set(bytes.subarray(start - 8, end), used);
        used += length;
      });
      flush();
      out.syncNow();
    } finally {
      out.close();
    }

    const path = `${this.#dir}/${journalName(next)}`;
    this.#fs.rename(tmpPath, path);
    this.#fs.syncDirectory(this.#dir);
    const oldPath = this.#file.path;
    this.#file.close();
    this.#file = this.#fs.open(path, "readWrite");
    this.#fs.remove(oldPath);
    const before = this.#size;
    this.#size = written;
    this.#generation = next;
    for (const [id, position] of moves) moved(id, position);
    this.#log.debug("delay journal compacted", {
      bytesBefore: before,
      bytesAfter: written,
      records: moves.length,
    });
  }

  /** Closes the file; call {@linkcode syncNow} first to make it durable. */
  close(): void {
    this.#file.close();
  }
}

function journalName(generation: number): string {
  return `journal-${generation}.log`;
}
