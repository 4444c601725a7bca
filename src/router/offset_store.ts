/**
 * Committed offsets of consumer groups, one file per group:
 * data/groups/<group>.json, always replaced atomically.
 *
 *   { "name": "billing", "mode": "stream",
 *     "offsets": { "orders": { "0": 1200, "2": 87 } } }
 *   { "name": "mailer", "mode": "queue", "offsets": {},
 *     "settings": { "topic": "orders", "mode": "queue", "from": "earliest",
 *                   "filter": null, "queue": { "ackTimeoutMs": 30000, ... } } }
 *
 * `settings` is present for groups created with them (`createGroup`); a
 * file without it is a stream group made by a member's join. A queue
 * group's per-record state lives with its partitions, not here.
 *
 * Writes are coalesced per group: while one write runs, every commit that
 * arrives joins the next write, which snapshots the state when it starts.
 * A commit resolves once a write that started after it has finished.
 */
import type { GroupMode, GroupSettings } from "../broker.ts";
import type { Logger } from "../logger.ts";
import type { FileSystem } from "../runtime/types.ts";

/** What a group file holds. */
export interface StoredGroup {
  name: string;
  mode: GroupMode;
  /** topic → partition (as a decimal string) → next offset to consume. */
  offsets: Record<string, Record<string, number>>;
  /** How the group was created; absent for a stream group made by a join. */
  settings?: GroupSettings;
}

const storedModes: readonly GroupMode[] = ["stream", "queue", "key_shared"];

interface Deferred {
  promise: Promise<void>;
  resolve: () => void;
  reject: (error: unknown) => void;
}

function deferred(): Deferred {
  let resolve!: () => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<void>((yes, no) => {
    resolve = yes;
    reject = no;
  });
  return { promise, resolve, reject };
}

/** Per-group write state: the write running and the one waiting to start. */
interface GroupWriter {
  running: Promise<void> | null;
  next: Deferred | null;
}

/** Loads and saves group files. */
export class OffsetStore {
  readonly #fs: FileSystem;
  readonly #dir: string;
  readonly #log: Logger;
  readonly #writers = new Map<string, GroupWriter>();

  /**
   * @param fs file system
   * @param dataDir the broker's data directory; groups live in its `groups/`
   */
  constructor(fs: FileSystem, dataDir: string, log: Logger) {
    this.#fs = fs;
    this.#dir = `${dataDir}/groups`;
    this.#log = log;
  }

  /** Reads every group file; unreadable ones are skipped with a warning. */
  load(): StoredGroup[] {
    this.#fs.mkdirs(this.#dir);
    const groups: StoredGroup[] = [];
    for (const entry of this.#fs.list(this.#dir)) {
      if (!entry.isFile || !entry.name.endsWith(".json")) continue;
      const path = `${this.#dir}/${entry.name}`;
      try {
        const parsed = JSON.parse(
          new TextDecoder().decode(this.#fs.readFile(path)),
        ) as StoredGroup;
        if (
          typeof parsed.name !== "string" || !storedModes.includes(parsed.mode)
        ) {
          throw new Error("not a group file");
        }
        const settings = parsed.settings;
        if (
          settings !== undefined &&
          (typeof settings !== "object" || settings === null ||
            settings.mode !== parsed.mode)
        ) {
          throw new Error("settings do not match the group's mode");
        }
        if (parsed.mode !== "stream" && settings === undefined) {
          throw new Error("queue group without settings");
        }
        groups.push({
          name: parsed.name,
          mode: parsed.mode,
          offsets: parsed.offsets ?? {},
          ...(settings === undefined ? {} : { settings }),
        });
      } catch (error) {
        this.#log.warn("skipping group file", { path, error });
      }
    }
    return groups;
  }

  /**
   * Saves a group, coalescing with other saves of the same group.
   *
   * @param name the group
   * @param snapshot called when the write starts, so it sees every change made until then
   * @returns resolves once a write that includes the current state is durable
   */
  save(name: string, snapshot: () => StoredGroup): Promise<void> {
    let writer = this.#writers.get(name);
    if (writer === undefined) {
      writer = { running: null, next: null };
      this.#writers.set(name, writer);
    }
    writer.next ??= deferred();
    const waiting = writer.next.promise;
    if (writer.running === null) this.#startWrite(name, writer, snapshot);
    return waiting;
  }

  /** Resolves once every save requested so far is on disk. */
  async drain(): Promise<void> {
    for (const writer of [...this.#writers.values()]) {
      while (writer.running !== null) {
        await writer.running.catch(() => {});
      }
    }
  }

  /** Deletes a group's file. */
  remove(name: string): void {
    this.#fs.remove(this.#path(name));
  }

  #path(name: string): string {
    return `${this.#dir}/${encodeURIComponent(name)}.json`;
  }

  #startWrite(
    name: string,
    writer: GroupWriter,
    snapshot: () => StoredGroup,
  ): void {
    const covered = writer.next!;
    writer.next = null;
    const bytes = new TextEncoder().encode(JSON.stringify(snapshot()) + "\n");
    writer.running = this.#fs.writeFileAtomicAsync(this.#path(name), bytes)
      .then(covered.resolve, covered.reject)
      .finally(() => {
        writer.running = null;
        if (writer.next !== null) this.#startWrite(name, writer, snapshot);
        else this.#writers.delete(name);
      });
  }
}
