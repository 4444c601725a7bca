/** The error a malformed WebSocket frame gets. */
import { DakgharError } from "../errors.ts";

/** Signals that a frame is malformed; answered with a `bad_frame` error. */
export class BadFrame extends DakgharError {
  constructor(message: string, readonly id?: unknown) {
    super("bad_frame", message);
  }
}
