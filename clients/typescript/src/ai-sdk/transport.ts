// HeraldChatTransport: the AI SDK's ChatTransport over Herald. The user's message goes to the
// backend (Herald upstream or the app's own endpoint); the answer is the run's Herald events,
// mapped to UI message chunks, so useChat gets Herald's resume, every tab and offline replay.

import type { ChatRequestOptions, ChatTransport, UIMessage, UIMessageChunk } from "ai";
import type { HeraldClient } from "../client.js";
import { RunTracker } from "../runs.js";
import { RunChunkMapper } from "./chunks.js";

/** How `sendMessages` reaches the backend. */
export type SendVia =
  /** A `message` frame through Herald's upstream (Herald started with an upstream URL). */
  | "herald"
  /** A `POST` of JSON to the app's own endpoint (same body as the `message` frame's data). */
  | { api: string; headers?: Record<string, string>; credentials?: RequestCredentials; fetch?: typeof fetch };

/** What `sendMessages` hands to the backend: the frame's `data`, or the POSTed JSON. */
export interface OutgoingMessage {
  /** The run id the backend should use (it may answer with its own `run_id` instead). */
  run_id: string;
  /** The AI SDK chat id (also the default Herald `thread_id`). */
  chat_id: string;
  /** `submit-message` or `regenerate-message`. */
  trigger: "submit-message" | "regenerate-message";
  /** The text parts of the last user message, joined. */
  text: string;
  /** The last message as the AI SDK holds it (parts, metadata). */
  message: UIMessage | undefined;
  /** `messageId` of a regeneration. */
  message_id?: string;
  [key: string]: unknown;
}

/** Options of {@link HeraldChatTransport}. */
export interface HeraldChatTransportOptions {
  /** The Herald client of the page (connected or not: the transport connects it when needed). */
  client: HeraldClient;
  /** Where the user's message goes. Default `"herald"` (upstream `message` frame). */
  send?: SendVia;
  /** The Herald `thread_id` of a chat. Default: the chat id. */
  threadId?: (chatId: string) => string;
  /** Mark tool parts `dynamic` (default true: the tools live in the backend). */
  dynamicTools?: boolean;
  /** Send a `cancel` for the run when the chat stops it (`stop()`). Default true. */
  cancelOnAbort?: boolean;
  /** Makes a run id for a new message (default `crypto.randomUUID()`). */
  generateRunId?: () => string;
}

/**
 * `useChat({ transport: new HeraldChatTransport({ client }) })`.
 *
 * `sendMessages` sends the last user message with a fresh `run_id`; the backend starts that run
 * (or answers `{"run_id": …}` with the one it started) and publishes its events to Herald. The
 * returned stream carries that run's events as UI message chunks until the run ends.
 * `reconnectToStream` finds the chat's active run among the events Herald delivered on
 * connect (a fresh connection gets every active run from its start) and streams it from the
 * beginning: `resumeStreamIsReplay` is true, so the AI SDK rebuilds the message, nothing doubles.
 */
export class HeraldChatTransport<UI_MESSAGE extends UIMessage = UIMessage> implements ChatTransport<UI_MESSAGE> {
  /** A resumed stream replays the run from its start (the AI SDK resets the message first). */
  readonly resumeStreamIsReplay = true;
  private readonly client: HeraldClient;
  private readonly runs = new RunTracker();
  private readonly untrack: () => void;
  private readonly options: HeraldChatTransportOptions;

  constructor(options: HeraldChatTransportOptions) {
    this.options = options;
    this.client = options.client;
    this.untrack = this.runs.track(this.client);
  }

  /** Stops listening to the client (the client itself stays open: it is the page's). */
  close(): void {
    this.untrack();
  }

  async sendMessages(
    options: {
      trigger: "submit-message" | "regenerate-message";
      chatId: string;
      messageId: string | undefined;
      messages: UI_MESSAGE[];
      abortSignal: AbortSignal | undefined;
    } & ChatRequestOptions,
  ): Promise<ReadableStream<UIMessageChunk>> {
    await this.ready();
    const generated = (this.options.generateRunId ?? (() => crypto.randomUUID()))();
    const last = options.messages[options.messages.length - 1];
    const outgoing: OutgoingMessage = {
      ...(options.body as Record<string, unknown> | undefined),
      run_id: generated,
      chat_id: options.chatId,
      trigger: options.trigger,
      text: textOf(last),
      message: last,
      ...(options.messageId ? { message_id: options.messageId } : {}),
    };
    const threadId = this.threadOf(options.chatId);
    const answer = await this.deliver(threadId, outgoing, options.headers, options.abortSignal);
    const runId = runIdOf(answer) ?? generated;
    const onAbort = this.options.cancelOnAbort === false ? undefined : () => void this.client.cancel(runId).catch(() => {});
    return this.streamRun(runId, options.abortSignal, onAbort);
  }

