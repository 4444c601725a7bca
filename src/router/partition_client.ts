/**
 * The router's side of one partition actor: starts the worker, sends
 * requests and matches replies by id, and restarts the worker when it dies.
 *
 * Lifecycle:
 *
 *   starting ──ready──▶ running ──exit/fatal──▶ backoff ──timer──▶ starting
 *       └─────────────────exit/fatal──────────────▲
 *   any state ──close()──▶ closed
 *
 * Requests made while starting go straight to the new channel, which holds
 * them until the actor has opened its log. Requests made during backoff wait
 * for the next start. When the actor dies every request it holds fails with
 * partition_unavailable; the restart recovers the log from disk. The backoff
 * doubles from 100 ms to 10 s and starts over once an actor has stayed up
 * for a minute.
 */
import type { PartitionStats } from "../broker.ts";
import type {
  PartitionLogConfig,
  RecoveryReport,
} from "../log/partition_log.ts";
import {
  decode,
  encode,
  type InitMessage,
  type PartitionMessage,
  type RouterMessage,
  send,
  wrapMessagePort,
} from "../envelope.ts";
import {
  DakgharError,
  errorFromData,
  PartitionClosedError,
} from "../errors.ts";
import type { Logger } from "../logger.ts";
import type { PortLike, Runtime, WorkerHandle } from "../runtime/types.ts";

const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 10_000;
const STABLE_AFTER_MS = 60_000;
const CLOSE_TIMEOUT_MS = 10_000;

/** A request without its id; the client numbers it. */
export type PartitionRequest = RouterMessage extends infer M
  ? M extends { id: number } ? Omit<M, "id"> : never
  : never;

/** The reply type that answers each request type. */
export interface ReplyFor {
  append: Extract<PartitionMessage, { type: "appended" }>;
  read: Extract<PartitionMessage, { type: "records" }>;
  offsetForTime: Extract<PartitionMessage, { type: "offset" }>;
  stats: Extract<PartitionMessage, { type: "stats" }>;
  configure: Extract<PartitionMessage, { type: "configured" }>;
  close: Extract<PartitionMessage, { type: "closed" }>;
  cancel: never;
  init: Extract<PartitionMessage, { type: "ready" }>;
  qconfig: Extract<PartitionMessage, { type: "qconfigured" }>;
  qfetch: Extract<PartitionMessage, { type: "deliveries" }>;
  qsettle: Extract<PartitionMessage, { type: "qsettled" }>;
  /** The release frees the member's deliveries like a settlement. */
  qrelease: Extract<PartitionMessage, { type: "qsettled" }>;
  qdescribe: Extract<PartitionMessage, { type: "qstats" }>;
  qdeadDone: Extract<PartitionMessage, { type: "qsettled" }>;
  schedule: Extract<PartitionMessage, { type: "scheduled" }>;
  unschedule: Extract<PartitionMessage, { type: "unscheduled" }>;
}

/** What a partition actor sends unasked about its queue groups. */
export type QueueNotice = Extract<
  PartitionMessage,
  { type: "qready" | "qfreed" | "qdead" }
>;

interface Pending {
  resolve: (message: PartitionMessage) => void;
  reject: (error: unknown) => void;
}

type State = "starting" | "running" | "backoff" | "closed";

/** Options for {@linkcode PartitionClient}. */
export interface PartitionClientOptions {
  topic: string;
  partition: number;
  dir: string;
  config: PartitionLogConfig;
  startWorker: Runtime["startWorker"];
  log: Logger;
  /**
   * Called on every start of an actor, right after `init` is posted and
   * before any request held during the backoff: requests made from it (a
   * queue group's `qconfig`) reach the new actor first. `epoch` counts the
   * starts, from 1.
   */
  onStart?(client: PartitionClient, epoch: number): void;
  /** Called with each `qready`, `qfreed` and `qdead` the actor sends. */
  onQueueNotice?(
    client: PartitionClient,
    notice: QueueNotice,
    epoch: number,
  ): void;
}

/** One partition actor as the router sees it. */
export class PartitionClient {
  readonly topic: string;
  readonly partition: number;
  readonly #options: PartitionClientOptions;
  readonly #log: Logger;
  #state: State = "backoff";
  #worker: WorkerHandle | null = null;
  #port: PortLike | null = null;
  #nextId = 1;
  readonly #pending = new Map<number, Pending>();
  /** Requests made during backoff, sent when the next start begins. */
  #queued: { message: RouterMessage; pending: Pending }[] = [];
  #failures = 0;
  #startedAt = 0;
  #restartTimer: ReturnType<typeof setTimeout> | undefined;
  #ready: Promise<PartitionStats> = Promise.resolve(null as never);
  #epoch = 0;

