/**
 * The browser page under `/ui/`: a small demo that subscribes with the
 * client over WebSocket and shows records as they arrive, plus the files it
 * loads — the client as browser ES modules and msgpackr's browser build.
 *
 * Browsers cannot load the `.ts` sources, so the client modules come from
 * tsc's output: the files beside this one when it runs compiled (Node), or
 * `build/src/` when it runs from source (Deno), which needs `npm run build`
 * first. Without a build the page answers 404 saying so.
 */
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { Hono } from "hono";
import type { Context } from "hono";
import { DakgharError } from "../errors.ts";

// The compiled src/ tree: the modules under client/ import ../log/ and
// ../errors.js, so the page sees them at the same relative paths.
const compiledRoot = import.meta.url.endsWith(".js")
  ? new URL("../", import.meta.url)
  : new URL("../../build/src/", import.meta.url);
const compiledModule = /^(?:(?:client|log)\/[a-z0-9_]+|errors)\.js$/;

// msgpackr's package root; its index.js and siblings are plain browser ESM.
const msgpackrRoot = new URL("./", import.meta.resolve("msgpackr"));
const msgpackrModule = /^[a-z_]+\.js$/;

const JAVASCRIPT = "text/javascript; charset=utf-8";

/**
 * Routes serving the demo page at `/ui/` and its modules, meant for
 * `app.route("/", createStaticRoutes())`. Query parameters of the page:
 * `topic` (default "orders"), `group` (optional consumer group) and `from`
 * ("earliest" or "latest", default "earliest").
 *
 * @returns a Hono app with `/ui/`, `/ui/client/*`, `/ui/log/*`,
 *   `/ui/errors.js` and `/ui/msgpackr/*`
 */
export function createStaticRoutes(): Hono {
  const routes = new Hono();

  // The page's imports are relative, so it must be seen under "/ui/".
  routes.get("/ui", (c) => c.redirect("/ui/"));

  routes.get("/ui/", async (c) => {
    await compiledFile("client/mod.js");
    c.header("Cache-Control", "no-cache");
    return c.html(PAGE);
  });

  routes.get("/ui/msgpackr/:file", async (c) => {
    const name = c.req.param("file");
    const bytes = msgpackrModule.test(name)
      ? await readOrUndefined(new URL(name, msgpackrRoot))
      : undefined;
    if (bytes === undefined) throw notServed(c.req.path);
    return javascript(c, bytes);
  });

  routes.get("/ui/:dir/:file", async (c) => {
    const name = `${c.req.param("dir")}/${c.req.param("file")}`;
    if (!compiledModule.test(name)) throw notServed(c.req.path);
    return javascript(c, await compiledFile(name));
  });

  routes.get("/ui/:file", async (c) => {
    const name = c.req.param("file");
    if (!compiledModule.test(name)) throw notServed(c.req.path);
    return javascript(c, await compiledFile(name));
  });

  return routes;
}

function javascript(c: Context, bytes: Uint8Array<ArrayBuffer>): Response {
  c.header("Content-Type", JAVASCRIPT);
  c.header("Cache-Control", "no-cache");
  return c.body(bytes);
}

async function compiledFile(name: string): Promise<Uint8Array<ArrayBuffer>> {
  const bytes = await readOrUndefined(new URL(name, compiledRoot));
  if (bytes !== undefined) return bytes;
  throw new DakgharError(
    "not_found",
    `The browser client is served from tsc's output and ${name} is not ` +
      "there: run `npm run build` first",
    { path: `/ui/${name}` },
  );
}

async function readOrUndefined(
  url: URL,
): Promise<Uint8Array<ArrayBuffer> | undefined> {
  try {
    return new Uint8Array(await readFile(fileURLToPath(url)));
  } catch {
    return undefined;
  }
}

function notServed(path: string): DakgharError {
  return new DakgharError("not_found", `No such file: ${path}`, { path });
}

// The import map points the client's bare "msgpackr" import at the browser
// build served beside the page. Values are written with textContent, never
// as HTML, so the page shows records byte for byte.
const PAGE = `<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>Dakghar</title>
    <link rel="icon" href="data:,">
    <script type="importmap">
    { "imports": { "msgpackr": "./msgpackr/index.js" } }
    </script>
    <style>
      body { font-family: sans-serif; margin: 1rem; }
      #records { font-family: monospace; white-space: pre-wrap; }
    </style>
  </head>
  <body>
    <p>Topic <b id="topic"></b>, status: <span id="status">loading</span></p>
    <form id="publish">
      <input id="value" placeholder="a message" autofocus>
      <button>Publish</button>
    </form>
    <ol id="records"></ol>
    <script type="module">
    import { createClient } from "./client/mod.js";

    const query = new URLSearchParams(location.search);
    const topic = query.get("topic") ?? "orders";
    const group = query.get("group") ?? undefined;
    const from = query.get("from") ?? "earliest";
    const status = document.getElementById("status");
    const records = document.getElementById("records");
    document.getElementById("topic").textContent = topic;

    const client = createClient({ url: location.origin });
    document.getElementById("publish").onsubmit = async (event) => {
      event.preventDefault();
      const input = document.getElementById("value");
      try {
        await client.publish(topic, { value: input.value });
        input.value = "";
      } catch (error) {
        status.textContent = "publish failed: " + (error.code ?? error.message);
      }
    };

    try {
      const subscription = await client.subscribe({
        topic,
        group,
        from,
        onEvent(event) {
          if (event.type === "assigned") status.textContent = "assigned";
          else if (event.type === "error" || event.type === "disconnected") {
            status.textContent = "error: " + event.error.code;
          }
        },
      });
      if (group === undefined) status.textContent = "subscribed";
      for await (const message of subscription) {
        const item = document.createElement("li");
        item.dataset.partition = String(message.partition);
        item.dataset.offset = String(message.offset);
        const value = document.createElement("span");
        value.className = "value";
        value.textContent = message.text();
        item.append(message.partition + "@" + message.offset + " ", value);
        records.append(item);
      }
    } catch (error) {
      status.textContent = "error: " + (error.code ?? error.message);
    }
    </script>
  </body>
</html>
`;
