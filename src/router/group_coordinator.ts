/**
 * Consumer groups in stream mode: members, assignment, generations and
 * committed offsets.
 *
 * Assignment is eager and range-based. On every join or leave the group's
 * members first get `onRevocation` for everything they own (they may still
 * commit with the ending generation inside that callback), then the
 * generation goes up and each topic's partitions are split into contiguous
 * ranges over its members sorted by id, the first `count % members` members
 * taking one extra: 5 partitions over members a, b → a: 0-2, b: 3-4.
 * A member left without partitions gets `onAssignment` with none, when it
 * joins and whenever it loses its last partition, not again while it stays
 * empty. Rebalances of one group run one at a time, in the order asked.
 *
 * Where an assigned member starts: the committed offset, clamped into
 * [logStartOffset, logEndOffset]; else the position chosen the first time
 * the partition was assigned in this process; else the log start or end,
 * as the member asked when it joined.
 *
 * `mode` is stored with every group so queue groups (per-message acks) can
 * sit beside stream groups; session timeouts and incremental sticky
 * assignment fit behind the same MemberHandle callbacks.
 */
import type {
  GroupDescription,
  GroupMode,
  GroupPartitionDescription,
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

/** What the coordinator asks of the rest of the router. */
export interface GroupCoordinatorOptions {
  store: OffsetStore;
  /** Partition count of a topic. Throws UnknownTopicError for an unknown one. */
  partitionCount(topic: string): number;
  /** Log bounds of every partition of a topic, by partition. */
  logRanges(topic: string): Promise<LogRange[]>;
  log: Logger;
}

interface Member {
  handle: MemberHandle;
  topic: string;
  from: StartPosition;
  partitions: number[];
  /** What the last `onAssignment` handed out; undefined before the first. */
  lastAssigned: number[] | undefined;
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
  /** Tail of this group's rebalance chain. */
  rebalancing: Promise<void>;
}

const groupNamePattern = /^[A-Za-z0-9._-]{1,200}$/;

function validateGroupName(name: string): void {
  if (!groupNamePattern.test(name) || name === "." || name === "..") {
    throw new DakgharError(
      "bad_request",
      `Invalid group name: ${JSON.stringify(name)}`,
      { group: name },
    );
  }
}

/**
 * Splits `count` partitions into contiguous ranges over `memberIds`, which
 * must be sorted.
 *
 * @returns member id → partitions
 */
export function rangeAssign(
  memberIds: string[],
  count: number,
): Map<string, number[]> {
  const result = new Map<string, number[]>();
  const each = Math.floor(count / memberIds.length);
  const extra = count % memberIds.length;
  let next = 0;
  memberIds.forEach((id, index) => {
    const take = each + (index < extra ? 1 : 0);
    const partitions: number[] = [];
    for (let i = 0; i < take; i++) partitions.push(next++);
    result.set(id, partitions);
  });
  return result;
}

function clamp(offset: number, range: LogRange): number {
  return Math.min(Math.max(offset, range.logStartOffset), range.logEndOffset);
}

/** Owns every group of the broker. Runs on the main thread, inside the router. */
export class GroupCoordinator {
  readonly #options: GroupCoordinatorOptions;
  readonly #groups = new Map<string, Group>();

  constructor(options: GroupCoordinatorOptions) {
    this.#options = options;
  }

  /** Loads committed offsets from the group files. */
  load(): void {
    for (const stored of this.#options.store.load()) {
      const group = this.#newGroup(stored.name, stored.mode);
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
   * Adds `member` to a stream group reading `topic` and rebalances. A member
   * id already in the group is replaced.
   *
   * @returns resolves once the new assignment has been handed out
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
    let group = this.#groups.get(name);
    if (group === undefined) {
      group = this.#newGroup(name, "stream");
      this.#groups.set(name, group);
    }
    const previous = group.members.get(member.id);
    if (previous !== undefined) this.#revoke(group, previous);
    group.members.set(member.id, {
      handle: member,
      topic,
      from,
      partitions: [],
      lastAssigned: undefined,
    });
    this.#options.log.info("member joined", {
      group: name,
      member: member.id,
      topic,
    });
    return this.#rebalance(group);
  }

  /** Removes a member and rebalances the rest. No error when absent. */
  leaveGroup(name: string, memberId: string): Promise<void> {
    const group = this.#groups.get(name);
    const member = group?.members.get(memberId);
    if (group === undefined || member === undefined) return Promise.resolve();
    this.#revoke(group, member);
    group.members.delete(memberId);
    this.#options.log.info("member left", { group: name, member: memberId });
    return this.#rebalance(group);
  }

  /**
   * Records a commit after checking the member owns the partition in the
   * current generation. The check is synchronous; the promise resolves
   * once the commit is on disk.
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
    if (generation !== group.generation) {
      throw new DakgharError(
        "stale_generation",
        `Cannot commit to group ${name}: generation ${generation} has ended, the current one is ${group.generation}`,
        { group: name, generation, currentGeneration: group.generation },
      );
    }
    const member = group.members.get(memberId);
    if (
      member === undefined || member.topic !== topic ||
      !member.partitions.includes(partition)
    ) {
      throw new DakgharError(
        "not_assigned",
        `Cannot commit to group ${name}: ${topic}/${partition} is not assigned to member ${memberId}`,
        { group: name, topic, partition, member: memberId },
      );
    }
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw new DakgharError("bad_request", `Invalid offset: ${offset}`, {
        offset,
      });
    }

    let offsets = group.committed.get(topic);
    if (offsets === undefined) {
      offsets = new Map();
      group.committed.set(topic, offsets);
    }
    offsets.set(partition, offset);
    return this.#options.store.save(name, () => this.#snapshot(group));
  }

  /**
   * A group's members, generation and per-partition progress.
   *
   * @throws DakgharError unknown_group
   */
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
      for (const p of member.partitions) owners.set(`${member.topic}/${p}`, id);
    }

    const partitions: GroupPartitionDescription[] = [];
    for (const topic of [...topics].sort()) {
      let ranges: LogRange[];
      try {
        ranges = await this.#options.logRanges(topic);
      } catch {
        continue; // deleted meanwhile
      }
      ranges.forEach((range, partition) => {
        const committed = group.committed.get(topic)?.get(partition);
        const from = committed === undefined
          ? range.logStartOffset
          : clamp(committed, range);
        partitions.push({
          topic,
          partition,
          committedOffset: committed ?? null,
          logEndOffset: range.logEndOffset,
          lag: range.logEndOffset - from,
          owner: owners.get(`${topic}/${partition}`) ?? null,
        });
      });
    }
    return {
      name: group.name,
      mode: group.mode,
      generation: group.generation,
      members: [...group.members].sort(([a], [b]) => a < b ? -1 : 1).map((
        [id, member],
      ) => ({ id, topic: member.topic, partitions: [...member.partitions] })),
      partitions,
    };
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
      for (const [id, member] of [...group.members]) {
        if (member.topic !== topic) continue;
        this.#revoke(group, member);
        group.members.delete(id);
        changed = true;
      }
      group.started.delete(topic);
      if (group.committed.delete(topic)) {
        saves.push(
          this.#options.store.save(group.name, () => this.#snapshot(group)),
        );
      }
      if (changed) saves.push(this.#rebalance(group));
    }
    await Promise.all(saves);
  }

  /** Revokes every assignment and waits for pending offset writes. */
  async close(): Promise<void> {
    for (const group of this.#groups.values()) {
      for (const member of group.members.values()) this.#revoke(group, member);
      group.members.clear();
    }
    await Promise.allSettled(
      [...this.#groups.values()].map((group) => group.rebalancing),
    );
    await this.#options.store.drain();
  }

  #newGroup(name: string, mode: GroupMode): Group {
    return {
      name,
      mode,
      generation: 0,
      members: new Map(),
      committed: new Map(),
      started: new Map(),
      rebalancing: Promise.resolve(),
    };
  }

  #snapshot(group: Group): StoredGroup {
    const offsets: StoredGroup["offsets"] = {};
    for (const [topic, partitions] of group.committed) {
      offsets[topic] = Object.fromEntries(partitions);
    }
    return { name: group.name, mode: group.mode, offsets };
  }

  #revoke(group: Group, member: Member): void {
    if (member.partitions.length === 0) return;
    // The member still owns its partitions during the callback so that it
    // can commit its final positions from inside it.
    try {
      member.handle.onRevocation({
        generation: group.generation,
        topic: member.topic,
        partitions: [...member.partitions],
      });
    } catch (error) {
      this.#options.log.error("onRevocation failed", {
        group: group.name,
        member: member.handle.id,
        error,
      });
    }
    member.partitions = [];
  }

  #rebalance(group: Group): Promise<void> {
    const run = () => this.#assign(group);
    group.rebalancing = group.rebalancing.then(run, run);
    return group.rebalancing;
  }

  async #assign(group: Group): Promise<void> {
    // Eager: nobody keeps anything across a generation.
    for (const member of group.members.values()) this.#revoke(group, member);
    group.generation++;
    const generation = group.generation;

    const byTopic = new Map<string, string[]>();
    for (const [id, member] of group.members) {
      byTopic.set(member.topic, [...(byTopic.get(member.topic) ?? []), id]);
    }
    for (const [topic, ids] of byTopic) {
      const ranges = await this.#options.logRanges(topic);
      // A later join or leave supersedes this one; it runs next.
      if (group.generation !== generation) return;
      const assignment = rangeAssign(ids.sort(), ranges.length);
      for (const [id, partitions] of assignment) {
        const member = group.members.get(id);
        if (member === undefined) continue;
        // A member left with nothing still hears so, once per change.
        if (partitions.length === 0 && member.lastAssigned?.length === 0) {
          continue;
        }
        member.partitions = partitions;
        member.lastAssigned = partitions;
        const handout = partitions.map((partition) => ({
          partition,
          offset: this.#startOffset(
            group,
            topic,
            partition,
            member.from,
            ranges[partition],
          ),
        }));
        try {
          member.handle.onAssignment({
            generation,
            topic,
            partitions: handout,
          });
        } catch (error) {
          this.#options.log.error("onAssignment failed", {
            group: group.name,
            member: id,
            error,
          });
        }
      }
    }
    this.#options.log.info("group rebalanced", {
      group: group.name,
      generation,
      members: group.members.size,
    });
    if (group.members.size === 0 && group.committed.size === 0) {
      this.#groups.delete(group.name);
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
