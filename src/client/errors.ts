/**
 * The one error class the client throws for failures the broker reports or
 * the network causes. `code` is the broker's machine-readable code (see
 * docs/protocol.md) or one of the client's own for failures that never
 * reached the broker.
 */
import { type ErrorCode, errorStatus } from "../errors.ts";

/** Codes the client raises itself, for failures without a broker answer. */
export type ClientErrorCode =
  /** The WebSocket closed before the request was answered. */
  | "connection_closed"
  /** `fetch` or the WebSocket could not reach the broker. */
  | "network_error"
  /** The broker answered something the client cannot read. */
  | "invalid_response"
  /** A value the client cannot send, e.g. one JSON cannot encode. */
  | "invalid_argument";

/**
 * A failure with a machine-readable code.
 *
 * @example
 * ```ts
 * import { createClient, DakgharClientError } from "dakghar";
 *
 * const client = createClient({ url: "http://127.0.0.1:8080" });
 * try {
 *   await client.createTopic("orders", { partitions: 3 });
 * } catch (error) {
 *   if (!(error instanceof DakgharClientError && error.code === "topic_exists")) {
 *     throw error;
 *   }
 * }
 * ```
 */
export class DakgharClientError extends Error {
  /** The broker's error code, or a {@linkcode ClientErrorCode}. */
  readonly code: ErrorCode | ClientErrorCode;
  /**
   * HTTP status of the answer, or for a WebSocket error the status its code
   * maps to; undefined for the client's own codes.
   */
  readonly status: number | undefined;
  /** The rest of the broker's error body (`field`, `partition`, …). */
  readonly context: Record<string, unknown>;

  constructor(
    code: ErrorCode | ClientErrorCode,
    message: string,
    options: {
      status?: number;
      context?: Record<string, unknown>;
      cause?: unknown;
    } = {},
  ) {
    super(message, { cause: options.cause });
    this.name = "DakgharClientError";
    this.code = code;
    this.status = options.status;
    this.context = options.context ?? {};
  }
}

/** Builds the error from a broker error body `{ code, message, ...context }`. */
export function errorFromBody(
  body: unknown,
  status?: number,
): DakgharClientError {
  const data = (typeof body === "object" && body !== null ? body : {}) as
    & Record<string, unknown>
    & { code?: unknown; message?: unknown };
  const { code, message, ...context } = data;
  const known = typeof code === "string" && Object.hasOwn(errorStatus, code);
  return new DakgharClientError(
    typeof code === "string" ? code as ErrorCode : "invalid_response",
    typeof message === "string" ? message : `Broker answered ${status}`,
    {
      // WebSocket errors carry no status: the code's HTTP status stands in.
      status: status ?? (known ? errorStatus[code as ErrorCode] : undefined),
      context,
    },
  );
}
