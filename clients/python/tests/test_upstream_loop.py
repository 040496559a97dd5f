"""The full upstream loop against the real binary: a Client sends a message on its socket, Herald
POSTs it (signed) to examples/python-agent/upstream.py, which acks with a run id and streams the
run back through the publisher SDK; a cancel stops the run with agent_cancelled."""

from __future__ import annotations

import importlib.util

import pytest

from conftest import REPO, make_token
from helpers import Collector, UpstreamLoops
from herald_client import Client, UpstreamError

SECRET = "upstream-secret-for-tests"
EXAMPLE = REPO / "examples" / "python-agent"


def load_upstream():
    """examples/python-agent/upstream.py as a module (it imports agent.py from its own folder)."""
    spec = importlib.util.spec_from_file_location("example_upstream", EXAMPLE / "upstream.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def start_loop(herald):
    """Factory: starts the example backend (agent pauses scaled by ``pace``), then Herald pointing
    at it and signing with ``herald_secret``; returns (herald server, backend)."""
    loops = UpstreamLoops(herald, SECRET)

    async def start(pace: float = 0.0, herald_secret: str = SECRET):
        upstream = load_upstream()
        backend = upstream.Backend(None, SECRET, pace=pace)
        return await loops.start(backend, upstream.serve, herald_secret), backend

    yield start
    await loops.close()


async def test_message_is_acked_with_a_run_id_then_the_run_streams_in_order(start_loop, user, token):
    server, backend = await start_loop()
    client = Client(server.url, token)
    seen = Collector(client)
    await client.wait_synced(timeout=10)

    ack = await client.send("thread-1", {"text": "What is Herald?"})

    assert ack.status == 200 and ack.ref
    run_id = ack.body["run_id"]
    await seen.wait_event("agent_completed")
    await seen.stop()
    run = [e for e in seen.events if e.run_id == run_id]
    names = [e.event for e in run]
    assert names[:5] == ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_thinking"]
    assert names[5:7] == ["tool_executing", "tool_completed"]
    assert names[-1] == "agent_completed" and names.count("agent_text") > 1
    assert [e.data["tool_name"] for e in run if e.event == "tool_executing"] == ["web_search", "read_page"]
    assert [e.seq for e in run] == sorted(e.seq for e in run) and len({e.seq for e in run}) == len(run)
    # The backend published for the user Herald named (from the token), on the thread sent.
    assert all(e.user_id == user and e.thread_id == "thread-1" for e in run)
    assert run[0].data["question"] == "What is Herald?"


async def test_cancel_stops_the_run_with_agent_cancelled(start_loop, user, token):
    server, backend = await start_loop(pace=30.0)  # the first tool takes 12 s: the cancel lands while it runs
    client = Client(server.url, token)
    seen = Collector(client)
    await client.wait_synced(timeout=10)
    ack = await client.send(None, {"text": "slow question"})
    run_id = ack.body["run_id"]
    await seen.wait_event("tool_executing")

    cancel_ack = await client.cancel(run_id)

    assert cancel_ack.status == 200
    assert cancel_ack.body == {"run_id": run_id, "cancelled": True}
    cancelled = await seen.wait_event("agent_cancelled")
    await seen.stop()
    assert cancelled.run_id == run_id and cancelled.user_id == user
    names = seen.names()
    assert names[0] == "agent_started" and names[-1] == "agent_cancelled"
    assert "agent_completed" not in names
    assert run_id not in backend.runs


async def test_cancel_of_another_users_run_is_refused(start_loop, user, token):
    server, backend = await start_loop(pace=30.0)
    async with Client(server.url, token) as owner, Client(server.url, make_token(user + "-other")) as other:
        await owner.wait_synced(timeout=10)
        await other.wait_synced(timeout=10)
        run_id = (await owner.send(None, {"text": "mine"})).body["run_id"]

        with pytest.raises(UpstreamError) as err:
            await other.cancel(run_id)
        assert err.value.code == "upstream_error" and "404" in err.value.message
        assert run_id in backend.runs, "the run goes on"


async def test_the_example_refuses_a_request_signed_with_another_secret(start_loop, token):
    server, backend = await start_loop(herald_secret="not-the-backends-secret")
    async with Client(server.url, token) as client:
        await client.wait_synced(timeout=10)
        with pytest.raises(UpstreamError) as err:
            await client.send(None, {"text": "hi"})
    assert err.value.code == "upstream_error" and "401" in err.value.message
    assert backend.runs == {}
