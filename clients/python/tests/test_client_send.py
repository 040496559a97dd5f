"""Client.send and Client.cancel through Herald's upstream, against the real binary, with a
recording backend here (served by the example's small HTTP server) that checks the signature."""

from __future__ import annotations

import asyncio
import json

import pytest

from test_upstream_loop import SECRET, load_upstream
from herald_client import Ack, Client, HeraldConnectionError, UpstreamError, check_signature


class Recorder:
    """A backend: records each request (checking its signature) and answers ``reply(request)``;
    ``None`` from ``reply`` means never answer."""

    def __init__(self) -> None:
        self.requests = []
        self.arrived = asyncio.Condition()
        self.reply = lambda req: (200, {"ok": True})
        self.hung = asyncio.Event()

    async def handle(self, signature, raw):
        check_signature(SECRET, signature, raw)  # raises (-> the test fails with a 500) if bad
        req = json.loads(raw)
        async with self.arrived:
            self.requests.append(req)
            self.arrived.notify_all()
        answer = self.reply(req)
        if answer is None:
            await self.hung.wait()  # released at teardown
            return 503, {}
        return answer

    async def received(self, predicate, timeout: float = 10.0):
        async def until():
            async with self.arrived:
                await self.arrived.wait_for(lambda: any(predicate(r) for r in self.requests))
            return next(r for r in self.requests if predicate(r))

        return await asyncio.wait_for(until(), timeout)


@pytest.fixture
async def upstream(herald):
    recorder = Recorder()
    http = await load_upstream().serve(recorder, "127.0.0.1", 0)
    server = herald("--upstream-url", f"http://127.0.0.1:{http.port}/", "--upstream-secret", SECRET)
    yield server, recorder
    recorder.hung.set()
    await http.close()


async def test_send_returns_the_backends_ack_and_the_backend_sees_the_tokens_user(upstream, user, token):
    server, backend = upstream
    backend.reply = lambda req: (200, {"run_id": "run-" + req["ref"], "echo": req["data"]})
    async with Client(server.url, token) as client:
        welcome = await client.wait_synced(timeout=10)
        ack = await client.send("thread-3", {"text": "hello"})
    assert isinstance(ack, Ack)
    assert ack.status == 200 and ack.body == {"run_id": "run-" + ack.ref, "echo": {"text": "hello"}}
    request = await backend.received(lambda r: r.get("ref") == ack.ref)
    assert request == {
        "type": "message",
        "user_id": user,
        "connection_id": welcome.connection_id,
        "ref": ack.ref,
        "thread_id": "thread-3",
        "data": {"text": "hello"},
    }


async def test_cancel_returns_the_backends_ack_with_the_run_and_the_user(upstream, user, token):
    server, backend = upstream
    backend.reply = lambda req: (200, {"stopped": req["run_id"]})
    async with Client(server.url, token) as client:
        await client.wait_synced(timeout=10)
        ack = await client.cancel("run-9", ref="c-1")
    assert ack == Ack(ref="c-1", status=200, body={"stopped": "run-9"})
    request = await backend.received(lambda r: r.get("ref") == "c-1" and r.get("user_id") == user)
    assert request == {"type": "cancel", "user_id": user, "run_id": "run-9", "ref": "c-1"}


async def test_a_backend_500_raises_upstream_error_with_the_ref_and_the_socket_stays_open(upstream, token):
    server, backend = upstream
    backend.reply = lambda req: (500, {"error": "boom"})
    async with Client(server.url, token) as client:
        await client.wait_synced(timeout=10)
        with pytest.raises(UpstreamError) as err:
            await client.send(None, {"text": "x"}, ref="m-500")
        assert err.value.code == "upstream_error" and err.value.ref == "m-500"
        assert "500" in err.value.message
        await client.ping(timeout=5)


async def test_without_an_upstream_send_and_cancel_raise_upstream_unavailable(server, token):
    async with Client(server.url, token) as client:
        await client.wait_synced(timeout=10)
        for call in (client.send(None, {"text": "x"}), client.cancel("run-1")):
            with pytest.raises(UpstreamError) as err:
                await call
            assert err.value.code == "upstream_unavailable"


async def test_a_backend_that_does_not_answer_times_out(upstream, token):
    server, backend = upstream
    backend.reply = lambda req: None
    async with Client(server.url, token, request_timeout_s=0.3) as client:
        await client.wait_synced(timeout=10)
        with pytest.raises(asyncio.TimeoutError):
            await client.send(None, {"text": "slow"})


async def test_a_dropped_connection_fails_the_pending_send(upstream, user, token):
    server, backend = upstream
    backend.reply = lambda req: None
    async with Client(server.url, token) as client:
        await client.wait_synced(timeout=10)
        pending = asyncio.ensure_future(client.send(None, {"text": "hold"}, ref="m-drop"))
        await backend.received(lambda r: r.get("ref") == "m-drop" and r.get("user_id") == user)
        client.drop_connection()
        with pytest.raises(HeraldConnectionError):
            await asyncio.wait_for(pending, 10)


async def test_send_before_connecting_raises_connection_error(server, token):
    client = Client(server.url, token)
    with pytest.raises(HeraldConnectionError):
        await client.send(None, {"text": "x"})
    assert client._requests == {}
