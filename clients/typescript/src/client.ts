// The Herald WebSocket client: auth, reconnect with backoff, resume, dedupe, requests.

import type {
  AckFrame,
  HeraldEvent,
  Recovery,
  ServerFrame,
  WelcomeFrame,
} from "./types.js";
import { CloseCode } from "./types.js";

/** The subprotocol of Herald's WebSocket protocol v1. */
export const SUBPROTOCOL = "herald.v1";

/** The part of the WebSocket API the client uses (the browser's, or `ws` in Node). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket constructor: the browser's `WebSocket`, or `ws`'s in Node. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** A JWT, or a function that returns a fresh one; it is called before every connection. */
export type TokenProvider = string | (() => string | Promise<string>);

/** Returns a single-use ticket from your backend (which got it from `POST /v1/tickets`). */
export type TicketProvider = () => string | Promise<string>;

/** Where the client is in the user's log: resume sends `?after=seq&epoch=epoch`. */
export interface Cursor {
  seq: number;
  epoch: string;
}

/** `sessionStorage`, `localStorage`, or anything with the same three methods. */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface ReconnectOptions {
  /** First retry delay. Default 500 ms. */
  initialDelayMs?: number;
  /** Largest retry delay. Default 15000 ms. */
  maxDelayMs?: number;
  /** Growth of the delay per failed attempt. Default 2. */
  factor?: number;
  /** Fraction of the delay taken off at random, 0..1. Default 0.5. */
  jitter?: number;
  /** Give up after this many failed attempts in a row. Default: never. */
  maxAttempts?: number;
}

export interface HeraldClientOptions {
  /** `ws(s)://host/ws`; `http(s)://` and, in a browser, a relative path like `/ws` work too. */
  url: string;
  /** JWT (sent as subprotocol `bearer.<jwt>`), or a provider called before each connection. */
  token?: TokenProvider;
  /** Ticket provider, called before each connection (tickets are single use). Wins over `token`. */
  ticket?: TicketProvider;
  /** WebSocket implementation; default `globalThis.WebSocket`. In Node < 22 pass `ws`. */
  WebSocket?: WebSocketConstructor;
  /** Backoff settings, or `false` to never reconnect. */
  reconnect?: ReconnectOptions | false;
  /** Start from this cursor (e.g. restored by the app). */
  cursor?: Cursor;
  /** Keep the cursor here so a reloaded page resumes: `"session"` means `sessionStorage`. */
  storage?: StorageLike | "session" | null;
  /** Key of the cursor in `storage`. Use one per user. Default `"herald.cursor"`. */
  storageKey?: string;
  /**
   * With a token provider, send a fresh token on the open socket (a `refresh` frame) this long
   * before the JWT's `exp`, so the connection outlives its token without reconnecting (the server
   * closes expired connections with 4001). If the server refuses the new token, the client
   * reconnects with the next one. Default 30000; 0 turns it off.
   */
  refreshBeforeExpiryMs?: number;
  /** How long `cancel`, `message` and `ping` wait for their answer. Default 10000 ms. */
  requestTimeoutMs?: number;
}

/** `connecting` → `syncing` (welcome received, replay under way) → `live` (after `synced`). */
export type Status = "idle" | "connecting" | "syncing" | "live" | "reconnecting" | "closed";

export interface SyncedInfo {
  seq: number;
  recovery: Recovery;
}

export interface ResetInfo {
  /** The new epoch of the user's log. */
  epoch: string;
  /** The cursor the server could not honour. */
  previous: Cursor | null;
}

export interface RefreshedInfo {
  /** The new token's `exp` (unix seconds): the connection now lives until then. */
  exp: number;
}

export interface CloseInfo {
  code: number;
  reason: string;
  /** Delay before the next attempt, or `null` when the client stays closed. */
  reconnectInMs: number | null;
}

export interface RawFrame {
  direction: "in" | "out";
  text: string;
  frame: unknown;
}

/** Everything a client emits; subscribe with `client.on(name, fn)`. */
export interface ClientEvents {
  status: Status;
  welcome: WelcomeFrame;
  event: HeraldEvent;
  synced: SyncedInfo;
  reset: ResetInfo;
  close: CloseInfo;
  refreshed: RefreshedInfo;
  error: Error;
  frame: RawFrame;
}

