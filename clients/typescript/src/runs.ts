// Groups events by run_id and follows each run's state (docs/protocol.md, "Agent events and run rules").

import type { HeraldClient } from "./client.js";
import type { HeraldEvent } from "./types.js";

/** Where a run is. `stalled` is not an end: a later event brings the run back to `running`. */
export type RunState = "running" | "completed" | "error" | "cancelled" | "stalled";

/** One tool call: a `tool_executing` paired with its `tool_completed`. */
export interface ToolCall {
  /** `tool_call_id` when the publisher gave one. */
  id: string | null;
  name: string;
  parameters: unknown;
  /** `data.result` of the `tool_completed`, when present. */
  result: unknown;
  /** `running` until completed; `error` when the run errored with the call open. */
  status: "running" | "completed" | "error";
  startedAt: string;
  endedAt: string | null;
  /** Milliseconds between the two events' `ts`, once completed. */
  durationMs: number | null;
  startSeq: number;
  endSeq: number | null;
}

/** A run as seen so far. */
export interface Run {
  id: string;
  threadId: string | null;
  state: RunState;
  /** True once a terminal event (completed, error, cancelled) arrived. */
  done: boolean;
  /** The run's events in seq order, each once. */
  events: HeraldEvent[];
  tools: ToolCall[];
  /** Concatenated `agent_text` deltas (a snapshot's merged delta counts as the deltas it covers). */
  text: string;
  /** Concatenated `agent_thinking` texts. */
  thinking: string;
  /** True when the snapshot said the run's oldest output is not shown (it outgrew its budget). */
  truncated: boolean;
  /** `data.message` of `agent_error`. */
  error: string | null;
  startedAt: string | null;
  endedAt: string | null;
  /** Seq of the latest event applied to this run. */
  lastSeq: number;
}

/** Called with the run that changed and the event that changed it. */
export type RunListener = (run: Run, event: HeraldEvent) => void;

/**
 * Keeps a `Run` per `run_id`.
 *
 * ```ts
 * const runs = new RunTracker();
 * runs.track(client);                      // applies events, clears on reset
 * runs.onChange((run) => render(run));     // run.state: running | completed | error | cancelled | stalled
 * ```
 */
export class RunTracker {
  private readonly runs = new Map<string, Run>();
  private readonly listeners = new Set<RunListener>();

  /** Applies one event; returns its run, or `undefined` for events without a `run_id` or already seen. */
  apply(event: HeraldEvent): Run | undefined {
    const runId = event.run_id;
    if (runId == null) return undefined;
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
        lastSeq: 0,
      };
      this.runs.set(runId, run);
    }
    if (event.seq <= run.lastSeq) return undefined;
    run.lastSeq = event.seq;
    run.events.push(event);
    if (run.threadId == null) run.threadId = event.thread_id;
    step(run, event);
    for (const fn of this.listeners) fn(run, event);
    return run;
  }

  /** The run with this id. */
  get(runId: string): Run | undefined {
    return this.runs.get(runId);
  }

  /** Every run, oldest first. */
  list(): Run[] {
    return [...this.runs.values()];
  }

  /** Forgets every run (call on `reset`, then reload). */
  clear(): void {
    this.runs.clear();
  }

  /** Calls `fn` after each change; returns an unsubscribe function. */
  onChange(fn: RunListener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Applies every event of `source` and clears on its `reset`; returns a function that stops. */
  track(source: Pick<HeraldClient, "on">): () => void {
    const offEvent = source.on("event", (e) => this.apply(e));
    const offReset = source.on("reset", () => this.clear());
    return () => {
      offEvent();
      offReset();
    };
  }
}

function step(run: Run, event: HeraldEvent): void {
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
        result: undefined,
        status: "running",
        startedAt: event.ts,
        endedAt: null,
        durationMs: null,
        startSeq: event.seq,
        endSeq: null,
      });
      break;
    case "tool_completed": {
      const id = event.data.tool_call_id;
      const call = run.tools.find(
        (t) => t.status === "running" && (id != null ? t.id === id : t.name === event.data.tool_name),
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

function end(run: Run, state: RunState, ts: string): void {
  run.state = state;
  run.done = true;
  run.endedAt = ts;
}
