"""The example agent (examples/python-agent/agent.py) publishes a run Herald accepts."""

from __future__ import annotations

import importlib.util

import pytest

from conftest import API_KEY, REPO
from helpers import Collector
from herald_client import AsyncPublisher, Client


def load_agent():
    spec = importlib.util.spec_from_file_location("example_agent", REPO / "examples" / "python-agent" / "agent.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("fail", [False, True])
async def test_example_agent_streams_a_full_run(server, user, token, fail):
    agent = load_agent()
    client = Client(server.url, token)
    seen = Collector(client)
    await client.wait_synced(timeout=10)
    async with AsyncPublisher(server.url, API_KEY) as pub:
        if fail:
            with pytest.raises(RuntimeError):
                await agent.answer(pub, user, "What is Herald?", "t1", fail=True)
        else:
            await agent.answer(pub, user, "What is Herald?", "t1")
    terminal = "agent_error" if fail else "agent_completed"
    await seen.wait_event(terminal)
    await seen.stop()

    names = seen.names()
    tools = [e.data["tool_name"] for e in seen.events if e.event == "tool_executing"]
    assert names[0] == "agent_started" and names[-1] == terminal
    assert tools == ["web_search", "read_page"]
    assert names.count("tool_completed") == 2
    if not fail:
        assert "agent_thinking" in names and names.count("agent_text") > 1
        streamed = "".join(e.data["delta"] for e in seen.events if e.event == "agent_text").strip()
        assert streamed == seen.events[-1].data["final_response"]
