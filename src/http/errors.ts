/**
 * The one place where errors become HTTP responses. Every error body has
 * the shape `{ error: { code, message, ...details } }`; the status comes
 * from `errorStatus` in src/errors.ts.
 */
import type { Context, ErrorHandler, NotFoundHandler } from "hono";
import { HTTPException } from "hono/http-exception";
import { DakgharError, errorStatus } from "../errors.ts";
import type { Logger } from "../logger.ts";

/**
 * Turns any thrown value into a DakgharError a client may see. Unknown
 * errors become `internal` with a generic message: their text and stack
 * stay in the log.
 *
 * @param error what was thrown
 * @returns the error to send
 */
export function toClientError(error: unknown): DakgharError {
  if (error instanceof DakgharError) return error;
  if (error instanceof HTTPException) {
    // hono/validator's only words for a body that is not JSON.
    if (error.message.startsWith("Malformed JSON")) {
      return new DakgharError("malformed_body", `body: ${error.message}`, {
        field: "body",
      });
    }
    // bearerAuth answers a header it cannot parse (`Basic …`) with 400;
    // any failure that carries a bearer challenge is an auth failure.
    const challenged = error.getResponse().headers.has("WWW-Authenticate");
    const code = error.status === 401 || challenged
      ? "unauthorized"
      : error.status === 413
      ? "body_too_large"
      : "bad_request";
    return new DakgharError(code, error.message || httpMessage(code));
  }
  return new DakgharError("internal", "Internal error");
}

function httpMessage(code: string): string {
  switch (code) {
    case "unauthorized":
      return "Missing or invalid bearer token";
    case "body_too_large":
      return "Request body too large";
    default:
      return "Bad request";
  }
}

/**
 * The JSON response for `error`.
 *
 * @param c the request context
 * @param error the error to send
 * @returns a response with the mapped status and `{ error }` body
 */
export function errorResponse(c: Context, error: DakgharError): Response {
  return c.json(error.toJSON(), errorStatus[error.code]);
}

/**
 * Creates Hono's `onError` handler.
 *
 * @param log where unexpected errors are logged, with their stack
 * @returns the handler
 */
export function createErrorHandler(log: Logger): ErrorHandler {
  return (error, c) => {
    const clientError = toClientError(error);
    if (clientError.code === "internal" && !(error instanceof DakgharError)) {
      log.error("request failed", {
        method: c.req.method,
        path: c.req.path,
        error: error instanceof Error ? error.stack ?? error.message : error,
      });
    }
    const response = errorResponse(c, clientError);
    // Keep the bearer challenge that bearerAuth put on its own response.
    const challenge = error instanceof HTTPException
      ? error.getResponse().headers.get("WWW-Authenticate")
      : null;
    if (challenge) response.headers.set("WWW-Authenticate", challenge);
    return response;
  };
}

/** Hono's `notFound` handler: a `not_found` error body. */
export const notFound: NotFoundHandler = (c) =>
  errorResponse(
    c,
    new DakgharError("not_found", `No route for ${c.req.method} ${c.req.path}`),
  );
