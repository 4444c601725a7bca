import { suite } from "uvu";
import * as assert from "uvu/assert";
import { createLogger, parseLogLevel, textSink } from "../src/logger.ts";

const test = suite("logger");

test("createLogger() drops lines below the minimum level", () => {
  const lines: string[] = [];
  const log = createLogger(textSink((line) => lines.push(line)), "info");
  log.debug("hidden");
  log.info("shown", { partition: 3 });
  assert.is(lines.length, 1);
  assert.match(lines[0], /INFO {2}shown partition=3$/);
});

test("scope() prefixes the scope name and keeps its fields", () => {
  const lines: string[] = [];
  const log = createLogger(textSink((line) => lines.push(line)), "trace")
    .scope("segment", { topic: "orders" });
  log.warn("torn batch", { position: 4096, path: "a b" });
  assert.match(
    lines[0],
    /WARN {2}segment torn batch topic=orders position=4096 path="a b"/,
  );
});

test("parseLogLevel() rejects unknown levels", () => {
  assert.is(parseLogLevel("warn"), "warn");
  assert.throws(() => parseLogLevel("loud"), /Cannot parse log level: loud/);
});

test.run();
