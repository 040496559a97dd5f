"""run_streamed with an OpenAI Agents SDK agent on the SDK's own stub model (agents.testing's
ScriptedModel: a tool call, then a streamed answer) against the real binary: a WebSocket client
receives one valid run, the tool call paired, the tokens in order."""

from __future__ import annotations

import pytest
from agents import Agent, RunConfig, function_tool
from agents.testing import ScriptedModel, function_call
from openai.types.responses import ResponseOutputMessage, ResponseOutputText, ResponseReasoningItem
from openai.types.responses.response_reasoning_item import Summary

from conftest import API_KEY
from helpers import connected
from herald_client import AsyncPublisher
from herald_client.integrations.openai_agents import run_streamed
from run_rules import assert_valid_run

TOKENS = ["It is ", "sunny ", "in Paris."]
NO_TRACING = RunConfig(tracing_disabled=True)


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@function_tool
def broken(city: str) -> str:
    """Always fails."""
    raise RuntimeError("weather service down")


def answer(tokens: list) -> ResponseOutputMessage:
    """An assistant message in several text parts: the stub model streams one delta per part."""
    parts = [ResponseOutputText(text=t, type="output_text", annotations=[], logprobs=[]) for t in tokens]
    return ResponseOutputMessage(id="msg-1", type="message", role="assistant", status="completed", content=parts)


async def test_streamed_agent_run_becomes_one_valid_run(server, user, token):
    model = ScriptedModel(
        [
            [
                ResponseReasoningItem(
                    id="rs-1", type="reasoning", summary=[Summary(text="Need the weather.", type="summary_text")]
                ),
                function_call("get_weather", {"city": "Paris"}, call_id="call-1"),
            ],
            [answer(TOKENS)],
        ]
    )
    agent = Agent(name="weather", model=model, tools=[get_weather])
    seen = await connected(server, token)
    async with AsyncPublisher(server.url, API_KEY) as pub:
        result = await run_streamed(
            pub, agent, "Weather in Paris?", user_id=user, thread_id="t-oa", run_id="run-oa", run_config=NO_TRACING
        )
    assert result.final_output == "".join(TOKENS)
    await seen.wait_event("agent_completed")
    await seen.stop()

    events = seen.events
    assert_valid_run(events)
    assert {e.run_id for e in events} == {"run-oa"} and {e.thread_id for e in events} == {"t-oa"}
    names = [e.event for e in events]
    assert events[0].data == {"agent": "weather"}
    assert "agent_thinking" in names and names.index("agent_thinking") < names.index("tool_executing")
    assert "".join(e.data["text"] for e in events if e.event == "agent_thinking") == "Need the weather."
    executing = next(e for e in events if e.event == "tool_executing")
    completed = next(e for e in events if e.event == "tool_completed")
    assert executing.data == {"tool_name": "get_weather", "tool_call_id": "call-1", "parameters": {"city": "Paris"}}
    assert completed.data == {"tool_name": "get_weather", "tool_call_id": "call-1", "result": "sunny in Paris"}
    assert [e.data["delta"] for e in events if e.event == "agent_text"] == TOKENS
    assert names.index("tool_completed") < names.index("agent_text")
    assert events[-1].event == "agent_completed" and events[-1].data == {"final_response": "".join(TOKENS)}


async def test_a_failing_run_ends_with_agent_error_and_reraises(server, user, token):
    model = ScriptedModel(
        [[function_call("get_weather", {"city": "Oslo"}, call_id="c1")], RuntimeError("model overloaded")]
    )
    agent = Agent(name="weather", model=model, tools=[get_weather])
    seen = await connected(server, token)
    async with AsyncPublisher(server.url, API_KEY) as pub:
        with pytest.raises(RuntimeError, match="model overloaded"):
            await run_streamed(pub, agent, "Oslo?", user_id=user, run_config=NO_TRACING)
    await seen.wait_event("agent_error")
    await seen.stop()
    assert_valid_run(seen.events)
    assert [e.event for e in seen.events][:3] == ["agent_started", "tool_executing", "tool_completed"]
    assert seen.events[-1].data["message"] == "model overloaded"


def test_tool_calls_the_stream_dropped_are_taken_from_the_runs_items():
    """The SDK ends the stream at an error with events still queued; the run's items still hold
    its tool calls, and what was not streamed comes from them, each once."""
    from types import SimpleNamespace as NS

    from herald_client.integrations.openai_agents import AgentsEvents

    def call(call_id, name):
        return NS(type="tool_call_item", raw_item={"call_id": call_id, "name": name, "arguments": '{"x": 1}'})

    def output(call_id, value):
        return NS(type="tool_call_output_item", raw_item={"call_id": call_id}, output=value)

    events = AgentsEvents("a")
    streamed = events.map(NS(type="run_item_stream_event", name="tool_called", item=call("c1", "search")))
    assert [name for name, _ in streamed] == ["tool_executing"]
    missed = events.missed([call("c1", "search"), output("c1", "found"), call("c2", "calc"), output("c2", 2)])
    assert [(name, data["tool_call_id"]) for name, data in missed] == [
        ("tool_completed", "c1"),
        ("tool_executing", "c2"),
        ("tool_completed", "c2"),
    ]
    assert missed[1][1]["tool_name"] == "calc" and missed[2][1]["result"] == 2
    assert events.missed([call("c2", "calc"), output("c2", 2)]) == [], "nothing twice"
    assert events.missed(None) == []
