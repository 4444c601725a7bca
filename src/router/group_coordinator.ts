/**
 * Consumer groups in stream mode: members, cooperative sticky assignment,
 * generations, session timeouts, seeks and committed offsets.
 *
 * Assignment is incremental and sticky. On a join, a leave or a session
 * timeout the group's generation goes up and each topic's partitions get a
 * new target owner: every member keeps what it has up to its quota (counts
 * per member differ by at most one), and only the partitions over quota or
 * left by a departed member move. A member keeping its partitions hears
 * nothing. A partition that moves is first revoked from its owner
 * (`onRevocation` with just that partition); only once the owner has let
 * go (its `onRevocation` returned, or the promise it returned settled, or
 * the session timeout passed) is it handed to the new owner with
 * `onAssignment`. So no two members ever hold one partition at once.
 *
 * `onAssignment` lists the partitions a member gains, with where to start:
 * the committed offset, clamped into [logStartOffset, logEndOffset]; else
 * the position chosen the first time the partition was assigned in this
 * process; else the log start or end, as the member asked when it joined.
 * A member that owns nothing hears `onAssignment` with no partitions when it
 * joins and whenever it loses its last partition, not again while it stays
 * empty.
 *
 * Generations fence commits. Each partition a member owns carries the
 * generation it was handed out (or last sought) in; the member's own
 * generation is that of its latest assignment. A commit is accepted when
 * the member owns the partition and its generation lies between the two,
 * so a member that kept its partitions across rebalances commits with the
 * generation it already has, while a zombie (an older session of a member
 * id that reconnected) or a commit from before a seek is refused.
 *
 * A member whose connection dropped ({@linkcode GroupCoordinator.disconnect})
 * keeps its partitions, unfetched, for the session timeout; rejoining with
 * the same id inside it gives them back, else they move to the others.
 *
 * Coordinator steps of one group (rebalance, hand-out, seek) run one at a
 * time, in the order asked. `mode` and the settings a group was created
 * with are stored with every group, so queue groups sit beside stream
 * groups; this class keeps only their settings (their members and
 * deliveries are src/router/queue_dispatcher.ts's).
 */
import type {
  GroupDescription,
  GroupMode,
  GroupPartitionDescription,
  GroupSettings,
  GroupSummary,
  MemberHandle,
  StartPosition,
} from "../broker.ts";
import { DakgharError } from "../errors.ts";
import type { Logger } from "../logger.ts";
import type { OffsetStore, StoredGroup } from "./offset_store.ts";

/** The log bounds of one partition, as the coordinator needs them. */
export interface LogRange {
  logStartOffset: number;
  logEndOffset: number;
}

/** Default for {@linkcode GroupCoordinatorOptions.sessionTimeoutMs}. */
export const defaultSessionTimeoutMs = 45_000;

/** What the coordinator asks of the rest of the router. */
export interface GroupCoordinatorOptions {
  store: OffsetStore;
  /** Partition count of a topic. Throws UnknownTopicError for an unknown one. */
  partitionCount(topic: string): number;
  /** Log bounds of every partition of a topic, by partition. */
  logRanges(topic: string): Promise<LogRange[]>;
  /**
   * Append time of the batch holding `offset`, for lag by age; undefined
   * when there is no record there yet. Absent: every lagMs is 0.
   */
  appendTimeAt?(
    topic: string,
    partition: number,
    offset: number,
  ): Promise<number | undefined>;
  /**
   * How long a disconnected member keeps its partitions, and how long a
   * revocation may take before the partitions move anyway (default 45 s).
   */
  sessionTimeoutMs?: number;
  /** Clock for lag by age; defaults to Date.now. */
  now?: () => number;
  log: Logger;
}

/** A partition a member holds. */
interface Owned {
  /** Generation it was handed out or last sought in. */
  since: number;
  /** False until `onAssignment` has told the member about it. */
  announced: boolean;
  /** True once revoked, until the member lets go. */
  releasing: boolean;
}

