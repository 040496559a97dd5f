// The Herald admin page: every node, connections, users, runs and rates, polled live from the
// operator API; click a run to watch its user's stream (read-only, through a single-use ticket).

import { HeraldClient, type HeraldEvent } from "../../clients/typescript/src/index.js";
import { $, h } from "./dom.js";

/** How often the page polls the operator API. */
const POLL_MS = 2000;
/** Rate samples kept for the chart: five minutes at one per poll. */
const MAX_SAMPLES = 150;
const MAX_STREAM_LINES = 300;
const RUNS_LISTED = 50;
const STORAGE_KEY = "herald.admin.credential";

interface NodeInfo {
  id: string;
  version: string;
  started_at: string;
  connections: number;
  users: number;
  published_per_s: number;
  delivered_per_s: number;
}

interface Info {
  version: string;
  engine: string;
  node: string;
  connections: number;
  users: number;
  published_per_s: number;
  delivered_per_s: number;
  rejected: Record<string, number>;
  runs: { active: number; stalled: number };
  nodes: NodeInfo[];
}

interface RunSummary {
  user_id: string;
  run_id: string;
  last_event_at: string;
  silent_s: number;
}

interface RunList {
  total: number;
  runs: RunSummary[];
}

/** A refused credential: the page goes back to the sign-in form. */
class Unauthorized extends Error {}

const ui = {
  state: $("[data-testid=state]"),
  version: $("[data-testid=version]"),
  engine: $("[data-testid=engine]"),
  node: $("[data-testid=node]"),
  signOut: $<HTMLButtonElement>("#sign-out"),
  signin: $("#signin"),
  form: $<HTMLFormElement>("#signin-form"),
  credential: $<HTMLInputElement>("#credential"),
  signinError: $("#signin-error"),
  dashboard: $("#dashboard"),
  nodesCount: $("[data-testid=nodes-count]"),
  connections: $("[data-testid=connections]"),
  users: $("[data-testid=users]"),
  runsActive: $("[data-testid=runs-active]"),
  runsStalled: $("[data-testid=runs-stalled]"),
  published: $("[data-testid=published]"),
  delivered: $("[data-testid=delivered]"),
  chart: document.querySelector<SVGSVGElement>("#chart")!,
  rejections: $("#rejections"),
  noRejections: $("#no-rejections"),
  nodes: $("#nodes"),
  active: $("#active"),
  activeTotal: $("#active-total"),
  stalled: $("#stalled"),
  stalledTotal: $("#stalled-total"),
  watch: $("#watch"),
  watchUser: $("[data-testid=watch-user]"),
  watchStatus: $("[data-testid=watch-status]"),
  unwatch: $<HTMLButtonElement>("#unwatch"),
  stream: $("#stream"),
  updated: $("[data-testid=updated]"),
};

let credential: string | null = sessionStorage.getItem(STORAGE_KEY);
let pollTimer: ReturnType<typeof setTimeout> | null = null;
const samples: { published: number; delivered: number }[] = [];
let watcher: HeraldClient | null = null;
let watchedUser: string | null = null;

async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
  const res = await fetch(path, {
    ...init,
    headers: { ...(init.headers ?? {}), authorization: `Bearer ${credential ?? ""}` },
  });
  if (res.status === 401) throw new Unauthorized("the API key or admin token was not accepted");
  const body = (await res.json()) as T & { error?: { message: string } };
  if (!res.ok) throw new Error(body.error?.message ?? `${path}: HTTP ${res.status}`);
  return body;
}

function setState(label: string, status: string): void {
  ui.state.textContent = label;
  ui.state.dataset.status = status;
}

function showSignin(error?: string): void {
  if (pollTimer != null) clearTimeout(pollTimer);
  pollTimer = null;
  stopWatching();
  ui.dashboard.hidden = true;
  ui.signOut.hidden = true;
  ui.signin.hidden = false;
  ui.signinError.hidden = !error;
  ui.signinError.textContent = error ?? "";
  setState("signed out", "idle");
}

async function poll(): Promise<void> {
  pollTimer = null;
  try {
    const [info, active, stalled] = await Promise.all([
      api<Info>("/v1/info"),
      api<RunList>(`/v1/runs?state=active&limit=${RUNS_LISTED}`),
      api<RunList>(`/v1/runs?state=stalled&limit=${RUNS_LISTED}`),
    ]);
    ui.signin.hidden = true;
    ui.dashboard.hidden = false;
    ui.signOut.hidden = false;
    setState("live", "live");
    render(info, active, stalled);
  } catch (e) {
    if (e instanceof Unauthorized) {
      credential = null;
      sessionStorage.removeItem(STORAGE_KEY);
      showSignin(e.message);
      return;
    }
    setState("unreachable", "reconnecting");
    ui.updated.textContent = `last poll failed: ${(e as Error).message}; retrying`;
  }
  pollTimer = setTimeout(() => void poll(), POLL_MS);
}

