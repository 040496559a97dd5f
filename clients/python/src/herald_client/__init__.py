"""Python publisher and client for Herald, the real-time gateway for AI-agent run events.

- :class:`Publisher` / :class:`AsyncPublisher`: backends publish events over HTTP (docs/protocol.md, "Publishing").
- :class:`SocketPublisher`: the same API over one publisher socket (``/v1/publish``), for token streams.
- :class:`Run`: ``async with publisher.run(user, thread) as run`` emits a run's events in order.
- :class:`Client`: an async iterator of a user's events with reconnect and resume (docs/protocol.md);
  ``send``/``cancel`` reach the backend through Herald's upstream (docs/protocol.md, "Upstream").
- :func:`verify_signature`: checks ``Herald-Signature`` on upstream requests (docs/protocol.md, "Upstream").
"""

from .client import Client, CloseCode, ws_url
from .errors import (
    AuthError,
    ForbiddenError,
    HeraldConnectionError,
    HeraldError,
    NotFoundError,
    NotReadyError,
    RateLimitedError,
    RunStateError,
    SignatureError,
    TokenExpiredError,
    DisconnectedError,
    TooLargeError,
    UpstreamError,
    ValidationError,
    error_from_response,
)
from .publish_socket import SocketPublisher
from .publisher import AsyncPublisher, Publisher
from .run import Run, SyncRun, SyncToolCall, ToolCall
from .signature import SIGNATURE_HEADER, check_signature, sign, verify_signature
from .types import Ack, Event, EventInput, History, Receipt, Ticket, Welcome, new_id

__version__ = "0.1.0"

__all__ = [
    "Ack",
    "AsyncPublisher",
    "AuthError",
    "Client",
    "CloseCode",
    "Event",
    "EventInput",
    "ForbiddenError",
    "HeraldConnectionError",
    "HeraldError",
    "History",
    "NotFoundError",
    "NotReadyError",
    "Publisher",
    "RateLimitedError",
    "Receipt",
    "Run",
    "RunStateError",
    "SIGNATURE_HEADER",
    "SignatureError",
    "SocketPublisher",
    "SyncRun",
    "SyncToolCall",
    "Ticket",
    "TokenExpiredError",
    "DisconnectedError",
    "TooLargeError",
    "ToolCall",
    "UpstreamError",
    "ValidationError",
    "Welcome",
    "check_signature",
    "error_from_response",
    "new_id",
    "sign",
    "verify_signature",
    "ws_url",
]
