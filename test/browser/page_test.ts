/**
 * The `/ui/` page in a real browser: headless Chromium (Debian's package,
 * driven by playwright-core) opens the page, which subscribes in a group
 * with the client over WebSocket; records published over HTTP must appear
 * on the page in order, byte for byte.
 *
 * Runs on Node only: on Deno the page needs the tsc build and playwright's
 * Node transport, and the Node run already covers the page. On Deno, or
 * where /usr/bin/chromium is missing, a test named with the reason stands in
 * and prints it.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { silentLogger } from "../../src/logger.ts";
import { startBroker } from "../../src/server.ts";

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--no-first-run",
  "--disable-component-update",
  "--disable-sync",
];
// Bounds for a page that never gets there; not a timed assertion.
const WAIT_MS = 10_000;

const test = suite("browser page");

const skipReason = "Deno" in globalThis
  ? "skipped on Deno: the browser test runs on Node only"
  : existsSync(CHROMIUM)
  ? undefined
  : "skipped: chromium not installed (apt-get install chromium)";

const name =
  "GET /ui/ (Node, headless Chromium) shows records published over HTTP in order, byte-exact";

if (skipReason !== undefined) {
  // Counted as skipped in the summary, with the reason printed.
  console.log(`browser page: ${skipReason}`);
  test.skip(name, () => {});
} else {
  test(name, async () => {
    const { chromium } = await import("playwright-core");
    const dataDir = mkdtempSync(join(tmpdir(), "dakghar-browser-"));
    const profileDir = mkdtempSync(join(tmpdir(), "dakghar-chromium-"));
    const running = await startBroker({
      dataDir,
      port: 0,
      logger: silentLogger,
    });
    try {
      const created = await fetch(`${running.url}/topics`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ name: "page_orders", partitions: 1 }),
      });
      assert.is(created.status, 201);

      // A persistent context is how playwright takes --user-data-dir.
      const context = await chromium.launchPersistentContext(profileDir, {
        executablePath: CHROMIUM,
        headless: true,
        args: CHROMIUM_ARGS,
      });
      try {
        const page = context.pages()[0] ?? await context.newPage();
        const problems: string[] = [];
        page.on("pageerror", (error) => problems.push(String(error)));
        page.on("response", (response) => {
          if (response.status() >= 400) {
            problems.push(`${response.status()} ${response.url()}`);
          }
        });

        await page.goto(
          `${running.url}/ui/?topic=page_orders&group=page&from=earliest`,
        );
        const status = await page.waitForFunction(
          () => {
            const text = document.getElementById("status")?.textContent ?? "";
            return text === "assigned" || text.startsWith("error") ? text : "";
          },
          undefined,
          { timeout: WAIT_MS },
        );
        assert.is(await status.jsonValue(), "assigned", problems.join("\n"));

        const values = [
          "first",
          "  spaces and\ttab  ",
          "<b>not bold</b> & ampersand",
          "नमस्ते डाकघर 📮",
          '{"json":"text"}',
        ];
        for (const value of values) {
          const published = await fetch(
            `${running.url}/topics/page_orders/records`,
            {
              method: "POST",
              headers: { "Content-Type": "application/json" },
              body: JSON.stringify({ value }),
            },
          );
          assert.ok(published.ok, `publish answered ${published.status}`);
          await published.body?.cancel();
        }

        await page.waitForFunction(
          (count) =>
            document.querySelectorAll("#records .value").length >= count,
          values.length,
          { timeout: WAIT_MS },
        );
        const shown = await page.evaluate(() =>
          Array.from(
            document.querySelectorAll("#records li"),
            (item) => ({
              offset: (item as HTMLElement).dataset.offset,
              value: item.querySelector(".value")?.textContent,
            }),
          )
        );
        assert.equal(
          shown,
          values.map((value, offset) => ({ offset: String(offset), value })),
        );
        assert.equal(problems, []);
      } finally {
        await context.close();
      }
    } finally {
      await running.stop();
      rmSync(dataDir, { recursive: true, force: true });
      rmSync(profileDir, { recursive: true, force: true });
    }
  });
}

test.run();
