"""The WebSocket Client against the real binary: receive, backlog, auth, resume, reset."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from conftest import API_KEY, make_token
from helpers import Collector
from herald_client import AsyncPublisher, AuthError, Client, DisconnectedError, TokenExpiredError, ws_url
from herald_client.client import jwt_exp


def test_ws_url_is_derived_from_the_base_url():
    assert ws_url("http://127.0.0.1:7400") == "ws://127.0.0.1:7400/ws"
    assert ws_url("https://herald.example.com/") == "wss://herald.example.com/ws"
    assert ws_url("https://example.com/herald") == "wss://example.com/herald/ws"
    assert ws_url("ws://h:1/ws") == "ws://h:1/ws"


async def test_publish_then_receive_live_events(server, user, token):
    client = Client(server.url, token)
    seen = Collector(client)
    welcome = await client.wait_synced(timeout=10)
    assert (welcome.user_id, welcome.recovery, welcome.seq, welcome.v) == (user, "none", 0, 1)
    async with AsyncPublisher(server.url, API_KEY) as pub:
        r1 = await pub.publish(user, "agent_started", run_id="r1", thread_id="t1")
        r2 = await pub.publish(user, "agent_thinking", run_id="r1", thread_id="t1", data={"text": "hi"})
        await pub.publish(f"{user}-other", "custom", data={"name": "not yours"})
        r3 = await pub.publish(user, "custom", data={"name": "ping"})
    events = await seen.wait_events(3)
    assert [(e.seq, e.id, e.event) for e in events] == [
        (r1.seq, r1.id, "agent_started"),
        (r2.seq, r2.id, "agent_thinking"),
        (r3.seq, r3.id, "custom"),
    ]
    assert all(e.user_id == user for e in events)
    assert events[1].data == {"text": "hi"} and events[1].thread_id == "t1" and events[2].run_id is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", events[0].ts)
    assert (client.epoch, client.seq) == (welcome.epoch, 3)
    await seen.stop()
    assert seen.task.done() and seen.error is None  # close() ends the iteration cleanly
    assert len(seen.events) == 3


async def test_connecting_mid_run_receives_the_active_run(server, user, token):
    async with AsyncPublisher(server.url, API_KEY) as pub:
        await pub.publish(user, "agent_started", run_id="done")
        await pub.publish(user, "agent_completed", run_id="done")
        await pub.publish(user, "agent_started", run_id="live")
        await pub.publish(user, "agent_thinking", run_id="live", data={"text": "still going"})
    client = Client(server.url, token)
    seen = Collector(client)
    await client.wait_synced(timeout=10)
    await seen.wait_events(2)
    await seen.stop()
    assert [(e.run_id, e.event) for e in seen.events] == [("live", "agent_started"), ("live", "agent_thinking")]


async def test_subprotocol_auth_and_ping(server, user, token):
    async with Client(server.url, token, auth="subprotocol") as client:
        welcome = await client.wait_synced(timeout=10)
        assert welcome.user_id == user
        await client.ping(timeout=5)


async def test_bad_client_frame_comes_back_as_error_frame(server, token):
    frames = []
    got = asyncio.Event()

    def on_frame(frame):
        frames.append(frame)
        got.set()

    async with Client(server.url, token, on_frame=on_frame) as client:
        await client.wait_synced(timeout=10)
        await client.send_frame({"type": "dance"})
        await asyncio.wait_for(got.wait(), 10)
        await client.ping(timeout=5)  # the connection stays open
    assert frames[0]["type"] == "error" and frames[0]["code"]


async def test_bad_token_raises_auth_error(server, user):
    client = Client(server.url, make_token(user, secret="not-the-server-secret"))
    with pytest.raises(AuthError) as err:
        async for _ in client:
            pass
    assert err.value.status == 401 and err.value.code
    await client.close()


async def test_resume_after_dropped_socket_replays_missed_events(server, user, token):
    """The socket dies without a close frame; events published before the client is back are
    replayed (recovery=replayed), each exactly once and in order."""
    pub = AsyncPublisher(server.url, API_KEY)
    calls = 0

    async def token_provider() -> str:
        nonlocal calls
        calls += 1
        if calls == 2:  # reconnecting: publish while this client is offline
            await pub.publish(user, "agent_thinking", run_id="r1", data={"text": "missed 1"})
            await pub.publish(user, "agent_thinking", run_id="r1", data={"text": "missed 2"})
        return token

    client = Client(server.url, token_provider, min_backoff_s=0.05)
    seen = Collector(client)
    await client.wait_synced(timeout=10)
    await pub.publish(user, "agent_started", run_id="r1")
    await seen.wait_events(1)

    client.drop_connection()
    await seen.wait(lambda c: len(c.welcomes) == 2)
    await pub.publish(user, "agent_completed", run_id="r1")
    await seen.wait_events(4)
    await seen.stop()
    await pub.aclose()

    assert [w.recovery for w in seen.welcomes] == ["none", "replayed"]
    assert client.last_close_code == 1006 and seen.resets == []
    assert [e.seq for e in seen.events] == [1, 2, 3, 4]
    assert [e.data.get("text") for e in seen.events[1:3]] == ["missed 1", "missed 2"]


async def test_server_closes_expired_token_and_client_resumes_with_a_new_one(server, user):
    """A server-side disconnect: the token expires, Herald closes with 4001, the client asks its
    token provider for a new one and resumes from its cursor without losing what was published
    meanwhile."""
    pub = AsyncPublisher(server.url, API_KEY)
    calls = 0

    async def token_provider() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            return make_token(user, exp=int(time.time()) + 2)
        await pub.publish(user, "agent_thinking", run_id="r1", data={"text": "while offline"})
        return make_token(user)

    client = Client(server.url, token_provider)
    seen = Collector(client)
    await client.wait_synced(timeout=10)
    await pub.publish(user, "agent_started", run_id="r1")
    await seen.wait(lambda c: len(c.welcomes) == 2, timeout=20)
    await pub.publish(user, "agent_completed", run_id="r1")
    await seen.wait_events(3)
    await seen.stop()
    await pub.aclose()

    assert client.last_close_code == 4001
    assert [w.recovery for w in seen.welcomes] == ["none", "replayed"]
    assert [(e.seq, e.event) for e in seen.events] == [(1, "agent_started"), (2, "agent_thinking"), (3, "agent_completed")]


async def test_expired_static_token_raises_token_expired(server, user):
    client = Client(server.url, make_token(user, exp=int(time.time()) + 2))
    with pytest.raises(TokenExpiredError):
        async with client:
            async for _ in client:
                pass
    assert client.last_close_code == 4001


async def test_server_restart_fires_on_reset_and_continues_in_the_new_epoch(server, user, token):
    """The memory engine loses the log on restart: the resuming client is told reset, on_reset
    runs (after every event of the old epoch), and live events of the new epoch arrive."""
    client = Client(server.url, token, min_backoff_s=0.05, max_backoff_s=0.5)
    seen = Collector(client)
    first = await client.wait_synced(timeout=10)
    async with AsyncPublisher(server.url, API_KEY) as pub:
        for i in range(3):
            await pub.publish(user, "custom", data={"name": f"old {i}"})
    await seen.wait_events(3)

    await asyncio.to_thread(server.restart)  # SIGTERM: drain with 1001; then a fresh process
    await seen.wait(lambda c: len(c.resets) == 1, timeout=20)
    reset = seen.resets[0]
    assert reset.recovery == "reset" and reset.epoch != first.epoch
    assert client.last_close_code == 1001
    assert len(seen.events) == 3  # the reset came after the old epoch's events, and added none

    async with AsyncPublisher(server.url, API_KEY) as pub:
        receipt = await pub.publish(user, "custom", data={"name": "new"})
    await seen.wait_events(4)
    await seen.stop()
    new = seen.events[3]
    assert (new.seq, new.data["name"]) == (1, "new") and receipt.epoch == reset.epoch
    assert (client.epoch, client.seq) == (reset.epoch, 1)


async def test_ticket_connects_a_client(server, user):
    async with AsyncPublisher(server.url, API_KEY) as pub:
        ticket = await pub.ticket(user, ttl_s=30)
        assert ticket.ticket and ticket.expires_at
        async with Client(server.url, ticket=lambda: pub.ticket(user)) as client:
            welcome = await client.wait_synced(timeout=10)
            assert welcome.user_id == user
            await pub.publish(user, "custom", data={"name": "via ticket"})
            event = await asyncio.wait_for(client.__anext__(), 10)
            assert event.data == {"name": "via ticket"}


async def test_token_provider_refreshes_the_open_socket_before_expiry(server, user):
    """With a token provider, a fresh token goes over the open socket (``refresh`` frame) before the
    first one expires: ``refreshed`` comes back and the client never reconnects."""
    issued = []

    def token_provider() -> str:
        # The first token expires in 33 s and is refreshed 31 s before: after about 2 s.
        issued.append(make_token(user, ttl_s=33 if not issued else 3600))
        return issued[-1]

    refreshed = asyncio.Event()
    frames = []

    def on_frame(frame: dict) -> None:
        frames.append(frame)
        if frame["type"] == "refreshed":
            refreshed.set()

    client = Client(server.url, token_provider, refresh_before_s=31, on_frame=on_frame)
    seen = Collector(client)
    await client.wait_synced(timeout=10)
    await asyncio.wait_for(refreshed.wait(), timeout=10)
    async with AsyncPublisher(server.url, API_KEY) as pub:
        await pub.publish(user, "agent_started", run_id="r1")
    await seen.wait_events(1)
    await seen.stop()

    assert len(issued) == 2 and client.refreshes == 1 and client.connects == 1
    assert [f for f in frames if f["type"] == "refreshed"] == [{"type": "refreshed", "exp": jwt_exp(issued[1])}]


async def test_a_refused_refresh_reconnects_with_the_next_token(server, user):
    """The provider's refresh token is for another user: the server refuses it (``wrong_user``) and
    the client reconnects with the provider's next, valid token, resuming where it was."""
    calls = 0

    def token_provider() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            return make_token(user, ttl_s=33)
        if calls == 2:
            return make_token("someone-else", ttl_s=3600)
        return make_token(user, ttl_s=3600)

    errors = []
    client = Client(server.url, token_provider, refresh_before_s=31, on_frame=lambda f: errors.append(f.get("code")))
    seen = Collector(client)
    await seen.wait(lambda c: len(c.welcomes) == 2, timeout=15)
    await seen.stop()
    assert "wrong_user" in errors
    assert [w.recovery for w in seen.welcomes] == ["none", "replayed"]


