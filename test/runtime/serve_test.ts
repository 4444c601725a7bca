import { suite } from "uvu";
import * as assert from "uvu/assert";
import { Hono } from "hono";
import type { WSEvents } from "hono/ws";
import { runtime } from "../../src/runtime/mod.ts";
import { connect } from "../http/_ws_client.ts";

const test = suite("serve");

function echoApp(): Hono {
  const app = new Hono();
  const upgrade = runtime.webSocketFor(app);
  app.get("/hello", (c) => c.text("hello"));
  app.get(
    "/echo",
    upgrade((): WSEvents => ({
      onMessage: (event, ws) => ws.send(String(event.data)),
    })),
  );
  return app;
}

test("serve() answers HTTP on the port it reports", async () => {
  let listened: { hostname: string; port: number } | undefined;
  const server = await runtime.serve(echoApp(), {
    hostname: "127.0.0.1",
    port: 0,
    onListen: (address) => listened = address,
  });
  try {
    assert.ok(server.port > 0);
    assert.equal(listened, { hostname: "127.0.0.1", port: server.port });
    const response = await fetch(`http://127.0.0.1:${server.port}/hello`);
    assert.is(await response.text(), "hello");
  } finally {
    await server.close();
  }
});

test("webSocketFor() upgrades and close() ends open WebSockets", async () => {
  const server = await runtime.serve(echoApp(), {
    hostname: "127.0.0.1",
    port: 0,
  });
  const socket = await connect(`ws://127.0.0.1:${server.port}/echo`);
  socket.send({ op: "echo" });
  assert.equal(await socket.next(), { op: "echo", binary: false });

  await server.close();
  assert.is(await socket.closed, 1001);
  let refused = false;
  try {
    await fetch(`http://127.0.0.1:${server.port}/hello`);
  } catch {
    refused = true;
  }
  assert.ok(refused, "the port still answers after close()");
});

test("serve() rejects a port in use", async () => {
  const first = await runtime.serve(echoApp(), {
    hostname: "127.0.0.1",
    port: 0,
  });
  try {
    let failed = false;
    try {
      const second = await runtime.serve(echoApp(), {
        hostname: "127.0.0.1",
        port: first.port,
      });
      await second.close();
    } catch {
      failed = true;
    }
    assert.ok(failed);
  } finally {
    await first.close();
  }
});

test.run();
