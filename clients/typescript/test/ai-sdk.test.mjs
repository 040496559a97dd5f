// herald-ws/ai-sdk against the real `ai` package and the real Herald binary: the AI SDK's own
// chat (AbstractChat, what useChat wraps) and its UI-message stream reader assemble the message
// from a run published through Herald's HTTP API. Build first: npm run build.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, afterEach, before, describe, test } from "node:test";
import { AbstractChat, readUIMessageStream } from "ai";
import WebSocket from "ws";
import { HeraldClient } from "../dist/index.js";
import { HeraldChatTransport, RunChunkMapper } from "../dist/ai-sdk/index.js";
import { startBackend, weatherRun } from "./ai-sdk-helpers.mjs";
import { publish, signJwt, startHerald, uniqueUser, waitUntil } from "./helpers.mjs";

/** The smallest ChatState: plain arrays (the React/Vue/Svelte packages keep theirs reactive). */
class TestChat extends AbstractChat {
  constructor({ messages = [], ...init }) {
    const state = {
      status: "ready",
      error: undefined,
      messages,
      pushMessage(m) {
        this.messages = [...this.messages, m];
      },
      popMessage() {
        this.messages = this.messages.slice(0, -1);
      },
      replaceMessage(i, m) {
        this.messages = this.messages.map((x, j) => (j === i ? m : x));
      },
      snapshot: (t) => structuredClone(t),
    };
    super({ ...init, state });
  }
}

/** Asserts the assistant message the AI SDK assembled from the whole weather run. */
function assertWeatherMessage(message, runId) {
  assert.equal(message.role, "assistant");
  assert.equal(message.id, runId);
  const types = message.parts.map((p) => p.type);
  assert.deepEqual(types, ["reasoning", "dynamic-tool", "text", "data-source"]);
  const [reasoning, tool, text, data] = message.parts;
  assert.equal(reasoning.text, "Looking it up");
  assert.equal(reasoning.state, "done");
  assert.equal(tool.toolCallId, "c1");
  assert.equal(tool.toolName, "search");
  assert.equal(tool.state, "output-available");
  assert.deepEqual(tool.input, { q: "weather" });
  assert.deepEqual(tool.output, { sky: "sunny" });
  assert.equal(text.text, "It is sunny.");
  assert.equal(text.state, "done");
  assert.equal(data.data.url, "https://example.com");
}

async function publishAll(server, events) {
  for (const event of events) await publish(server, event);
}

