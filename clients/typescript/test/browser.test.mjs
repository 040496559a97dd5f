// The web console in a real browser (Debian chromium driven by playwright-core) against
// `herald serve --dev`. Saves a screenshot to target/console.png at the repository root.

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { CHROMIUM, CHROMIUM_ARGS, publish, sampleRun, startHerald } from "./helpers.mjs";

const SCREENSHOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../../target/console.png");
const NAMES = ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"];

let server;
let browser;
let page;
const pageErrors = [];

before(async () => {
  server = await startHerald({ dev: true });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  page.on("pageerror", (e) => pageErrors.push(e.message));
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Event names and seqs shown in the card of `runId`, in DOM order. */
async function cardEvents(runId) {
  return page.locator(`[data-run-id="${runId}"] li.event`).evaluateAll((rows) =>
    rows.map((r) => ({ event: r.dataset.event, seq: Number(r.dataset.seq) })),
  );
}

async function waitForCard(runId, state, count) {
  const card = page.locator(`[data-run-id="${runId}"]`);
  await card.locator(`[data-testid=run-state][data-state="${state}"]`).waitFor({ timeout: 10_000 });
  await page.waitForFunction(
    ([id, n]) => document.querySelectorAll(`[data-run-id="${id}"] li.event`).length >= n,
    [runId, count],
    { timeout: 10_000 },
  );
  return card;
}

test("console: dev connect, a published run renders in order and completes, then a dropped connection catches up without duplicates", async () => {
  const response = await page.goto(`${server.http}/console`);
  assert.equal(response.status(), 200);
  assert.equal(await page.title(), "Herald console");

  // Dev mode offers the dev-token button; connecting ends in "live".
  const devButton = page.getByTestId("dev-connect");
  await devButton.waitFor({ state: "visible" });
  await devButton.click();
  await page.locator('[data-testid=status][data-status="live"]').waitFor();
  assert.equal(await page.getByTestId("user").textContent(), "dev-user");
  assert.equal(await page.getByTestId("recovery").textContent(), "none");

  // A run published through the HTTP API shows its five events in order, state completed.
  await publish(server, { events: sampleRun("dev-user", "run-1") });
  const card1 = await waitForCard("run-1", "completed", 5);
  assert.deepEqual(await cardEvents("run-1"), NAMES.map((event, i) => ({ event, seq: i + 1 })));
  assert.equal(await card1.getByTestId("run-state").textContent(), "completed");
  // The tool call is paired and has a duration.
  assert.match(await card1.getByTestId("run-tools").textContent(), /search.*c1.*\d+ ms/);
  assert.equal(await page.getByTestId("seq").textContent(), "5");

  // Drop the connection; publish a second run while the console is offline.
  await page.getByTestId("drop").click();
  await page.locator('[data-testid=status][data-status="reconnecting"]').waitFor();
  await publish(server, { events: sampleRun("dev-user", "run-2") });

  // The console resumes from seq 5: the missed run is replayed, nothing is doubled.
  await page.locator('[data-testid=recovery][data-recovery="replayed"][data-replayed]').waitFor();
  await page.locator('[data-testid=status][data-status="live"]').waitFor();
  assert.equal(await page.getByTestId("recovery").textContent(), "replayed");
  assert.equal(await page.getByTestId("recovery").getAttribute("data-replayed"), "5");
  await waitForCard("run-2", "completed", 5);
  assert.deepEqual(await cardEvents("run-2"), NAMES.map((event, i) => ({ event, seq: i + 6 })));
  assert.deepEqual(await cardEvents("run-1"), NAMES.map((event, i) => ({ event, seq: i + 1 })));
  const allSeqs = await page.locator("li.event").evaluateAll((rows) => rows.map((r) => Number(r.dataset.seq)));
  assert.equal(allSeqs.length, 10, "ten event rows in all");
  assert.equal(new Set(allSeqs).size, 10, "no event shown twice");
  assert.equal(await page.getByTestId("seq").textContent(), "10");
  assert.equal(await page.locator("[data-testid=run-card]").count(), 2);

  // Raw frames are there on demand.
  await card1.locator("details summary").click();
  await page.waitForFunction(() => /"agent_completed"/.test(document.querySelector('[data-run-id="run-1"] details pre')?.textContent ?? ""));
  const raw = await card1.locator("details pre").textContent();
  assert.equal(raw.match(/"type": ?"event"/g)?.length, 5, "one raw frame per event");

  mkdirSync(dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  assert.deepEqual(pageErrors, [], "no uncaught errors in the page");
});

test("console: a page opened after runs finished shows them from the user's recent history", async () => {
  // The first test left two finished runs in dev-user's log; a fresh page gets no active runs.
  const fresh = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  const errors = [];
  fresh.on("pageerror", (e) => errors.push(e.message));
  await fresh.goto(`${server.http}/console`);
  await fresh.getByTestId("dev-connect").click();
  await fresh.locator('[data-testid=status][data-status="live"]').waitFor();
  for (const runId of ["run-1", "run-2"]) {
    await fresh.locator(`[data-run-id="${runId}"] [data-testid=run-state][data-state="completed"]`).waitFor({ timeout: 10_000 });
  }
  const seqs = await fresh
    .locator('[data-run-id="run-2"] li.event')
    .evaluateAll((rows) => rows.map((r) => Number(r.dataset.seq)));
  assert.deepEqual(seqs, [6, 7, 8, 9, 10], "each earlier event once, in order");
  assert.equal(await fresh.locator("[data-testid=run-card]").count(), 2);
  assert.deepEqual(errors, []);
  await fresh.close();
});
