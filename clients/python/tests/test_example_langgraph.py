"""examples/langgraph-agent against the real binary: a Client sends a message on its socket, Herald
POSTs it to the example's upstream backend, whose LangGraph agent (the offline demo model) runs
with HeraldCallbackHandler; the client receives one valid run: thinking, the search tool call
paired, the answer in tokens. A cancel ends the run with agent_cancelled."""

from __future__ import annotations

import importlib.util

import pytest

from conftest import REPO
from helpers import UpstreamLoops, connected
from run_rules import assert_valid_run

SECRET = "langgraph-example-secret"

pytestmark = pytest.mark.filterwarnings("ignore:create_react_agent has been moved")


def load_example():
    spec = importlib.util.spec_from_file_location(
        "example_langgraph", REPO / "examples" / "langgraph-agent" / "agent.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def loop(herald):
    """(herald server, backend): Herald forwarding to the example's backend (demo model, ``pace``)."""
    example = load_example()
    loops = UpstreamLoops(herald, SECRET)

    async def start(pace: float = 0.0):
        backend = example.LangGraphBackend(None, SECRET, example.build_agent(example.DemoChatModel(pace=pace)))
        return await loops.start(backend, example.upstream.serve), backend

    yield start
    await loops.close()


async def test_a_message_runs_the_langgraph_agent_and_streams_one_valid_run(loop, user, token):
    server, _ = await loop()
    seen = await connected(server, token)
    client = seen.client
    ack = await client.send("t-1", {"text": "What is Herald?"})
    await seen.wait_event("agent_completed")
    await seen.stop()

    events = seen.events
    assert_valid_run(events)
    assert {e.run_id for e in events} == {ack.body["run_id"]} and {e.thread_id for e in events} == {"t-1"}
    names = [e.event for e in events]
    assert names[:4] == ["agent_started", "agent_thinking", "tool_executing", "tool_completed"], names
    assert events[2].data["tool_name"] == "search" and events[2].data["parameters"] == {"query": "What is Herald?"}
    assert "delivers AI-agent run events" in events[3].data["result"]
    deltas = [e.data["delta"] for e in events if e.event == "agent_text"]
    assert len(deltas) > 5 and "".join(deltas).startswith("From the knowledge base: Herald delivers")
    assert events[-1].data["final_response"] == "".join(deltas)


async def test_cancel_ends_the_run_with_agent_cancelled(loop, user, token):
    server, _ = await loop(pace=0.2)
    seen = await connected(server, token)
    client = seen.client
    ack = await client.send("t-2", {"text": "What is LangGraph?"})
    await seen.wait(lambda c: any(e.event == "agent_text" for e in c.events))
    cancelled = await client.cancel(ack.body["run_id"])
    assert cancelled.body == {"run_id": ack.body["run_id"], "cancelled": True}
    await seen.wait_event("agent_cancelled")
    await seen.stop()
    assert_valid_run(seen.events)
