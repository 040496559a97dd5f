// Herald run events → AI SDK UI message chunks. Pure: no I/O, one mapper per run, so it can be
// tested and reused (a transport, a server route that re-streams Herald events, …).

import type { UIMessageChunk } from "ai";
import type { HeraldEvent } from "../types.js";

/** Options of {@link RunChunkMapper}. */
export interface ChunkMapperOptions {
  /** The assistant message's id in the `start` chunk (default: the run id), so a resumed run
   * replaces the same message instead of adding a second one. */
  messageId?: string;
  /** Mark tool parts `dynamic` (`dynamic-tool` parts): the tools run in your backend, so the
   * page has no AI SDK tool definitions for them. Default true. */
  dynamicTools?: boolean;
}

interface OpenCall {
  id: string;
  name: string;
}

/**
 * Turns the events of ONE run, in seq order, into `UIMessageChunk`s. Events are deduplicated by
 * their `id` (a reset re-delivers the active run), and text/reasoning parts are opened and closed
 * so the AI SDK sees well-formed parts.
 *
 * | Herald event | chunks |
 * |---|---|
 * | agent_started | start {messageId} |
 * | agent_thinking {text} | reasoning-start (once per block), reasoning-delta |
 * | agent_text {delta} | text-start (once per block), text-delta |
 * | tool_executing | tool-input-available {toolCallId, toolName, input: parameters} |
 * | tool_completed | tool-output-available {output: result} (tool-output-error when status is "error") |
 * | custom {name} | data-<name> {id, data} |
 * | progress | data-progress (transient) |
 * | agent_error | error {errorText: message} |
 * | agent_completed / agent_cancelled | finish (finishReason "stop" / "other") |
 *
 * A block ends (text-end / reasoning-end) when another kind of part starts, when its
 * `message_id` / `reasoning_id` changes, or when the run ends.
 */
export class RunChunkMapper {
  /** True once the run ended: no more chunks will come. */
  done = false;
  private readonly seen = new Set<string>();
  private readonly messageId: string | undefined;
  private readonly dynamic: boolean;
  private open: { kind: "text" | "reasoning"; id: string; key: unknown } | null = null;
  private blocks = 0;
  private sawText = false;
  private readonly calls: OpenCall[] = [];

  constructor(options: ChunkMapperOptions = {}) {
    this.messageId = options.messageId;
    this.dynamic = options.dynamicTools ?? true;
  }

  /** The chunks for one event (none for duplicates, other runs' bookkeeping, or after the end). */
  map(event: HeraldEvent): UIMessageChunk[] {
    if (this.done || this.seen.has(event.id)) return [];
    this.seen.add(event.id);
    const out: UIMessageChunk[] = [];
    const data = (event.data ?? {}) as Record<string, unknown>;
    switch (event.event) {
      case "agent_started":
        out.push({ type: "start", messageId: this.messageId ?? event.run_id });
        break;
      case "agent_thinking":
        if (typeof data.text === "string" && data.text !== "") {
          const id = this.block(out, "reasoning", data.reasoning_id ?? data.message_id);
          out.push({ type: "reasoning-delta", id, delta: data.text });
        }
        break;
      case "agent_text":
        if (typeof data.delta === "string" && data.delta !== "") {
          this.sawText = true;
          const id = this.block(out, "text", data.message_id);
          out.push({ type: "text-delta", id, delta: data.delta });
        }
        break;
      case "tool_executing": {
        this.closeBlock(out);
        const call = { id: str(data.tool_call_id) ?? event.id, name: String(data.tool_name) };
        this.calls.push(call);
        out.push({
          type: "tool-input-available",
          toolCallId: call.id,
          toolName: call.name,
          input: data.parameters ?? {},
          ...(this.dynamic ? { dynamic: true } : {}),
        });
        break;
      }
      case "tool_completed": {
        this.closeBlock(out);
        const call = this.takeCall(str(data.tool_call_id), String(data.tool_name));
        if (!call) break;
        const dyn = this.dynamic ? { dynamic: true } : {};
        if (data.status === "error") {
          out.push({ type: "tool-output-error", toolCallId: call.id, errorText: String(data.error ?? "tool failed"), ...dyn });
        } else {
          out.push({ type: "tool-output-available", toolCallId: call.id, output: data.result ?? null, ...dyn });
        }
        break;
      }
      case "custom":
        if (typeof data.name === "string" && data.name !== "") {
          out.push({ type: `data-${data.name}`, id: event.id, data });
        }
        break;
      case "progress":
        out.push({ type: "data-progress", data, transient: true });
        break;
      case "agent_error": {
        this.closeBlock(out);
        const message = String(data.message ?? "agent error");
        for (const call of this.calls.splice(0)) {
          out.push({ type: "tool-output-error", toolCallId: call.id, errorText: message });
        }
        out.push({ type: "error", errorText: message });
        this.done = true;
        break;
      }
      case "agent_completed": {
        // A run that streamed no text but ended with an answer still shows it.
        const answer = str(data.final_response) ?? str(data.answer);
        if (!this.sawText && answer) {
          const id = this.block(out, "text", "final");
          out.push({ type: "text-delta", id, delta: answer });
        }
        this.closeBlock(out);
        out.push({ type: "finish", finishReason: "stop" });
        this.done = true;
        break;
      }
      case "agent_cancelled":
        this.closeBlock(out);
        out.push({ type: "finish", finishReason: "other" });
        this.done = true;
        break;
      default:
        // run_stalled and events of newer servers: nothing to draw.
        break;
    }
    return out;
  }

  /** Opens (or keeps) a text or reasoning block; returns its id. */
  private block(out: UIMessageChunk[], kind: "text" | "reasoning", key: unknown): string {
    if (this.open && this.open.kind === kind && this.open.key === (key ?? null)) return this.open.id;
    this.closeBlock(out);
    const id = `${kind}-${++this.blocks}`;
    this.open = { kind, id, key: key ?? null };
    out.push(kind === "text" ? { type: "text-start", id } : { type: "reasoning-start", id });
    return id;
  }

  private closeBlock(out: UIMessageChunk[]): void {
    if (!this.open) return;
    const { kind, id } = this.open;
    out.push(kind === "text" ? { type: "text-end", id } : { type: "reasoning-end", id });
    this.open = null;
  }

  /** The open call a `tool_completed` closes: by id when given, else the oldest with that name. */
  private takeCall(id: string | undefined, name: string): OpenCall | undefined {
    const i = id !== undefined ? this.calls.findIndex((c) => c.id === id) : this.calls.findIndex((c) => c.name === name);
    return i < 0 ? undefined : this.calls.splice(i, 1)[0];
  }
}

function str(v: unknown): string | undefined {
  return typeof v === "string" && v !== "" ? v : undefined;
}