describe("HeraldChatTransport with the AI SDK", () => {
  let backend;
  let server;
  const cleanup = [];

  before(async () => {
    backend = await startBackend();
    server = await startHerald({ args: ["--upstream-url", `${backend.url}/herald`, "--upstream-secret", "s3cret"] });
  });
  after(async () => {
    await server?.stop();
    await backend?.close();
  });
  afterEach(() => {
    for (const f of cleanup.splice(0)) f();
    backend.reply = () => ({});
    backend.requests.length = 0;
  });

  function transportFor(user, options = {}) {
    const client = new HeraldClient({ url: server.ws, WebSocket, token: () => signJwt(server.secret, user), reconnect: false });
    const transport = new HeraldChatTransport({ client, ...options });
    cleanup.push(() => {
      transport.close();
      client.close();
    });
    return { client, transport };
  }

  test("a run published through the HTTP API becomes the message the AI SDK's Chat assembles", async () => {
    const user = uniqueUser("ai");
    const runId = `run-${randomBytes(4).toString("hex")}`;
    backend.reply = () => ({ run_id: runId }); // the backend names the run it started
    const { transport } = transportFor(user);
    const chat = new TestChat({ id: "chat-1", transport });

    const sent = chat.sendMessage({ text: "Weather in Paris?" });
    await waitUntil(() => backend.requests.length === 1, "the message upstream");
    const [{ path, body }] = backend.requests;
    assert.equal(path, "/herald");
    assert.equal(body.type, "message");
    assert.equal(body.user_id, user);
    assert.equal(body.thread_id, "chat-1");
    assert.equal(body.data.text, "Weather in Paris?");
    assert.equal(body.data.chat_id, "chat-1");
    assert.equal(body.data.trigger, "submit-message");

    const [first, rest] = weatherRun(user, runId, "chat-1");
    await publishAll(server, [...first, ...rest]);
    await sent;

    assert.equal(chat.status, "ready");
    assert.equal(chat.messages.length, 2);
    assert.equal(chat.messages[0].role, "user");
    assertWeatherMessage(chat.messages[1], runId);
  });

  test("a reload mid-run resumes from Herald's log: the message ends complete, nothing doubled, no new generation", async () => {
    const user = uniqueUser("ai");
    const runId = `run-${randomBytes(4).toString("hex")}`;
    backend.reply = () => ({ run_id: runId });
    const first = transportFor(user);
    const chat1 = new TestChat({ id: "chat-2", transport: first.transport });
    void chat1.sendMessage({ text: "Weather?" });
    await waitUntil(() => backend.requests.length === 1, "the message upstream");
    const [half1, half2] = weatherRun(user, runId, "chat-2");
    await publishAll(server, half1);
    await waitUntil(() => chat1.messages[1]?.parts.some((p) => p.type === "text" && p.text === "It is "), "the first half drawn");

    // Reload: the page (client, transport, chat) is gone; the new page starts from the messages it
    // saved, a fresh connection (no cursor: Herald sends the active run from its start), and
    // resumes.
    first.transport.close();
    first.client.close();
    const saved = structuredClone(chat1.messages);
    const second = transportFor(user);
    const chat2 = new TestChat({ id: "chat-2", transport: second.transport, messages: saved });
    const resumed = chat2.resumeStream();
    await waitUntil(() => chat2.status === "streaming", "the resumed stream");
    await waitUntil(() => chat2.messages[1]?.parts.some((p) => p.type === "text" && p.text === "It is "), "the replay drawn");
    await publishAll(server, half2);
    await resumed;

    assert.equal(chat2.status, "ready");
    assert.equal(chat2.messages.length, 2, "one user message and one assistant message");
    assertWeatherMessage(chat2.messages[1], runId);
    assert.equal(backend.requests.length, 1, "resuming sent nothing to the backend");
  });

  test("reconnectToStream answers null when the chat has no active run", async () => {
    const user = uniqueUser("ai");
    const runId = `run-${randomBytes(4).toString("hex")}`;
    const [a, b] = weatherRun(user, runId, "chat-3");
    await publishAll(server, [...a, ...b]);
    const { transport } = transportFor(user);
    assert.equal(await transport.reconnectToStream({ chatId: "chat-3" }), null);
  });

  test("send via the app's endpoint (fetch): the backend uses the transport's run_id; readUIMessageStream assembles it", async () => {
    const user = uniqueUser("ai");
    const { transport } = transportFor(user, { send: { api: `${backend.url}/api/chat`, headers: { "x-app": "1" } } });
    const userMessage = { id: "m1", role: "user", parts: [{ type: "text", text: "Hi" }] };
    const stream = await transport.sendMessages({
      trigger: "submit-message",
      chatId: "chat-4",
      messageId: undefined,
      messages: [userMessage],
      abortSignal: undefined,
    });
    assert.equal(backend.requests.length, 1);
    const [{ path, body }] = backend.requests;
    assert.equal(path, "/api/chat");
    assert.equal(body.thread_id, "chat-4");
    assert.equal(body.text, "Hi");
    assert.match(body.run_id, /^[0-9a-f-]{36}$/);

    const [a, b] = weatherRun(user, body.run_id, "chat-4");
    const published = publishAll(server, [...a, ...b]);
    let last;
    for await (const message of readUIMessageStream({ stream })) last = message;
    await published;
    assertWeatherMessage(last, body.run_id);
  });

  test("stop() ends the stream and sends cancel for the run upstream", async () => {
    const user = uniqueUser("ai");
    const runId = `run-${randomBytes(4).toString("hex")}`;
    backend.reply = () => ({ run_id: runId });
    const { transport } = transportFor(user);
    const chat = new TestChat({ id: "chat-6", transport });
    const sent = chat.sendMessage({ text: "long one" });
    await waitUntil(() => backend.requests.length === 1, "the message upstream");
    const e = (event, data) => ({ user_id: user, run_id: runId, thread_id: "chat-6", event, data });
    await publishAll(server, [e("agent_started", {}), e("agent_text", { delta: "Once upon" })]);
    await waitUntil(() => chat.messages[1]?.parts.some((p) => p.type === "text"), "the first text");
    await chat.stop();
    await sent;
    await waitUntil(() => backend.requests.length === 2, "the cancel upstream");
    assert.equal(backend.requests[1].body.type, "cancel");
    assert.equal(backend.requests[1].body.run_id, runId);
    assert.equal(chat.status, "ready");
  });

  test("a refused connection fails the chat with an error instead of hanging", async () => {
    const client = new HeraldClient({ url: server.ws, WebSocket, token: "not-a-jwt", reconnect: false });
    const transport = new HeraldChatTransport({ client });
    cleanup.push(() => (transport.close(), client.close()));
    const chat = new TestChat({ id: "chat-7", transport });
    await chat.sendMessage({ text: "hello?" });
    assert.equal(chat.status, "error");
    assert.equal(backend.requests.length, 0);
  });

  test("agent_error ends the stream with an error and fails the open tool call", async () => {
    const user = uniqueUser("ai");
    const runId = `run-${randomBytes(4).toString("hex")}`;
    backend.reply = () => ({ run_id: runId });
    const { transport } = transportFor(user);
    const errors = [];
    const chat = new TestChat({ id: "chat-5", transport, onError: (e) => errors.push(e) });
    const sent = chat.sendMessage({ text: "go" });
    await waitUntil(() => backend.requests.length === 1, "the message upstream");
    const e = (event, data) => ({ user_id: user, run_id: runId, thread_id: "chat-5", event, data });
    await publishAll(server, [
      e("agent_started", {}),
      e("tool_executing", { tool_name: "fetch", tool_call_id: "t1", parameters: {} }),
      e("agent_error", { message: "model overloaded" }),
    ]);
    await sent;
    assert.equal(chat.status, "error");
    assert.equal(errors[0]?.message, "model overloaded");
    const tool = chat.messages[1].parts.find((p) => p.type === "dynamic-tool");
    assert.equal(tool.state, "output-error");
    assert.equal(tool.errorText, "model overloaded");
  });
});

