/**
 * The `/ui/` routes through `createApp`, as the broker mounts them. The page
 * itself is exercised in a browser by test/browser/page_test.ts.
 */
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { createApp } from "../../src/http/app.ts";
import { silentLogger } from "../../src/logger.ts";
import { FakeBroker } from "./_fake_broker.ts";

const test = suite("createStaticRoutes");

const app = createApp(new FakeBroker(), { log: silentLogger });
const built = existsSync(
  fileURLToPath(new URL("../../build/src/client/mod.js", import.meta.url)),
) || import.meta.url.endsWith(".js");

test("createStaticRoutes redirects /ui to /ui/", async () => {
  const response = await app.request("/ui");
  assert.is(response.status, 302);
  assert.is(response.headers.get("Location"), "/ui/");
});

test("createStaticRoutes serves the page, or says to build first", async () => {
  const response = await app.request("/ui/");
  if (built) {
    assert.is(response.status, 200);
    const page = await response.text();
    assert.ok(page.includes('"msgpackr": "./msgpackr/index.js"'));
    assert.ok(page.includes('from "./client/mod.js"'));
  } else {
    assert.is(response.status, 404);
    assert.match((await response.json()).error.message, "npm run build");
  }
});

test("createStaticRoutes serves the client modules as JavaScript", async () => {
  if (!built) return;
  for (const path of ["client/mod.js", "log/record_batch.js", "errors.js"]) {
    const response = await app.request(`/ui/${path}`);
    assert.is(response.status, 200, path);
    assert.is(
      response.headers.get("Content-Type"),
      "text/javascript; charset=utf-8",
    );
    assert.ok((await response.text()).includes("export "), path);
  }
});

test("createStaticRoutes serves msgpackr's browser build", async () => {
  const response = await app.request("/ui/msgpackr/index.js");
  assert.is(response.status, 200);
  assert.match(await response.text(), "from './pack.js'");
});

test("createStaticRoutes serves nothing outside the client", async () => {
  for (
    const path of [
      "/ui/server.js",
      "/ui/http/app.js",
      "/ui/client/..%2F..%2Fpackage.json",
      "/ui/msgpackr/package.json",
      "/ui/msgpackr/..%2Fuvu%2Fpackage.json",
      "/ui/log/missing.js",
    ]
  ) {
    const response = await app.request(path);
    assert.is(response.status, 404, path);
    assert.is((await response.json()).error.code, "not_found");
  }
});

test.run();
