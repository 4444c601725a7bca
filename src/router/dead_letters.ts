/**
 * Moves dead letters from a partition actor to the group's dead-letter
 * topic.
 *
 * A partition actor sends `qdead` with letters ready to append (the
 * records with their provenance headers). The router creates the
 * dead-letter topic when missing, appends the letters to the partition of
 * the same number (modulo its partition count, for a topic made by hand
 * with fewer), and once the append is durable answers `qdeadDone` with the
 * letters' `seq`: only then do the records count as settled. A failure is
 * logged at error and the whole step retried with a doubling pause, for as
 * long as it takes (a letter is never dropped); meanwhile the letters stay
 * pending in the cursor. Each attempt appends a copy of the letters, since
 * a worker may take (transfer) the bytes it is given. Once the source actor restarts, the
 * attempt is dropped: the new actor sends its pending letters again under
 * a new `seq`, so a letter may be appended twice, never lost.
 */
import type { PartitionMessage } from "../envelope.ts";
import type { Logger } from "../logger.ts";
import type { PartitionClient } from "./partition_client.ts";

const RETRY_MIN_MS = 1_000;
const RETRY_MAX_MS = 60_000;

type QueueDead = Extract<PartitionMessage, { type: "qdead" }>;
type QueueSettled = Extract<PartitionMessage, { type: "qsettled" }>;

/** What the dead-letter path asks of the router. */
export interface DeadLetterOptions {
  /** The group's dead-letter topic; undefined once the group is gone. */
  deadLetterTopic(group: string): string | undefined;
  /** Creates the dead-letter topic of `sourceTopic`'s letters unless it exists. */
  ensureTopic(name: string, sourceTopic: string): Promise<void>;
  /** Appends batches durably to a partition of `topic`, as numbered there. */
  append(topic: string, partition: number, bytes: Uint8Array): Promise<void>;
  /** The `qdeadDone` answer: the group's members get their prefetch back. */
  settled(group: string, partition: number, reply: QueueSettled): void;
  /** First pause before a retry (default 1 s); it doubles up to 60 s. */
  retryMinMs?: number;
  log: Logger;
}

/** Delivers dead letters, retrying until they are appended. */
export class DeadLetterSink {
  readonly #options: DeadLetterOptions;
  readonly #log: Logger;
  readonly #retries = new Set<ReturnType<typeof setTimeout>>();
  #closed = false;

  constructor(options: DeadLetterOptions) {
    this.#options = options;
    this.#log = options.log;
  }

  /**
   * Takes a `qdead` from `client`'s actor in its start `epoch`.
   *
   * @param epoch the client's epoch when the notice arrived
   */
  accept(client: PartitionClient, notice: QueueDead, epoch: number): void {
    void this.#deliver(client, notice, epoch, 0);
  }

  /** Stops retrying; letters not appended are sent again after a restart. */
  close(): void {
    this.#closed = true;
    for (const timer of this.#retries) clearTimeout(timer);
    this.#retries.clear();
  }

  async #deliver(
    client: PartitionClient,
    notice: QueueDead,
    epoch: number,
    failures: number,
  ): Promise<void> {
    if (this.#closed || client.epoch !== epoch) return;
    const { group, seq } = notice;
    const topic = this.#options.deadLetterTopic(group);
    if (topic === undefined) return; // deleted with its cursors
    try {
      await this.#options.ensureTopic(topic, client.topic);
      await this.#options.append(
        topic,
        client.partition,
        notice.bytes.slice(),
      );
      if (client.epoch !== epoch) return;
      const reply = await client.request({ type: "qdeadDone", group, seq });
      this.#log.info("dead letters appended", {
        group,
        topic: client.topic,
        partition: client.partition,
        deadLetterTopic: topic,
        records: notice.records,
      });
      this.#options.settled(group, client.partition, reply);
    } catch (error) {
      if (this.#closed || client.epoch !== epoch) return;
      const delayMs = Math.min(
        RETRY_MAX_MS,
        (this.#options.retryMinMs ?? RETRY_MIN_MS) * 2 ** failures,
      );
      this.#log.error("dead letters not appended; retrying", {
        group,
        topic: client.topic,
        partition: client.partition,
        deadLetterTopic: topic,
        records: notice.records,
        delayMs,
        error,
      });
      const timer = setTimeout(() => {
        this.#retries.delete(timer);
        void this.#deliver(client, notice, epoch, failures + 1);
      }, delayMs);
      this.#retries.add(timer);
    }
  }
}