interface Member {
  id: string;
  handle: MemberHandle;
  topic: string;
  from: StartPosition;
  /** Generation of the latest assignment or seek this member heard. */
  generation: number;
  owned: Map<number, Owned>;
  connected: boolean;
  /** Session timeout of a disconnected member. */
  expiry: ReturnType<typeof setTimeout> | undefined;
  /** True once told it owns nothing, until it gains a partition. */
  toldEmpty: boolean;
}

interface Group {
  name: string;
  mode: GroupMode;
  generation: number;
  members: Map<string, Member>;
  /** topic → partition → committed offset. */
  committed: Map<string, Map<number, number>>;
  /** topic → partition → start chosen when first assigned without a commit. */
  started: Map<string, Map<number, number>>;
  /** topic → partition → member id it should go to. */
  targets: Map<string, Map<number, string>>;
  /** Tail of this group's chain of steps. */
  steps: Promise<void>;
  /** Set when created with settings (always for queue groups). */
  settings?: GroupSettings;
}

/** Where a seek lands, per partition. */
export interface SeekPosition {
  partition: number;
  offset: number;
}

const groupNamePattern = /^[A-Za-z0-9._-]{1,200}$/;

/**
 * Checks a group name: 1–200 of A–Z a–z 0–9 . _ -, not "." or "..".
 *
 * @throws DakgharError bad_request naming the group
 */
export function validateGroupName(name: string): void {
  if (!groupNamePattern.test(name) || name === "." || name === "..") {
    throw new DakgharError(
      "bad_request",
      `Invalid group name: ${JSON.stringify(name)}`,
      { group: name },
    );
  }
}

/**
 * Balanced sticky assignment of `count` partitions over `memberIds`: every
 * member keeps its previous partitions up to its quota (⌊count/n⌋ or one
 * more; the members holding most get the larger quotas), and the rest go,
 * lowest first, to members under quota in id order.
 *
 * @param previous partition → member id before this change
 * @returns member id → partitions, ascending
 */
export function stickyAssign(
  memberIds: string[],
  count: number,
  previous: ReadonlyMap<number, string> = new Map(),
): Map<string, number[]> {
  const ids = [...memberIds].sort();
  const result = new Map<string, number[]>();
  if (ids.length === 0) return result;
  const kept = new Map<string, number[]>(ids.map((id) => [id, []]));
  for (const [partition, id] of previous) {
    if (partition < count) kept.get(id)?.push(partition);
  }
  for (const list of kept.values()) list.sort((a, b) => a - b);
  const base = Math.floor(count / ids.length);
  const extra = count % ids.length;
  const byHolding = [...ids].sort((a, b) =>
    kept.get(b)!.length - kept.get(a)!.length || (a < b ? -1 : 1)
  );
  const quota = new Map<string, number>();
  byHolding.forEach((id, index) =>
    quota.set(id, base + (index < extra ? 1 : 0))
  );
  const taken = new Set<number>();
  for (const id of ids) {
    const keep = kept.get(id)!.slice(0, quota.get(id));
    result.set(id, keep);
    for (const p of keep) taken.add(p);
  }
  const free: number[] = [];
  for (let p = 0; p < count; p++) if (!taken.has(p)) free.push(p);
  for (const id of ids) {
    const list = result.get(id)!;
    while (list.length < quota.get(id)!) list.push(free.shift()!);
    list.sort((a, b) => a - b);
  }
  return result;
}

function clamp(offset: number, range: LogRange): number {
  return Math.min(Math.max(offset, range.logStartOffset), range.logEndOffset);
}

function sorted(partitions: Iterable<number>): number[] {
  return [...partitions].sort((a, b) => a - b);
}

/** Owns every group of the broker. Runs on the main thread, inside the router. */
export class GroupCoordinator {
  readonly #options: GroupCoordinatorOptions;
  readonly #groups = new Map<string, Group>();
  readonly #sessionTimeoutMs: number;
  /** Bounds on revocations still waiting for their member, cleared on close. */
  readonly #revocationTimers = new Set<ReturnType<typeof setTimeout>>();
  #closed = false;

