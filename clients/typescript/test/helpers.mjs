// Test helpers: start the real Herald binary, sign JWTs, publish, and await client events.

import { spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

/** The browser for the page tests (Debian chromium; CHROMIUM_PATH overrides). */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
/** Headless flags that keep chromium off the network except for the page under test. */
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** Path of the herald binary: $HERALD_BIN (relative to the working directory), or the debug build. */
export const HERALD_BIN = process.env.HERALD_BIN
  ? resolve(process.env.HERALD_BIN)
  : resolve(here, "../../../target/debug/herald");

/**
 * Starts `herald serve` and resolves once it logged its address.
 * Options: port (0 = any), secret, apiKey, dev (use --dev and parse the banner), args.
 */
export async function startHerald({ port = 0, secret, apiKey, dev = false, args = [] } = {}) {
  if (!existsSync(HERALD_BIN)) {
    throw new Error(`herald binary not found at ${HERALD_BIN}: build it (cargo build -p herald) or set HERALD_BIN`);
  }
  secret ??= randomBytes(24).toString("hex");
  apiKey ??= `key-${randomBytes(12).toString("hex")}`;
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info", NO_COLOR: "1" };
  delete env.HERALD_DEV;
  const argv = ["serve", "--listen", `127.0.0.1:${port}`, ...args];
  if (dev) {
    argv.push("--dev");
    delete env.HERALD_JWT_SECRET;
    delete env.HERALD_API_KEY;
  } else {
    env.HERALD_JWT_SECRET = secret;
    env.HERALD_API_KEY = apiKey;
  }
  const proc = spawn(HERALD_BIN, argv, { env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  proc.stdout.setEncoding("utf8").on("data", (d) => (stdout += d));
  const exited = new Promise((res) => proc.once("exit", (code, signal) => res({ code, signal })));
  const addr = await new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`herald did not log its address in 10 s:\n${stderr}`)), 10_000);
    proc.stderr.setEncoding("utf8").on("data", (d) => {
      stderr += d;
      const m = /listening on http:\/\/([\d.]+:\d+)/.exec(stderr);
      if (m) {
        clearTimeout(timer);
        res(m[1]);
      }
    });
    proc.once("exit", (code) => {
      clearTimeout(timer);
      rej(new Error(`herald exited with ${code} before listening:\n${stderr}`));
    });
  });
  const server = {
    proc,
    addr,
    port: Number(addr.split(":")[1]),
    http: `http://${addr}`,
    ws: `ws://${addr}/ws`,
    secret,
    apiKey,
    get stdout() {
      return stdout;
    },
    get stderr() {
      return stderr;
    },
    /** SIGTERM (drain) and wait for the exit; resolves with {code, signal}. */
    async stop() {
      if (proc.exitCode == null && proc.signalCode == null) proc.kill("SIGTERM");
      return exited;
    },
  };
  if (dev) {
    // The banner is printed before the listening log line is flushed, but wait for it anyway.
    await waitUntil(() => /API key:\s+(\S+)/.test(stdout), "dev banner");
    server.apiKey = /API key:\s+(\S+)/.exec(stdout)[1];
    server.secret = /JWT secret:\s+(\S+)/.exec(stdout)[1];
  }
  return server;
}

/** An HS256 JWT for `sub`, valid `ttlS` seconds, signed with node's crypto. */
export function signJwt(secret, sub, ttlS = 3600) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const body = `${enc({ alg: "HS256", typ: "JWT" })}.${enc({ sub, exp: Math.floor(Date.now() / 1000) + ttlS })}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

/** POSTs one event or `{events}` to /v1/events; resolves with the JSON receipt (throws on non-2xx). */
export async function publish(server, body) {
  const res = await fetch(`${server.http}/v1/events`, {
    method: "POST",
    headers: { authorization: `Bearer ${server.apiKey}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`publish ${res.status}: ${JSON.stringify(json)}`);
  return json;
}

/** The five events of a simple successful run. */
export function sampleRun(userId, runId, threadId = "thread-1") {
  const base = { user_id: userId, run_id: runId, thread_id: threadId };
  return [
    { ...base, event: "agent_started", data: { agent: "researcher" } },
    { ...base, event: "agent_thinking", data: { text: "Looking up the weather" } },
    { ...base, event: "tool_executing", data: { tool_name: "search", tool_call_id: "c1", parameters: { q: "weather" } } },
    { ...base, event: "tool_completed", data: { tool_name: "search", tool_call_id: "c1", result: "sunny" } },
    { ...base, event: "agent_completed", data: { answer: "It is sunny." } },
  ];
}

/** A unique user id per test. */
export function uniqueUser(prefix = "user") {
  return `${prefix}-${randomBytes(4).toString("hex")}`;
}

/** Resolves with the first value of `client`'s `name` event that passes `pred`. */
export function next(client, name, pred = () => true, timeoutMs = 10_000) {
  return new Promise((res, rej) => {
    const timer = setTimeout(() => {
      off();
      rej(new Error(`timed out waiting for client event "${name}"`));
    }, timeoutMs);
    const off = client.on(name, (v) => {
      if (!pred(v)) return;
      clearTimeout(timer);
      off();
      res(v);
    });
  });
}

/** Polls `cond` (cheap, in-process state) every 10 ms until true. */
export async function waitUntil(cond, what, timeoutMs = 10_000) {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A promise with its resolve function exposed (to hold a provider until the test is ready). */
export function gate() {
  let open;
  const promise = new Promise((r) => (open = r));
  return { promise, open };
}
