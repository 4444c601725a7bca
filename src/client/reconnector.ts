/**
 * Reconnecting with capped exponential backoff, shared by stream and queue
 * subscriptions: each failed attempt doubles the delay (from
 * `initialDelayMs`, 100 ms by default, up to `maxDelayMs`, 5 s), with half
 * of it random so that clients cut off by one broker restart spread out.
 */
import type { DakgharClientError } from "./errors.ts";

/** How a subscription reconnects after its connection drops. */
export interface ReconnectOptions {
  /** First delay (default 100 ms); doubles per failed attempt. */
  initialDelayMs?: number;
  /** Longest delay (default 5000 ms). */
  maxDelayMs?: number;
}

/** What a {@linkcode Reconnector} calls. */
export interface ReconnectHooks {
  /** Opens the connection again; rejects with a DakgharClientError. */
  open(): Promise<void>;
  /** True once the subscription is closed: stop trying. */
  closed(): boolean;
  /** The connection is back. */
  reconnected(): void;
  /** An error after which trying again cannot help. */
  failed(error: Error): void;
}

/** Schedules reconnect attempts until one succeeds, fails for good, or the owner closes. */
export class Reconnector {
  readonly #settings: ReconnectOptions;
  readonly #fatalCodes: ReadonlySet<string>;
  readonly #hooks: ReconnectHooks;
  #attempt = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;

  /**
   * @param settings delays; `true` or `undefined` for the defaults
   * @param fatalCodes error codes that end the subscription instead of retrying
   */
  constructor(
    settings: ReconnectOptions | boolean | undefined,
    fatalCodes: ReadonlySet<string>,
    hooks: ReconnectHooks,
  ) {
    this.#settings = typeof settings === "object" ? settings : {};
    this.#fatalCodes = fatalCodes;
    this.#hooks = hooks;
  }

  /** Tries again after the next backoff delay. */
  schedule(): void {
    const initial = this.#settings.initialDelayMs ?? 100;
    const cap = this.#settings.maxDelayMs ?? 5000;
    const backoff = Math.min(cap, initial * 2 ** this.#attempt);
    const delay = backoff / 2 + Math.random() * backoff / 2;
    this.#attempt++;
    this.#timer = setTimeout(async () => {
      if (this.#hooks.closed()) return;
      try {
        await this.#hooks.open();
        this.#attempt = 0;
        this.#hooks.reconnected();
      } catch (error) {
        if (this.#hooks.closed()) return;
        const code = (error as DakgharClientError).code;
        if (this.#fatalCodes.has(code)) this.#hooks.failed(error as Error);
        else this.schedule();
      }
    }, delay);
  }

  /** Cancels a scheduled attempt. */
  cancel(): void {
    clearTimeout(this.#timer);
  }
}
