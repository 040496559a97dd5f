// The admin page (/admin) in a real browser (Debian chromium driven by playwright-core) against
// `herald serve` with an admin token: sign-in gate, live tiles, nodes, runs (active and stalled),
// rejections by rule, and a click on a run that opens its user's live stream. Saves a screenshot
// to target/admin.png at the repository root (docs/admin.png is a copy of it).

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import WebSocket from "ws";
import { CHROMIUM, CHROMIUM_ARGS, publish, signJwt, startHerald } from "./helpers.mjs";

const SCREENSHOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../../target/admin.png");
const ADMIN_TOKEN = "admin-token-for-the-browser-test";

let server;
let browser;
let page;
const sockets = [];
const pageErrors = [];

before(async () => {
  server = await startHerald({ args: ["--admin-token", ADMIN_TOKEN, "--run-stall-s", "1"] });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  page.on("pageerror", (e) => pageErrors.push(e.message));
});

after(async () => {
  for (const ws of sockets) ws.close();
  await browser?.close();
  await server?.stop();
});

/** Opens a user's socket (as an app would) and resolves once the server welcomed it. */
function connectUser(user) {
  return new Promise((res, rej) => {
    const ws = new WebSocket(server.ws, ["herald.v1", `bearer.${signJwt(server.secret, user)}`]);
    sockets.push(ws);
    ws.on("message", (data) => {
      if (JSON.parse(String(data)).type === "welcome") res(ws);
    });
    ws.on("error", rej);
  });
}

const text = (id) => page.getByTestId(id).textContent();

test("admin: gated by the admin token, shows nodes, connections, runs and rejections live, and a run opens its user's stream", async () => {
  const response = await page.goto(`${server.http}/admin`);
  assert.equal(response.status(), 200);
  assert.equal(await page.title(), "Herald admin");

  // Nothing without a credential; a wrong one is refused.
  await page.getByTestId("signin").waitFor({ state: "visible" });
  assert.equal(await page.getByTestId("dashboard").isVisible(), false);
  await page.getByTestId("credential").fill("not-the-token");
  await page.getByTestId("sign-in").click();
  await page.getByTestId("signin-error").waitFor({ state: "visible" });
  assert.match(await text("signin-error"), /not accepted/);

  // Some traffic: two users online, a run that stays active, one that stalls, one refused publish.
  await connectUser("ada");
  await connectUser("bob");
  await publish(server, { user_id: "ada", event: "agent_started", run_id: "run-ada" });
  await publish(server, { user_id: "bob", event: "agent_started", run_id: "run-bob" });
  const refused = await fetch(`${server.http}/v1/events`, {
    method: "POST",
    headers: { authorization: `Bearer ${server.apiKey}`, "content-type": "application/json" },
    body: JSON.stringify({ user_id: "bob", event: "agent_text", run_id: "never-started", data: { text: "x" } }),
  });
  assert.equal(refused.status, 409);

  await page.getByTestId("credential").fill(ADMIN_TOKEN);
  await page.getByTestId("sign-in").click();
  await page.getByTestId("dashboard").waitFor({ state: "visible" });
  await page.locator('[data-testid=state][data-status="live"]').waitFor();
  assert.equal(await text("engine"), "memory");
  assert.equal(await text("nodes-count"), "1");
  assert.equal(await page.locator("[data-testid=nodes] tr[data-node]").count(), 1);
  assert.equal(await text("connections"), "2");
  assert.equal(await text("users"), "2");
  await page.locator('[data-testid=rejections] tr[data-rule="not_started"]').waitFor();

  // Both runs are active; after run_stall_s (1 s) without events they are listed as stalled too.
  await page.locator('[data-testid=active-runs] tr[data-run="run-ada"]').waitFor();
  await page.locator('[data-testid=active-runs] tr[data-run="run-bob"]').waitFor();
  await page.locator('[data-testid=stalled-runs] tr[data-run="run-bob"]').waitFor({ timeout: 15_000 });
  assert.equal(await text("runs-active"), "2");

  // A click on a run opens that user's live stream (read-only).
  await page.locator('[data-testid=active-runs] tr[data-run="run-ada"]').click();
  await page.getByTestId("watch").waitFor({ state: "visible" });
  assert.equal(await text("watch-user"), "ada");
  await page.locator('[data-testid=watch-status][data-status="live"]').waitFor();
  await publish(server, { user_id: "ada", event: "agent_thinking", run_id: "run-ada", data: { text: "hmm" } });
  await page.locator('[data-testid=stream] li.line[data-event="agent_thinking"]').waitFor();
  // The watcher's own socket shows up as one more connection of ada.
  await page.waitForFunction(() => document.querySelector("[data-testid=connections]")?.textContent === "3");

  mkdirSync(dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });

  // Signing out forgets the credential and stops the stream.
  await page.getByTestId("sign-out").click();
  await page.getByTestId("signin").waitFor({ state: "visible" });
  await page.reload();
  await page.getByTestId("signin").waitFor({ state: "visible" });
  assert.deepEqual(pageErrors, [], "no uncaught errors in the page");
});
