"""Typed errors. Every error the server returns carries its ``code`` and ``message``
(the body ``{"error":{"code","message"}}`` of docs/protocol.md, "Publishing") and the HTTP ``status``."""

from __future__ import annotations

import json
from typing import Any, Optional

__all__ = [
    "HeraldError",
    "AuthError",
    "ForbiddenError",
    "TokenExpiredError",
    "ValidationError",
    "RunStateError",
    "TooLargeError",
    "RateLimitedError",
    "NotReadyError",
    "NotFoundError",
    "HeraldConnectionError",
    "SignatureError",
    "UpstreamError",
    "error_from_response",
]


class HeraldError(Exception):
    """Base class: ``code`` is Herald's machine-readable code, ``message`` its explanation."""

    def __init__(self, code: str, message: str, status: Optional[int] = None) -> None:
        super().__init__(f"{code}: {message}" if code else message)
        self.code = code
        self.message = message
        self.status = status

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, status={self.status!r})"


class AuthError(HeraldError):
    """401: missing or invalid API key or token."""


class ForbiddenError(AuthError):
    """403: the Origin is not allowed."""


class TokenExpiredError(AuthError):
    """The server closed the socket with 4001 and no token provider can make a new token."""


class DisconnectedError(HeraldError):
    """The server closed the socket with 4003: an operator disconnected the user (logout, ban).
    The client does not reconnect; whether to sign in again is the application's call."""


class ValidationError(HeraldError):
    """400: ``invalid_json``, ``invalid_event`` (the message names the field), ``invalid_request``, …"""


class RunStateError(HeraldError):
    """409 ``run_state``: the event breaks a run rule (the message names the rule)."""


class TooLargeError(HeraldError):
    """413 ``too_large``: body or batch over the server's limit."""


class RateLimitedError(HeraldError):
    """429 ``rate_limited``."""


class NotReadyError(HeraldError):
    """503 ``not_ready``: engine unreachable or server draining; nothing was stored."""


class NotFoundError(HeraldError):
    """404: no such route (e.g. an endpoint this server version does not have)."""


class HeraldConnectionError(HeraldError):
    """The server could not be reached (after all retries)."""

    def __init__(self, message: str) -> None:
        super().__init__("connection_error", message)


class UpstreamError(HeraldError):
    """An ``error`` frame answering a ``message`` or ``cancel`` (docs/protocol.md, "Upstream"): ``code`` is
    ``upstream_error`` (the backend answered non-2xx), ``upstream_unavailable`` (no upstream
    configured, backend unreachable or too slow), ``rate_limited`` (too many requests in flight),
    or the code of a refused frame; ``ref`` is the frame's."""

    def __init__(self, code: str, message: str, ref: Optional[str] = None) -> None:
        super().__init__(code, message)
        self.ref = ref

    def __repr__(self) -> str:
        return f"UpstreamError(code={self.code!r}, message={self.message!r}, ref={self.ref!r})"


class SignatureError(HeraldError):
    """A ``Herald-Signature`` header is malformed, stale or does not match."""

    def __init__(self, message: str) -> None:
        super().__init__("invalid_signature", message)


_BY_STATUS = {
    400: ValidationError,
    401: AuthError,
    403: ForbiddenError,
    404: NotFoundError,
    409: RunStateError,
    413: TooLargeError,
    429: RateLimitedError,
    503: NotReadyError,
}

_BY_CODE = {
    "unauthorized": AuthError,
    "forbidden": ForbiddenError,
    "run_state": RunStateError,
    "too_large": TooLargeError,
    "rate_limited": RateLimitedError,
    "not_ready": NotReadyError,
    "not_found": NotFoundError,
    "invalid_json": ValidationError,
    "invalid_event": ValidationError,
}


def error_from_response(status: int, body: Any) -> HeraldError:
    """Builds the typed error for an HTTP error response (``body`` as bytes, str or parsed JSON)."""
    parsed = body
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
    code, message = "", ""
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        code = str(parsed["error"].get("code", ""))
        message = str(parsed["error"].get("message", ""))
    if not code:
        code = f"http_{status}"
        message = (body if isinstance(body, str) else "") or f"HTTP {status}"
    cls = _BY_STATUS.get(status) or _BY_CODE.get(code) or HeraldError
    return cls(code, message, status)
