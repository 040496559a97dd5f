"""The Run helper: the events it emits, as a connected client receives them."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from conftest import API_KEY
from helpers import connected
from herald_client import AsyncPublisher, Publisher


async def test_run_success_emits_the_run_in_order(server, user, token):
    seen = await connected(server, token)
    async with AsyncPublisher(server.url, API_KEY) as pub:
        async with pub.run(user, "thread-1") as run:
            await run.thinking("Looking it up")
            async with run.tool("search", {"q": "herald"}) as search:
                await asyncio.sleep(0.05)  # the tool's own work, so its duration is measurable
                search.result = ["a", "b"]
            async with run.tool("fetch", {"url": "https://example.com"}) as fetch:
                fetch.set_result({"status": 200})
            await run.complete("Two results")
    events = await seen.wait_events(7)
    await seen.stop()

    assert seen.names() == [
        "agent_started", "agent_thinking",
        "tool_executing", "tool_completed",
        "tool_executing", "tool_completed",
        "agent_completed",
    ]  # fmt: skip
    assert {e.run_id for e in events} == {run.run_id} and {e.thread_id for e in events} == {"thread-1"}
    assert [e.seq for e in events] == list(range(1, 8))
    assert events[1].data == {"text": "Looking it up"}
    s_exec, s_done, f_exec, f_done = events[2:6]
    assert s_exec.data == {"tool_name": "search", "tool_call_id": search.tool_call_id, "parameters": {"q": "herald"}}
    assert s_done.data["tool_call_id"] == search.tool_call_id and s_done.data["result"] == ["a", "b"]
    assert s_done.data["duration_ms"] >= 50 and s_done.data["duration_ms"] == search.duration_ms
    assert f_done.data["tool_name"] == "fetch" and f_done.data["result"] == {"status": 200}
    assert f_exec.data["tool_call_id"] != s_exec.data["tool_call_id"]
    assert events[6].data == {"final_response": "Two results"}
    assert run.ended == "agent_completed" and [r.seq for r in run.receipts] == list(range(1, 8))


async def test_run_exception_emits_agent_error_and_reraises(server, user, token):
    seen = await connected(server, token)
    async with AsyncPublisher(server.url, API_KEY) as pub:
        with pytest.raises(ValueError, match="search backend down"):
            async with pub.run(user, "t") as run:
                async with run.tool("search", {"q": "x"}):
                    raise ValueError("search backend down")
    await seen.wait_event("agent_error")
    await seen.stop()

    assert seen.names() == ["agent_started", "tool_executing", "tool_completed", "agent_error"]
    tool_done, error = seen.events[2], seen.events[3]
    assert tool_done.data["status"] == "error" and tool_done.data["error"] == "search backend down"
    assert error.data == {"message": "search backend down", "error_type": "ValueError"}
    assert run.ended == "agent_error"


async def test_run_block_without_terminal_event_is_completed_on_exit(server, user, token):
    seen = await connected(server, token)
    async with AsyncPublisher(server.url, API_KEY) as pub:
        async with pub.run(user) as run:
            await run.text("Hello")
    await seen.wait_event("agent_completed")
    await seen.stop()
    assert seen.names() == ["agent_started", "agent_text", "agent_completed"]
    assert seen.events[1].data == {"delta": "Hello"} and run.ended == "agent_completed"


async def test_cancelled_run_task_emits_agent_cancelled(server, user, token):
    seen = await connected(server, token)
    never = asyncio.Event()
    async with AsyncPublisher(server.url, API_KEY) as pub:

        async def agent() -> None:
            async with pub.run(user, run_id="run-to-cancel"):
                await never.wait()

        task = asyncio.create_task(agent())
        await seen.wait_event("agent_started")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await seen.wait_event("agent_cancelled")
    await seen.stop()
    assert seen.names() == ["agent_started", "agent_cancelled"]
    assert {e.run_id for e in seen.events} == {"run-to-cancel"}


class HoldTheStart(httpx.AsyncBaseTransport):
    """Sends every request to the server, but holds the answer to agent_started (already
    appended) until released: a task can be cancelled while its run is starting."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.appended = asyncio.Event()
        self.release = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if b'"agent_started"' in request.content:
            self.appended.set()
            await self.release.wait()
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_task_cancelled_while_its_run_starts_ends_the_run(server, user, token):
    seen = await connected(server, token)
    hold = HoldTheStart()
    entered = False
    async with AsyncPublisher(server.url, API_KEY, transport=hold) as pub:

        async def agent() -> None:
            nonlocal entered
            async with pub.run(user, run_id="run-cancelled-starting"):
                entered = True

        task = asyncio.create_task(agent())
        await hold.appended.wait()
        await seen.wait_event("agent_started")
        task.cancel()  # inside `async with`'s __aenter__: its block never runs
        hold.release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        await seen.wait_event("agent_cancelled")
    await seen.stop()
    assert not entered
    assert seen.names() == ["agent_started", "agent_cancelled"]
    assert {e.run_id for e in seen.events} == {"run-cancelled-starting"}


async def test_run_error_is_not_masked_when_publishing_the_end_fails(herald, user):
    server = herald()
    async with AsyncPublisher(server.url, API_KEY, retries=0) as pub:
        with pytest.raises(KeyError, match="the agent's own error"):
            async with pub.run(user) as run:
                await asyncio.to_thread(server.stop)  # Herald goes away mid-run
                raise KeyError("the agent's own error")
    assert run.ended is None  # agent_error could not be published, and that did not hide KeyError


def test_sync_run_with_publisher(server, user):
    with Publisher(server.url, API_KEY) as pub:
        with pytest.raises(RuntimeError):
            with pub.run(user, "t") as failing:
                with failing.tool("calc", {"x": 1}) as t:
                    t.result = 2
                raise RuntimeError("model refused")
        with pub.run(user, "t") as ok:
            ok.thinking("fine")
            ok.complete({"answer": 42})
        history = pub.history(user)
    by_run = {}
    for e in history.events:
        by_run.setdefault(e.run_id, []).append(e)
    assert [e.event for e in by_run[failing.run_id]] == [
        "agent_started", "tool_executing", "tool_completed", "agent_error",
    ]  # fmt: skip
    assert by_run[failing.run_id][2].data["result"] == 2
    assert by_run[failing.run_id][3].data["message"] == "model refused"
    assert [e.event for e in by_run[ok.run_id]] == ["agent_started", "agent_thinking", "agent_completed"]
    assert by_run[ok.run_id][2].data == {"final_response": {"answer": 42}}
