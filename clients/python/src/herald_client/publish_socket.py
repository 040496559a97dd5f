"""Publishing over Herald's publisher socket (``GET /v1/publish``, docs/protocol.md "Publisher socket").

:class:`SocketPublisher` is an :class:`AsyncPublisher` whose ``publish`` and ``publish_batch`` travel
over one long-lived WebSocket instead of one HTTP request each: the transport for token streams,
where every LLM delta is an event. Tickets and history still use HTTP.

It keeps the HTTP publisher's retry-by-id semantics. Every event carries an ``id``. Frames in flight
when the socket drops are sent again, in the order they were first sent, on a new socket; Herald
answers an id it already stored with the first receipt (``duplicate: true``) instead of appending
it twice. ``rate_limited`` and ``not_ready`` answers are retried with backoff, like 429 and 503.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from typing import Any, Deque, Dict, List, Mapping, Optional
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .errors import HeraldConnectionError, HeraldError, NotReadyError, RateLimitedError, error_from_response
from .publisher import AsyncPublisher

__all__ = ["SocketPublisher", "publish_url"]

log = logging.getLogger("herald_client")

#: Answers worth retrying: nothing was stored, and the same frame may succeed later.
RETRY_ERRORS = (RateLimitedError, NotReadyError)


def publish_url(url: str) -> str:
    """``http://host:port`` → ``ws://host:port/v1/publish`` (``https`` → ``wss``)."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None:
        raise ValueError(f"url must be http(s):// or ws(s)://, got {url!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/v1/publish", "", ""))


class _Frame:
    """A frame sent and not yet answered: resent as is after a reconnect."""

    __slots__ = ("ref", "text", "answer")

    def __init__(self, ref: str, text: str, answer: "asyncio.Future[Dict[str, Any]]") -> None:
        self.ref = ref
        self.text = text
        self.answer = answer


def _answer_error(error: Mapping[str, Any]) -> HeraldError:
    """The typed error of an error answer (the HTTP API's codes, hence its error classes)."""
    exc = error_from_response(0, {"error": dict(error)})
    retry_after_ms = error.get("retry_after_ms")
    exc.retry_after_s = retry_after_ms / 1000 if isinstance(retry_after_ms, (int, float)) else None  # type: ignore[attr-defined]
    return exc


