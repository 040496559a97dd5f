// Type-checked with `tsc --strict` against the packed herald-ws in a fresh project (test/pack.sh):
// the package's exports and .d.ts files must serve a real consumer.
import { HeraldClient, RunTracker, type HeraldEvent, type Run } from "herald-ws";
import { HeraldChatTransport, RunChunkMapper } from "herald-ws/ai-sdk";
import type { ChatTransport, UIMessage, UIMessageChunk } from "ai";

const client = new HeraldClient({ url: "ws://127.0.0.1:7400/ws", token: () => "jwt" });
const runs = new RunTracker();
runs.track(client);
runs.onChange((run: Run, event: HeraldEvent) => {
  const state: "running" | "completed" | "error" | "cancelled" | "stalled" = run.state;
  void state;
  if (event.event === "agent_text") {
    const delta: string | undefined = event.data.delta;
    void delta;
  }
});

const transport: ChatTransport<UIMessage> = new HeraldChatTransport({ client, send: { api: "/api/chat" } });
void transport;
const chunks: UIMessageChunk[] = new RunChunkMapper().map({
  type: "event",
  seq: 1,
  id: "e1",
  user_id: "u",
  thread_id: "t",
  run_id: "r",
  event: "agent_started",
  data: {},
  ts: "2026-01-01T00:00:00.000Z",
});
void chunks;
