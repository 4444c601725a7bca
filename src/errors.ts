/**
 * The errors a caller of the broker may want to handle, each with a stable
 * machine-readable code. The HTTP front end maps them to status codes in one
 * place (`src/http/errors.ts`); WebSocket error frames carry the same codes.
 * Misuse inside the code base throws the built-in TypeError and RangeError.
 */

/** Every code a client can see, with the HTTP status it maps to. */
export const errorStatus = {
  bad_request: 400,
  malformed_body: 400,
  malformed_batch: 400,
  invalid_topic_name: 400,
  invalid_config: 400,
  bad_frame: 400,
  unauthorized: 401,
  unknown_topic: 404,
  unknown_partition: 404,
  unknown_group: 404,
  not_found: 404,
  topic_exists: 409,
  stale_generation: 409,
  not_assigned: 409,
  group_exists: 409,
  stale_receipt: 409,
  member_replaced: 409,
  offset_out_of_range: 416,
  record_too_large: 413,
  body_too_large: 413,
  too_many_requests: 429,
  partition_unavailable: 503,
  shutting_down: 503,
  storage_error: 500,
  internal: 500,
} as const;

/** A machine-readable error code. */
export type ErrorCode = keyof typeof errorStatus;

/**
 * Base class of every error with a code. `context` is sent to clients beside
 * the code and message. (Not named `details`: uvu reads that field of a thrown
 * error as an assertion diff and stops reporting the suite.)
 */
export class DakgharError extends Error {
  readonly code: ErrorCode;
  /** Facts about the failure, sent to clients beside code and message. */
  readonly context: Record<string, unknown>;

  constructor(
    code: ErrorCode,
    message: string,
    context: Record<string, unknown> = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "DakgharError";
    this.code = code;
    this.context = context;
  }

  /** The JSON body sent to clients: `{ error: { code, message, ...context } }`. */
  toJSON(): { error: Record<string, unknown> } {
    return {
      error: { code: this.code, message: this.message, ...this.context },
    };
  }
}

/** Thrown when a topic does not exist. */
export class UnknownTopicError extends DakgharError {
  constructor(readonly topic: string) {
    super("unknown_topic", `Topic not found: ${topic}`, { topic });
    this.name = "UnknownTopicError";
  }
}

/** Thrown when a read asks for an offset outside [logStartOffset, logEndOffset]. */
export class OffsetOutOfRangeError extends DakgharError {
  constructor(
    readonly topic: string,
    readonly partition: number,
    readonly offset: number,
    readonly logStartOffset: number,
    readonly logEndOffset: number,
  ) {
    super(
      "offset_out_of_range",
      `Offset out of range for ${topic}/${partition}: ${offset} not in [${logStartOffset}, ${logEndOffset}]`,
      { topic, partition, offset, logStartOffset, logEndOffset },
    );
    this.name = "OffsetOutOfRangeError";
  }
}

/** Thrown when one record is larger than the topic allows. */
export class RecordTooLargeError extends DakgharError {
  constructor(readonly bytes: number, readonly maxBytes: number) {
    super(
      "record_too_large",
      `Record too large: ${bytes} bytes, the topic allows ${maxBytes}`,
      { bytes, maxBytes },
    );
    this.name = "RecordTooLargeError";
  }
}

/** Thrown for a record batch whose framing, checksum or counts do not hold. */
export class MalformedBatchError extends DakgharError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super("malformed_batch", message, details);
    this.name = "MalformedBatchError";
  }
}

/**
 * Thrown by a partition whose log can take no more writes: a write or fsync
 * failed. Every later append gets the same error until the actor restarts
 * and recovers from disk.
 */
export class PartitionClosedError extends DakgharError {
  constructor(
    readonly topic: string,
    readonly partition: number,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(
      "partition_unavailable",
      `Partition unavailable ${topic}/${partition}: ${reason}`,
      { topic, partition },
      options,
    );
    this.name = "PartitionClosedError";
  }
}

/** Rebuilds an error that crossed a thread boundary as plain data. */
export function errorFromData(data: {
  code?: string;
  message?: string;
  details?: Record<string, unknown>;
}): DakgharError {
  const code =
    (data.code && data.code in errorStatus
      ? data.code
      : "internal") as ErrorCode;
  return new DakgharError(code, data.message ?? "Unknown error", data.details);
}

/** Turns any thrown value into plain data that can cross a thread boundary. */
export function errorToData(error: unknown): {
  code: ErrorCode;
  message: string;
  details: Record<string, unknown>;
} {
  if (error instanceof DakgharError) {
    return { code: error.code, message: error.message, details: error.context };
  }
  const message = error instanceof Error ? error.message : String(error);
  return { code: "internal", message, details: {} };
}