describe("RunChunkMapper (pure)", () => {
  const ev = (seq, event, data, extra = {}) => ({ type: "event", seq, id: `e${seq}`, user_id: "u", thread_id: "t", run_id: "r", event, data, ts: "", ...extra });

  test("drops duplicate event ids and everything after the end", () => {
    const m = new RunChunkMapper();
    assert.deepEqual(m.map(ev(1, "agent_started", {})), [{ type: "start", messageId: "r" }]);
    assert.deepEqual(m.map(ev(1, "agent_started", {})), []);
    assert.equal(m.map(ev(2, "agent_cancelled", {})).at(-1).type, "finish");
    assert.equal(m.done, true);
    assert.deepEqual(m.map(ev(3, "agent_text", { delta: "late" })), []);
  });

  test("a new message_id starts a new text block; the final answer shows when no text streamed", () => {
    const m = new RunChunkMapper({ messageId: "msg" });
    const types = (e) => m.map(e).map((c) => c.type);
    assert.deepEqual(types(ev(1, "agent_started", {})), ["start"]);
    assert.deepEqual(types(ev(2, "agent_text", { delta: "a", message_id: "x" })), ["text-start", "text-delta"]);
    assert.deepEqual(types(ev(3, "agent_text", { delta: "b", message_id: "x" })), ["text-delta"]);
    assert.deepEqual(types(ev(4, "agent_text", { delta: "c", message_id: "y" })), ["text-end", "text-start", "text-delta"]);
    assert.deepEqual(types(ev(5, "progress", { pct: 50 })), ["data-progress"]);
    assert.deepEqual(types(ev(6, "agent_completed", { final_response: "ignored: text streamed" })), ["text-end", "finish"]);

    const n = new RunChunkMapper();
    n.map(ev(1, "agent_started", {}));
    const chunks = n.map(ev(2, "agent_completed", { final_response: "Done." }));
    assert.deepEqual(
      chunks.map((c) => c.type),
      ["text-start", "text-delta", "text-end", "finish"],
    );
    assert.equal(chunks[1].delta, "Done.");
  });

  test("tool_completed without tool_call_id closes the oldest open call of that name", () => {
    const m = new RunChunkMapper({ dynamicTools: false });
    m.map(ev(1, "agent_started", {}));
    const [input] = m.map(ev(2, "tool_executing", { tool_name: "search", parameters: { q: 1 } }));
    assert.equal(input.dynamic, undefined);
    const [output] = m.map(ev(3, "tool_completed", { tool_name: "search", status: "error", error: "boom" }));
    assert.deepEqual(output, { type: "tool-output-error", toolCallId: input.toolCallId, errorText: "boom" });
  });
});