class SocketPublisher(AsyncPublisher):
    """Publishes over one WebSocket; concurrent ``publish`` calls are pipelined.

    >>> async with SocketPublisher("http://127.0.0.1:7400", api_key) as pub:   # doctest: +SKIP
    ...     async with pub.run(user_id) as run:
    ...         await run.stream_text(llm_deltas())

    ``max_in_flight`` bounds the frames awaiting their answers (the server has its own bound,
    ``publish_max_in_flight``). The socket opens on the first publish and reconnects by itself.
    """

    def __init__(
        self, url: str, api_key: str, *, max_in_flight: int = 256, open_timeout_s: float = 10.0, **kw: Any
    ) -> None:
        super().__init__(url, api_key, **kw)
        self.ws_url = publish_url(self.url)
        self.max_in_flight = max(1, max_in_flight)
        self.open_timeout_s = open_timeout_s
        self._ws: Optional[ClientConnection] = None
        self._reader: Optional["asyncio.Task[None]"] = None
        self._in_flight: Deque[_Frame] = deque()
        self._refs = 0
        self._closing = False
        # Created on first use, inside the running loop.
        self._lock: Optional[asyncio.Lock] = None
        self._slots: Optional[asyncio.Semaphore] = None

    async def aclose(self) -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        self._fail_all(HeraldConnectionError("the publisher was closed"))
        await super().aclose()

    # --- publish and publish_batch, over the socket -----------------------------------------------

    async def _send_event(self, body: Dict[str, Any]) -> Dict[str, Any]:
        return (await self._call("event", body))["receipt"]

    async def _send_batch(self, events: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        return (await self._call("events", events))["receipts"]

    async def _call(self, key: str, payload: Any) -> Dict[str, Any]:
        """Sends one frame and waits for its answer, retrying what can be retried with the same ids."""
        attempt = 0
        while True:
            try:
                return await self._send(key, payload)
            except RETRY_ERRORS as e:
                if attempt >= self.retries:
                    raise
                delay = getattr(e, "retry_after_s", None) or self._delay(attempt)
            except HeraldConnectionError:
                if attempt >= self.retries or self._closing:
                    raise
                delay = self._delay(attempt)
            await asyncio.sleep(delay)
            attempt += 1

    async def _send(self, key: str, payload: Any) -> Dict[str, Any]:
        if self._lock is None or self._slots is None:
            self._lock, self._slots = asyncio.Lock(), asyncio.Semaphore(self.max_in_flight)
        async with self._slots:
            async with self._lock:
                ws = await self._open()
                self._refs += 1
                ref = str(self._refs)
                text = json.dumps({"ref": ref, key: payload}, separators=(",", ":"), ensure_ascii=False)
                frame = _Frame(ref, text, asyncio.get_running_loop().create_future())
                # Appended and sent under the lock: the queue's order is the order on the wire.
                self._in_flight.append(frame)
                try:
                    await ws.send(text)
                except ConnectionClosed:
                    pass  # the reader reconnects and sends it again
            answer = await frame.answer
        if "error" in answer:
            raise _answer_error(answer["error"])
        return answer

    # --- the connection ----------------------------------------------------------------------------

    async def _open(self) -> ClientConnection:
        """The open socket, connecting (and starting the reader) when there is none. Under the lock."""
        if self._closing:
            raise HeraldConnectionError("the publisher was closed")
        if self._ws is None or self._reader is None or self._reader.done():
            self._ws = await self._connect()
            self._reader = asyncio.get_running_loop().create_task(self._read(self._ws))
        return self._ws

    async def _connect(self) -> ClientConnection:
        try:
            return await connect(
                self.ws_url,
                additional_headers=self._headers,
                open_timeout=self.open_timeout_s,
                max_size=None,
            )
        except InvalidStatus as e:
            raise error_from_response(e.response.status_code, e.response.body or b"") from e
        except (OSError, asyncio.TimeoutError, InvalidHandshake) as e:
            raise HeraldConnectionError(f"cannot open {self.ws_url}: {e!r}") from e

    async def _read(self, ws: ClientConnection) -> None:
        """Matches answers to frames (they come in order); after a drop, reconnects and resends
        what was not answered, in order."""
        while True:
            try:
                async for message in ws:
                    self._answered(json.loads(message))
            except ConnectionClosed:
                pass
            except Exception as e:  # noqa: BLE001  (a malformed answer: nothing can be matched any more)
                self._fail_all(HeraldError("invalid_answer", f"publisher socket: {e!r}"))
                await ws.close()
                return
            if self._closing or not self._in_flight:
                return
            assert self._lock is not None
            async with self._lock:
                try:
                    ws = self._ws = await self._reconnect()
                    for frame in list(self._in_flight):
                        await ws.send(frame.text)
                except HeraldError as e:
                    self._fail_all(e)
                    self._ws = None
                    return
                except ConnectionClosed:
                    continue

    async def _reconnect(self) -> ClientConnection:
        attempt = 0
        while True:
            try:
                return await self._connect()
            except (HeraldConnectionError, NotReadyError):
                if attempt >= self.retries or self._closing:
                    raise
            await asyncio.sleep(self._delay(attempt))
            attempt += 1

    def _answered(self, answer: Dict[str, Any]) -> None:
        if not self._in_flight:
            raise ValueError(f"an answer with no frame in flight: {answer!r}")
        frame = self._in_flight.popleft()
        if str(answer.get("ref")) != frame.ref:
            raise ValueError(f"answer for ref {answer.get('ref')!r} where {frame.ref!r} was next")
        if not frame.answer.done():
            frame.answer.set_result(answer)

    def _fail_all(self, error: BaseException) -> None:
        while self._in_flight:
            frame = self._in_flight.popleft()
            if not frame.answer.done():
                frame.answer.set_exception(error)
