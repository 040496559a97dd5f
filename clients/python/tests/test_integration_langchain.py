"""HeraldCallbackHandler driving a LangGraph ReAct agent (langchain-core's fake chat model, which
calls a tool, then answers) against the real binary: a WebSocket client receives one valid run."""

from __future__ import annotations

import json
from typing import Any, Iterator, List, Optional

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.tools import tool
from langgraph.prebuilt import ToolNode, create_react_agent
from pydantic import PrivateAttr

from conftest import API_KEY
from helpers import connected
from herald_client import AsyncPublisher, Publisher
from herald_client.integrations.langchain import AsyncHeraldCallbackHandler, HeraldCallbackHandler
from run_rules import assert_valid_run

pytestmark = pytest.mark.filterwarnings("ignore:create_react_agent has been moved")

ANSWER = "It is sunny in Paris today."


class ToolCallingFakeChatModel(GenericFakeChatModel):
    """langchain-core's GenericFakeChatModel streams a message's text and additional_kwargs but not
    its tool calls, and has no bind_tools: both added here, nothing else."""

    _last: Optional[AIMessage] = PrivateAttr(default=None)

    def bind_tools(self, tools: Any, **kwargs: Any) -> "ToolCallingFakeChatModel":
        return self

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        result = super()._generate(*args, **kwargs)
        self._last = result.generations[0].message  # type: ignore[assignment]
        return result

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        yield from super()._stream(*args, **kwargs)
        for i, call in enumerate(self._last.tool_calls if self._last else []):
            chunk = {"name": call["name"], "args": json.dumps(call["args"]), "id": call["id"], "index": i}
            yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[chunk]))


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def weather_agent() -> Any:
    model = ToolCallingFakeChatModel(
        messages=iter(
            [
                AIMessage(
                    content="",
                    additional_kwargs={"reasoning_content": "The user wants the weather."},
                    tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "call-1"}],
                ),
                AIMessage(content=ANSWER),
            ]
        )
    )
    return create_react_agent(model, [get_weather])


def assert_weather_run(events: List[Any], run_id: str) -> None:
    assert_valid_run(events)
    assert {e.run_id for e in events} == {run_id}
    names = [e.event for e in events]
    assert names[:4] == ["agent_started", "agent_thinking", "tool_executing", "tool_completed"], names
    assert events[1].data == {"text": "The user wants the weather."}
    assert events[2].data == {"tool_name": "get_weather", "tool_call_id": "call-1", "parameters": {"city": "Paris"}}
    assert events[3].data["result"] == "sunny in Paris"
    deltas = [e.data["delta"] for e in events if e.event == "agent_text"]
    assert len(deltas) > 1, "the answer arrives as tokens"
    assert "".join(deltas) == ANSWER, "tokens in order, none doubled"
    assert names[-1] == "agent_completed" and events[-1].data["final_response"] == ANSWER


async def test_langgraph_react_agent_becomes_one_valid_run(server, user, token):
    seen = await connected(server, token)
    async with AsyncPublisher(server.url, API_KEY) as pub:
        handler = HeraldCallbackHandler(pub, user_id=user, thread_id="t-lg", raise_error=True)
        assert isinstance(handler, AsyncHeraldCallbackHandler)
        result = await weather_agent().ainvoke(
            {"messages": [("user", "Weather in Paris?")]}, config={"callbacks": [handler]}
        )
    assert result["messages"][-1].content == ANSWER
    await seen.wait_event("agent_completed")
    await seen.stop()
    assert_weather_run(seen.events, handler.run_id)
    assert {e.thread_id for e in seen.events} == {"t-lg"}


async def test_sync_handler_with_invoke(server, user, token):
    seen = await connected(server, token)
    with Publisher(server.url, API_KEY) as pub:
        handler = HeraldCallbackHandler(pub, user_id=user, run_id="run-sync", raise_error=True)
        assert type(handler) is HeraldCallbackHandler
        weather_agent().invoke({"messages": [("user", "Weather in Paris?")]}, config={"callbacks": [handler]})
    await seen.wait_event("agent_completed")
    await seen.stop()
    assert_weather_run(seen.events, "run-sync")


async def test_a_failing_agent_ends_the_run_with_agent_error(server, user, token):
    @tool
    def broken(city: str) -> str:
        """Always fails."""
        raise RuntimeError("weather service down")

    model = ToolCallingFakeChatModel(
        messages=iter([AIMessage(content="", tool_calls=[{"name": "broken", "args": {"city": "Oslo"}, "id": "c9"}])])
    )
    agent = create_react_agent(model, ToolNode([broken], handle_tool_errors=False))
    seen = await connected(server, token)
    async with AsyncPublisher(server.url, API_KEY) as pub:
        handler = HeraldCallbackHandler(pub, user_id=user, raise_error=True)
        try:
            await agent.ainvoke({"messages": [("user", "Oslo?")]}, config={"callbacks": [handler]})
        except RuntimeError:
            pass
        else:
            raise AssertionError("the tool's error should reach the caller")
    await seen.wait_event("agent_error")
    await seen.stop()
    assert_valid_run(seen.events)
    done = next(e for e in seen.events if e.event == "tool_completed")
    assert done.data["status"] == "error" and "weather service down" in done.data["error"]
    assert "weather service down" in seen.events[-1].data["message"]


async def test_parallel_tool_calls_are_each_paired(server, user, token):
    calls = [
        {"name": "get_weather", "args": {"city": "Paris"}, "id": "p1"},
        {"name": "get_weather", "args": {"city": "Oslo"}, "id": "p2"},
    ]
    model = ToolCallingFakeChatModel(
        messages=iter([AIMessage(content="", tool_calls=calls), AIMessage(content="Both sunny.")])
    )
    seen = await connected(server, token)
    with Publisher(server.url, API_KEY) as pub:  # sync: the tool node runs the two calls in worker threads
        handler = HeraldCallbackHandler(pub, user_id=user, raise_error=True)
        create_react_agent(model, [get_weather]).invoke(
            {"messages": [("user", "Paris and Oslo?")]}, {"callbacks": [handler]}
        )
    await seen.wait_event("agent_completed")
    await seen.stop()
    assert_valid_run(seen.events)
    done = {e.data["tool_call_id"]: e.data["result"] for e in seen.events if e.event == "tool_completed"}
    assert done == {"p1": "sunny in Paris", "p2": "sunny in Oslo"}
