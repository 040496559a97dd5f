"""Publishing over HTTP against the real binary: receipts, idempotency, batches, error mapping,
retries with the same id."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest

from conftest import API_KEY
from herald_client import (
    AsyncPublisher,
    AuthError,
    EventInput,
    HeraldConnectionError,
    HeraldError,
    NotFoundError,
    NotReadyError,
    Publisher,
    RateLimitedError,
    RunStateError,
    TooLargeError,
    ValidationError,
    error_from_response,
)


def test_publish_returns_receipts_with_consecutive_seqs(server, user):
    with Publisher(server.url, API_KEY) as pub:
        first = pub.publish(user, "agent_started", run_id="r1", thread_id="t1", id="e-1")
        second = pub.publish(user, "agent_thinking", run_id="r1", data={"text": "hmm"})
    assert (first.id, first.seq, first.duplicate) == ("e-1", 1, False)
    assert second.seq == 2 and second.epoch == first.epoch and not second.duplicate
    assert second.id and second.id != first.id  # the SDK generated an idempotency key


def test_same_id_returns_first_receipt_as_duplicate_and_stores_once(server, user):
    with Publisher(server.url, API_KEY) as pub:
        first = pub.publish(user, "custom", data={"name": "x"}, id="same")
        again = pub.publish(user, "custom", data={"name": "x"}, id="same")
        history = pub.history(user)
    assert again.duplicate and (again.id, again.seq) == (first.id, first.seq)
    assert [e.id for e in history.events] == ["same"]


def test_history_returns_published_events(server, user):
    with Publisher(server.url, API_KEY) as pub:
        pub.publish(user, "agent_started", run_id="r1", thread_id="t1")
        pub.publish(user, "tool_executing", run_id="r1", data={"tool_name": "search", "parameters": {"q": 1}})
        history = pub.history(user, after=1)
    assert history.seq == 2 and not history.reset
    [event] = history.events
    assert (event.seq, event.event, event.run_id, event.user_id) == (2, "tool_executing", "r1", user)
    assert event.data == {"tool_name": "search", "parameters": {"q": 1}}


async def test_async_publish_batch_returns_results_in_order(server, user):
    async with AsyncPublisher(server.url, API_KEY) as pub:
        receipts = await pub.publish_batch(
            [
                EventInput(user, "agent_started", run_id="r1"),
                {"user_id": user, "event": "agent_thinking", "run_id": "r1", "data": {"text": "a"}},
                EventInput(user, "agent_completed", run_id="r1", id="last"),
            ]
        )
    assert [r.seq for r in receipts] == [1, 2, 3]
    assert receipts[2].id == "last" and all(r.id for r in receipts)


async def test_invalid_batch_appends_nothing_and_names_the_index(server, user):
    async with AsyncPublisher(server.url, API_KEY) as pub:
        with pytest.raises(ValidationError) as err:
            await pub.publish_batch(
                [EventInput(user, "agent_started", run_id="r1"), EventInput(user, "no_such_event", run_id="r1")]
            )
        history = await pub.history(user)
    assert err.value.code == "invalid_event" and err.value.status == 400
    assert "events[1]" in err.value.message
    assert history.events == [] and history.seq == 0


# --- error mapping ------------------------------------------------------------------------------


def test_bad_api_key_raises_auth_error(server, user):
    with Publisher(server.url, "wrong-key") as pub:
        with pytest.raises(AuthError) as err:
            pub.publish(user, "custom", data={"name": "x"})
    assert (err.value.code, err.value.status) == ("unauthorized", 401)


def test_unknown_event_raises_validation_error(server, user):
    with Publisher(server.url, API_KEY) as pub:
        with pytest.raises(ValidationError) as err:
            pub.publish(user, "agent_dancing", run_id="r1")
    assert err.value.code == "invalid_event" and "agent_dancing" in err.value.message


def test_missing_required_field_names_the_field(server, user):
    with Publisher(server.url, API_KEY) as pub:
        pub.publish(user, "agent_started", run_id="r1")
        with pytest.raises(ValidationError) as err:
            pub.publish(user, "tool_executing", run_id="r1", data={"parameters": {}})
    assert err.value.code == "invalid_event" and "tool_name" in err.value.message


def test_run_rule_violations_raise_run_state_error(server, user):
    with Publisher(server.url, API_KEY) as pub:
        pub.publish(user, "agent_started", run_id="r1")
        with pytest.raises(RunStateError) as twice:
            pub.publish(user, "agent_started", run_id="r1")
        pub.publish(user, "agent_completed", run_id="r1")
        with pytest.raises(RunStateError) as after_end:
            pub.publish(user, "agent_thinking", run_id="r1")
    assert (twice.value.code, twice.value.status) == ("run_state", 409)
    assert "already started" in twice.value.message
    assert "agent_completed" in after_end.value.message


def test_batch_over_server_limit_raises_too_large(herald, user):
    server = herald("--max-batch", "2")
    with Publisher(server.url, API_KEY) as pub:
        with pytest.raises(TooLargeError) as err:
            pub.publish_batch([EventInput(user, "custom", data={"name": str(i)}) for i in range(3)])
    assert (err.value.code, err.value.status) == ("too_large", 413)


def test_unreachable_server_raises_connection_error_after_retries(user):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Publisher(f"http://127.0.0.1:{port}", API_KEY, retries=2, backoff_s=0.01) as pub:
        with pytest.raises(HeraldConnectionError) as err:
            pub.publish(user, "custom", data={"name": "x"})
    assert err.value.code == "connection_error"


@pytest.mark.parametrize(
    "status,code,cls",
    [
        (400, "invalid_json", ValidationError),
        (401, "unauthorized", AuthError),
        (404, "not_found", NotFoundError),
        (409, "run_state", RunStateError),
        (413, "too_large", TooLargeError),
        (429, "rate_limited", RateLimitedError),
        (503, "not_ready", NotReadyError),
    ],
)
def test_error_from_response_maps_status_and_keeps_code_and_message(status, code, cls):
    body = json.dumps({"error": {"code": code, "message": "because"}}).encode()
    error = error_from_response(status, body)
    assert type(error) is cls and (error.code, error.message, error.status) == (code, "because", status)


def test_error_from_response_without_json_body_is_still_typed():
    error = error_from_response(502, b"<html>bad gateway</html>")
    assert type(error) is HeraldError and error.code == "http_502" and "bad gateway" in error.message


# --- retries ------------------------------------------------------------------------------------


def test_network_error_is_retried_with_the_same_id():
    bodies = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        if len(bodies) == 1:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json={"id": bodies[-1]["id"], "seq": 7, "epoch": "e", "connections": 0, "duplicate": False})

    with Publisher("http://herald.test", API_KEY, transport=httpx.MockTransport(handler), backoff_s=0.001) as pub:
        receipt = pub.publish("alice", "custom", data={"name": "x"})
    assert len(bodies) == 2 and bodies[0] == bodies[1]
    assert bodies[0]["id"] == receipt.id and receipt.seq == 7


async def test_not_ready_is_retried_then_raised():
    attempts = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(json.loads(request.content)["id"])
        return httpx.Response(503, json={"error": {"code": "not_ready", "message": "draining"}})

    async with AsyncPublisher(
        "http://herald.test", API_KEY, transport=httpx.MockTransport(handler), retries=2, backoff_s=0.001
    ) as pub:
        with pytest.raises(NotReadyError) as err:
            await pub.publish("alice", "custom", data={"name": "x"})
    assert len(attempts) == 3 and len(set(attempts)) == 1
    assert err.value.message == "draining"


async def test_retry_after_lost_response_does_not_deliver_twice(server, user):
    """A proxy forwards the first request to Herald but drops the connection before the answer
    arrives: the event is stored, the publisher sees a network error and retries with the same id,
    and Herald answers with the first receipt marked duplicate."""
    connections = 0

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        lose_answer = connections == 1
        up_r, up_w = await asyncio.open_connection("127.0.0.1", server.port)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, drop: bool) -> None:
            try:
                while data := await r.read(65536):
                    if drop:  # Herald answered: the event is stored; lose the answer
                        client_w.transport.abort()
                        return
                    w.write(data)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(client_r, up_w, False), pipe(up_r, client_w, lose_answer))

    proxy = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    try:
        async with AsyncPublisher(f"http://127.0.0.1:{port}", API_KEY, backoff_s=0.01) as pub:
            receipt = await pub.publish(user, "custom", data={"name": "once"})
        async with AsyncPublisher(server.url, API_KEY) as direct:
            history = await direct.history(user)
    finally:
        proxy.close()
    assert connections == 2
    assert receipt.duplicate and receipt.seq == 1
    assert [e.id for e in history.events] == [receipt.id]
