"""The part of Herald's contract both Python peers share, framework-free.

`server.py` (FastAPI + uvicorn) and `aiohttp_server.py` (plain aiohttp) differ only in how they
accept sockets and requests; what they send is built here: the `welcome`/`synced` frames, the
per-user seq, the `event` frame (encoded once per event, sent to every socket of the user), the
receipts and the error bodies. No retention, resume, idempotency or run state machine.
"""

import json
import os
import uuid
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Iterable

import jwt

SECRET = os.environ["HERALD_JWT_SECRET"]
API_KEYS = {k.strip() for k in os.environ["HERALD_API_KEY"].split(",") if k.strip()}
EPOCH = uuid.uuid4().hex[:12]

seqs: dict[str, int] = defaultdict(int)


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def bearer(value: str | None) -> str | None:
    if value and value.startswith("Bearer "):
        return value[len("Bearer "):]
    return None


def socket_user(authorization: str | None) -> str | None:
    """The user of a socket's `Authorization: Bearer <HS256 JWT>` header, or None."""
    try:
        claims = jwt.decode(bearer(authorization) or "", SECRET, algorithms=["HS256"],
                            options={"require": ["exp", "sub"]})
    except jwt.PyJWTError:
        return None
    return claims["sub"]


def opening_frames(user: str) -> list[str]:
    """`welcome` and `synced` for a new socket of `user`."""
    seq = seqs[user]
    welcome = {
        "type": "welcome", "v": 1, "connection_id": uuid.uuid4().hex[:12], "user_id": user,
        "epoch": EPOCH, "seq": seq, "heartbeat_ms": 25000, "recovery": "none",
    }
    return [json.dumps(welcome), json.dumps({"type": "synced", "seq": seq})]


def is_ping(text: str) -> bool:
    try:
        frame = json.loads(text)
    except ValueError:
        return False
    return isinstance(frame, dict) and frame.get("type") == "ping"


async def deliver(event: dict, sockets: Iterable[Any], send: Callable[[Any, str], Awaitable[None]],
                  drop: Callable[[Any], None]) -> dict:
    """Numbers `event`, encodes its frame once, awaits `send` on every socket; the receipt."""
    user = event["user_id"]
    seqs[user] += 1
    seq = seqs[user]
    event_id = event.get("id") or uuid.uuid4().hex
    now = datetime.now(timezone.utc)
    frame = json.dumps({
        "type": "event", "seq": seq, "id": event_id, "user_id": user,
        "thread_id": event.get("thread_id"), "run_id": event.get("run_id"),
        "event": event["event"], "data": event.get("data") or {},
        "ts": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
    })
    targets = list(sockets)
    for ws in targets:
        try:
            await send(ws, frame)
        except Exception:
            drop(ws)
    return {"id": event_id, "seq": seq, "epoch": EPOCH, "connections": len(targets), "duplicate": False}


class Refused(Exception):
    """A publish the peer refuses: its HTTP status and error body."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.body = error_body(code, message)


def parse_publish(authorization: str | None, body: bytes) -> tuple[bool, list]:
    """`(is_batch, events)` of a publish request; raises `Refused`."""
    if bearer(authorization) not in API_KEYS:
        raise Refused(401, "unauthorized", "missing or unknown API key")
    try:
        parsed = json.loads(body)
    except ValueError:
        raise Refused(400, "invalid_json", "body is not JSON") from None
    batch = isinstance(parsed, dict) and isinstance(parsed.get("events"), list)
    events = parsed["events"] if batch else [parsed]
    for i, e in enumerate(events):
        if not isinstance(e, dict) or not e.get("user_id") or not e.get("event"):
            raise Refused(400, "invalid_event", f"events[{i}]: user_id and event are required")
    return batch, events
