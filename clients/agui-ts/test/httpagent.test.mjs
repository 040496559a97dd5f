// Herald's AG-UI stream through the official TypeScript client: @ag-ui/client's HttpAgent (as
// docs/agui.md shows it), whose run pipeline checks every event with the client's verifyEvents.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { HttpAgent } from "@ag-ui/client";

const SECRET = "agui-ts-test-secret-0123456789abcdef";
const API_KEY = "agui-ts-test-key";
let server;
let base;

before(async () => {
  server = spawn(process.env.HERALD_BIN, ["serve", "--listen", "127.0.0.1:0"], {
    env: { ...process.env, HERALD_JWT_SECRET: SECRET, HERALD_API_KEY: API_KEY, HERALD_LOG_FORMAT: "text", RUST_LOG: "info" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  base = await new Promise((resolve, reject) => {
    let out = "";
    const onData = (chunk) => {
      out += chunk;
      const m = out.match(/listening on (http:\/\/[0-9.:]+)/);
      if (m) resolve(m[1]);
    };
    server.stdout.on("data", onData);
    server.stderr.on("data", onData);
    server.on("exit", (code) => reject(new Error(`herald exited (${code}): ${out}`)));
  });
});

after(() => server?.kill());

function b64url(value) {
  return Buffer.from(JSON.stringify(value)).toString("base64url");
}

function token(sub) {
  const body = `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url({ sub, exp: Math.floor(Date.now() / 1000) + 600 })}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

/// POST /v1/events with `body` (one event or a batch); the receipt(s).
async function post(body) {
  const response = await fetch(`${base}/v1/events`, {
    method: "POST",
    headers: { Authorization: `Bearer ${API_KEY}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  assert.equal(response.status, 200, text);
  return JSON.parse(text);
}

const publish = (events) => post({ events });
const publishOne = (event) => post(event);

function run(user, runId, text) {
  return [
    { user_id: user, run_id: runId, thread_id: "t1", event: "agent_started", data: {} },
    { user_id: user, run_id: runId, event: "agent_thinking", data: { text: "Let me look." } },
    { user_id: user, run_id: runId, event: "tool_executing", data: { tool_name: "search", tool_call_id: `${runId}-c1`, parameters: { q: "x" } } },
    { user_id: user, run_id: runId, event: "tool_completed", data: { tool_name: "search", tool_call_id: `${runId}-c1`, result: "ok" } },
    { user_id: user, run_id: runId, event: "agent_text", data: { delta: text } },
    { user_id: user, run_id: runId, event: "agent_completed", data: {} },
  ];
}

/// An HttpAgent on Herald's stream whose `opened` promise resolves once the stream answered, so
/// the test publishes only after the POST stream is open (no sleeps).
function agent(user, query = "") {
  let opened;
  const agent = new HttpAgent({
    url: `${base}/v1/agui/stream${query}`,
    headers: { Authorization: `Bearer ${token(user)}` },
    threadId: "t1",
    fetch: async (url, init) => {
      const response = await fetch(url, init);
      opened();
      return response;
    },
  });
  const next = () => new Promise((resolve) => { opened = resolve; });
  return { agent, next };
}

function within(ms, promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} did not finish in ${ms} ms`)), ms); });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

test("runAgent() resolves after the run's RUN_FINISHED, and a second run is delivered once", async () => {
  const { agent: a, next } = agent("alice");
  const seen = [];
  a.subscribe({ onEvent: ({ event }) => { seen.push(event.type); } });

  let open = next();
  const first = a.runAgent();
  await open;
  await publish(run("alice", "r1", "Hello"));
  const result = await within(10_000, first, "the first runAgent()");
  assert.equal(a.isRunning, false);
  assert.equal(seen[0], "RUN_STARTED");
  assert.equal(seen.at(-1), "RUN_FINISHED");
  const assistant = a.messages.filter((m) => m.role === "assistant");
  assert.ok(assistant.some((m) => m.content === "Hello"), JSON.stringify(a.messages));
  assert.ok(a.messages.some((m) => m.role === "tool" && m.content === "ok"), JSON.stringify(a.messages));
  assert.ok(result.newMessages.length > 0);

  // The second run: one stream, each event applied once.
  const before = seen.length;
  open = next();
  const second = a.runAgent();
  await open;
  await publish(run("alice", "r2", "Again"));
  await within(10_000, second, "the second runAgent()");
  const secondRun = seen.slice(before);
  assert.equal(secondRun.filter((t) => t === "RUN_STARTED").length, 1, secondRun.join(","));
  assert.equal(secondRun.filter((t) => t === "RUN_FINISHED").length, 1, secondRun.join(","));
  assert.equal(a.messages.filter((m) => m.role === "assistant" && m.content === "Again").length, 1, JSON.stringify(a.messages));
});

test("a run already under way when runAgent() starts arrives as one valid sequence", async () => {
  const events = run("bob", "r1", "Hello");
  await publish(events.slice(0, 5)); // everything but agent_completed
  const { agent: a, next } = agent("bob");
  const seen = [];
  a.subscribe({ onEvent: ({ event }) => { seen.push(event.type); } });
  const open = next();
  const running = a.runAgent();
  await open;
  await publish(events.slice(5));
  await within(10_000, running, "runAgent() on a run under way");
  assert.equal(seen[0], "RUN_STARTED");
  assert.equal(seen.at(-1), "RUN_FINISHED");
  assert.ok(a.messages.some((m) => m.role === "assistant" && m.content === "Hello"), JSON.stringify(a.messages));
});


test("resuming in the middle of a message is a valid sequence that continues the same message", async () => {
  await publishOne({ user_id: "carol", run_id: "r1", thread_id: "t1", event: "agent_started", data: {} });
  const cut = await publishOne({ user_id: "carol", run_id: "r1", event: "agent_text", data: { delta: "Hel", message_id: "m1" } });
  await publishOne({ user_id: "carol", run_id: "r1", event: "agent_text", data: { delta: "lo", message_id: "m1" } });
  // The client had everything through the first delta: it resumes from there.
  const { agent: a, next } = agent("carol", `?after=${cut.epoch}:${cut.seq}`);
  a.messages = [{ id: "m1", role: "assistant", content: "Hel" }];
  const seen = [];
  a.subscribe({ onEvent: ({ event }) => { seen.push(event.type); } });
  const open = next();
  const running = a.runAgent();
  await open;
  await publishOne({ user_id: "carol", run_id: "r1", event: "agent_completed", data: {} });
  await within(10_000, running, "runAgent() resuming mid-message");
  assert.deepEqual(seen, ["RUN_STARTED", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END", "RUN_FINISHED"]);
  assert.deepEqual(a.messages.map((m) => [m.id, m.content]), [["m1", "Hello"]]);
});

test("a stale cursor gets the reset as a valid run of its own, then the active run", async () => {
  await publishOne({ user_id: "dave", run_id: "r1", thread_id: "t1", event: "agent_started", data: {} });
  await publishOne({ user_id: "dave", run_id: "r1", event: "agent_text", data: { delta: "Hi" } });
  const { agent: a, next } = agent("dave", "?after=another-epoch:7");
  const seen = [];
  const custom = [];
  a.subscribe({
    onEvent: ({ event }) => { seen.push(event.type); },
    onCustomEvent: ({ event }) => { custom.push(event.name); },
  });
  const open = next();
  const running = a.runAgent();
  await open;
  await publishOne({ user_id: "dave", run_id: "r1", event: "agent_completed", data: {} });
  await within(10_000, running, "runAgent() after a reset");
  assert.deepEqual(custom, ["herald.reset"]);
  assert.deepEqual(seen.slice(0, 4), ["RUN_STARTED", "CUSTOM", "RUN_FINISHED", "RUN_STARTED"]);
  assert.equal(seen.at(-1), "RUN_FINISHED");
  assert.ok(a.messages.some((m) => m.role === "assistant" && m.content === "Hi"), JSON.stringify(a.messages));
});
