// The Herald web console: connect as a user, watch runs live, drop the connection, publish samples.

import {
  HeraldClient,
  RunTracker,
  type HeraldEvent,
  type RawFrame,
  type Run,
  type ToolCall,
} from "../../clients/typescript/src/index.js";
import { $, h } from "./dom.js";

/** How long "Drop connection" stays offline before resuming, so events can pile up meanwhile. */
const DROP_OFFLINE_MS = 2000;
const MAX_RAW_FRAMES = 300;
const MAX_LOG_LINES = 200;

interface DevInfo {
  token: string;
  api_key: string;
  user_id: string;
}

const ui = {
  url: $<HTMLInputElement>("#url"),
  token: $<HTMLTextAreaElement>("#token"),
  connect: $<HTMLButtonElement>("#connect"),
  devConnect: $<HTMLButtonElement>("#dev-connect"),
  disconnect: $<HTMLButtonElement>("#disconnect"),
  drop: $<HTMLButtonElement>("#drop"),
  ping: $<HTMLButtonElement>("#ping"),
  connHint: $("#conn-hint"),
  publishPanel: $("#publish-panel"),
  outcome: $<HTMLSelectElement>("#outcome"),
  slow: $<HTMLInputElement>("#slow"),
  publish: $<HTMLButtonElement>("#publish"),
  publishHint: $("#publish-hint"),
  status: $("[data-testid=status]"),
  user: $("[data-testid=user]"),
  seq: $("[data-testid=seq]"),
  epoch: $("[data-testid=epoch]"),
  recovery: $("[data-testid=recovery]"),
  log: $("#log"),
  rawAll: $<HTMLDetailsElement>("#raw-all"),
  rawFrames: $("#raw-frames"),
  runs: $("#runs"),
  runCount: $("#run-count"),
  empty: $("#empty"),
};

let client: HeraldClient | null = null;
let runs = new RunTracker();
let dev: DevInfo | null = null;
const rawFrames: string[] = [];
const cards = new Map<string, Card>();
let replayedSinceWelcome = 0;
let inReplay = false;

ui.url.value = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;

// ---- connection -------------------------------------------------------------------------------

function connect(token: string): void {
  client?.close();
  resetRuns();
  const c = new HeraldClient({ url: ui.url.value.trim(), token, reconnect: { initialDelayMs: 300, maxDelayMs: 10_000 } });
  client = c;
  runs = new RunTracker();
  runs.track(c);
  c.on("status", (s) => {
    ui.status.textContent = s;
    ui.status.dataset.status = s;
    const open = s === "live" || s === "syncing";
    ui.drop.disabled = !open;
    ui.ping.disabled = !open;
    ui.disconnect.disabled = s === "closed";
  });
  c.on("welcome", (w) => {
    ui.user.textContent = w.user_id;
    ui.epoch.textContent = w.epoch;
    ui.epoch.title = w.epoch;
    ui.recovery.textContent = w.recovery;
    ui.recovery.dataset.recovery = w.recovery;
    delete ui.recovery.dataset.replayed; // set again on synced
    ui.seq.textContent = String(w.seq);
    replayedSinceWelcome = 0;
    inReplay = true;
    log(`welcome: ${w.recovery}, log at seq ${w.seq}, connection ${w.connection_id}`, "good");
    if (w.recovery !== "replayed" && w.seq > 0) void loadRecentRuns(token, w.epoch, w.seq);
  });
  c.on("event", (e) => {
    if (inReplay) replayedSinceWelcome++;
    ui.seq.textContent = String(e.seq);
  });
  c.on("synced", (s) => {
    inReplay = false;
    ui.seq.textContent = String(s.seq);
    ui.recovery.dataset.replayed = String(replayedSinceWelcome);
    const what = s.recovery === "replayed" ? "replayed" : "snapshot of active runs:";
    log(`synced at seq ${s.seq} (${what} ${replayedSinceWelcome} events)`);
  });
  c.on("reset", (r) => {
    resetRuns();
    log(`reset: the server could not resume from seq ${r.previous?.seq ?? "?"}; reloaded from epoch ${r.epoch}`, "bad");
  });
  c.on("close", (i) => {
    const next = i.reconnectInMs == null ? "closed" : `reconnecting in ${i.reconnectInMs} ms`;
    log(`socket closed ${i.code}${i.reason ? ` (${i.reason})` : ""}; ${next}`, i.code === 1000 ? undefined : "bad");
  });
  c.on("error", (e) => log(`error: ${e.message}`, "bad"));
  c.on("frame", onRawFrame);
  runs.onChange((run) => renderRun(run));
  log(`connecting to ${ui.url.value.trim()}`);
  c.connect().catch((e: Error) => log(`gave up: ${e.message}`, "bad"));
}

