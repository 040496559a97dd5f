// Generated from console/src/admin.ts and clients/typescript/src by
// clients/typescript/scripts/build-console.mjs (npm run build:console). Do not edit.
var __defProp = Object.defineProperty;
var __defNormalProp = (obj, key, value) => key in obj ? __defProp(obj, key, { enumerable: true, configurable: true, writable: true, value }) : obj[key] = value;
var __publicField = (obj, key, value) => __defNormalProp(obj, typeof key !== "symbol" ? key + "" : key, value);

// src/types.ts
var CloseCode = {
  Normal: 1e3,
  GoingAway: 1001,
  Unsupported: 1003,
  Abnormal: 1006,
  TooBig: 1009,
  TokenExpired: 4001,
  /** An operator disconnected the user (logout, ban): the client does not reconnect. */
  Disconnected: 4003,
  SlowConsumer: 4008,
  TooManyConnections: 4029
};

// src/client.ts
var SUBPROTOCOL = "herald.v1";
var HeraldError = class extends Error {
  constructor(code, message, ref) {
    super(message);
    this.code = code;
    this.ref = ref;
    this.name = "HeraldError";
  }
};
var RESTART_CODE = 4e3;
var MAX_TIMER_MS = 2147483647;
var HeraldClient = class {
  constructor(options) {
    __publicField(this, "opts");
    __publicField(this, "Ctor");
    __publicField(this, "storage");
    __publicField(this, "storageKey");
    __publicField(this, "listeners", {});
    __publicField(this, "ws", null);
    __publicField(this, "_status", "idle");
    __publicField(this, "lastSeq", 0);
    __publicField(this, "epoch", null);
    __publicField(this, "_welcome", null);
    __publicField(this, "attempt", 0);
    __publicField(this, "generation", 0);
    __publicField(this, "stopped", false);
    __publicField(this, "restartNow", false);
    __publicField(this, "restartDelay", 0);
    __publicField(this, "welcomed", false);
    __publicField(this, "reconnectTimer", null);
    __publicField(this, "refreshTimer", null);
    /** The token sent in a `refresh` frame, until the server answers it. */
    __publicField(this, "refreshing", null);
    __publicField(this, "nextRef", 1);
    __publicField(this, "pending", /* @__PURE__ */ new Map());
    __publicField(this, "pings", []);
    __publicField(this, "connectWaiters", []);
    __publicField(this, "currentToken", null);
    /** Events dropped because their seq was already delivered. */
    __publicField(this, "duplicatesDropped", 0);
    this.opts = options;
    const Ctor = options.WebSocket ?? globalThis.WebSocket;
    if (!Ctor) {
      throw new TypeError("no WebSocket implementation: pass options.WebSocket (e.g. from the ws package)");
    }
    this.Ctor = Ctor;
    this.storage = options.storage === "session" ? globalThis.sessionStorage ?? null : options.storage ?? null;
    this.storageKey = options.storageKey ?? "herald.cursor";
    const start = options.cursor ?? this.loadCursor();
    if (start) {
      this.lastSeq = start.seq;
      this.epoch = start.epoch;
    }
  }
  /** Current connection status. */
  get status() {
    return this._status;
  }
  /** Last delivered seq and its epoch, or `null` before the first welcome. */
  get cursor() {
    return this.epoch == null ? null : { seq: this.lastSeq, epoch: this.epoch };
  }
  /** The latest `welcome` frame. */
  get welcome() {
    return this._welcome;
  }
  /** The current socket (for diagnostics and tests), or `null` between connections. */
  get socket() {
    return this.ws;
  }
  /** Subscribes to `name`; returns a function that unsubscribes. */
  on(name, fn) {
    let set = this.listeners[name];
    if (!set) {
      set = /* @__PURE__ */ new Set();
      this.listeners[name] = set;
    }
    set.add(fn);
    return () => {
      set.delete(fn);
    };
  }
  /**
   * Opens the connection (and keeps it open). Resolves with the next `welcome`; rejects if the
   * client is closed or gives up first.
   */
  connect() {
    const p = new Promise((resolve, reject) => this.connectWaiters.push({ resolve, reject }));
    if (this._status === "idle" || this._status === "closed") {
      this.stopped = false;
      this.attempt = 0;
      void this.open();
    }
    return p;
  }
  /**
   * Drops the current connection and reconnects after `delayMs` (default at once), resuming from
   * the cursor: what a network blip does (the console's "drop connection" button).
   */
  reconnect(delayMs = 0) {
    if (this.stopped) return;
    this.restartDelay = Math.max(0, delayMs);
    if (this.ws) {
      this.restartNow = true;
      this.ws.close(RESTART_CODE, "client reconnect");
    } else {
      this.generation++;
      this.clearReconnectTimer();
      this.restartNow = true;
      this.scheduleReconnect(RESTART_CODE, "client reconnect");
    }
  }
  /** Closes for good: no reconnect. Pending requests are rejected. */
  close(code = CloseCode.Normal, reason = "client closed") {
    this.stopped = true;
    this.generation++;
    this.clearReconnectTimer();
    this.clearRefreshTimer();
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      try {
        ws.close(code, reason);
      } catch {
      }
    }
    this.failRequests(new HeraldError("closed", "the client was closed"));
    this.rejectConnectWaiters(new HeraldError("closed", "the client was closed"));
    if (this._status !== "closed") {
      this.setStatus("closed");
      this.emit("close", { code, reason, reconnectInMs: null });
    }
  }
  /** Sends `{"type":"ping"}`; resolves with the round-trip time in ms when the `pong` comes. */
  ping() {
    return new Promise((resolve, reject) => {
      if (!this.isOpen()) {
        reject(new HeraldError("not_connected", "ping needs an open connection"));
        return;
      }
      const timer = setTimeout(() => {
        this.pings = this.pings.filter((p) => p !== entry);
        reject(new HeraldError("timeout", "no pong in time"));
      }, this.timeoutMs());
      const entry = { sentAt: now(), resolve, reject, timer };
      this.pings.push(entry);
      this.sendFrame({ type: "ping" });
    });
  }
  /**
   * Sends the user's message to the backend: Herald POSTs it upstream, signed, with the user id
   * from the token (docs/protocol.md, "Upstream"). Resolves with the `ack` carrying the backend's status and JSON
   * body (e.g. `{run_id}`); rejects with a `HeraldError` whose `code` is the server's
   * (`upstream_error`, `upstream_unavailable`, `rate_limited`) or the client's (`timeout`,
   * `disconnected`, `closed`, `not_connected`).
   */
  send(threadId, data) {
    return this.request({ type: "message", thread_id: threadId, data });
  }
  /**
   * Asks the backend to stop a run. Resolves with the backend's `ack`; rejects like `send`.
   * Closing a socket never cancels a run.
   */
  cancel(runId) {
    return this.request({ type: "cancel", run_id: runId });
  }
  /** @deprecated Use `send(threadId, data)`. */
  message(data, threadId) {
    return this.send(threadId ?? null, data);
  }
  request(frame) {
    return new Promise((resolve, reject) => {
      if (!this.isOpen()) {
        reject(new HeraldError("not_connected", `${String(frame.type)} needs an open connection`));
        return;
      }
      const ref = `r${this.nextRef++}`;
      const timer = setTimeout(() => {
        this.pending.delete(ref);
        reject(new HeraldError("timeout", `no answer to ${String(frame.type)} in time`, ref));
      }, this.timeoutMs());
      this.pending.set(ref, { resolve, reject, timer });
      this.sendFrame({ ...frame, ref });
    });
  }
  sendFrame(frame) {
    const text = JSON.stringify(frame);
    this.ws?.send(text);
    this.emit("frame", { direction: "out", text, frame });
  }
  isOpen() {
    return this.ws != null && this.ws.readyState === 1;
  }
  timeoutMs() {
    return this.opts.requestTimeoutMs ?? 1e4;
  }
  async open() {
    const gen = ++this.generation;
    this.welcomed = false;
    this.setStatus(this._welcome == null ? "connecting" : "reconnecting");
    let url;
    let protocols;
    try {
      ({ url, protocols } = await this.target());
    } catch (e) {
      if (gen !== this.generation || this.stopped) return;
      this.emit("error", asError(e, "credentials"));
      this.scheduleReconnect(CloseCode.Abnormal, "credentials unavailable");
      return;
    }
    if (gen !== this.generation || this.stopped) return;
    if (this.ws) {
      const stale = this.ws;
      this.ws = null;
      stale.close(RESTART_CODE, "replaced");
    }
    let ws;
    try {
      ws = new this.Ctor(url, protocols);
    } catch (e) {
      this.emit("error", asError(e, "connect"));
      this.scheduleReconnect(CloseCode.Abnormal, "could not open socket");
      return;
    }
    this.ws = ws;
    ws.onmessage = (m) => {
      if (this.ws === ws) this.onText(typeof m.data === "string" ? m.data : String(m.data));
    };
    ws.onclose = (c) => {
      if (this.ws === ws) this.onSocketClose(c.code ?? CloseCode.Abnormal, c.reason ?? "");
    };
    ws.onerror = () => {
    };
  }
  async target() {
    const base = globalThis.location?.href;
    const u = new URL(this.opts.url, base);
    if (u.protocol === "http:") u.protocol = "ws:";
    if (u.protocol === "https:") u.protocol = "wss:";
    const protocols = [SUBPROTOCOL];
    this.currentToken = null;
    if (this.opts.ticket) {
      u.searchParams.set("ticket", await this.opts.ticket());
    } else if (this.opts.token != null) {
      const token = typeof this.opts.token === "function" ? await this.opts.token() : this.opts.token;
      this.currentToken = token;
      protocols.push(`bearer.${token}`);
    }
    if (this.epoch != null) {
      u.searchParams.set("after", String(this.lastSeq));
      u.searchParams.set("epoch", this.epoch);
    }
    return { url: u.toString(), protocols };
  }
  onText(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      this.emit("error", new HeraldError("invalid_frame", `server sent non-JSON text: ${text.slice(0, 80)}`));
      return;
    }
    this.emit("frame", { direction: "in", text, frame });
    switch (frame.type) {
      case "welcome":
        this.onWelcome(frame);
        break;
      case "event":
        if (frame.snapshot) {
          this.emit("event", frame);
          break;
        }
        if (frame.seq <= this.lastSeq) {
          this.duplicatesDropped++;
          return;
        }
        this.lastSeq = frame.seq;
        this.saveCursor();
        this.emit("event", frame);
        break;
      case "synced":
        this.lastSeq = Math.max(this.lastSeq, frame.seq);
        this.saveCursor();
        this.setStatus("live");
        this.emit("synced", { seq: frame.seq, recovery: this._welcome?.recovery ?? "none" });
        break;
      case "pong": {
        const p = this.pings.shift();
        if (p) {
          clearTimeout(p.timer);
          p.resolve(now() - p.sentAt);
        }
        break;
      }
      case "ack": {
        const p = frame.ref != null ? this.pending.get(frame.ref) : void 0;
        if (p && frame.ref != null) {
          this.pending.delete(frame.ref);
          clearTimeout(p.timer);
          p.resolve(frame);
        }
        break;
      }
      case "refreshed":
        if (this.refreshing != null) this.currentToken = this.refreshing;
        this.refreshing = null;
        this.scheduleRefresh();
        this.emit("refreshed", { exp: frame.exp });
        break;
      case "error": {
        const err = new HeraldError(frame.code, frame.message, frame.ref);
        if (this.refreshing != null && frame.ref == null && REFRESH_ERRORS.has(frame.code)) {
          this.refreshing = null;
          this.emit("error", err);
          this.reconnect();
          break;
        }
        const p = frame.ref != null ? this.pending.get(frame.ref) : void 0;
        if (p && frame.ref != null) {
          this.pending.delete(frame.ref);
          clearTimeout(p.timer);
          p.reject(err);
        } else {
          this.emit("error", err);
        }
        break;
      }
      default:
        break;
    }
  }
  onWelcome(w) {
    const previous = this.cursor;
    this._welcome = w;
    this.welcomed = true;
    this.attempt = 0;
    if (w.recovery !== "replayed") {
      this.lastSeq = 0;
    }
    this.epoch = w.epoch;
    this.saveCursor();
    this.setStatus("syncing");
    this.scheduleRefresh();
    this.emit("welcome", w);
    if (w.recovery === "reset") this.emit("reset", { epoch: w.epoch, previous });
    const waiters = this.connectWaiters;
    this.connectWaiters = [];
    for (const x of waiters) x.resolve(w);
  }
  onSocketClose(code, reason) {
    this.ws = null;
    this.refreshing = null;
    this.clearRefreshTimer();
    this.failRequests(new HeraldError("disconnected", `connection closed (${code}) before the answer`));
    if (this.stopped) return;
    if (this.opts.reconnect === false || code === CloseCode.Disconnected) {
      this.stopped = true;
      this.setStatus("closed");
      this.emit("close", { code, reason, reconnectInMs: null });
      this.rejectConnectWaiters(new HeraldError("closed", `connection closed (${code})`));
      return;
    }
    this.scheduleReconnect(code, reason);
  }
  scheduleReconnect(code, reason) {
    const r = this.opts.reconnect || {};
    const immediate = this.restartNow || this.welcomed && (code === CloseCode.SlowConsumer || code === CloseCode.TokenExpired);
    this.restartNow = false;
    this.welcomed = false;
    if (!immediate && this.attempt >= (r.maxAttempts ?? Infinity)) {
      this.stopped = true;
      this.setStatus("closed");
      this.emit("close", { code, reason, reconnectInMs: null });
      this.rejectConnectWaiters(new HeraldError("gave_up", `gave up after ${this.attempt} attempts`));
      return;
    }
    const delay = immediate ? this.restartDelay : this.backoff(this.attempt++);
    this.restartDelay = 0;
    this.setStatus("reconnecting");
    this.emit("close", { code, reason, reconnectInMs: delay });
    this.clearReconnectTimer();
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      void this.open();
    }, delay);
  }
  backoff(attempt) {
    const r = this.opts.reconnect || {};
    const initial = r.initialDelayMs ?? 500;
    const max = r.maxDelayMs ?? 15e3;
    const factor = r.factor ?? 2;
    const jitter = Math.min(1, Math.max(0, r.jitter ?? 0.5));
    const base = Math.min(max, initial * factor ** attempt);
    return Math.round(base * (1 - jitter * Math.random()));
  }
  scheduleRefresh() {
    this.clearRefreshTimer();
    const margin = this.opts.refreshBeforeExpiryMs ?? 3e4;
    if (margin <= 0 || typeof this.opts.token !== "function" || this.opts.ticket || !this.currentToken) return;
    const exp = jwtExp(this.currentToken);
    if (exp == null) return;
    const delay = exp * 1e3 - Date.now() - margin;
    if (delay <= 0) return;
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = null;
      void this.refreshToken();
    }, Math.min(delay, MAX_TIMER_MS));
  }
  /** Asks the provider for a fresh token and sends it on the open socket. */
  async refreshToken() {
    const provider = this.opts.token;
    if (typeof provider !== "function") return;
    const socket = this.ws;
    let token;
    try {
      token = await provider();
    } catch (e) {
      this.emit("error", asError(e, "token_provider"));
      return;
    }
    if (this.ws !== socket || socket == null || this.stopped) return;
    this.refreshing = token;
    this.sendFrame({ type: "refresh", token });
  }
  loadCursor() {
    if (!this.storage) return null;
    try {
      const raw = this.storage.getItem(this.storageKey);
      if (!raw) return null;
      const c = JSON.parse(raw);
      return typeof c.seq === "number" && typeof c.epoch === "string" ? { seq: c.seq, epoch: c.epoch } : null;
    } catch {
      return null;
    }
  }
  saveCursor() {
    if (!this.storage || this.epoch == null) return;
    try {
      this.storage.setItem(this.storageKey, JSON.stringify({ seq: this.lastSeq, epoch: this.epoch }));
    } catch {
    }
  }
  setStatus(s) {
    if (this._status === s) return;
    this._status = s;
    this.emit("status", s);
  }
  emit(name, value) {
    const set = this.listeners[name];
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(value);
      } catch (e) {
        setTimeout(() => {
          throw e;
        }, 0);
      }
    }
  }
  failRequests(err) {
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
    for (const p of this.pings) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pings = [];
  }
  rejectConnectWaiters(err) {
    const waiters = this.connectWaiters;
    this.connectWaiters = [];
    for (const x of waiters) x.reject(err);
  }
  clearReconnectTimer() {
    if (this.reconnectTimer != null) {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
    }
  }
  clearRefreshTimer() {
    if (this.refreshTimer != null) {
      clearTimeout(this.refreshTimer);
      this.refreshTimer = null;
    }
  }
};
var REFRESH_ERRORS = /* @__PURE__ */ new Set(["invalid_token", "wrong_user", "token_revoked", "not_ready"]);
function jwtExp(token) {
  const part = token.split(".")[1];
  if (!part) return null;
  try {
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const json = JSON.parse(atob(b64 + "=".repeat((4 - b64.length % 4) % 4)));
    return typeof json.exp === "number" ? json.exp : null;
  } catch {
    return null;
  }
}
function now() {
  return globalThis.performance?.now() ?? Date.now();
}
function asError(e, what) {
  return e instanceof Error ? e : new HeraldError(what, String(e));
}

