// The AI SDK's chat (AbstractChat: what useChat wraps) over Herald, in a plain page. Swap in
// `useChat({ id, transport, resume: true })` in React and the transport line stays the same.
// Bundled into app.js by clients/typescript/scripts/build-example.mjs (npm run build:example).

import { AbstractChat, type ChatState, type ChatStatus, type UIMessage } from "ai";
import { HeraldClient } from "../../clients/typescript/src/index.js";
import { HeraldChatTransport } from "../../clients/typescript/src/ai-sdk/index.js";

const params = new URLSearchParams(location.search);
const token = params.get("token") ?? sessionStorage.getItem("herald-token") ?? "";
const herald = params.get("herald") ?? "ws://127.0.0.1:7400/ws";
const chatId = params.get("chat") ?? "ai-sdk-chat";
const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
let chat: PageChat | null = null; // set once built: the state re-renders through it

/** A ChatState that saves the messages (so a reload shows them) and re-renders on change. */
class PageState implements ChatState<UIMessage> {
  private _status: ChatStatus = "ready";
  error: Error | undefined = undefined;
  get status(): ChatStatus {
    return this._status;
  }
  set status(s: ChatStatus) {
    this._status = s;
    render();
  }
  messages: UIMessage[] = JSON.parse(sessionStorage.getItem(`messages:${chatId}`) ?? "[]");
  pushMessage = (m: UIMessage) => this.set([...this.messages, m]);
  popMessage = () => this.set(this.messages.slice(0, -1));
  replaceMessage = (i: number, m: UIMessage) => this.set(this.messages.map((x, j) => (j === i ? m : x)));
  snapshot = <T,>(t: T): T => structuredClone(t);
  private set(messages: UIMessage[]): void {
    this.messages = messages;
    sessionStorage.setItem(`messages:${chatId}`, JSON.stringify(messages));
    render();
  }
}

class PageChat extends AbstractChat<UIMessage> {
  constructor(transport: HeraldChatTransport) {
    const state = new PageState();
    super({ id: chatId, transport, state, onError: (e) => console.warn("chat error:", e.message) });
  }
}

function render(): void {
  if (!chat) return;
  const list = $("messages");
  list.replaceChildren(
    ...chat.messages.map((m) => {
      const li = document.createElement("li");
      li.className = m.role;
      for (const part of m.parts) {
        const div = document.createElement("div");
        if (part.type === "text") div.textContent = part.text;
        else if (part.type === "reasoning") (div.className = "reasoning"), (div.textContent = part.text);
        else if (part.type === "dynamic-tool") {
          div.className = "tool";
          div.textContent = `🔧 ${part.toolName}(${JSON.stringify(part.input)})` + (part.state === "output-available" ? ` → ${JSON.stringify(part.output)}` : " …");
        } else continue;
        li.append(div);
      }
      return li;
    }),
  );
  $("status").textContent = chat.status;
  document.body.dataset.status = chat.status;
}

if (token) sessionStorage.setItem("herald-token", token);
const client = new HeraldClient({ url: herald, token });
const transport = new HeraldChatTransport({ client }); // the user's message goes up Herald's socket
const page = new PageChat(transport);
chat = page;
render();

$("form").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = $<HTMLInputElement>("input");
  if (!input.value) return;
  void page.sendMessage({ text: input.value });
  input.value = "";
});
$("stop").addEventListener("click", () => void page.stop());

// Like useChat({ resume: true }): after a reload, pick up the chat's active run from Herald's log.
void page.resumeStream();