/**
 * The user's recent runs, finished ones included: a fresh connection only gets the active runs, so
 * a second, short-lived socket replays the retained log from its start (up to the welcome's seq)
 * and the runs the page does not show yet are added. Older than retention is simply not shown.
 */
async function loadRecentRuns(token: string, epoch: string, upTo: number): Promise<void> {
  const known = new Set(runs.list().map((r) => r.id));
  const history = new HeraldClient({ url: ui.url.value.trim(), token, reconnect: false, cursor: { seq: 0, epoch } });
  const events: HeraldEvent[] = [];
  history.on("event", (e) => {
    if (e.seq <= upTo && e.run_id && !known.has(e.run_id)) events.push(e);
  });
  try {
    const synced = new Promise<boolean>((resolve) => {
      history.on("synced", (s) => resolve(s.recovery === "replayed"));
      history.on("close", () => resolve(false));
    });
    await history.connect();
    const complete = await synced;
    for (const e of events) runs.apply(e);
    log(`history: ${events.length} events of earlier runs${complete ? "" : " (older ones are no longer retained)"}`);
  } catch (e) {
    log(`history unavailable: ${(e as Error).message}`, "bad");
  } finally {
    history.close();
  }
}

ui.connect.addEventListener("click", () => {
  const token = ui.token.value.trim();
  if (!token) {
    ui.connHint.textContent = "Paste a JWT first (herald token --sub USER prints one).";
    return;
  }
  ui.connHint.textContent = "";
  connect(token);
});

ui.devConnect.addEventListener("click", () => {
  if (!dev) return;
  ui.token.value = dev.token;
  connect(dev.token);
});

ui.disconnect.addEventListener("click", () => client?.close());

ui.drop.addEventListener("click", () => {
  if (!client) return;
  log(`dropping the connection at seq ${client.cursor?.seq ?? 0}; resuming in ${DROP_OFFLINE_MS / 1000} s`);
  client.reconnect(DROP_OFFLINE_MS);
});

ui.ping.addEventListener("click", () => {
  client
    ?.ping()
    .then((ms) => log(`pong in ${ms.toFixed(1)} ms`))
    .catch((e: Error) => log(`ping failed: ${e.message}`, "bad"));
});

// ---- dev mode: token button and publish form ----------------------------------------------------

async function loadDev(): Promise<void> {
  try {
    const res = await fetch("/console/dev.json", { cache: "no-store" });
    if (!res.ok) return;
    dev = (await res.json()) as DevInfo;
    ui.devConnect.hidden = false;
    ui.publishPanel.hidden = false;
    ui.devConnect.textContent = `Use dev token (${dev.user_id})`;
  } catch {
    // not in dev mode
  }
}

function sampleEvents(outcome: string, runId: string, userId: string): Record<string, unknown>[] {
  const base = { user_id: userId, run_id: runId, thread_id: "console" };
  const callId = `call-${runId.slice(-4)}`;
  const evs: Record<string, unknown>[] = [
    { ...base, event: "agent_started", data: { agent: "weather-bot", input: "Weather in Paris?" } },
    { ...base, event: "agent_thinking", data: { text: "I should look up the forecast." } },
    { ...base, event: "tool_executing", data: { tool_name: "get_forecast", tool_call_id: callId, parameters: { city: "Paris" } } },
  ];
  if (outcome === "error") {
    evs.push({ ...base, event: "agent_error", data: { message: "forecast service timed out" } });
    return evs;
  }
  evs.push({ ...base, event: "tool_completed", data: { tool_name: "get_forecast", tool_call_id: callId, result: { sky: "sunny", c: 21 } } });
  evs.push(
    outcome === "cancelled"
      ? { ...base, event: "agent_cancelled", data: { by: "console" } }
      : { ...base, event: "agent_completed", data: { answer: "Sunny, 21 °C." } },
  );
  return evs;
}

