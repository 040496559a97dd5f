// Generated from console/src/main.ts and clients/typescript/src by
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

// src/runs.ts
var RunTracker = class {
  constructor() {
    __publicField(this, "runs", /* @__PURE__ */ new Map());
    __publicField(this, "listeners", /* @__PURE__ */ new Set());
  }
  /** Applies one event; returns its run, or `undefined` for events without a `run_id` or already seen. */
  apply(event) {
    const runId = event.run_id;
    if (runId == null) return void 0;
    let run = this.runs.get(runId);
    if (!run) {
      run = {
        id: runId,
        threadId: event.thread_id,
        state: "running",
        done: false,
        events: [],
        tools: [],
        text: "",
        thinking: "",
        truncated: false,
        error: null,
        startedAt: null,
        endedAt: null,
        lastSeq: 0
      };
      this.runs.set(runId, run);
    }
    if (event.seq <= run.lastSeq) return void 0;
    run.lastSeq = event.seq;
    run.events.push(event);
    if (run.threadId == null) run.threadId = event.thread_id;
    step(run, event);
    for (const fn of this.listeners) fn(run, event);
    return run;
  }
  /** The run with this id. */
  get(runId) {
    return this.runs.get(runId);
  }
  /** Every run, oldest first. */
  list() {
    return [...this.runs.values()];
  }
  /** Forgets every run (call on `reset`, then reload). */
  clear() {
    this.runs.clear();
  }
  /** Calls `fn` after each change; returns an unsubscribe function. */
  onChange(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
  /** Applies every event of `source` and clears on its `reset`; returns a function that stops. */
  track(source) {
    const offEvent = source.on("event", (e) => this.apply(e));
    const offReset = source.on("reset", () => this.clear());
    return () => {
      offEvent();
      offReset();
    };
  }
};
function step(run, event) {
  if (event.event === "run_stalled") {
    if (!run.done) run.state = "stalled";
    return;
  }
  if (!run.done) run.state = "running";
  switch (event.event) {
    case "agent_started":
      run.startedAt = event.ts;
      if (event.truncated) run.truncated = true;
      break;
    case "agent_thinking":
      if (typeof event.data.text === "string") run.thinking += event.data.text;
      break;
    case "agent_text":
      if (typeof event.data.delta === "string") run.text += event.data.delta;
      break;
    case "tool_executing":
      run.tools.push({
        id: event.data.tool_call_id ?? null,
        name: event.data.tool_name,
        parameters: event.data.parameters,
        result: void 0,
        status: "running",
        startedAt: event.ts,
        endedAt: null,
        durationMs: null,
        startSeq: event.seq,
        endSeq: null
      });
      break;
    case "tool_completed": {
      const id = event.data.tool_call_id;
      const call = run.tools.find(
        (t) => t.status === "running" && (id != null ? t.id === id : t.name === event.data.tool_name)
      );
      if (call) {
        call.status = "completed";
        call.result = event.data.result;
        call.endedAt = event.ts;
        call.durationMs = Math.max(0, Date.parse(event.ts) - Date.parse(call.startedAt));
        call.endSeq = event.seq;
      }
      break;
    }
    case "agent_completed":
      end(run, "completed", event.ts);
      break;
    case "agent_error":
      run.error = event.data.message;
      for (const t of run.tools) {
        if (t.status === "running") {
          t.status = "error";
          t.endedAt = event.ts;
          t.durationMs = Math.max(0, Date.parse(event.ts) - Date.parse(t.startedAt));
          t.endSeq = event.seq;
        }
      }
      end(run, "error", event.ts);
      break;
    case "agent_cancelled":
      end(run, "cancelled", event.ts);
      break;
    default:
      break;
  }
}
function end(run, state, ts) {
  run.state = state;
  run.done = true;
  run.endedAt = ts;
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

// ../../console/src/main.ts
var DROP_OFFLINE_MS = 2e3;
var MAX_RAW_FRAMES = 300;
var MAX_LOG_LINES = 200;
var ui = {
  url: $("#url"),
  token: $("#token"),
  connect: $("#connect"),
  devConnect: $("#dev-connect"),
  disconnect: $("#disconnect"),
  drop: $("#drop"),
  ping: $("#ping"),
  connHint: $("#conn-hint"),
  publishPanel: $("#publish-panel"),
  outcome: $("#outcome"),
  slow: $("#slow"),
  publish: $("#publish"),
  publishHint: $("#publish-hint"),
  status: $("[data-testid=status]"),
  user: $("[data-testid=user]"),
  seq: $("[data-testid=seq]"),
  epoch: $("[data-testid=epoch]"),
  recovery: $("[data-testid=recovery]"),
  log: $("#log"),
  rawAll: $("#raw-all"),
  rawFrames: $("#raw-frames"),
  runs: $("#runs"),
  runCount: $("#run-count"),
  empty: $("#empty")
};
var client = null;
var runs = new RunTracker();
var dev = null;
var rawFrames = [];
var cards = /* @__PURE__ */ new Map();
var replayedSinceWelcome = 0;
var inReplay = false;
ui.url.value = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
function connect(token) {
  client?.close();
  resetRuns();
  const c = new HeraldClient({ url: ui.url.value.trim(), token, reconnect: { initialDelayMs: 300, maxDelayMs: 1e4 } });
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
    delete ui.recovery.dataset.replayed;
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
    log(`socket closed ${i.code}${i.reason ? ` (${i.reason})` : ""}; ${next}`, i.code === 1e3 ? void 0 : "bad");
  });
  c.on("error", (e) => log(`error: ${e.message}`, "bad"));
  c.on("frame", onRawFrame);
  runs.onChange((run) => renderRun(run));
  log(`connecting to ${ui.url.value.trim()}`);
  c.connect().catch((e) => log(`gave up: ${e.message}`, "bad"));
}
async function loadRecentRuns(token, epoch, upTo) {
  const known = new Set(runs.list().map((r) => r.id));
  const history = new HeraldClient({ url: ui.url.value.trim(), token, reconnect: false, cursor: { seq: 0, epoch } });
  const events = [];
  history.on("event", (e) => {
    if (e.seq <= upTo && e.run_id && !known.has(e.run_id)) events.push(e);
  });
  try {
    const synced = new Promise((resolve) => {
      history.on("synced", (s) => resolve(s.recovery === "replayed"));
      history.on("close", () => resolve(false));
    });
    await history.connect();
    const complete = await synced;
    for (const e of events) runs.apply(e);
    log(`history: ${events.length} events of earlier runs${complete ? "" : " (older ones are no longer retained)"}`);
  } catch (e) {
    log(`history unavailable: ${e.message}`, "bad");
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
  log(`dropping the connection at seq ${client.cursor?.seq ?? 0}; resuming in ${DROP_OFFLINE_MS / 1e3} s`);
  client.reconnect(DROP_OFFLINE_MS);
});
ui.ping.addEventListener("click", () => {
  client?.ping().then((ms2) => log(`pong in ${ms2.toFixed(1)} ms`)).catch((e) => log(`ping failed: ${e.message}`, "bad"));
});
async function loadDev() {
  try {
    const res = await fetch("/console/dev.json", { cache: "no-store" });
    if (!res.ok) return;
    dev = await res.json();
    ui.devConnect.hidden = false;
    ui.publishPanel.hidden = false;
    ui.devConnect.textContent = `Use dev token (${dev.user_id})`;
  } catch {
  }
}
function sampleEvents(outcome, runId, userId) {
  const base = { user_id: userId, run_id: runId, thread_id: "console" };
  const callId = `call-${runId.slice(-4)}`;
  const evs = [
    { ...base, event: "agent_started", data: { agent: "weather-bot", input: "Weather in Paris?" } },
    { ...base, event: "agent_thinking", data: { text: "I should look up the forecast." } },
    { ...base, event: "tool_executing", data: { tool_name: "get_forecast", tool_call_id: callId, parameters: { city: "Paris" } } }
  ];
  if (outcome === "error") {
    evs.push({ ...base, event: "agent_error", data: { message: "forecast service timed out" } });
    return evs;
  }
  evs.push({ ...base, event: "tool_completed", data: { tool_name: "get_forecast", tool_call_id: callId, result: { sky: "sunny", c: 21 } } });
  evs.push(
    outcome === "cancelled" ? { ...base, event: "agent_cancelled", data: { by: "console" } } : { ...base, event: "agent_completed", data: { answer: "Sunny, 21 °C." } }
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
    ui.publishHint.textContent = `Publish failed: ${e.message}`;
  } finally {
    ui.publish.disabled = false;
  }
});
async function post(body) {
  const res = await fetch("/v1/events", {
    method: "POST",
    headers: { authorization: `Bearer ${dev?.api_key ?? ""}`, "content-type": "application/json" },
    body: JSON.stringify(body)
  });
  if (!res.ok) {
    const err = await res.json().catch(() => null);
    throw new Error(`${res.status} ${err?.error?.message ?? res.statusText}`);
  }
}
function resetRuns() {
  runs.clear();
  cards.clear();
  ui.runs.replaceChildren();
  updateRunCount();
}
function updateRunCount() {
  const n = cards.size;
  ui.runCount.textContent = n === 0 ? "no runs yet" : `${n} run${n === 1 ? "" : "s"}`;
  ui.empty.hidden = n > 0;
}
function renderRun(run) {
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
  for (const t of run.tools) {
    if (t.endSeq == null) continue;
    const row = card.events.querySelector(`[data-seq="${t.endSeq}"] .detail`);
    if (row && !row.querySelector(".dur")) row.append(h("span", { class: "dur" }, ms(t.durationMs ?? 0)));
  }
  card.tools.replaceChildren(...run.tools.map(toolChip));
  card.tools.hidden = run.tools.length === 0;
  if (card.raw.open) card.rawPre.textContent = run.events.map((e) => JSON.stringify(e)).join("\n");
}
function createCard(run) {
  const state = h("span", { class: "state", "data-testid": "run-state" });
  const meta = h("span", { class: "meta" });
  const text = h("div", { class: "text" });
  const events = h("ol", { class: "events", "data-testid": "run-events" });
  const tools = h("div", { class: "tools", "data-testid": "run-tools" });
  const rawPre = h("pre", { class: "raw" });
  const raw = h("details", {}, h("summary", {}, "raw frames"), rawPre);
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
    raw
  );
  return { root, state, meta, text, events, tools, raw, rawPre, rendered: 0 };
}
function eventRow(e, start) {
  const at = Number.isNaN(start) ? "" : `+${ms(Date.parse(e.ts) - start)}`;
  return h(
    "li",
    { class: "event", "data-event": e.event, "data-seq": String(e.seq), title: e.ts },
    h("span", { class: "seq" }, seqLabel(e)),
    h("span", { class: "at" }, at),
    h("span", { class: "name" }, e.event),
    h("span", { class: "detail" }, summary(e))
  );
}
function seqLabel(e) {
  if (e.snapshot && e.first_seq != null && e.first_seq !== e.seq) return `#${e.first_seq}–${e.seq} (merged)`;
  return `#${e.seq}`;
}
function summary(e) {
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
      return e.data.answer !== void 0 ? short(e.data.answer) : short(e.data);
    case "run_stalled":
      return "no event for a while (Herald)";
    case "custom":
      return e.data.name;
    default:
      return short(e.data);
  }
}
function toolChip(t) {
  const took = t.durationMs == null ? "running…" : ms(t.durationMs);
  return h(
    "span",
    { class: "tool", "data-status": t.status },
    h("span", { class: "tname" }, t.name),
    t.id ? h("span", { class: "muted" }, t.id) : null,
    h("span", {}, t.status === "error" ? `failed after ${took}` : took)
  );
}
function short(v) {
  if (v === void 0) return "";
  const s = typeof v === "string" ? v : JSON.stringify(v);
  return s.length > 80 ? `${s.slice(0, 77)}…` : s;
}
function ms(n) {
  return n < 1e3 ? `${Math.round(n)} ms` : `${(n / 1e3).toFixed(2)} s`;
}
function log(text, kind) {
  const t = (/* @__PURE__ */ new Date()).toLocaleTimeString([], { hour12: false });
  ui.log.prepend(h("li", {}, h("span", { class: "t" }, t), h("span", { class: kind }, text)));
  while (ui.log.childElementCount > MAX_LOG_LINES) ui.log.lastElementChild?.remove();
}
var rawScheduled = false;
function onRawFrame(f) {
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
window.herald = {
  get client() {
    return client;
  },
  get runs() {
    return runs;
  }
};
updateRunCount();
void loadDev();
