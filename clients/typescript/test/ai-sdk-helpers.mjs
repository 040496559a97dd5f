// Shared by the AI SDK tests (ai-sdk.test.mjs, example.test.mjs): the app's backend and a run.

import { createServer } from "node:http";

/** The app's backend: records every POST (from Herald's upstream or a direct fetch) and answers
 * `reply(body)` as JSON. */
export async function startBackend() {
  const backend = { requests: [], reply: () => ({}) };
  const http = createServer((req, res) => {
    let raw = "";
    req.setEncoding("utf8").on("data", (c) => (raw += c));
    req.on("end", () => {
      const body = JSON.parse(raw);
      backend.requests.push({ path: req.url, body });
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(backend.reply(body)));
    });
  });
  await new Promise((r) => http.listen(0, "127.0.0.1", r));
  backend.url = `http://127.0.0.1:${http.address().port}`;
  backend.close = () => new Promise((r) => (http.closeAllConnections(), http.close(() => r())));
  return backend;
}

/** A weather run split in two halves (to reload between them). */
export function weatherRun(userId, runId, threadId) {
  const e = (event, data) => ({ user_id: userId, run_id: runId, thread_id: threadId, event, data });
  return [
    [
      e("agent_started", { agent: "weather" }),
      e("agent_thinking", { text: "Looking " }),
      e("agent_thinking", { text: "it up" }),
      e("tool_executing", { tool_name: "search", tool_call_id: "c1", parameters: { q: "weather" } }),
      e("tool_completed", { tool_name: "search", tool_call_id: "c1", result: { sky: "sunny" } }),
      e("agent_text", { delta: "It is " }),
    ],
    [e("agent_text", { delta: "sunny." }), e("custom", { name: "source", url: "https://example.com" }), e("agent_completed", {})],
  ];
}