ui.publish.addEventListener("click", async () => {
  if (!dev) return;
  const runId = `run-${Math.random().toString(36).slice(2, 8)}`;
  const events = sampleEvents(ui.outcome.value, runId, dev.user_id);
  ui.publish.disabled = true;
  try {
    if (ui.slow.checked) {
      for (const e of events) {
        await post(e);
        await new Promise((r) => setTimeout(r, 300));
      }
    } else {
      await post({ events });
    }
    ui.publishHint.textContent = `Published ${events.length} events of ${runId}.`;
  } catch (e) {
    ui.publishHint.textContent = `Publish failed: ${(e as Error).message}`;
  } finally {
    ui.publish.disabled = false;
  }
});

async function post(body: unknown): Promise<void> {
  const res = await fetch("/v1/events", {
    method: "POST",
    headers: { authorization: `Bearer ${dev?.api_key ?? ""}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!res.ok) {
    const err = (await res.json().catch(() => null)) as { error?: { message?: string } } | null;
    throw new Error(`${res.status} ${err?.error?.message ?? res.statusText}`);
  }
}

// ---- run cards ---------------------------------------------------------------------------------

interface Card {
  root: HTMLElement;
  state: HTMLElement;
  meta: HTMLElement;
  text: HTMLElement;
  events: HTMLElement;
  tools: HTMLElement;
  raw: HTMLDetailsElement;
  rawPre: HTMLElement;
  rendered: number;
}

function resetRuns(): void {
  runs.clear();
  cards.clear();
  ui.runs.replaceChildren();
  updateRunCount();
}

function updateRunCount(): void {
  const n = cards.size;
  ui.runCount.textContent = n === 0 ? "no runs yet" : `${n} run${n === 1 ? "" : "s"}`;
  ui.empty.hidden = n > 0;
}

function renderRun(run: Run): void {
  let card = cards.get(run.id);
  if (!card) {
    card = createCard(run);
    cards.set(run.id, card);
    ui.runs.prepend(card.root);
    updateRunCount();
  }
  card.root.dataset.state = run.state;
  card.state.dataset.state = run.state;
  card.state.textContent = run.state;
  const span = run.endedAt && run.startedAt ? ` · ${ms(Date.parse(run.endedAt) - Date.parse(run.startedAt))}` : "";
  card.meta.textContent = `${run.threadId ? `thread ${run.threadId} · ` : ""}${run.events.length} events${span}`;
  card.text.textContent = run.text;
  card.text.hidden = run.text === "";
  const start = Date.parse(run.events[0]?.ts ?? "");
  for (const e of run.events.slice(card.rendered)) card.events.append(eventRow(e, start));
  card.rendered = run.events.length;
  // A tool_completed row shows its call's duration once paired.
  for (const t of run.tools) {
    if (t.endSeq == null) continue;
    const row = card.events.querySelector<HTMLElement>(`[data-seq="${t.endSeq}"] .detail`);
    if (row && !row.querySelector(".dur")) row.append(h("span", { class: "dur" }, ms(t.durationMs ?? 0)));
  }
  card.tools.replaceChildren(...run.tools.map(toolChip));
  card.tools.hidden = run.tools.length === 0;
  if (card.raw.open) card.rawPre.textContent = run.events.map((e) => JSON.stringify(e)).join("\n");
}

function createCard(run: Run): Card {
  const state = h("span", { class: "state", "data-testid": "run-state" });
  const meta = h("span", { class: "meta" });
  const text = h("div", { class: "text" });
  const events = h("ol", { class: "events", "data-testid": "run-events" });
  const tools = h("div", { class: "tools", "data-testid": "run-tools" });
  const rawPre = h("pre", { class: "raw" });
  const raw = h("details", {}, h("summary", {}, "raw frames"), rawPre) as HTMLDetailsElement;
  raw.addEventListener("toggle", () => {
    const r = runs.get(run.id);
    if (raw.open && r) rawPre.textContent = r.events.map((e) => JSON.stringify(e, null, 1)).join("\n");
  });
  const root = h(
    "article",
    { class: "card", "data-run-id": run.id, "data-testid": "run-card" },
    h("div", { class: "card-head" }, h("span", { class: "title" }, run.id), meta, h("span", { class: "spacer" }), state),
    text,
    events,
    tools,
    raw,
  );
  return { root, state, meta, text, events, tools, raw, rawPre, rendered: 0 };
}

function eventRow(e: HeraldEvent, start: number): HTMLElement {
  const at = Number.isNaN(start) ? "" : `+${ms(Date.parse(e.ts) - start)}`;
  return h(
    "li",
    { class: "event", "data-event": e.event, "data-seq": String(e.seq), title: e.ts },
    h("span", { class: "seq" }, seqLabel(e)),
    h("span", { class: "at" }, at),
    h("span", { class: "name" }, e.event),
    h("span", { class: "detail" }, summary(e)),
  );
}

/** `#seq`, or `#first–last` for a snapshot frame that merges several events. */
function seqLabel(e: HeraldEvent): string {
  if (e.snapshot && e.first_seq != null && e.first_seq !== e.seq) return `#${e.first_seq}–${e.seq} (merged)`;
  return `#${e.seq}`;
}

function summary(e: HeraldEvent): string {
  switch (e.event) {
    case "agent_started":
      return (e.truncated ? "(earlier output not shown) " : "") + String(e.data.input ?? e.data.agent ?? "");
    case "agent_thinking":
      return e.data.text ?? "";
    case "agent_text":
      return e.data.delta ?? "";
    case "tool_executing":
      return `${e.data.tool_name}(${short(e.data.parameters)})`;
    case "tool_completed":
      return `${e.data.tool_name} → ${short(e.data.result)}`;
    case "agent_error":
      return e.data.message;
    case "agent_completed":
      return e.data.answer !== undefined ? short(e.data.answer) : short(e.data);
    case "run_stalled":
      return "no event for a while (Herald)";
    case "custom":
      return e.data.name;
    default:
      return short(e.data);
  }
}

function toolChip(t: ToolCall): HTMLElement {
  const took = t.durationMs == null ? "running…" : ms(t.durationMs);
  return h(
    "span",
    { class: "tool", "data-status": t.status },
    h("span", { class: "tname" }, t.name),
    t.id ? h("span", { class: "muted" }, t.id) : null,
    h("span", {}, t.status === "error" ? `failed after ${took}` : took),
  );
}

function short(v: unknown): string {
  if (v === undefined) return "";
  const s = typeof v === "string" ? v : JSON.stringify(v);
  return s.length > 80 ? `${s.slice(0, 77)}…` : s;
}

function ms(n: number): string {
  return n < 1000 ? `${Math.round(n)} ms` : `${(n / 1000).toFixed(2)} s`;
}

// ---- log and raw frames -------------------------------------------------------------------------

function log(text: string, kind?: "good" | "bad"): void {
  const t = new Date().toLocaleTimeString([], { hour12: false });
  ui.log.prepend(h("li", {}, h("span", { class: "t" }, t), h("span", { class: kind }, text)));
  while (ui.log.childElementCount > MAX_LOG_LINES) ui.log.lastElementChild?.remove();
}

let rawScheduled = false;
function onRawFrame(f: RawFrame): void {
  rawFrames.push(`${f.direction === "in" ? "←" : "→"} ${f.text}`);
  if (rawFrames.length > MAX_RAW_FRAMES) rawFrames.splice(0, rawFrames.length - MAX_RAW_FRAMES);
  if (ui.rawAll.open && !rawScheduled) {
    rawScheduled = true;
    requestAnimationFrame(() => {
      rawScheduled = false;
      ui.rawFrames.textContent = rawFrames.join("\n");
    });
  }
}
ui.rawAll.addEventListener("toggle", () => {
  if (ui.rawAll.open) ui.rawFrames.textContent = rawFrames.join("\n");
});

// For poking around from the devtools console.
(window as unknown as { herald: unknown }).herald = {
  get client() {
    return client;
  },
  get runs() {
    return runs;
  },
};

updateRunCount();
void loadDev();
