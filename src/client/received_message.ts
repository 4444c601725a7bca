/**
 * A delivery of a queue or key_shared group received over HTTP
 * ({@linkcode DakgharClient.receive}): the record, its attempt and its
 * receipt, with the same verbs as a WebSocket delivery, each one request to
 * the receipt routes. For code that holds no socket, e.g. edge functions.
 */
import type { HttpApi } from "./http.ts";
import type { NackOptions } from "./queue_subscription.ts";
import { handled } from "./queue_subscription.ts";
import { ConsumedRecord } from "./records.ts";

/** A record received from a queue group over HTTP, settled by its receipt. */
export class ReceivedMessage extends ConsumedRecord {
  readonly #http: HttpApi;

  constructor(
    record: ConsumedRecord,
    /** The queue group it was received from. */
    readonly group: string,
    /** Delivery count: 1 the first time, up by one per redelivery. */
    readonly attempt: number,
    /** Opaque; names this delivery in `ack`, `nack`, `extend` and `reject`. */
    readonly receipt: string,
    http: HttpApi,
  ) {
    super(
      record.topic,
      record.partition,
      record.offset,
      record.timestamp,
      record.keyBytes,
      record.value,
      record.headerBytes,
    );
    this.#http = http;
  }

  /**
   * Done: never delivered to the group again.
   * @throws {DakgharClientError} `stale_receipt` once redelivered or settled
   */
  ack(): Promise<void> {
    return this.#settle("ack", {});
  }

  /**
   * Failed: redelivered after `delayMs`, or after the group's backoff.
   * @throws {DakgharClientError} `stale_receipt`
   */
  nack(options: NackOptions = {}): Promise<void> {
    return this.#settle("nack", options);
  }

  /**
   * Failed for good: straight to the dead-letter topic with `reason`.
   * @throws {DakgharClientError} `stale_receipt`
   */
  reject(reason?: string): Promise<void> {
    return this.#settle("reject", reason === undefined ? {} : { reason });
  }

  /**
   * Still working: the ack deadline becomes now + `ms` (at most 12 h).
   * @throws {DakgharClientError} `stale_receipt`
   */
  extend(ms: number): Promise<void> {
    return this.#settle("extend", { ms });
  }

  #settle(
    action: "ack" | "nack" | "reject" | "extend",
    fields: { delayMs?: number; reason?: string; ms?: number },
  ): Promise<void> {
    return handled(
      this.#http.settleReceipts(this.group, action, [this.receipt], fields)
        .then(() => {}),
    );
  }
}