  constructor(options: GroupCoordinatorOptions) {
    this.#options = options;
    this.#sessionTimeoutMs = options.sessionTimeoutMs ??
      defaultSessionTimeoutMs;
  }

  /** Loads committed offsets from the group files. */
  load(): void {
    for (const stored of this.#options.store.load()) {
      const group = this.#newGroup(stored.name, stored.mode);
      if (stored.settings !== undefined) group.settings = stored.settings;
      for (const [topic, partitions] of Object.entries(stored.offsets)) {
        const offsets = new Map<number, number>();
        for (const [partition, offset] of Object.entries(partitions)) {
          offsets.set(Number(partition), offset);
        }
        group.committed.set(topic, offsets);
      }
      this.#groups.set(group.name, group);
    }
  }

  /**
   * Adds `member` to a stream group reading `topic` and rebalances. A
   * member id already in the group is taken over by the new handle: it
   * keeps the partitions it owns (they are handed to the new handle in a
   * new generation, fencing the old one), and the old handle, if still
   * connected, hears `onRevocation` for them.
   *
   * @returns resolves once the partitions free to hand out have been
   * @throws UnknownTopicError, DakgharError bad_request
   */
  joinGroup(
    name: string,
    topic: string,
    member: MemberHandle,
    from: StartPosition,
  ): Promise<void> {
    validateGroupName(name);
    this.#options.partitionCount(topic);
    if (from !== "earliest" && from !== "latest") {
      throw new DakgharError("bad_request", `Invalid start position: ${from}`);
    }
    const group = this.#group(name);
    if (group.mode !== "stream") {
      throw new DakgharError(
        "bad_request",
        `Cannot join group ${name} as a stream member: it is a ${group.mode} group`,
        { group: name, mode: group.mode },
      );
    }
    const previous = group.members.get(member.id);
    if (previous !== undefined && previous.topic !== topic) {
      this.#remove(group, previous, true);
    } else if (previous !== undefined) {
      clearTimeout(previous.expiry);
      previous.expiry = undefined;
      const stillHeld = sorted(
        [...previous.owned].filter(([, o]) => o.announced && !o.releasing)
          .map(([p]) => p),
      );
      if (previous.connected && stillHeld.length > 0) {
        this.#callRevocation(group, previous, stillHeld);
      }
      previous.handle = member;
      previous.from = from;
      previous.connected = true;
      previous.toldEmpty = false;
      group.generation++;
      for (const owned of previous.owned.values()) {
        if (owned.releasing) continue;
        owned.announced = false;
        owned.since = group.generation;
      }
      this.#options.log.info("member rejoined", {
        group: name,
        member: member.id,
        partitions: stillHeld,
      });
      return this.#rebalance(group, false);
    }
    group.members.set(member.id, {
      id: member.id,
      handle: member,
      topic,
      from,
      generation: group.generation,
      owned: new Map(),
      connected: true,
      expiry: undefined,
      toldEmpty: false,
    });
    this.#options.log.info("member joined", {
      group: name,
      member: member.id,
      topic,
    });
    return this.#rebalance(group, true);
  }

  /**
   * Removes a member at once and rebalances the rest. No error when absent,
   * nor when `handle` is given and another handle took the member id over.
   * The member must have stopped fetching: its partitions move at once.
   */
  leaveGroup(
    name: string,
    memberId: string,
    handle?: MemberHandle,
  ): Promise<void> {
    const group = this.#groups.get(name);
    const member = group?.members.get(memberId);
    if (group === undefined || member === undefined) return Promise.resolve();
    if (handle !== undefined && member.handle !== handle) {
      return Promise.resolve();
    }
    this.#remove(group, member, false);
    this.#options.log.info("member left", { group: name, member: memberId });
    return this.#rebalance(group, true);
  }

  /**
   * Marks a member's connection as lost: it keeps its partitions, unfetched,
   * for the session timeout, then leaves. Rejoining with the same id before
   * then cancels the timeout. No-op when `handle` is no longer the member's.
   */
  disconnect(name: string, memberId: string, handle: MemberHandle): void {
    const group = this.#groups.get(name);
    const member = group?.members.get(memberId);
    if (group === undefined || member === undefined) return;
    if (member.handle !== handle || !member.connected) return;
    member.connected = false;
    clearTimeout(member.expiry);
    if (this.#closed) return;
    member.expiry = setTimeout(() => {
      if (group.members.get(memberId) !== member || member.connected) return;
      this.#remove(group, member, false);
      this.#options.log.info("member session timed out", {
        group: name,
        member: memberId,
      });
      this.#rebalance(group, true).catch((error) =>
        this.#options.log.warn("rebalance after session timeout failed", {
          group: name,
          error,
        })
      );
    }, this.#sessionTimeoutMs);
    this.#options.log.info("member disconnected", {
      group: name,
      member: memberId,
      sessionTimeoutMs: this.#sessionTimeoutMs,
    });
  }

  /**
   * Records a commit after checking the member owns the partition and
   * that `generation` is neither older than the partition's hand-out or
   * last seek nor newer than the member's latest assignment. The check is
   * synchronous; the promise resolves once the commit is on disk.
   *
   * @throws DakgharError unknown_group, stale_generation, not_assigned, bad_request
   */
  commit(
    name: string,
    topic: string,
    partition: number,
    offset: number,
    memberId: string,
    generation: number,
  ): Promise<void> {
    const group = this.#groups.get(name);
    if (group === undefined) {
      throw new DakgharError("unknown_group", `Group not found: ${name}`, {
        group: name,
      });
    }
    const member = group.members.get(memberId);
    const owned = member?.topic === topic
      ? member.owned.get(partition)
      : undefined;
    if (member === undefined || owned === undefined) {
      throw new DakgharError(
        "not_assigned",
        `Cannot commit to group ${name}: ${topic}/${partition} is not assigned to member ${memberId}`,
        { group: name, topic, partition, member: memberId },
      );
    }
    if (generation < owned.since || generation > member.generation) {
      throw new DakgharError(
        "stale_generation",
        `Cannot commit to group ${name}: generation ${generation} is not current for ${topic}/${partition}, which is at ${owned.since}`,
        {
          group: name,
          topic,
          partition,
          generation,
          currentGeneration: owned.since,
        },
      );
    }
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw new DakgharError("bad_request", `Invalid offset: ${offset}`, {
        offset,
      });
    }
    this.#committedOf(group, topic).set(partition, offset);
    return this.#options.store.save(name, () => this.#snapshot(group));
  }

  /**
   * Moves a group's committed offsets on `topic` to `positions`, even
   * while members consume: each owner hears `onSeek` and continues from
   * there, and the partition's generation goes up so that commits made
   * before the seek are refused. A group that does not exist yet is
   * created with these offsets.
   *
   * @returns the new generation, once the offsets are on disk
   * @throws UnknownTopicError, DakgharError bad_request
   */
  seek(
    name: string,
    topic: string,
    positions: SeekPosition[],
  ): Promise<number> {
    validateGroupName(name);
    const count = this.#options.partitionCount(topic);
    for (const { partition, offset } of positions) {
      if (
        !Number.isSafeInteger(partition) || partition < 0 || partition >= count
      ) {
        throw new DakgharError(
          "unknown_partition",
          `Partition not found: ${topic}/${partition}`,
          { topic, partition },
        );
      }
      if (!Number.isSafeInteger(offset) || offset < 0) {
        throw new DakgharError("bad_request", `Invalid offset: ${offset}`, {
          offset,
        });
      }
    }
    const group = this.#group(name);
    const step = async () => {
      group.generation++;
      const generation = group.generation;
      const committed = this.#committedOf(group, topic);
      for (const { partition, offset } of positions) {
        committed.set(partition, offset);
        group.started.get(topic)?.delete(partition);
        for (const member of group.members.values()) {
          const owned = member.topic === topic
            ? member.owned.get(partition)
            : undefined;
          if (owned === undefined) continue;
          owned.since = generation;
          member.generation = generation;
          // Not yet announced or being released: the next owner starts
          // from the committed offset set above.
          if (!owned.announced || owned.releasing || !member.connected) {
            continue;
          }
          try {
            member.handle.onSeek?.({ generation, topic, partition, offset });
          } catch (error) {
            this.#options.log.error("onSeek failed", {
              group: name,
              member: member.id,
              error,
            });
          }
        }
      }
      this.#options.log.info("group sought", {
        group: name,
        topic,
        generation,
        positions,
      });
      await this.#options.store.save(name, () => this.#snapshot(group));
      return generation;
    };
    const run = group.steps.then(step, step);
    group.steps = run.then(() => {}, () => {});
    return run;
  }

  /**
   * A group's members, generation and per-partition progress: lag in
   * records and, as lagMs, the age of the first record not committed.
   *
   * @throws DakgharError unknown_group
   */
  /**
   * The committed offsets of `group` on `topic`, by partition; empty when
   * the group is unknown or never committed there.
   */
  committedOffsets(name: string, topic: string): (number | null)[] {
    const offsets: (number | null)[] = [];
    const committed = this.#groups.get(name)?.committed.get(topic);
    for (const [partition, offset] of committed ?? []) {
      offsets[partition] = offset;
    }
    return offsets;
  }

  async describeGroup(name: string): Promise<GroupDescription> {
    const group = this.#groups.get(name);
    if (group === undefined) {
      throw new DakgharError("unknown_group", `Group not found: ${name}`, {
        group: name,
      });
    }
    const owners = new Map<string, string>();
    const topics = new Set(group.committed.keys());
    for (const [id, member] of group.members) {
      topics.add(member.topic);
      for (const [p, owned] of member.owned) {
        if (!owned.releasing) owners.set(`${member.topic}/${p}`, id);
      }
    }

    const now = (this.#options.now ?? Date.now)();
    const partitions: GroupPartitionDescription[] = [];
    for (const topic of [...topics].sort()) {
      let ranges: LogRange[];
      try {
        ranges = await this.#options.logRanges(topic);
      } catch {
        continue; // deleted meanwhile
      }
      const rows = await Promise.all(ranges.map(async (range, partition) => {
        const committed = group.committed.get(topic)?.get(partition);
        const from = committed === undefined
          ? range.logStartOffset
          : clamp(committed, range);
        let lagMs = 0;
        if (from < range.logEndOffset && this.#options.appendTimeAt) {
          try {
            const appended = await this.#options.appendTimeAt(
              topic,
              partition,
              from,
            );
            if (appended !== undefined) lagMs = Math.max(0, now - appended);
          } catch {
            // retention or deletion raced the read: no age to report
          }
        }
        return {
          topic,
          partition,
          committedOffset: committed ?? null,
          logEndOffset: range.logEndOffset,
          lag: range.logEndOffset - from,
          lagMs,
          owner: owners.get(`${topic}/${partition}`) ?? null,
        };
      }));
      partitions.push(...rows);
    }
    return {
      name: group.name,
      mode: group.mode,
      ...(group.settings === undefined ? {} : { settings: group.settings }),
      generation: group.generation,
      members: [...group.members].sort(([a], [b]) => a < b ? -1 : 1).map((
        [id, member],
      ) => ({
        id,
        topic: member.topic,
        partitions: sorted(
          [...member.owned].filter(([, o]) => !o.releasing).map(([p]) => p),
        ),
        connected: member.connected,
      })),
      partitions,
    };
  }

  /**
   * Stores the settings of a new group, or the new queue settings of an
   * existing one; the caller checked them. A stream group made by a join
   * gains its settings this way.
   *
   * @returns resolves once the group file is on disk
   */
  saveSettings(name: string, settings: GroupSettings): Promise<void> {
    validateGroupName(name);
    let group = this.#groups.get(name);
    if (group === undefined) {
      group = this.#newGroup(name, settings.mode);
      this.#groups.set(name, group);
    }
    group.settings = settings;
    return this.#options.store.save(name, () => this.#snapshot(group));
  }

  /**
   * A group's mode and settings: undefined for an unknown group, `settings`
   * undefined for a stream group made by a member's join, `topics` the
   * topics it has members or offsets on.
   */
  groupInfo(
    name: string,
  ):
    | { mode: GroupMode; settings?: GroupSettings; topics: string[] }
    | undefined {
    const group = this.#groups.get(name);
    if (group === undefined) return undefined;
    const topics = new Set(group.committed.keys());
    for (const member of group.members.values()) topics.add(member.topic);
    return {
      mode: group.mode,
      settings: group.settings,
      topics: [...topics].sort(),
    };
  }

  /** Names and settings of every group created with settings. */
  groupsWithSettings(): { name: string; settings: GroupSettings }[] {
    return [...this.#groups.values()].flatMap((group) =>
      group.settings === undefined
        ? []
        : [{ name: group.name, settings: group.settings }]
    );
  }

  /**
   * Deletes a group: its members hear `onRevocation` and are removed, its
   * file goes.
   *
   * @throws DakgharError unknown_group
   */
  async deleteGroup(name: string): Promise<void> {
    const group = this.#groups.get(name);
    if (group === undefined) {
      throw new DakgharError("unknown_group", `Group not found: ${name}`, {
        group: name,
      });
    }
    this.#groups.delete(name);
    for (const member of [...group.members.values()]) {
      this.#remove(group, member, true);
    }
    await group.steps.catch(() => {});
    await this.#options.store.drain();
    // A join racing the delete may have made a new group of that name.
    if (!this.#groups.has(name)) this.#options.store.remove(name);
    this.#options.log.info("group deleted", { group: name });
  }

  /** Every group, sorted by name. */
  listGroups(): GroupSummary[] {
    return [...this.#groups.values()]
      .sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0)
      .map((group) => ({
        name: group.name,
        mode: group.mode,
        generation: group.generation,
        members: group.members.size,
      }));
  }

  /**
   * Drops a deleted topic: its members are revoked and removed, its
   * committed offsets forgotten.
   */
  async forgetTopic(topic: string): Promise<void> {
    const saves: Promise<void>[] = [];
    for (const group of this.#groups.values()) {
      let changed = false;
      for (const member of [...group.members.values()]) {
        if (member.topic !== topic) continue;
        this.#remove(group, member, true);
        changed = true;
      }
      group.started.delete(topic);
      group.targets.delete(topic);
      if (group.committed.delete(topic)) {
        saves.push(
          this.#options.store.save(group.name, () => this.#snapshot(group)),
        );
      }
      if (changed) saves.push(this.#rebalance(group, true));
    }
    await Promise.all(saves);
  }

  /** Revokes every assignment, cancels session timeouts, flushes offsets. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const timer of this.#revocationTimers) clearTimeout(timer);
    this.#revocationTimers.clear();
    for (const group of this.#groups.values()) {
      for (const member of [...group.members.values()]) {
        this.#remove(group, member, true);
      }
    }
    await Promise.allSettled(
      [...this.#groups.values()].map((group) => group.steps),
    );
    await this.#options.store.drain();
  }

  #group(name: string): Group {
    let group = this.#groups.get(name);
    if (group === undefined) {
      group = this.#newGroup(name, "stream");
      this.#groups.set(name, group);
    }
    return group;
  }

  #newGroup(name: string, mode: GroupMode): Group {
    return {
      name,
      mode,
      generation: 0,
      members: new Map(),
      committed: new Map(),
      started: new Map(),
      targets: new Map(),
      steps: Promise.resolve(),
    };
  }

  #committedOf(group: Group, topic: string): Map<number, number> {
    let offsets = group.committed.get(topic);
    if (offsets === undefined) {
      offsets = new Map();
      group.committed.set(topic, offsets);
    }
    return offsets;
  }

  #snapshot(group: Group): StoredGroup {
    const offsets: StoredGroup["offsets"] = {};
    for (const [topic, partitions] of group.committed) {
      offsets[topic] = Object.fromEntries(partitions);
    }
    return {
      name: group.name,
      mode: group.mode,
      offsets,
      ...(group.settings === undefined ? {} : { settings: group.settings }),
    };
  }

  /**
   * Takes a member out of the group; its partitions become free. With
   * `revoke`, a connected member first hears `onRevocation` for them.
   */
  #remove(group: Group, member: Member, revoke: boolean): void {
    clearTimeout(member.expiry);
    member.expiry = undefined;
    const held = sorted(
      [...member.owned].filter(([, o]) => o.announced && !o.releasing).map((
        [p],
      ) => p),
    );
    if (revoke && member.connected && held.length > 0) {
      this.#callRevocation(group, member, held);
    }
    member.owned.clear();
    group.members.delete(member.id);
  }

  /** Calls `onRevocation`; resolves when the member has let go, or on timeout. */
  #callRevocation(
    group: Group,
    member: Member,
    partitions: number[],
  ): Promise<void> | undefined {
    let result: void | Promise<void>;
    try {
      result = member.handle.onRevocation({
        generation: member.generation,
        topic: member.topic,
        partitions,
      });
    } catch (error) {
      this.#options.log.error("onRevocation failed", {
        group: group.name,
        member: member.id,
        error,
      });
      return undefined;
    }
    if (!(result instanceof Promise)) return undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.#sessionTimeoutMs);
      this.#revocationTimers.add(timer);
    });
    return Promise.race([result.catch(() => {}), timeout]).finally(() => {
      clearTimeout(timer);
      this.#revocationTimers.delete(timer!);
    });
  }

  /** Queues a step: optionally new targets, then revocations and hand-outs. */
  #rebalance(group: Group, retarget: boolean): Promise<void> {
    if (retarget) group.generation++;
    const run = () => this.#step(group, retarget);
    group.steps = group.steps.then(run, run);
    return group.steps;
  }

  async #step(group: Group, retarget: boolean): Promise<void> {
    const topics = new Set<string>();
    for (const member of group.members.values()) topics.add(member.topic);
    for (const topic of topics) {
      if (retarget) this.#retarget(group, topic);
      this.#revokeMoved(group, topic);
      await this.#handOut(group, topic);
    }
    for (const member of group.members.values()) {
      if (member.owned.size > 0 || member.toldEmpty || !member.connected) {
        continue;
      }
      member.toldEmpty = true;
      member.generation = group.generation;
      this.#announce(group, member, []);
    }
    if (retarget) {
      this.#options.log.info("group rebalanced", {
        group: group.name,
        generation: group.generation,
        members: group.members.size,
      });
    }
    if (
      group.members.size === 0 && group.committed.size === 0 &&
      group.settings === undefined && this.#groups.get(group.name) === group
    ) {
      this.#groups.delete(group.name);
    }
  }

  #retarget(group: Group, topic: string): void {
    const ids = [...group.members.values()]
      .filter((m) => m.topic === topic).map((m) => m.id);
    let count: number;
    try {
      count = this.#options.partitionCount(topic);
    } catch {
      return; // deleted meanwhile; forgetTopic cleans up
    }
    const previous = group.targets.get(topic) ?? new Map<number, string>();
    const next = new Map<number, string>();
    for (const [id, partitions] of stickyAssign(ids, count, previous)) {
      for (const p of partitions) next.set(p, id);
    }
    group.targets.set(topic, next);
  }

  /** Revokes each partition whose owner is no longer its target. */
  #revokeMoved(group: Group, topic: string): void {
    const targets = group.targets.get(topic) ?? new Map<number, string>();
    for (const member of [...group.members.values()]) {
      if (member.topic !== topic) continue;
      const moved: number[] = [];
      for (const [p, owned] of member.owned) {
        if (!owned.releasing && targets.get(p) !== member.id) moved.push(p);
      }
      if (moved.length === 0) continue;
      for (const p of moved) member.owned.get(p)!.releasing = true;
      const silent = moved.filter((p) => !member.owned.get(p)!.announced);
      const told = sorted(moved.filter((p) => member.owned.get(p)!.announced));
      const letGo = () => this.#released(group, member, moved);
      const pending = member.connected && told.length > 0
        ? this.#callRevocation(group, member, told)
        : undefined;
      if (pending === undefined) {
        letGo();
        continue;
      }
      for (const p of silent) member.owned.delete(p);
      pending.then(() => {
        letGo();
        // The hand-over waits in the chain like any other step.
        void this.#rebalance(group, false).catch((error) =>
          this.#options.log.warn("hand-over failed", {
            group: group.name,
            error,
          })
        );
      });
    }
  }

  #released(group: Group, member: Member, partitions: number[]): void {
    if (group.members.get(member.id) !== member) return;
    for (const p of partitions) {
      if (member.owned.get(p)?.releasing) member.owned.delete(p);
    }
    if (member.owned.size === 0) member.toldEmpty = false;
  }

  /** Gives every free partition to its target and announces new ones. */
  async #handOut(group: Group, topic: string): Promise<void> {
    const targets = group.targets.get(topic) ?? new Map<number, string>();
    const held = new Set<number>();
    for (const member of group.members.values()) {
      if (member.topic !== topic) continue;
      for (const p of member.owned.keys()) held.add(p);
    }
    for (const [p, id] of targets) {
      if (held.has(p)) continue;
      const member = group.members.get(id);
      if (member === undefined) continue;
      member.owned.set(p, {
        since: group.generation,
        announced: false,
        releasing: false,
      });
    }
    const pending = [...group.members.values()].filter((m) =>
      m.topic === topic && [...m.owned.values()].some((o) => !o.announced)
    );
    if (pending.length === 0) return;
    const ranges = await this.#options.logRanges(topic);
    for (const member of pending) {
      if (group.members.get(member.id) !== member) continue;
      const fresh = sorted(
        [...member.owned].filter(([, o]) => !o.announced && !o.releasing).map((
          [p],
        ) => p),
      );
      if (fresh.length === 0) continue;
      const generation = Math.max(
        ...fresh.map((p) => member.owned.get(p)!.since),
      );
      for (const p of fresh) {
        const owned = member.owned.get(p)!;
        owned.announced = true;
        owned.since = generation;
      }
      member.generation = Math.max(member.generation, generation);
      member.toldEmpty = false;
      if (!member.connected) continue;
      this.#announce(
        group,
        member,
        fresh.map((partition) => ({
          partition,
          offset: this.#startOffset(
            group,
            topic,
            partition,
            member.from,
            ranges[partition],
          ),
        })),
      );
    }
  }

  #announce(
    group: Group,
    member: Member,
    partitions: { partition: number; offset: number }[],
  ): void {
    try {
      member.handle.onAssignment({
        generation: member.generation,
        topic: member.topic,
        partitions,
      });
    } catch (error) {
      this.#options.log.error("onAssignment failed", {
        group: group.name,
        member: member.id,
        error,
      });
    }
  }

  #startOffset(
    group: Group,
    topic: string,
    partition: number,
    from: StartPosition,
    range: LogRange,
  ): number {
    const committed = group.committed.get(topic)?.get(partition);
    if (committed !== undefined) return clamp(committed, range);
    let started = group.started.get(topic);
    if (started === undefined) {
      started = new Map();
      group.started.set(topic, started);
    }
    const earlier = started.get(partition);
    const offset = earlier !== undefined
      ? clamp(earlier, range)
      : from === "earliest"
      ? range.logStartOffset
      : range.logEndOffset;
    started.set(partition, offset);
    return offset;
  }
}