function render(info: Info, active: RunList, stalled: RunList): void {
  ui.version.textContent = info.version;
  ui.engine.textContent = info.engine;
  ui.node.textContent = info.node;
  ui.nodesCount.textContent = String(info.nodes.length);
  ui.connections.textContent = String(info.connections);
  ui.users.textContent = String(info.users);
  ui.runsActive.textContent = String(info.runs.active);
  ui.runsStalled.textContent = String(info.runs.stalled);
  ui.published.textContent = info.published_per_s.toFixed(1);
  ui.delivered.textContent = info.delivered_per_s.toFixed(1);

  ui.nodes.replaceChildren(
    ...info.nodes.map((n) =>
      h(
        "tr",
        { "data-node": n.id },
        h("td", { class: "mono" }, n.id + (n.id === info.node ? " (this one)" : "")),
        h("td", {}, n.version),
        h("td", {}, n.started_at),
        h("td", {}, String(n.connections)),
        h("td", {}, String(n.users)),
        h("td", {}, n.published_per_s.toFixed(1)),
        h("td", {}, n.delivered_per_s.toFixed(1)),
      ),
    ),
  );

  const rules = Object.entries(info.rejected).sort((a, b) => b[1] - a[1]);
  ui.rejections.replaceChildren(
    ...rules.map(([rule, n]) => h("tr", { "data-rule": rule }, h("td", { class: "mono" }, rule), h("td", {}, String(n)))),
  );
  ui.noRejections.hidden = rules.length > 0;

  samples.push({ published: info.published_per_s, delivered: info.delivered_per_s });
  if (samples.length > MAX_SAMPLES) samples.shift();
  drawChart();

  renderRuns(ui.active, active, (r) => new Date(r.last_event_at).toLocaleTimeString());
  ui.activeTotal.textContent = `${active.total}`;
  renderRuns(ui.stalled, stalled, (r) => `${r.silent_s} s`);
  ui.stalledTotal.textContent = `${stalled.total}`;
  ui.updated.textContent = `updated ${new Date().toLocaleTimeString()} · every ${POLL_MS / 1000} s`;
}

function renderRuns(body: HTMLElement, list: RunList, when: (r: RunSummary) => string): void {
  body.replaceChildren(
    ...list.runs.map((r) => {
      const row = h(
        "tr",
        { "data-testid": "run-row", "data-user": r.user_id, "data-run": r.run_id, title: "watch this user's live stream" },
        h("td", { class: "mono" }, r.user_id),
        h("td", { class: "mono" }, r.run_id),
        h("td", {}, when(r)),
      );
      if (r.user_id === watchedUser) row.classList.add("selected");
      row.addEventListener("click", () => watch(r.user_id));
      return row;
    }),
  );
}

function drawChart(): void {
  const max = Math.max(1, ...samples.flatMap((s) => [s.published, s.delivered]));
  const line = (pick: (s: { published: number; delivered: number }) => number, cls: string): Element => {
    const points = samples
      .map((s, i) => `${(i / Math.max(1, MAX_SAMPLES - 1)) * 600},${140 - (pick(s) / max) * 130 - 5}`)
      .join(" ");
    const el = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    el.setAttribute("class", cls);
    el.setAttribute("points", points);
    return el;
  };
  ui.chart.replaceChildren(line((s) => s.published, "published"), line((s) => s.delivered, "delivered"));
}

/** Opens `user`'s stream with a ticket minted by the operator API (read-only: nothing is sent). */
function watch(user: string): void {
  stopWatching();
  watchedUser = user;
  ui.watch.hidden = false;
  ui.watchUser.textContent = user;
  ui.stream.replaceChildren();
  for (const row of document.querySelectorAll<HTMLElement>("tr[data-testid=run-row]")) {
    row.classList.toggle("selected", row.dataset.user === user);
  }
  const client = new HeraldClient({
    url: "/ws",
    ticket: async () =>
      (
        await api<{ ticket: string }>("/v1/tickets", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ user_id: user, ttl_s: 30 }),
        })
      ).ticket,
  });
  client.on("status", (s) => {
    ui.watchStatus.textContent = s;
    ui.watchStatus.dataset.status = s;
  });
  client.on("event", (e: HeraldEvent) => {
    const text = `#${e.seq} ${e.run_id ?? "-"} ${e.event} ${JSON.stringify(e.data)}`;
    ui.stream.append(
      h("li", { class: "line", "data-seq": String(e.seq), "data-event": e.event, "data-run": e.run_id ?? "" }, text),
    );
    while (ui.stream.childElementCount > MAX_STREAM_LINES) ui.stream.firstElementChild?.remove();
    ui.stream.scrollTop = ui.stream.scrollHeight;
  });
  client.on("close", (c) => {
    if (c.reconnectInMs == null) ui.stream.append(h("li", { class: "closed" }, `closed: ${c.code} ${c.reason}`));
  });
  watcher = client;
  client.connect().catch((e: Error) => ui.stream.append(h("li", { class: "closed" }, `cannot watch: ${e.message}`)));
}

function stopWatching(): void {
  watcher?.close();
  watcher = null;
  watchedUser = null;
  ui.watch.hidden = true;
  for (const row of document.querySelectorAll("tr.selected")) row.classList.remove("selected");
}

ui.form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  credential = ui.credential.value.trim();
  if (!credential) {
    showSignin("enter an API key or the admin token");
    return;
  }
  sessionStorage.setItem(STORAGE_KEY, credential);
  ui.credential.value = "";
  ui.signinError.hidden = true;
  if (pollTimer != null) clearTimeout(pollTimer);
  void poll();
});
ui.signOut.addEventListener("click", () => {
  credential = null;
  sessionStorage.removeItem(STORAGE_KEY);
  showSignin();
});
ui.unwatch.addEventListener("click", () => stopWatching());

if (credential) void poll();
else showSignin();
