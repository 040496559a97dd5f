"""SocketPublisher over a real Herald: pipelined publishes, typed errors, resend after a dropped
socket (delivered once, in order), and Run.stream_text piping deltas as agent_text events."""

from __future__ import annotations

import asyncio

import pytest

from conftest import API_KEY
from helpers import Collector
from herald_client import AuthError, Client, Publisher, RunStateError, SocketPublisher, ValidationError


async def connected(server, token) -> Collector:
    client = Client(server.url, token)
    collector = Collector(client)
    await client.wait_synced(timeout=10)
    return collector


async def llm(n: int):
    """A stand-in for a model's streamed answer: deltas arriving over time."""
    for i in range(n):
        yield f"tok{i} "
        await asyncio.sleep(0)


async def test_stream_text_pipes_deltas_as_agent_text_in_order(server, user, token):
    seen = await connected(server, token)
    async with SocketPublisher(server.url, API_KEY) as pub:
        async with pub.run(user, "thread-1") as run:
            text = await run.stream_text(llm(40))
    events = await seen.wait_events(42)
    await seen.stop()
    assert text == "".join(f"tok{i} " for i in range(40))
    assert seen.names() == ["agent_started"] + ["agent_text"] * 40 + ["agent_completed"]
    assert [e.data["delta"] for e in events[1:41]] == [f"tok{i} " for i in range(40)]
    assert [r.seq for r in run.receipts] == list(range(1, 43))


async def test_concurrent_publishes_are_pipelined_and_batches_answered(server, user, token):
    seen = await connected(server, token)
    async with SocketPublisher(server.url, API_KEY, max_in_flight=16) as pub:
        receipts = await asyncio.gather(
            *(pub.publish(user, "custom", data={"name": "n", "i": i}) for i in range(200))
        )
        batch = await pub.publish_batch(
            [{"user_id": user, "event": "custom", "data": {"name": "b", "i": i}} for i in range(3)]
        )
    assert sorted(r.seq for r in receipts) == list(range(1, 201))
    assert [r.seq for r in batch] == [201, 202, 203]
    await seen.wait_events(203)
    await seen.stop()


async def test_refused_frames_raise_typed_errors_and_the_socket_keeps_working(server, user):
    async with SocketPublisher(server.url, API_KEY) as pub:
        with pytest.raises(ValidationError) as invalid:
            await pub.publish(user, "agent_exploded", run_id="r")
        assert invalid.value.code == "invalid_event" and "agent_exploded" in invalid.value.message
        with pytest.raises(RunStateError):
            await pub.publish(user, "agent_text", run_id="never-started", data={"delta": "x"})
        with pytest.raises(ValidationError) as batch:
            await pub.publish_batch(
                [{"user_id": user, "event": "agent_started", "run_id": "r"}, {"user_id": user, "event": "nope"}]
            )
        assert batch.value.message.startswith("events[1]:")
        receipt = await pub.publish(user, "custom", data={"name": "ok"})
        assert receipt.seq == 1, "nothing refused was stored"


async def test_a_wrong_key_is_an_auth_error(server, user):
    async with SocketPublisher(server.url, "wrong-key", retries=0) as pub:
        with pytest.raises(AuthError):
            await pub.publish(user, "custom", data={"name": "n"})


async def test_frames_in_flight_when_the_socket_drops_are_resent_and_delivered_once(server, user, token):
    seen = await connected(server, token)
    async with SocketPublisher(server.url, API_KEY) as pub:
        await pub.publish(user, "agent_started", run_id="r")
        sends = [
            asyncio.ensure_future(pub.publish(user, "agent_text", run_id="r", data={"delta": str(i)}, id=f"d{i}"))
            for i in range(100)
        ]
        await asyncio.sleep(0)  # let some frames leave
        first_socket = pub._ws
        assert first_socket is not None
        first_socket.transport.abort()  # a network failure: no close frame
        receipts = await asyncio.gather(*sends)
        assert pub._ws is not first_socket, "the publisher reconnected"
        again = await pub.publish(user, "agent_text", run_id="r", data={"delta": "0"}, id="d0")
        assert again.duplicate and again.seq == receipts[0].seq
        await pub.publish(user, "agent_completed", run_id="r")
    events = await seen.wait_events(102)
    await seen.stop()
    assert [e.data["delta"] for e in events[1:101]] == [str(i) for i in range(100)], "once each, in order"
    assert seen.names()[-1] == "agent_completed" and len(events) == 102


def test_sync_run_streams_a_plain_iterable(server, user):
    with Publisher(server.url, API_KEY) as pub:
        with pub.run(user) as run:
            text = run.stream_text(["Hel", "", "lo"])
        assert text == "Hello"
        assert [e.data.get("delta") for e in pub.history(user).events[1:3]] == ["Hel", "lo"]