  async reconnectToStream(
    options: { chatId: string; abortSignal?: AbortSignal } & ChatRequestOptions,
  ): Promise<ReadableStream<UIMessageChunk> | null> {
    await this.ready();
    const threadId = this.threadOf(options.chatId);
    const active = this.runs
      .list()
      .filter((r) => r.threadId === threadId && !r.done && r.events[0]?.event === "agent_started")
      .sort((a, b) => b.lastSeq - a.lastSeq)[0];
    return active ? this.streamRun(active.id, options.abortSignal) : null;
  }

  private threadOf(chatId: string): string {
    return this.options.threadId ? this.options.threadId(chatId) : chatId;
  }

  /** Connects the client if nobody did, and waits until it is live (its backlog applied);
   * rejects if the connection fails or the client closes for good first. */
  private async ready(): Promise<void> {
    if (this.client.status === "live") return;
    let off = (): void => {};
    const live = new Promise<void>((resolve, reject) => {
      off = this.client.on("status", (s) => {
        if (s === "live") resolve();
        if (s === "closed") reject(new Error("the Herald connection closed before it was live"));
      });
    });
    live.catch(() => {}); // when connect() fails first, its error is the one reported
    try {
      if (this.client.status === "idle" || this.client.status === "closed") await this.client.connect();
      await live;
    } finally {
      off();
    }
  }

  /** Hands the message to the backend; resolves with its answer's body. */
  private async deliver(
    threadId: string,
    outgoing: OutgoingMessage,
    headers: ChatRequestOptions["headers"],
    signal: AbortSignal | undefined,
  ): Promise<unknown> {
    const via = this.options.send ?? "herald";
    if (via === "herald") return (await this.client.send(threadId, outgoing)).body;
    const res = await (via.fetch ?? fetch)(via.api, {
      method: "POST",
      headers: { "content-type": "application/json", ...via.headers, ...headersRecord(headers) },
      credentials: via.credentials,
      body: JSON.stringify({ ...outgoing, thread_id: threadId }),
      signal,
    });
    if (!res.ok) throw new Error(`${via.api} answered ${res.status}: ${await res.text()}`);
    const type = res.headers.get("content-type") ?? "";
    return type.includes("json") ? res.json() : undefined;
  }

  /** The run's chunks: those of the events already here, then live ones, until the run ends. */
  private streamRun(runId: string, signal?: AbortSignal, onAbort?: () => void): ReadableStream<UIMessageChunk> {
    const mapper = new RunChunkMapper({ dynamicTools: this.options.dynamicTools });
    let off = (): void => {};
    let finished = false;
    const finish = (): void => {
      finished = true;
      off();
      signal?.removeEventListener("abort", aborted);
    };
    let aborted = (): void => {};
    return new ReadableStream<UIMessageChunk>({
      start: (controller) => {
        const push = (event: Parameters<RunChunkMapper["map"]>[0]): void => {
          if (finished) return;
          for (const chunk of mapper.map(event)) controller.enqueue(chunk);
          if (mapper.done) {
            finish();
            controller.close();
          }
        };
        off = this.runs.onChange((run, event) => {
          if (run.id === runId) push(event);
        });
        for (const event of this.runs.get(runId)?.events ?? []) push(event);
        aborted = () => {
          if (finished) return;
          finish();
          onAbort?.();
          controller.close();
        };
        if (signal?.aborted) aborted();
        else signal?.addEventListener("abort", aborted);
      },
      cancel: () => finish(),
    });
  }
}

function textOf(message: UIMessage | undefined): string {
  if (!message) return "";
  return message.parts
    .filter((p): p is Extract<UIMessage["parts"][number], { type: "text" }> => p.type === "text")
    .map((p) => p.text)
    .join("");
}

function runIdOf(answer: unknown): string | undefined {
  if (answer && typeof answer === "object" && "run_id" in answer) {
    const id = (answer as { run_id: unknown }).run_id;
    if (typeof id === "string" && id !== "") return id;
  }
  return undefined;
}

function headersRecord(h: ChatRequestOptions["headers"]): Record<string, string> {
  if (!h) return {};
  if (typeof Headers !== "undefined" && h instanceof Headers) {
    const out: Record<string, string> = {};
    h.forEach((value, key) => (out[key] = value));
    return out;
  }
  return h as Record<string, string>;
}