// ../../console/src/dom.ts
var $ = (sel) => {
  const el = document.querySelector(sel);
  if (!el) throw new Error(`page markup lacks ${sel}`);
  return el;
};
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== void 0) el.setAttribute(k, v);
  for (const c of children) if (c != null) el.append(c);
  return el;
}

// ../../console/src/admin.ts
var POLL_MS = 2e3;
var MAX_SAMPLES = 150;
var MAX_STREAM_LINES = 300;
var RUNS_LISTED = 50;
var STORAGE_KEY = "herald.admin.credential";
var Unauthorized = class extends Error {
};
var ui = {
  state: $("[data-testid=state]"),
  version: $("[data-testid=version]"),
  engine: $("[data-testid=engine]"),
  node: $("[data-testid=node]"),
  signOut: $("#sign-out"),
  signin: $("#signin"),
  form: $("#signin-form"),
  credential: $("#credential"),
  signinError: $("#signin-error"),
  dashboard: $("#dashboard"),
  nodesCount: $("[data-testid=nodes-count]"),
  connections: $("[data-testid=connections]"),
  users: $("[data-testid=users]"),
  runsActive: $("[data-testid=runs-active]"),
  runsStalled: $("[data-testid=runs-stalled]"),
  published: $("[data-testid=published]"),
  delivered: $("[data-testid=delivered]"),
  chart: document.querySelector("#chart"),
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
  unwatch: $("#unwatch"),
  stream: $("#stream"),
  updated: $("[data-testid=updated]")
};
var credential = sessionStorage.getItem(STORAGE_KEY);
var pollTimer = null;
var samples = [];
var watcher = null;
var watchedUser = null;
async function api(path, init = {}) {
  const res = await fetch(path, {
    ...init,
    headers: { ...init.headers ?? {}, authorization: `Bearer ${credential ?? ""}` }
  });
  if (res.status === 401) throw new Unauthorized("the API key or admin token was not accepted");
  const body = await res.json();
  if (!res.ok) throw new Error(body.error?.message ?? `${path}: HTTP ${res.status}`);
  return body;
}
function setState(label, status) {
  ui.state.textContent = label;
  ui.state.dataset.status = status;
}
function showSignin(error) {
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
async function poll() {
  pollTimer = null;
  try {
    const [info, active, stalled] = await Promise.all([
      api("/v1/info"),
      api(`/v1/runs?state=active&limit=${RUNS_LISTED}`),
      api(`/v1/runs?state=stalled&limit=${RUNS_LISTED}`)
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
    ui.updated.textContent = `last poll failed: ${e.message}; retrying`;
  }
  pollTimer = setTimeout(() => void poll(), POLL_MS);
}
function render(info, active, stalled) {
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
    ...info.nodes.map(
      (n) => h(
        "tr",
        { "data-node": n.id },
        h("td", { class: "mono" }, n.id + (n.id === info.node ? " (this one)" : "")),
        h("td", {}, n.version),
        h("td", {}, n.started_at),
        h("td", {}, String(n.connections)),
        h("td", {}, String(n.users)),
        h("td", {}, n.published_per_s.toFixed(1)),
        h("td", {}, n.delivered_per_s.toFixed(1))
      )
    )
  );
  const rules = Object.entries(info.rejected).sort((a, b) => b[1] - a[1]);
  ui.rejections.replaceChildren(
    ...rules.map(([rule, n]) => h("tr", { "data-rule": rule }, h("td", { class: "mono" }, rule), h("td", {}, String(n))))
  );
  ui.noRejections.hidden = rules.length > 0;
  samples.push({ published: info.published_per_s, delivered: info.delivered_per_s });
  if (samples.length > MAX_SAMPLES) samples.shift();
  drawChart();
  renderRuns(ui.active, active, (r) => new Date(r.last_event_at).toLocaleTimeString());
  ui.activeTotal.textContent = `${active.total}`;
  renderRuns(ui.stalled, stalled, (r) => `${r.silent_s} s`);
  ui.stalledTotal.textContent = `${stalled.total}`;
  ui.updated.textContent = `updated ${(/* @__PURE__ */ new Date()).toLocaleTimeString()} · every ${POLL_MS / 1e3} s`;
}
function renderRuns(body, list, when) {
  body.replaceChildren(
    ...list.runs.map((r) => {
      const row = h(
        "tr",
        { "data-testid": "run-row", "data-user": r.user_id, "data-run": r.run_id, title: "watch this user's live stream" },
        h("td", { class: "mono" }, r.user_id),
        h("td", { class: "mono" }, r.run_id),
        h("td", {}, when(r))
      );
      if (r.user_id === watchedUser) row.classList.add("selected");
      row.addEventListener("click", () => watch(r.user_id));
      return row;
    })
  );
}
function drawChart() {
  const max = Math.max(1, ...samples.flatMap((s) => [s.published, s.delivered]));
  const line = (pick, cls) => {
    const points = samples.map((s, i) => `${i / Math.max(1, MAX_SAMPLES - 1) * 600},${140 - pick(s) / max * 130 - 5}`).join(" ");
    const el = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    el.setAttribute("class", cls);
    el.setAttribute("points", points);
    return el;
  };
  ui.chart.replaceChildren(line((s) => s.published, "published"), line((s) => s.delivered, "delivered"));
}
function watch(user) {
  stopWatching();
  watchedUser = user;
  ui.watch.hidden = false;
  ui.watchUser.textContent = user;
  ui.stream.replaceChildren();
  for (const row of document.querySelectorAll("tr[data-testid=run-row]")) {
    row.classList.toggle("selected", row.dataset.user === user);
  }
  const client = new HeraldClient({
    url: "/ws",
    ticket: async () => (await api("/v1/tickets", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ user_id: user, ttl_s: 30 })
    })).ticket
  });
  client.on("status", (s) => {
    ui.watchStatus.textContent = s;
    ui.watchStatus.dataset.status = s;
  });
  client.on("event", (e) => {
    const text = `#${e.seq} ${e.run_id ?? "-"} ${e.event} ${JSON.stringify(e.data)}`;
    ui.stream.append(
      h("li", { class: "line", "data-seq": String(e.seq), "data-event": e.event, "data-run": e.run_id ?? "" }, text)
    );
    while (ui.stream.childElementCount > MAX_STREAM_LINES) ui.stream.firstElementChild?.remove();
    ui.stream.scrollTop = ui.stream.scrollHeight;
  });
  client.on("close", (c) => {
    if (c.reconnectInMs == null) ui.stream.append(h("li", { class: "closed" }, `closed: ${c.code} ${c.reason}`));
  });
  watcher = client;
  client.connect().catch((e) => ui.stream.append(h("li", { class: "closed" }, `cannot watch: ${e.message}`)));
}
function stopWatching() {
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
