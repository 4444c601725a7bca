/**
 * A whole broker in one call: the router actor, the Hono app and the HTTP
 * server, wired together. Used by the CLI, by tests and by benchmarks.
 */
import { type RouterActor, startRouter } from "../actors/router_actor.ts";
import type { TopicConfig } from "./broker.ts";
import { createApp } from "./http/app.ts";
import { type Logger, silentLogger } from "./logger.ts";
import type { Runtime } from "./runtime/types.ts";

/** Options for {@linkcode startBroker}. */
export interface BrokerServerOptions {
  /** Where topics and groups are stored (created if missing). */
  dataDir: string;
  /** TCP port; 0 picks a free one (default 8080). */
  port?: number;
  /** Interface to listen on (default "127.0.0.1"). */
  hostname?: string;
  /** When set, clients must send `Authorization: Bearer <token>`. */
  token?: string;
  /** Create a topic with default settings on its first publish. */
  autoCreateTopics?: boolean;
  /** Most partitions across all topics (default 256): one worker thread each. */
  maxPartitions?: number;
  /** How long a disconnected group member keeps its partitions (default 45 s). */
  sessionTimeoutMs?: number;
  /** Settings for topics created without them. */
  topicDefaults?: Partial<TopicConfig>;
  /** Largest request body in bytes (default 64 MiB). */
  maxBodyBytes?: number;
  /** Origins allowed by CORS (default "*"). */
  corsOrigin?: string | string[];
  logger?: Logger;
  /** Defaults to the runtime this process runs on. */
  runtime?: Runtime;
}

/** A broker serving HTTP and WebSocket. */
export interface RunningBroker {
  /** The broker itself, for in-process calls. */
  readonly broker: RouterActor;
  readonly hostname: string;
  /** The port actually bound. */
  readonly port: number;
  /** `http://hostname:port`. */
  readonly url: string;
  /** Closes the server and its WebSockets, then the broker. */
  stop(): Promise<void>;
}

/**
 * Starts the router, then serves it over HTTP and WebSocket.
 *
 * @param options where to store data and where to listen
 * @returns the running broker, once it listens
 * @example
 * ```ts
 * const running = await startBroker({ dataDir: "data", port: 0 });
 * await fetch(`${running.url}/health`);
 * await running.stop();
 * ```
 */
export async function startBroker(
  options: BrokerServerOptions,
): Promise<RunningBroker> {
  const runtime = options.runtime ??
    (await import("./runtime/mod.ts")).runtime;
  const log = options.logger ?? silentLogger;
  const hostname = options.hostname ?? "127.0.0.1";

  const broker = await startRouter({
    dataDir: options.dataDir,
    runtime,
    logger: log,
    autoCreateTopics: options.autoCreateTopics,
    maxPartitions: options.maxPartitions,
    sessionTimeoutMs: options.sessionTimeoutMs,
    topicDefaults: options.topicDefaults,
  });

  // Ends the HTTP long-polls that would otherwise hold the shutdown.
  const shutdown = new AbortController();
  let server;
  try {
    const app = createApp(broker, {
      log,
      token: options.token,
      maxBodyBytes: options.maxBodyBytes,
      corsOrigin: options.corsOrigin,
      webSocketFor: runtime.webSocketFor,
      sessionTimeoutMs: options.sessionTimeoutMs,
      shutdown: shutdown.signal,
    });
    server = await runtime.serve(app, {
      hostname,
      port: options.port ?? 8080,
    });
  } catch (error) {
    await broker.close();
    throw error;
  }

  let stopping: Promise<void> | undefined;
  const port = server.port;
  return {
    broker,
    hostname,
    port,
    url: `http://${
      hostname.includes(":") ? `[${hostname}]` : hostname
    }:${port}`,
    stop() {
      stopping ??= (async () => {
        shutdown.abort();
        await server.close();
        await broker.close();
      })();
      return stopping;
    },
  };
}