/** An `error` frame from the server, or a request that could not be answered. */
export class HeraldError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly ref?: string,
  ) {
    super(message);
    this.name = "HeraldError";
  }
}

interface Pending {
  resolve: (ack: AckFrame) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

interface PendingPing {
  sentAt: number;
  resolve: (rttMs: number) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

type Listeners = { [K in keyof ClientEvents]?: Set<(v: ClientEvents[K]) => void> };

const RESTART_CODE = 4000;
const MAX_TIMER_MS = 2_147_483_647;

/**
 * A connection to Herald that stays connected: reconnects with backoff and jitter, resumes from
 * its last seq and epoch, tells `reset` when the server could not resume, and drops duplicates.
 */
export class HeraldClient {
  private readonly opts: HeraldClientOptions;
  private readonly Ctor: WebSocketConstructor;
  private readonly storage: StorageLike | null;
  private readonly storageKey: string;
  private readonly listeners: Listeners = {};
  private ws: WebSocketLike | null = null;
  private _status: Status = "idle";
  private lastSeq = 0;
  private epoch: string | null = null;
  private _welcome: WelcomeFrame | null = null;
  private attempt = 0;
  private generation = 0;
  private stopped = false;
  private restartNow = false;
  private restartDelay = 0;
  private welcomed = false;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private refreshTimer: ReturnType<typeof setTimeout> | null = null;
  /** The token sent in a `refresh` frame, until the server answers it. */
  private refreshing: string | null = null;
  private nextRef = 1;
  private readonly pending = new Map<string, Pending>();
  private pings: PendingPing[] = [];
  private connectWaiters: { resolve: (w: WelcomeFrame) => void; reject: (e: Error) => void }[] = [];
  private currentToken: string | null = null;
  /** Events dropped because their seq was already delivered. */
  duplicatesDropped = 0;

  constructor(options: HeraldClientOptions) {
    this.opts = options;
    const Ctor = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!Ctor) {
      throw new TypeError("no WebSocket implementation: pass options.WebSocket (e.g. from the ws package)");
    }
    this.Ctor = Ctor;
    this.storage =
      options.storage === "session"
        ? ((globalThis as { sessionStorage?: StorageLike }).sessionStorage ?? null)
        : (options.storage ?? null);
    this.storageKey = options.storageKey ?? "herald.cursor";
    const start = options.cursor ?? this.loadCursor();
    if (start) {
      this.lastSeq = start.seq;
      this.epoch = start.epoch;
    }
  }

  /** Current connection status. */
  get status(): Status {
    return this._status;
  }

  /** Last delivered seq and its epoch, or `null` before the first welcome. */
  get cursor(): Cursor | null {
    return this.epoch == null ? null : { seq: this.lastSeq, epoch: this.epoch };
  }

  /** The latest `welcome` frame. */
  get welcome(): WelcomeFrame | null {
    return this._welcome;
  }

  /** The current socket (for diagnostics and tests), or `null` between connections. */
  get socket(): WebSocketLike | null {
    return this.ws;
  }

