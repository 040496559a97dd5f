"""Verifying Herald's upstream requests (docs/protocol.md, "Upstream").

Herald signs every POST it sends to ``HERALD_UPSTREAM_URL`` with
``Herald-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``.
A backend checks it on the *raw* body, before parsing JSON:

    if not verify_signature(SECRET, request.headers.get("Herald-Signature"), await request.body()):
        return Response(status_code=401)
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import List, Optional, Tuple, Union

from .errors import SignatureError

__all__ = ["sign", "verify_signature", "check_signature", "SIGNATURE_HEADER"]

SIGNATURE_HEADER = "Herald-Signature"

Bytes = Union[bytes, bytearray, str]


def _bytes(value: Bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _mac(secret: Bytes, timestamp: int, body: Bytes) -> str:
    message = str(timestamp).encode("ascii") + b"." + _bytes(body)
    return hmac.new(_bytes(secret), message, hashlib.sha256).hexdigest()


def sign(secret: Bytes, body: Bytes, timestamp: Optional[int] = None) -> str:
    """The ``Herald-Signature`` header value for ``body`` (as Herald computes it)."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},v1={_mac(secret, t, body)}"


def _parse(header: str) -> Tuple[int, List[str]]:
    timestamp: Optional[int] = None
    signatures: List[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureError(f"malformed {SIGNATURE_HEADER} part {part.strip()!r}: expected key=value")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError(f"{SIGNATURE_HEADER} t={value!r} is not unix seconds") from None
        elif key == "v1":
            signatures.append(value.lower())
    if timestamp is None:
        raise SignatureError(f"{SIGNATURE_HEADER} has no t=")
    if not signatures:
        raise SignatureError(f"{SIGNATURE_HEADER} has no v1= signature")
    return timestamp, signatures


def check_signature(
    secret: Bytes,
    header: Optional[str],
    body: Bytes,
    tolerance_s: int = 300,
    *,
    now: Optional[float] = None,
) -> int:
    """Like :func:`verify_signature` but raises :class:`SignatureError` saying what is wrong;
    returns the signed timestamp."""
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    timestamp, signatures = _parse(header)
    current = time.time() if now is None else now
    if tolerance_s is not None and tolerance_s >= 0 and abs(current - timestamp) > tolerance_s:
        raise SignatureError(f"signature timestamp {timestamp} is outside the {tolerance_s} s tolerance")
    expected = _mac(secret, timestamp, body)
    # Several v1= values are allowed (secret rotation); compare each in constant time.
    if not any(hmac.compare_digest(expected, s) for s in signatures):
        raise SignatureError("signature does not match the body")
    return timestamp


def verify_signature(
    secret: Bytes,
    header: Optional[str],
    body: Bytes,
    tolerance_s: int = 300,
    *,
    now: Optional[float] = None,
) -> bool:
    """True when ``header`` is a valid ``Herald-Signature`` of the raw ``body`` under ``secret``,
    made within ``tolerance_s`` seconds of ``now`` (default: the current time). Pure: no I/O."""
    try:
        check_signature(secret, header, body, tolerance_s, now=now)
    except SignatureError:
        return False
    return True