async def test_disconnect_by_an_operator_ends_the_iteration(server, user, token):
    import urllib.request

    client = Client(server.url, token)
    seen = Collector(client)
    await client.wait_synced(timeout=10)
    request = urllib.request.Request(
        f"{server.url}/v1/users/{user}/disconnect",
        data=b'{"reason":"banned"}',
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        method="POST",
    )
    with await asyncio.to_thread(urllib.request.urlopen, request) as response:
        assert response.status == 200
    await asyncio.wait_for(seen.task, timeout=10)
    assert isinstance(seen.error, DisconnectedError), seen.error
    assert str(seen.error).endswith("banned") and client.last_close_code == 4003
    assert client.connects == 1


async def test_a_client_opened_mid_answer_gets_the_whole_text_then_the_rest(server, user, token):
    # 1,500 deltas: more than history_size (1000) keeps, so the run's start is trimmed.
    async with AsyncPublisher(server.url, API_KEY) as pub:
        await pub.publish(user, "agent_started", run_id="long")
        for b in range(15):
            await pub.publish_batch(
                [{"user_id": user, "run_id": "long", "event": "agent_text", "data": {"delta": f"{b * 100 + i} "}} for i in range(100)]
            )
        snap = await pub.snapshot(user, run_id="long")
        assert [(e.event, e.seq, e.snapshot) for e in snap.events] == [("agent_started", 1, True), ("agent_text", 1501, True)]
        client = Client(server.url, token)
        seen = Collector(client)
        await client.wait_synced(timeout=10)
        await seen.wait_events(2)
        assert (client.seq, seen.events[1].first_seq) == (1501, 2)
        await pub.publish(user, "agent_text", run_id="long", data={"delta": "end"})
        await pub.publish(user, "agent_completed", run_id="long")
    await seen.wait_events(4)
    await seen.stop()
    text = "".join(e.data["delta"] for e in seen.events if e.event == "agent_text")
    assert text == "".join(f"{i} " for i in range(1500)) + "end"
    assert [e.seq for e in seen.events[2:]] == [1502, 1503]
