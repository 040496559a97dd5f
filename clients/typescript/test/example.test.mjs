// examples/ai-sdk-chat in a real browser (Debian chromium driven by playwright-core) against the
// real Herald with an upstream backend: the page sends a message, the run streams into the AI
// SDK's chat, the page is reloaded mid-run, and the run resumes from Herald's log: one assistant
// message, complete, nothing doubled, no second message upstream.

import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { randomBytes } from "node:crypto";
import { execFileSync } from "node:child_process";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startBackend, weatherRun } from "./ai-sdk-helpers.mjs";
import { CHROMIUM, CHROMIUM_ARGS, publish, signJwt, startHerald, uniqueUser } from "./helpers.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const EXAMPLE = resolve(here, "../../../examples/ai-sdk-chat");

let backend;
let server;
let site;
let browser;
let built;

before(async () => {
  built = mkdtempSync(join(tmpdir(), "ai-sdk-chat-"));
  execFileSync(process.execPath, [resolve(here, "../scripts/build-example.mjs"), built], { stdio: "ignore" });
  const files = { "/index.html": readFileSync(join(EXAMPLE, "index.html")), "/app.js": readFileSync(join(built, "app.js")) };
  site = createServer((req, res) => {
    const body = files[new URL(req.url, "http://x").pathname];
    if (!body) return res.writeHead(404).end();
    res.writeHead(200, { "content-type": req.url.startsWith("/app.js") ? "text/javascript" : "text/html" }).end(body);
  });
  await new Promise((r) => site.listen(0, "127.0.0.1", r));
  backend = await startBackend();
  server = await startHerald({ args: ["--upstream-url", `${backend.url}/herald`, "--upstream-secret", "s3cret", "--allowed-origins", "*"] });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
});

after(async () => {
  await browser?.close();
  await server?.stop();
  await backend?.close();
  site?.close();
  rmSync(built, { recursive: true, force: true });
});

/** The assistant messages as the page shows them: one array of part texts per message. */
function assistantParts(page) {
  return page.locator("li.assistant").evaluateAll((lis) => lis.map((li) => [...li.children].map((d) => `${d.className}|${d.textContent}`)));
}

test("the example page streams a run with the AI SDK's chat, and a reload mid-run resumes it", async () => {
  const user = uniqueUser("page");
  const runId = `run-${randomBytes(4).toString("hex")}`;
  backend.reply = () => ({ run_id: runId });
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  const url = `http://127.0.0.1:${site.address().port}/index.html?token=${signJwt(server.secret, user)}&herald=${encodeURIComponent(server.ws)}&chat=c1`;
  await page.goto(url);
  await page.locator("body[data-status=ready]").waitFor();

  await page.fill("#input", "Weather in Paris?");
  await page.click("form button:not([type])");
  await page.waitForFunction(() => document.querySelectorAll("li.user").length === 1);
  const [half1, half2] = weatherRun(user, runId, "c1");
  for (const e of half1) await publish(server, e);
  await page.locator("li.assistant div:not([class])", { hasText: "It is" }).waitFor();

  await page.reload();
  await page.locator("body[data-status=streaming]").waitFor(); // resumed from Herald's log
  for (const e of half2) await publish(server, e);
  await page.locator("body[data-status=ready]").waitFor();
  await page.locator("li.assistant div:not([class])", { hasText: "It is sunny." }).waitFor();

  assert.deepEqual(await assistantParts(page), [
    ["reasoning|Looking it up", 'tool|🔧 search({"q":"weather"}) → {"sky":"sunny"}', "|It is sunny."],
  ]);
  assert.equal(await page.locator("li.user").count(), 1);
  assert.equal(backend.requests.length, 1, "the reload sent nothing upstream");
  assert.equal(backend.requests[0].body.data.text, "Weather in Paris?");
  assert.deepEqual(errors, []);
  await page.close();
});