  constructor(options: PartitionClientOptions) {
    this.topic = options.topic;
    this.partition = options.partition;
    this.#options = options;
    this.#log = options.log;
  }

  /**
   * Starts the actor. Resolves with its stats once the log is open;
   * rejects when the first start fails (the client keeps retrying).
   */
  start(): Promise<PartitionStats> {
    this.#start();
    return this.#ready;
  }

  /**
   * Sends a request and resolves with its reply.
   *
   * @param signal for reads: aborting cancels the read, which then resolves with no bytes
   * @throws PartitionClosedError when the actor dies first or the client is closed
   * @throws DakgharError the actor's error reply, rebuilt
   */
  request<T extends PartitionRequest>(
    request: T,
    signal?: AbortSignal,
  ): Promise<ReplyFor[T["type"]]> {
    if (this.#state === "closed") {
      return Promise.reject(this.#unavailable("closed"));
    }
    const id = this.#nextId++;
    const message = { ...request, id } as RouterMessage;
    return new Promise<PartitionMessage>((resolve, reject) => {
      const pending = { resolve, reject };
      if (signal !== undefined) {
        const cancel = () => this.#cancel(id);
        signal.addEventListener("abort", cancel, { once: true });
        pending.resolve = (reply) => {
          signal.removeEventListener("abort", cancel);
          resolve(reply);
        };
        pending.reject = (error) => {
          signal.removeEventListener("abort", cancel);
          reject(error);
        };
      }
      if (this.#port === null) {
        this.#queued.push({ message, pending });
      } else {
        this.#pending.set(id, pending);
        send(this.#port, message);
      }
      if (signal?.aborted) this.#cancel(id);
    }) as Promise<ReplyFor[T["type"]]>;
  }

  /**
   * Closes the actor cleanly (its log writes a clean-shutdown marker), then
   * ends the worker. With `deleteFiles` the actor removes its directory.
   */
  async close(deleteFiles: boolean): Promise<void> {
    if (this.#state === "closed") return;
    clearTimeout(this.#restartTimer);
    const port = this.#port;
    const worker = this.#worker;
    const running = this.#state === "running" || this.#state === "starting";
    this.#state = "closed";
    this.#failQueued(this.#unavailable("closed"));

    if (running && port !== null) {
      const id = this.#nextId++;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const closed = new Promise<void>((resolve) => {
        this.#pending.set(id, {
          resolve: () => resolve(),
          reject: () => resolve(),
        });
        timer = setTimeout(() => {
          this.#log.warn("partition close timed out", {
            timeoutMs: CLOSE_TIMEOUT_MS,
          });
          resolve();
        }, CLOSE_TIMEOUT_MS);
      });
      send(port, { type: "close", id, deleteFiles });
      await closed;
      clearTimeout(timer);
    }
    this.#failPending(this.#unavailable("closed"));
    port?.close();
    this.#port = null;
    this.#worker = null;
    await worker?.terminate();
  }

  /**
   * How many times the actor was started; a restart raises it. Work tied
   * to one actor's life (a dead-letter `seq`) is dropped once it moves on.
   */
  get epoch(): number {
    return this.#epoch;
  }

  /** The worker handle, for tests that kill actors. */
  get worker(): WorkerHandle | null {
    return this.#worker;
  }

  #start(): void {
    this.#state = "starting";
    this.#epoch++;
    this.#startedAt = Date.now();
    const { topic, partition, dir, config } = this.#options;
    let worker: WorkerHandle;
    try {
      worker = this.#options.startWorker(
        "partition_actor",
        `partition ${topic}/${partition}`,
      );
    } catch (error) {
      const failure = this.#unavailable(
        `worker did not start: ${(error as Error)?.message ?? error}`,
      );
      this.#log.error("partition actor did not start", { error });
      this.#ready = Promise.reject(failure);
      this.#ready.catch(() => {});
      this.#failQueued(failure);
      this.#scheduleRestart();
      return;
    }
    const channel = new MessageChannel();
    const port = wrapMessagePort(channel.port1);
    this.#worker = worker;
    this.#port = port;
    port.onMessage((data) => this.#receive(worker, data));
    worker.onExit((error) =>
      this.#died(worker, error?.message ?? "worker exited")
    );

    // init is numbered and pending like any request, so its `ready` or
    // `error` reply settles #ready.
    const id = this.#nextId++;
    const logLevels = ["trace", "debug", "info", "warn"] as const;
    const logLevel = logLevels.find((level) => this.#log.isEnabled(level)) ??
      "error";
    const init: InitMessage = {
      type: "init",
      id,
      topic,
      partition,
      dir,
      config,
      logLevel,
    };
    this.#ready = new Promise<PartitionStats>((resolve, reject) => {
      this.#pending.set(id, {
        resolve: (reply) => {
          const ready = reply as ReplyFor["init"];
          this.#state = "running";
          this.#logReady(ready.stats, ready.recovery);
          resolve(ready.stats);
        },
        reject,
      });
    });
    this.#ready.catch(() => {});
    worker.onMessage((data) => {
      if (decode<PartitionMessage>(data).type !== "started") return;
      const { data: bytes, transfer } = encode(init);
      worker.postMessage({ init: bytes, port: channel.port2 }, [
        ...transfer,
        channel.port2,
      ]);
    });

    const queued = this.#queued;
    this.#queued = [];
    try {
      this.#options.onStart?.(this, this.#epoch);
    } catch (error) {
      this.#log.error("partition start hook failed", { error });
    }
    for (const { message, pending } of queued) {
      this.#pending.set(message.id, pending);
      send(port, message);
    }
  }

  #receive(worker: WorkerHandle, data: unknown): void {
    if (worker !== this.#worker) return;
    const message = decode<PartitionMessage>(data);
    switch (message.type) {
      case "log":
        this.#log[message.level](message.message, message.fields);
        return;
      case "fatal":
        return this.#died(worker, `${message.code}: ${message.message}`);
      case "started":
        return;
      case "qready":
      case "qfreed":
      case "qdead":
        try {
          this.#options.onQueueNotice?.(this, message, this.#epoch);
        } catch (error) {
          this.#log.error("queue notice handler failed", { error });
        }
        return;
    }
    const pending = this.#pending.get(message.id);
    if (pending === undefined) return;
    this.#pending.delete(message.id);
    if (message.type === "error") pending.reject(errorFromData(message));
    else pending.resolve(message);
  }

  #cancel(id: number): void {
    const queued = this.#queued.findIndex((q) => q.message.id === id);
    if (queued !== -1) {
      // Never sent: answer it here, as the actor would.
      const [{ pending }] = this.#queued.splice(queued, 1);
      pending.reject(
        new DakgharError(
          "partition_unavailable",
          "Read cancelled before the partition started",
        ),
      );
      return;
    }
    if (this.#pending.has(id) && this.#port !== null) {
      send(this.#port, { type: "cancel", id });
    }
  }

  /** The actor is gone: fail what it held and schedule a restart. */
  #died(worker: WorkerHandle, reason: string): void {
    if (worker !== this.#worker || this.#state === "closed") return;
    this.#log.error("partition actor died", { reason });
    this.#worker = null;
    this.#port?.close();
    this.#port = null;
    this.#failPending(this.#unavailable(reason));
    void worker.terminate();

    this.#scheduleRestart();
  }

  #scheduleRestart(): void {
    if (Date.now() - this.#startedAt >= STABLE_AFTER_MS) this.#failures = 0;
    const delayMs = Math.min(
      BACKOFF_MAX_MS,
      BACKOFF_MIN_MS * 2 ** this.#failures,
    );
    this.#failures++;
    this.#state = "backoff";
    this.#restartTimer = setTimeout(() => {
      this.#log.info("restarting partition actor", { attempt: this.#failures });
      this.#start();
    }, delayMs);
  }

  #failPending(error: Error): void {
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p.reject(error);
  }

  #failQueued(error: Error): void {
    const queued = this.#queued;
    this.#queued = [];
    for (const { pending } of queued) pending.reject(error);
  }

  #unavailable(reason: string): PartitionClosedError {
    return new PartitionClosedError(this.topic, this.partition, reason);
  }

  #logReady(stats: PartitionStats, recovery: RecoveryReport): void {
    this.#log.info("partition ready", {
      logStartOffset: stats.logStartOffset,
      logEndOffset: stats.logEndOffset,
      segments: stats.segments,
      clean: recovery.clean,
      segmentsChecked: recovery.segmentsChecked,
      bytesTruncated: recovery.bytesTruncated,
      indexesRebuilt: recovery.indexesRebuilt,
      filesDeleted: recovery.filesDeleted,
      corruptions: recovery.corruptions.length,
    });
  }
}
