"""A LangGraph ReAct agent whose runs reach the user through Herald, with one line:
``config={"callbacks": [HeraldCallbackHandler(publisher, user_id=…, thread_id=…)]}``.

    # one question, published as a run for a user (watch it in /console or the ai-sdk-chat page)
    HERALD_API_KEY=… python agent.py --user dev-user "What is Herald?"
    # the backend of Herald's upstream: each message a user sends on their socket starts a run
    HERALD_API_KEY=… HERALD_UPSTREAM_SECRET=s3cret python agent.py --serve --port 8000

The model is a small offline demo (it searches, then answers from the result, streamed word by
word) so the example runs without an API key; with OPENAI_API_KEY set and ``langchain-openai``
installed, --openai MODEL uses that model instead. Needs ``herald-client[langchain]`` and
``langgraph``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Awaitable, Iterator, List, Optional

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.tools import tool
from langgraph.prebuilt import create_react_agent

from herald_client import AsyncPublisher, new_id
from herald_client.integrations.langchain import HeraldCallbackHandler

# The upstream HTTP server and request handling are the python-agent example's; only the agent
# differs (Backend.agent_run).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python-agent"))
import upstream  # noqa: E402

DOCS = {
    "herald": "Herald delivers AI-agent run events to browsers over WebSocket, in order, resumable.",
    "langgraph": "LangGraph builds stateful agents as graphs; callbacks report each step.",
}


@tool
def search(query: str) -> str:
    """Searches the (tiny, offline) knowledge base."""
    hits = [text for key, text in DOCS.items() if key in query.lower()]
    return " ".join(hits) or f"Nothing found for {query!r}."


class DemoChatModel(BaseChatModel):
    """An offline model that behaves like a tool-calling one: asked a question, it thinks and calls
    ``search``; given the tool's result, it answers from it, one word per streamed token."""

    pace: float = 0.05

    @property
    def _llm_type(self) -> str:
        return "herald-demo"

    def bind_tools(self, tools: Any, **kwargs: Any) -> "DemoChatModel":
        return self

    def _reply(self, messages: List[BaseMessage]) -> AIMessage:
        last = messages[-1]
        if isinstance(last, ToolMessage):
            return AIMessage(content=f"From the knowledge base: {last.content}")
        question = str(last.content)
        return AIMessage(
            content="",
            additional_kwargs={"reasoning_content": f"I should search for {question!r}."},
            tool_calls=[{"name": "search", "args": {"query": question}, "id": f"call-{new_id()[:8]}"}],
        )

    def _generate(
        self, messages: List[BaseMessage], stop: Optional[List[str]] = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])

    def _stream(
        self, messages: List[BaseMessage], stop: Optional[List[str]] = None, run_manager: Any = None, **kw: Any
    ) -> Iterator[ChatGenerationChunk]:
        reply = self._reply(messages)
        if reply.additional_kwargs:
            yield ChatGenerationChunk(message=AIMessageChunk(content="", additional_kwargs=reply.additional_kwargs))
        for i, call in enumerate(reply.tool_calls):
            chunk = {"name": call["name"], "args": json.dumps(call["args"]), "id": call["id"], "index": i}
            yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[chunk]))
        for i, word in enumerate(str(reply.content).split(" ") if reply.content else []):
            time.sleep(self.pace)  # a real model takes its time too
            yield ChatGenerationChunk(message=AIMessageChunk(content=(" " if i else "") + word))


def build_agent(model: Optional[BaseChatModel] = None) -> Any:
    """The LangGraph ReAct agent: the model (demo by default) and the ``search`` tool."""
    # LangGraph 1.x points to langchain.agents.create_agent (the `langchain` package); the prebuilt
    # one needs only langgraph and reports through the same callbacks.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="create_react_agent has been moved")
        return create_react_agent(model or DemoChatModel(), [search])


async def answer(
    agent: Any, pub: AsyncPublisher, user_id: str, question: str, thread_id: Optional[str], run_id: str
) -> str:
    """Runs the agent on one question; Herald gets the run through the callback handler."""
    handler = HeraldCallbackHandler(pub, user_id=user_id, thread_id=thread_id, run_id=run_id, agent="langgraph-demo")
    try:
        result = await agent.ainvoke({"messages": [("user", question)]}, config={"callbacks": [handler]})
    except asyncio.CancelledError:
        if handler.events.root is not None and not handler.events.ended:  # no callback reports a cancel
            await handler.run.cancelled()
        raise
    return str(result["messages"][-1].content)


class LangGraphBackend(upstream.Backend):
    """The python-agent example's upstream backend, answering with the LangGraph agent."""

    def __init__(self, pub: AsyncPublisher, secret: str, agent: Any) -> None:
        super().__init__(pub, secret)
        self.agent = agent

    def agent_run(self, user_id: str, question: str, thread_id: Optional[str], run_id: str) -> Awaitable[str]:
        return answer(self.agent, self.pub, user_id, question, thread_id, run_id)


def make_model(openai_model: Optional[str]) -> Optional[BaseChatModel]:
    if not openai_model:
        return None
    from langchain_openai import ChatOpenAI  # pip install langchain-openai; needs OPENAI_API_KEY

    return ChatOpenAI(model=openai_model, streaming=True)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("question", nargs="?", help="ask once (without --serve)")
    parser.add_argument(
        "--user", default="dev-user", help="the user whose sockets get the run (default: dev-user, --dev's token)"
    )
    parser.add_argument("--thread", default=None, help="thread_id of the run")
    parser.add_argument("--serve", action="store_true", help="be Herald's upstream backend instead")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--url", default=os.environ.get("HERALD_URL", "http://127.0.0.1:7400"))
    parser.add_argument("--api-key", default=os.environ.get("HERALD_API_KEY"))
    parser.add_argument("--secret", default=os.environ.get("HERALD_UPSTREAM_SECRET"))
    parser.add_argument("--openai", metavar="MODEL", help="use an OpenAI model (langchain-openai, OPENAI_API_KEY)")
    args = parser.parse_args()
    if not args.api_key:
        parser.error("set --api-key or HERALD_API_KEY (herald serve --dev prints one)")
    agent = build_agent(make_model(args.openai))
    async with AsyncPublisher(args.url, args.api_key) as pub:
        if not args.serve:
            if not args.question:
                parser.error("ask a question, or use --serve")
            print(await answer(agent, pub, args.user, args.question, args.thread, new_id()))
            return 0
        if not args.secret:
            parser.error("set --secret or HERALD_UPSTREAM_SECRET (the same as herald serve --upstream-secret)")
        await upstream.serve_until_stopped(LangGraphBackend(pub, args.secret, agent), args.host, args.port)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        pass
