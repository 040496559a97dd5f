"""Data types of the protocol (docs/protocol.md) as dataclasses."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

__all__ = ["Receipt", "Event", "Welcome", "Ack", "Ticket", "History", "EventInput", "new_id"]


def new_id() -> str:
    """A fresh idempotency key. The SDK sets one on every event it sends, so a retry of the same
    request can never append the event twice."""
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Receipt:
    """Answer to a publish: the event is in the user's log at ``seq`` of ``epoch``."""

    id: str
    seq: int
    epoch: str
    connections: int
    duplicate: bool

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "Receipt":
        return cls(
            id=str(obj["id"]),
            seq=int(obj["seq"]),
            epoch=str(obj["epoch"]),
            connections=int(obj.get("connections", 0)),
            duplicate=bool(obj.get("duplicate", False)),
        )


@dataclass(frozen=True)
class Event:
    """One event of a user's log, as delivered over the socket or by the history API."""

    seq: int
    id: str
    user_id: str
    thread_id: Optional[str]
    run_id: Optional[str]
    event: str
    data: Dict[str, Any]
    ts: str
    #: True on the frames of the active-run snapshot a connection without a usable cursor starts
    #: with (docs/protocol.md, "The active-run snapshot"). ``seq`` is then the last event the frame
    #: covers, and consecutive ``agent_text`` deltas of one message arrive as one event carrying
    #: their concatenation: draw it like the deltas it replaces.
    snapshot: bool = False
    #: On merged snapshot frames: the seq of the first event covered.
    first_seq: Optional[int] = None
    #: On a snapshot's ``agent_started``: the run outgrew its budget; its oldest output is not shown.
    truncated: bool = False

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "Event":
        first_seq = obj.get("first_seq")
        return cls(
            seq=int(obj["seq"]),
            id=str(obj["id"]),
            user_id=str(obj["user_id"]),
            thread_id=obj.get("thread_id"),
            run_id=obj.get("run_id"),
            event=str(obj["event"]),
            data=dict(obj.get("data") or {}),
            ts=str(obj.get("ts", "")),
            snapshot=obj.get("snapshot") is True,
            first_seq=int(first_seq) if first_seq is not None else None,
            truncated=obj.get("truncated") is True,
        )


@dataclass(frozen=True)
class Welcome:
    """First frame of every connection; ``recovery`` is ``none``, ``replayed`` or ``reset``."""

    connection_id: str
    user_id: str
    epoch: str
    seq: int
    heartbeat_ms: int
    recovery: str
    v: int = 1

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "Welcome":
        return cls(
            connection_id=str(obj.get("connection_id", "")),
            user_id=str(obj.get("user_id", "")),
            epoch=str(obj["epoch"]),
            seq=int(obj["seq"]),
            heartbeat_ms=int(obj.get("heartbeat_ms", 25000)),
            recovery=str(obj.get("recovery", "none")),
            v=int(obj.get("v", 1)),
        )


@dataclass(frozen=True)
class Ack:
    """The backend's answer to a ``message`` or ``cancel`` frame (docs/protocol.md, "Upstream"): its HTTP ``status``
    and JSON ``body`` (``None`` if it was not JSON), for the frame with this ``ref``."""

    ref: Optional[str]
    status: int
    body: Any

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "Ack":
        ref = obj.get("ref")
        return cls(ref=None if ref is None else str(ref), status=int(obj.get("status", 0)), body=obj.get("body"))


@dataclass(frozen=True)
class Ticket:
    """A single-use, short-lived credential for ``/ws?ticket=``; ``expires_at`` is RFC 3339 UTC."""

    ticket: str
    expires_at: str

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "Ticket":
        return cls(ticket=str(obj["ticket"]), expires_at=str(obj.get("expires_at", "")))


@dataclass(frozen=True)
class History:
    """Answer of ``GET /v1/users/{user_id}/events``."""

    epoch: str
    seq: int
    reset: bool
    events: List[Event]

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "History":
        return cls(
            epoch=str(obj["epoch"]),
            seq=int(obj["seq"]),
            reset=bool(obj.get("reset", False)),
            events=[Event.from_json(e) for e in obj.get("events", [])],
        )


@dataclass
class EventInput:
    """An event to publish (one element of a batch). ``id`` is generated when not given."""

    user_id: str
    event: str
    run_id: Optional[str] = None
    thread_id: Optional[str] = None
    data: Optional[Dict[str, Any]] = None
    id: str = field(default_factory=new_id)

    def to_json(self) -> Dict[str, Any]:
        body: Dict[str, Any] = {"user_id": self.user_id, "event": self.event, "id": self.id}
        if self.run_id is not None:
            body["run_id"] = self.run_id
        if self.thread_id is not None:
            body["thread_id"] = self.thread_id
        if self.data is not None:
            body["data"] = self.data
        return body
