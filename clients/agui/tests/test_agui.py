"""Herald's AG-UI bridge against the official AG-UI models (PyPI ``ag-ui-protocol``).

Every event the SSE stream emits for a golden path (text, reasoning, two tool calls) must parse
with ``ag_ui.core``'s models, carry no field those models do not know, and follow AG-UI's event
order (the rules of @ag-ui/client's ``verifyEvents``). The inbound endpoint is fed events built
with the same models, and the stream must give them back.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import httpx
import pytest
from pydantic import TypeAdapter

from ag_ui.core import (
    CustomEvent,
    Event,
    EventType,
    ReasoningEndEvent,
    ReasoningMessageContentEvent,
    ReasoningMessageEndEvent,
    ReasoningMessageStartEvent,
    ReasoningStartEvent,
    RunFinishedEvent,
    RunStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
)

REPO = Path(__file__).resolve().parents[3]
JWT_SECRET = "test-secret-0123456789abcdef"
API_KEY = "test-api-key"
LISTENING = re.compile(r"listening on http://([0-9.]+):(\d+)")
EVENT = TypeAdapter(Event)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_token(sub: str, ttl_s: float = 3600) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps({"sub": sub, "exp": int(time.time() + ttl_s)}).encode())
    mac = hmac.new(JWT_SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(mac)}"


class Herald:
    """One ``herald serve`` on 127.0.0.1:0; the port comes from its ``listening on`` line."""

    def __init__(self, *flags: str) -> None:
        binary = Path(os.environ.get("HERALD_BIN") or REPO / "target" / "debug" / "herald")
        if not binary.is_file():
            pytest.fail(f"Herald binary not found at {binary}: run `cargo build -p herald` or set HERALD_BIN")
        env = dict(os.environ, HERALD_JWT_SECRET=JWT_SECRET, HERALD_API_KEY=API_KEY, NO_COLOR="1")
        env.pop("HERALD_LISTEN", None)
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--listen", "127.0.0.1:0", *flags],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: List[str] = []
        ready = threading.Event()
        found: Dict[str, str] = {}

        def drain() -> None:
            for line in self.proc.stderr:
                self.log.append(line)
                match = LISTENING.search(line)
                if match and not ready.is_set():
                    found["url"] = f"http://{match.group(1)}:{match.group(2)}"
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(30) or "url" not in found:
            self.stop()
            raise RuntimeError("herald did not start:\n" + "".join(self.log))
        self.url = found["url"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def publish(self, body: dict) -> dict:
        r = httpx.post(f"{self.url}/v1/events", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
        assert r.status_code == 200, r.text
        return r.json()

    def post_agui(self, body: dict) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/agui/events", json=body, headers={"Authorization": f"Bearer {API_KEY}"})


@pytest.fixture(scope="module")
def herald() -> Iterator[Herald]:
    server = Herald()
    yield server
    server.stop()


@pytest.fixture
def user() -> str:
    return f"u-{uuid.uuid4().hex[:10]}"


class Stream:
    """The SSE stream of a user, read line by line."""

    def __init__(self, herald: Herald, user: str, last_event_id: Optional[str] = None, query: str = "") -> None:
        headers = {"Authorization": f"Bearer {make_token(user)}", "Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        self.client = httpx.Client(timeout=httpx.Timeout(10.0))
        self.cm = self.client.stream("GET", f"{herald.url}/v1/agui/stream{query}", headers=headers)
        self.response = self.cm.__enter__()
        assert self.response.status_code == 200
        assert self.response.headers["content-type"] == "text/event-stream"
        self.lines = self.response.iter_lines()

    def next(self) -> Tuple[Optional[str], dict]:
        """The next message with data: (id, parsed JSON)."""
        event_id, data = None, None
        for line in self.lines:
            if line == "":
                if data is not None:
                    return event_id, data
                event_id = None
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "id":
                event_id = value
            elif field == "data":
                data = json.loads(value)
        raise AssertionError("stream ended")

    def until(self, event_type: str) -> List[Tuple[Optional[str], dict]]:
        out = []
        while True:
            message = self.next()
            out.append(message)
            if message[1]["type"] == event_type:
                return out

    def close(self) -> None:
        self.cm.__exit__(None, None, None)
        self.client.close()


def parse_official(raw: dict):
    """Parses with the official models; refuses fields the models do not define."""
    event = EVENT.validate_python(raw)
    assert not event.model_extra, f"unknown fields {sorted(event.model_extra)} in {raw}"
    again = event.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert again == raw, f"not a faithful AG-UI event:\n{raw}\n{again}"
    return event


def verify_order(events: List[dict]) -> None:
    """AG-UI's ordering rules, as @ag-ui/client's verifyEvents checks them."""
    run_active = run_finished = False
    messages, tools, reasoning, reasoning_messages = set(), set(), set(), set()
    for i, e in enumerate(events):
        t = e["type"]
        where = f"event {i} {t}"
        if run_finished and t not in ("RUN_STARTED", "RUN_ERROR"):
            raise AssertionError(f"{where}: after RUN_FINISHED")
        if i == 0 and t not in ("RUN_STARTED", "RUN_ERROR"):
            raise AssertionError(f"{where}: the first event must be RUN_STARTED")
        if t == "RUN_STARTED":
            assert not run_active, f"{where}: a run is still active"
            run_active, run_finished = True, False
        elif t == "RUN_FINISHED":
            assert run_active, where
            assert not (messages or tools or reasoning or reasoning_messages), f"{where}: something is still open"
            run_active, run_finished = False, True
        elif t == "RUN_ERROR":
            run_active = False
        elif t == "TEXT_MESSAGE_START":
            assert e["messageId"] not in messages, f"{where}: already open"
            messages.add(e["messageId"])
        elif t in ("TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END"):
            assert e["messageId"] in messages, f"{where}: no TEXT_MESSAGE_START"
            if t == "TEXT_MESSAGE_END":
                messages.remove(e["messageId"])
        elif t == "TOOL_CALL_START":
            assert e["toolCallId"] not in tools, f"{where}: already open"
            tools.add(e["toolCallId"])
        elif t in ("TOOL_CALL_ARGS", "TOOL_CALL_END"):
            assert e["toolCallId"] in tools, f"{where}: no TOOL_CALL_START"
            if t == "TOOL_CALL_END":
                tools.remove(e["toolCallId"])
        elif t == "REASONING_START":
            reasoning.add(e["messageId"])
        elif t == "REASONING_END":
            assert e["messageId"] in reasoning, f"{where}: no REASONING_START"
            assert not reasoning_messages, f"{where}: a reasoning message is still open"
            reasoning.remove(e["messageId"])
        elif t == "REASONING_MESSAGE_START":
            assert reasoning, f"{where}: outside REASONING_START/END"
            reasoning_messages.add(e["messageId"])
        elif t in ("REASONING_MESSAGE_CONTENT", "REASONING_MESSAGE_END"):
            assert e["messageId"] in reasoning_messages, f"{where}: no REASONING_MESSAGE_START"
            if t == "REASONING_MESSAGE_END":
                reasoning_messages.remove(e["messageId"])
        if t != "RUN_STARTED" and not t.startswith("RUN_"):
            assert run_active, f"{where}: outside a run"


def golden(user: str, run: str) -> List[dict]:
    def e(event: str, data: dict) -> dict:
        return {"user_id": user, "run_id": run, "thread_id": "t1", "event": event, "data": data}

    return [
        e("agent_started", {}),
        e("agent_thinking", {"text": "Let me look "}),
        e("agent_thinking", {"text": "that up."}),
        e("tool_executing", {"tool_name": "search", "tool_call_id": "c1", "parameters": {"q": "herald"}}),
        e("tool_completed", {"tool_name": "search", "tool_call_id": "c1", "result": "found"}),
        e("progress", {"pct": 50}),
        e("tool_executing", {"tool_name": "calc", "tool_call_id": "c2", "parameters": {"e": "1+1"}}),
        e("tool_completed", {"tool_name": "calc", "result": {"value": 2}}),
        e("agent_text", {"delta": "Herald is "}),
        e("agent_text", {"delta": "a gateway."}),
        e("agent_completed", {"result": "ok"}),
    ]


def test_golden_path_parses_with_the_official_models(herald: Herald, user: str) -> None:
    stream = Stream(herald, user)
    herald.publish({"events": golden(user, "r1")})
    messages = stream.until("RUN_FINISHED")
    stream.close()
    events = [data for _, data in messages]
    parsed = [parse_official(e) for e in events]
    verify_order(events)
    kinds = [type(p) for p in parsed]
    assert kinds[:7] == [
        RunStartedEvent,
        ReasoningStartEvent,
        ReasoningMessageStartEvent,
        ReasoningMessageContentEvent,
        ReasoningMessageContentEvent,
        ReasoningMessageEndEvent,
        ReasoningEndEvent,
    ]
    assert kinds.count(ToolCallStartEvent) == 2 and kinds.count(ToolCallResultEvent) == 2
    assert kinds.count(ToolCallArgsEvent) == 2 and kinds.count(ToolCallEndEvent) == 2
    assert kinds.count(CustomEvent) == 1
    assert kinds[-5:] == [
        TextMessageStartEvent,
        TextMessageContentEvent,
        TextMessageContentEvent,
        TextMessageEndEvent,
        RunFinishedEvent,
    ]
    assert all(isinstance(p.timestamp, int) for p in parsed)
    results = [p for p in parsed if isinstance(p, ToolCallResultEvent)]
    assert [r.tool_call_id for r in results] == ["c1", "c2"]
    assert results[0].content == "found"
    assert json.loads(results[1].content) == {"value": 2}
    args = [p for p in parsed if isinstance(p, ToolCallArgsEvent)]
    assert json.loads(args[0].delta) == {"q": "herald"}
    # Every Herald event ends with one SSE id `<epoch>:<seq>`, seqs in order.
    ids = [i for i, _ in messages if i is not None]
    assert [int(i.rsplit(":", 1)[1]) for i in ids] == list(range(1, 12))


def test_resume_mid_run_continues_the_open_message(herald: Herald, user: str) -> None:
    run = golden(user, "r1")
    stream = Stream(herald, user)
    herald.publish({"events": run[:9]})  # the first agent_text opened a message
    first = stream.until("TEXT_MESSAGE_CONTENT")
    stream.close()
    last_id = [i for i, _ in first if i][-1]
    herald.publish({"events": run[9:]})
    resumed = Stream(herald, user, last_event_id=last_id)
    rest = resumed.until("RUN_FINISHED")
    resumed.close()
    # The resumed stream is valid on its own: run and open message re-opened, then the rest.
    assert [d["type"] for _, d in rest] == [
        "RUN_STARTED",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "RUN_FINISHED",
    ]
    assert rest[1][1]["messageId"] == first[-1][1]["messageId"]
    for events in ([d for _, d in first], [d for _, d in rest]):
        for e in events:
            parse_official(e)
    verify_order([d for _, d in rest])


def test_stale_cursor_yields_herald_reset(herald: Herald, user: str) -> None:
    herald.publish({"user_id": user, "event": "custom", "data": {"name": "x"}})
    stream = Stream(herald, user, last_event_id="another-epoch:1")
    sequence = [stream.next()[1] for _ in range(3)]
    stream.close()
    # A valid AG-UI run of its own: RUN_STARTED, the CUSTOM reset, RUN_FINISHED.
    assert [d["type"] for d in sequence] == ["RUN_STARTED", "CUSTOM", "RUN_FINISHED"]
    event = parse_official(sequence[1])
    assert isinstance(event, CustomEvent) and event.name == "herald.reset"
    verify_order(sequence)


def test_agui_in_agui_out_round_trip(herald: Herald, user: str) -> None:
    sent = [
        RunStartedEvent(thread_id="t7", run_id="r7"),
        ReasoningStartEvent(message_id="p1"),
        ReasoningMessageStartEvent(message_id="m0"),
        ReasoningMessageContentEvent(message_id="m0", delta="hmm"),
        ReasoningMessageEndEvent(message_id="m0"),
        ReasoningEndEvent(message_id="p1"),
        ToolCallStartEvent(tool_call_id="c1", tool_call_name="search", parent_message_id="m1"),
        ToolCallArgsEvent(tool_call_id="c1", delta='{"q":"x"}'),
        ToolCallEndEvent(tool_call_id="c1"),
        ToolCallResultEvent(message_id="m2", tool_call_id="c1", content="found", role="tool"),
        TextMessageStartEvent(message_id="m3", role="assistant"),
        TextMessageContentEvent(message_id="m3", delta="Hi"),
        TextMessageEndEvent(message_id="m3"),
        CustomEvent(name="app.note", value={"k": 1}),
        RunFinishedEvent(thread_id="t7", run_id="r7", result={"answer": 42}),
    ]
    wire = [e.model_dump(mode="json", by_alias=True, exclude_none=True) for e in sent]
    stream = Stream(herald, user, query="?thread_id=t7")
    r = herald.post_agui({"user_id": user, "thread_id": "t7", "events": wire})
    assert r.status_code == 200, r.text
    back = [d for _, d in stream.until("RUN_FINISHED")]
    stream.close()
    for e in back:
        parse_official(e)
        e.pop("timestamp")
    assert back == wire
    verify_order(back)


def test_unknown_tool_result_is_409_naming_the_rule(herald: Herald, user: str) -> None:
    wire = [
        RunStartedEvent(thread_id="t1", run_id="r1"),
        ToolCallResultEvent(message_id="m", tool_call_id="nope", content="x"),
    ]
    body = [e.model_dump(mode="json", by_alias=True, exclude_none=True) for e in wire]
    r = herald.post_agui({"user_id": user, "thread_id": "t1", "events": body})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "run_state"
    assert "no_open_tool" in r.json()["error"]["message"]
    assert EventType.TOOL_CALL_RESULT.value in r.json()["error"]["message"]
