// Wire types of the Herald WebSocket protocol v1 (docs/protocol.md) and the agent events.

/** How the server honoured the connection's cursor, as announced in `welcome`. */
export type Recovery = "none" | "replayed" | "reset";

/** First frame of every connection. */
export interface WelcomeFrame {
  type: "welcome";
  v: number;
  connection_id: string;
  user_id: string;
  /** The log's epoch; a cursor is only valid within the same epoch. */
  epoch: string;
  /** Latest seq of the user's log when the connection opened. */
  seq: number;
  heartbeat_ms: number;
  recovery: Recovery;
}

/** Replay or snapshot is done; live events follow. */
export interface SyncedFrame {
  type: "synced";
  seq: number;
}

export interface PongFrame {
  type: "pong";
}

/** The backend's answer to a `cancel` or `message` (forwarded upstream by Herald). */
export interface AckFrame {
  type: "ack";
  ref: string | null;
  status: number;
  body: unknown;
}

/** A refused client frame; the connection stays open. */
/** Answer to a `refresh`: the connection now lives until `exp` (unix seconds). */
export interface RefreshedFrame {
  type: "refreshed";
  exp: number;
}

export interface ErrorFrame {
  type: "error";
  code: string;
  message: string;
  ref?: string;
}

/** Fields every event frame carries. */
interface EventBase<E extends string, D> {
  type: "event";
  /** Position in the user's log: +1 per accepted event. */
  seq: number;
  /** Idempotency key of the event. */
  id: string;
  user_id: string;
  thread_id: string | null;
  run_id: string | null;
  event: E;
  data: D;
  /** RFC 3339 UTC timestamp with milliseconds, set by Herald. */
  ts: string;
  /**
   * Set on the frames of the active-run snapshot a connection without a usable cursor starts
   * with (docs/protocol.md, "The active-run snapshot"). Such a frame may stand for many events:
   * `seq` is the last one it covers, and consecutive `agent_text` deltas (or `agent_thinking`
   * texts) of one message arrive as one event with their concatenation — draw it like the deltas.
   */
  snapshot?: true;
  /** On merged snapshot frames: the seq of the first event covered. */
  first_seq?: number;
  /** On a snapshot's `agent_started`: the run outgrew its budget and its oldest output is not shown. */
  truncated?: true;
}

type Extra = { [key: string]: unknown };

/** Run events always carry a `run_id`. */
type RunEvent<E extends string, D> = EventBase<E, D> & { run_id: string };

export type AgentStarted = RunEvent<"agent_started", Extra>;
export type AgentThinking = RunEvent<"agent_thinking", { text?: string } & Extra>;
export type ToolExecuting = RunEvent<
  "tool_executing",
  { tool_name: string; tool_call_id?: string; parameters?: unknown } & Extra
>;
export type ToolCompleted = RunEvent<
  "tool_completed",
  { tool_name: string; tool_call_id?: string; result?: unknown } & Extra
>;
export type AgentText = RunEvent<"agent_text", { delta?: string } & Extra>;
export type Progress = RunEvent<"progress", Extra>;
export type AgentCompleted = RunEvent<"agent_completed", Extra>;
export type AgentError = RunEvent<"agent_error", { message: string } & Extra>;
export type AgentCancelled = RunEvent<"agent_cancelled", Extra>;
/** Emitted by Herald itself when a run had no event for `run_stall_s`; it does not end the run. */
export type RunStalled = RunEvent<"run_stalled", Extra>;
/** Application event; `run_id` is optional. */
export type CustomEvent = EventBase<"custom", { name: string } & Extra>;

/** Every event Herald delivers, discriminated by `event`. */
export type HeraldEvent =
  | AgentStarted
  | AgentThinking
  | ToolExecuting
  | ToolCompleted
  | AgentText
  | Progress
  | AgentCompleted
  | AgentError
  | AgentCancelled
  | RunStalled
  | CustomEvent;

/** The event names, e.g. `"tool_executing"`. */
export type EventName = HeraldEvent["event"];

/** Every frame the server sends. */
export type ServerFrame =
  | WelcomeFrame
  | HeraldEvent
  | SyncedFrame
  | PongFrame
  | AckFrame
  | RefreshedFrame
  | ErrorFrame;

/** Names of events that end a run. */
export const TERMINAL_EVENTS: readonly EventName[] = ["agent_completed", "agent_error", "agent_cancelled"];

/** Close codes used by Herald (docs/protocol.md). */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  Unsupported: 1003,
  Abnormal: 1006,
  TooBig: 1009,
  TokenExpired: 4001,
  /** An operator disconnected the user (logout, ban): the client does not reconnect. */
  Disconnected: 4003,
  SlowConsumer: 4008,
  TooManyConnections: 4029,
} as const;