  /** Subscribes to `name`; returns a function that unsubscribes. */
  on<K extends keyof ClientEvents>(name: K, fn: (value: ClientEvents[K]) => void): () => void {
    let set = this.listeners[name] as Set<(v: ClientEvents[K]) => void> | undefined;
    if (!set) {
      set = new Set();
      (this.listeners as Record<string, unknown>)[name] = set;
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
  connect(): Promise<WelcomeFrame> {
    const p = new Promise<WelcomeFrame>((resolve, reject) => this.connectWaiters.push({ resolve, reject }));
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
  reconnect(delayMs = 0): void {
    if (this.stopped) return;
    this.restartDelay = Math.max(0, delayMs);
    if (this.ws) {
      this.restartNow = true;
      this.ws.close(RESTART_CODE, "client reconnect");
    } else {
      this.generation++; // abandons an attempt still waiting for its credentials
      this.clearReconnectTimer();
      this.restartNow = true;
      this.scheduleReconnect(RESTART_CODE, "client reconnect");
    }
  }

  /** Closes for good: no reconnect. Pending requests are rejected. */
  close(code: number = CloseCode.Normal, reason = "client closed"): void {
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
        // already closing
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
  ping(): Promise<number> {
    return new Promise((resolve, reject) => {
      if (!this.isOpen()) {
        reject(new HeraldError("not_connected", "ping needs an open connection"));
        return;
      }
      const timer = setTimeout(() => {
        this.pings = this.pings.filter((p) => p !== entry);
        reject(new HeraldError("timeout", "no pong in time"));
      }, this.timeoutMs());
      const entry: PendingPing = { sentAt: now(), resolve, reject, timer };
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
  send(threadId: string | null, data: unknown): Promise<AckFrame> {
    return this.request({ type: "message", thread_id: threadId, data });
  }

  /**
   * Asks the backend to stop a run. Resolves with the backend's `ack`; rejects like `send`.
   * Closing a socket never cancels a run.
   */
  cancel(runId: string): Promise<AckFrame> {
    return this.request({ type: "cancel", run_id: runId });
  }

  /** @deprecated Use `send(threadId, data)`. */
  message(data: Record<string, unknown>, threadId?: string): Promise<AckFrame> {
    return this.send(threadId ?? null, data);
  }

  private request(frame: Record<string, unknown>): Promise<AckFrame> {
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

  private sendFrame(frame: Record<string, unknown>): void {
    const text = JSON.stringify(frame);
    this.ws?.send(text);
    this.emit("frame", { direction: "out", text, frame });
  }

  private isOpen(): boolean {
    return this.ws != null && this.ws.readyState === 1;
  }

  private timeoutMs(): number {
    return this.opts.requestTimeoutMs ?? 10_000;
  }

  private async open(): Promise<void> {
    const gen = ++this.generation;
    this.welcomed = false;
    this.setStatus(this._welcome == null ? "connecting" : "reconnecting");
    let url: string;
    let protocols: string[];
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
    let ws: WebSocketLike;
    try {
      ws = new this.Ctor(url, protocols);
    } catch (e) {
      this.emit("error", asError(e, "connect"));
      this.scheduleReconnect(CloseCode.Abnormal, "could not open socket");
      return;
    }
    this.ws = ws;
    ws.onmessage = (m: { data: unknown }) => {
      if (this.ws === ws) this.onText(typeof m.data === "string" ? m.data : String(m.data));
    };
    ws.onclose = (c: { code?: number; reason?: string }) => {
      if (this.ws === ws) this.onSocketClose(c.code ?? CloseCode.Abnormal, c.reason ?? "");
    };
    ws.onerror = () => {
      // A close event follows every error; reconnect happens there.
    };
  }

  private async target(): Promise<{ url: string; protocols: string[] }> {
    const base = (globalThis as { location?: { href: string } }).location?.href;
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

  private onText(text: string): void {
    let frame: ServerFrame;
    try {
      frame = JSON.parse(text) as ServerFrame;
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
          // Part of the opening snapshot: one frame may stand for several events of one run, so
          // its seq is no resume point for the others; the cursor moves at `synced`.
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
        const p = frame.ref != null ? this.pending.get(frame.ref) : undefined;
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
          // The new token was refused: connect again with the provider's next one.
          this.refreshing = null;
          this.emit("error", err);
          this.reconnect();
          break;
        }
        const p = frame.ref != null ? this.pending.get(frame.ref) : undefined;
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

  private onWelcome(w: WelcomeFrame): void {
    const previous = this.cursor;
    this._welcome = w;
    this.welcomed = true;
    this.attempt = 0;
    if (w.recovery !== "replayed") {
      // No cursor, or one the server could not honour: seqs start over from this log.
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

  private onSocketClose(code: number, reason: string): void {
    this.ws = null;
    this.refreshing = null;
    this.clearRefreshTimer();
    this.failRequests(new HeraldError("disconnected", `connection closed (${code}) before the answer`));
    if (this.stopped) return;
    // 4003: an operator disconnected the user (logout, ban); reconnecting is the app's call.
    if (this.opts.reconnect === false || code === CloseCode.Disconnected) {
      this.stopped = true;
      this.setStatus("closed");
      this.emit("close", { code, reason, reconnectInMs: null });
      this.rejectConnectWaiters(new HeraldError("closed", `connection closed (${code})`));
      return;
    }
    this.scheduleReconnect(code, reason);
  }

  private scheduleReconnect(code: number, reason: string): void {
    const r = this.opts.reconnect || {};
    // A healthy connection (it got its welcome) that was closed for a reason resume fixes comes
    // back at once; everything else backs off.
    const immediate =
      this.restartNow ||
      (this.welcomed && (code === CloseCode.SlowConsumer || code === CloseCode.TokenExpired));
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

  private backoff(attempt: number): number {
    const r = this.opts.reconnect || {};
    const initial = r.initialDelayMs ?? 500;
    const max = r.maxDelayMs ?? 15_000;
    const factor = r.factor ?? 2;
    const jitter = Math.min(1, Math.max(0, r.jitter ?? 0.5));
    const base = Math.min(max, initial * factor ** attempt);
    return Math.round(base * (1 - jitter * Math.random()));
  }

  private scheduleRefresh(): void {
    this.clearRefreshTimer();
    const margin = this.opts.refreshBeforeExpiryMs ?? 30_000;
    if (margin <= 0 || typeof this.opts.token !== "function" || this.opts.ticket || !this.currentToken) return;
    const exp = jwtExp(this.currentToken);
    if (exp == null) return;
    const delay = exp * 1000 - Date.now() - margin;
    if (delay <= 0) return; // too close: the server's 4001 triggers an immediate reconnect
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = null;
      void this.refreshToken();
    }, Math.min(delay, MAX_TIMER_MS));
  }

  /** Asks the provider for a fresh token and sends it on the open socket. */
  private async refreshToken(): Promise<void> {
    const provider = this.opts.token;
    if (typeof provider !== "function") return;
    const socket = this.ws;
    let token: string;
    try {
      token = await provider();
    } catch (e) {
      this.emit("error", asError(e, "token_provider"));
      return; // the server's 4001 reconnects, asking the provider again
    }
    if (this.ws !== socket || socket == null || this.stopped) return;
    this.refreshing = token;
    this.sendFrame({ type: "refresh", token });
  }

  private loadCursor(): Cursor | null {
    if (!this.storage) return null;
    try {
      const raw = this.storage.getItem(this.storageKey);
      if (!raw) return null;
      const c = JSON.parse(raw) as Partial<Cursor>;
      return typeof c.seq === "number" && typeof c.epoch === "string" ? { seq: c.seq, epoch: c.epoch } : null;
    } catch {
      return null;
    }
  }

  private saveCursor(): void {
    if (!this.storage || this.epoch == null) return;
    try {
      this.storage.setItem(this.storageKey, JSON.stringify({ seq: this.lastSeq, epoch: this.epoch }));
    } catch {
      // storage full or denied: memory still has the cursor
    }
  }

  private setStatus(s: Status): void {
    if (this._status === s) return;
    this._status = s;
    this.emit("status", s);
  }

  private emit<K extends keyof ClientEvents>(name: K, value: ClientEvents[K]): void {
    const set = this.listeners[name] as Set<(v: ClientEvents[K]) => void> | undefined;
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(value);
      } catch (e) {
        // A listener's bug must not break the connection; surface it like an uncaught error.
        setTimeout(() => {
          throw e;
        }, 0);
      }
    }
  }

  private failRequests(err: Error): void {
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

  private rejectConnectWaiters(err: Error): void {
    const waiters = this.connectWaiters;
    this.connectWaiters = [];
    for (const x of waiters) x.reject(err);
  }

  private clearReconnectTimer(): void {
    if (this.reconnectTimer != null) {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
    }
  }

  private clearRefreshTimer(): void {
    if (this.refreshTimer != null) {
      clearTimeout(this.refreshTimer);
      this.refreshTimer = null;
    }
  }
}

/** Error codes that answer a `refresh` frame (docs/protocol.md). */
const REFRESH_ERRORS = new Set(["invalid_token", "wrong_user", "token_revoked", "not_ready"]);

/** The `exp` claim of a JWT, or `null` if it has none or is not a JWT. */
export function jwtExp(token: string): number | null {
  const part = token.split(".")[1];
  if (!part) return null;
  try {
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const json = JSON.parse(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4))) as { exp?: unknown };
    return typeof json.exp === "number" ? json.exp : null;
  } catch {
    return null;
  }
}

function now(): number {
  return (globalThis as { performance?: { now(): number } }).performance?.now() ?? Date.now();
}

function asError(e: unknown, what: string): Error {
  return e instanceof Error ? e : new HeraldError(what, String(e));
}
