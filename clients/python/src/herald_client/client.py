"""Consuming a user's events over the WebSocket protocol (docs/protocol.md).

    async with Client("http://127.0.0.1:7400", token) as client:
        async for event in client:
            print(event.seq, event.event, event.data)

The client keeps its cursor (epoch, seq) and, when the socket drops, reconnects with
``?after=<seq>&epoch=<epoch>``: every event after the cursor is replayed, or, when the server cannot
(restarted, cursor too old), the server says ``reset`` and ``on_reset`` is called before the
snapshot of the user's active runs. Events are yielded exactly once per client, in seq order.

A connection without a usable cursor starts with that snapshot: every active run whole, however
long, with consecutive text deltas merged into one event (``event.snapshot`` is true and
``event.seq`` is the last event it covers). Appending each ``agent_text`` delta draws it exactly;
the client's cursor moves past the snapshot at ``synced``, not on its frames.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import logging
import random
import time
import uuid
from collections import deque
from typing import Any, Awaitable, Callable, Deque, Dict, List, Optional, Tuple, Union
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .errors import (
    DisconnectedError,
    HeraldConnectionError,
    HeraldError,
    TokenExpiredError,
    UpstreamError,
    error_from_response,
)
from .types import Ack, Event, Ticket, Welcome

__all__ = ["Client", "CloseCode", "ws_url"]

log = logging.getLogger("herald_client")

Credential = Union[str, Callable[[], Union[str, Awaitable[str]]]]
Callback = Callable[..., Any]


class CloseCode:
    """Close codes Herald uses (docs/protocol.md)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # server drain / shutdown
    UNSUPPORTED_DATA = 1003
    MESSAGE_TOO_BIG = 1009
    TOKEN_EXPIRED = 4001
    DISCONNECTED = 4003  # an operator disconnected the user: not reconnected
    SLOW_CONSUMER = 4008
    TOO_MANY_CONNECTIONS = 4029


#: Handshake statuses that retrying cannot fix: raised to the iterating code.
FATAL_STATUSES = frozenset({400, 401, 403, 404})

SUBPROTOCOL = "herald.v1"

#: Error codes that answer a ``refresh`` frame (docs/protocol.md).
REFRESH_ERRORS = frozenset({"invalid_token", "wrong_user", "token_revoked", "not_ready"})


def jwt_exp(token: str) -> Optional[int]:
    """The ``exp`` claim of a JWT (unverified), or ``None`` when it has none or is not a JWT."""
    try:
        part = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return exp if isinstance(exp, int) else None


def ws_url(url: str) -> str:
    """``http://host:port`` → ``ws://host:port/ws`` (``https`` → ``wss``); ws URLs pass through."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None:
        raise ValueError(f"url must be http(s):// or ws(s)://, got {url!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/ws"):
        path += "/ws"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


async def _resolve(credential: Credential) -> str:
    value = credential() if callable(credential) else credential
    if inspect.isawaitable(value):
        value = await value
    if isinstance(value, Ticket):
        return value.ticket
    return str(value)


async def _call(callback: Optional[Callback], *args: Any) -> None:
    if callback is None:
        return
    result = callback(*args)
    if inspect.isawaitable(result):
        await result


_CLOSED = object()


class Client:
    """Async iterator over one user's events, with automatic reconnect and resume.

    - ``token``: a JWT, or a callable (sync or async) returning a fresh one on every connect. With
      a callable, ``refresh_before_s`` (default 30) before the JWT's ``exp`` the client asks it for
      a new token and sends it on the open socket (a ``refresh`` frame), so the stream outlives its
      token without reconnecting; if the server refuses it, the client reconnects with the next
      one (and an expired token, close 4001, is renewed too). ``0`` turns the refresh off.
    - ``ticket``: instead of a token, a callable (sync or async) returning a new single-use ticket
      (a string or a :class:`Ticket`) per connect, e.g. ``lambda: publisher.ticket(user)``.
    - ``auth``: ``"header"`` (``Authorization: Bearer``) or ``"subprotocol"`` (``bearer.<jwt>``).
    - ``after``/``epoch``: start from a saved cursor instead of the active runs.
    - ``on_reset(welcome)``: the server could not replay from the cursor; reload your state.
      ``on_welcome(welcome)`` runs for every connection. Both may be async and run in the
      iterating task, in stream order (after every event of the previous connection).
    - ``on_frame(frame)``: other server frames (``error``, ``ack``) as dicts, including the ones
      that also settle a :meth:`send` or :meth:`cancel`.
    - ``request_timeout_s``: how long :meth:`send` and :meth:`cancel` wait for their answer.
    - ``reconnect=False``: end with :class:`HeraldConnectionError` on the first disconnect.

    A disconnect by an operator (close 4003) ends the iteration with :class:`DisconnectedError`.

    Fatal problems (401/403/400 at the handshake, an expired static token) are raised from the
    iteration as typed errors. At most ``max_queue`` received events wait for the consumer; after
    that the client stops reading, so a stalled consumer gets 4008 from the server and resumes.
    """

    def __init__(
        self,
        url: str,
        token: Optional[Credential] = None,
        *,
        ticket: Optional[Callable[[], Any]] = None,
        auth: str = "header",
        after: Optional[int] = None,
        epoch: Optional[str] = None,
        on_reset: Optional[Callback] = None,
        on_welcome: Optional[Callback] = None,
        on_frame: Optional[Callback] = None,
        reconnect: bool = True,
        min_backoff_s: float = 0.1,
        max_backoff_s: float = 10.0,
        open_timeout_s: float = 10.0,
        max_queue: int = 1024,
        max_message_bytes: Optional[int] = 16 * 1024 * 1024,
        request_timeout_s: float = 10.0,
        refresh_before_s: float = 30.0,
    ) -> None:
        if (token is None) == (ticket is None):
            raise ValueError("give exactly one of token= or ticket=")
        if auth not in ("header", "subprotocol"):
            raise ValueError("auth must be 'header' or 'subprotocol'")
        if after is not None and epoch is None:
            raise ValueError("resuming needs both after= and epoch=")
        self.url = ws_url(url)
        self._token = token
        self._ticket = ticket
        self._auth = auth
        self.on_reset = on_reset
        self.on_welcome = on_welcome
        self.on_frame = on_frame
        self.reconnect = reconnect
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.open_timeout_s = open_timeout_s
        self.max_queue = max(1, max_queue)
        self.max_message_bytes = max_message_bytes
        self.request_timeout_s = request_timeout_s
        self.refresh_before_s = refresh_before_s
        #: How many tokens the server accepted on an open socket (``refreshed`` frames).
        self.refreshes = 0
        # The token of the open connection, and one sent in a refresh frame until it is answered.
        self._current_token: Optional[str] = None
        self._refreshing: Optional[str] = None
        self._refresher: Optional["asyncio.Task[None]"] = None

        # Cursor of what the consumer has been given (save it to resume in another process).
        self.epoch: Optional[str] = epoch
        self.seq: int = after or 0
        # Cursor of what was received (what a reconnect resumes from).
        self._recv_epoch: Optional[str] = epoch
        self._recv_seq: int = after or 0
        self._resume = after is not None

        #: Welcome of the current (or last) connection.
        self.welcome: Optional[Welcome] = None
        #: How many connections were opened (welcome received).
        self.connects = 0
        #: Close code of the last connection that ended (1006: dropped without a close frame).
        self.last_close_code: Optional[int] = None

        self._ws: Optional[ClientConnection] = None
        self._task: Optional["asyncio.Task[None]"] = None
        self._queue: "asyncio.Queue[Tuple[str, Any]]" = None  # type: ignore[assignment]
        self._space: asyncio.Event = None  # type: ignore[assignment]
        self._synced: asyncio.Event = None  # type: ignore[assignment]
        self._pongs: Deque["asyncio.Future[None]"] = deque()
        # send/cancel waiting for the ack or error frame with their ref.
        self._requests: Dict[str, "asyncio.Future[Ack]"] = {}
        self._closing = False
        self._finished = False

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Starts connecting in the background (``async with`` and iteration call this)."""
        if self._task is not None:
            return
        self._queue = asyncio.Queue()
        self._space = asyncio.Event()
        self._synced = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._main(), name="herald-client")

    async def __aenter__(self) -> "Client":
        self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the socket (1000) and ends the iteration."""
        self._closing = True
        self._fail_requests(HeraldConnectionError("the client was closed before the answer"))
        ws = self._ws
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(), 2)
            except Exception:  # noqa: BLE001
                pass
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
            self._queue.put_nowait(("closed", _CLOSED))

    # --- iteration ---------------------------------------------------------------------------

    def __aiter__(self) -> "Client":
        self.start()
        return self

    async def __anext__(self) -> Event:
        self.start()
        while True:
            if self._finished:
                raise StopAsyncIteration
            kind, item = await self._queue.get()
            self._space.set()
            if kind == "event":
                event: Event = item[0]
                epoch: str = item[1]
                if not event.snapshot:
                    # A snapshot frame may stand for several events of one run: no resume point.
                    self.epoch, self.seq = epoch, event.seq
                return event
            if kind == "welcome":
                welcome: Welcome = item
                if welcome.recovery in ("reset", "none"):
                    self.epoch, self.seq = welcome.epoch, 0
                    if welcome.recovery == "reset":
                        await _call(self.on_reset, welcome)
                await _call(self.on_welcome, welcome)
            elif kind == "synced":
                epoch, seq = item
                self.epoch, self.seq = epoch, max(self.seq, seq)
            elif kind == "error":
                self._finished = True
                raise item
            elif kind == "closed":
                self._finished = True

    async def wait_synced(self, timeout: Optional[float] = None) -> Welcome:
        """Waits until the current connection has sent ``synced`` (live events follow)."""
        self.start()
        assert self._task is not None
        waiter: "asyncio.Future[Any]" = asyncio.ensure_future(self._synced.wait())
        done, _ = await asyncio.wait({waiter, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            if self._task in done:
                raise HeraldConnectionError("client stopped before it synced (iterate it to see why)")
            raise asyncio.TimeoutError("not synced yet")
        assert self.welcome is not None
        return self.welcome

    # --- sending -----------------------------------------------------------------------------

    async def send_frame(self, frame: Dict[str, Any]) -> None:
        """Sends a raw JSON frame on the current connection (answers come to ``on_frame``)."""
        if self._ws is None:
            raise HeraldConnectionError("not connected")
        await self._ws.send(json.dumps(frame))

    async def ping(self, timeout: float = 5.0) -> None:
        """Sends ``{"type":"ping"}`` and waits for the ``pong``."""
        future: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
        self._pongs.append(future)
        await self.send_frame({"type": "ping"})
        await asyncio.wait_for(future, timeout)

    async def send(
        self, thread_id: Optional[str], data: Any, *, ref: Optional[str] = None, timeout: Optional[float] = None
    ) -> Ack:
        """Sends the user's message to the backend: Herald POSTs it upstream, signed, with the user
        id from the token (docs/protocol.md, "Upstream"). Returns the :class:`Ack` with the backend's status and JSON
        body (e.g. ``{"run_id": …}``).

        Raises :class:`UpstreamError` for the server's ``error`` frame (``code``:
        ``upstream_error``, ``upstream_unavailable``, ``rate_limited``),
        :class:`HeraldConnectionError` when not connected or when the connection ends before the
        answer, ``asyncio.TimeoutError`` after ``timeout`` (default ``request_timeout_s``).
        The answer is read by the client's background task: keep iterating the client (or leave
        fewer than ``max_queue`` events unread) while you wait.
        """
        return await self._request({"type": "message", "thread_id": thread_id, "data": data}, ref, timeout)

    async def cancel(self, run_id: str, ref: Optional[str] = None, *, timeout: Optional[float] = None) -> Ack:
        """Asks the backend (upstream) to stop a run; returns its :class:`Ack`, raises like
        :meth:`send`. Closing a socket never cancels a run."""
        return await self._request({"type": "cancel", "run_id": run_id}, ref, timeout)

    async def _request(self, frame: Dict[str, Any], ref: Optional[str], timeout: Optional[float]) -> Ack:
        ref = ref or uuid.uuid4().hex[:12]
        if ref in self._requests:
            raise ValueError(f"a request with ref {ref!r} is already waiting")
        future: "asyncio.Future[Ack]" = asyncio.get_running_loop().create_future()
        self._requests[ref] = future
        try:
            await self.send_frame({**frame, "ref": ref})
            return await asyncio.wait_for(future, self.request_timeout_s if timeout is None else timeout)
        finally:
            self._requests.pop(ref, None)

    def _settle(self, frame: Dict[str, Any]) -> None:
        """Resolves the send/cancel waiting for this ack or error frame's ref, if any."""
        ref = frame.get("ref")
        future = self._requests.get(ref) if isinstance(ref, str) else None
        if future is None or future.done():
            return
        if frame.get("type") == "ack":
            future.set_result(Ack.from_json(frame))
        else:
            future.set_exception(UpstreamError(str(frame.get("code", "")), str(frame.get("message", "")), ref))

    def _fail_requests(self, error: HeraldError) -> None:
        for future in self._requests.values():
            if not future.done():
                future.set_exception(error)

    def drop_connection(self) -> None:
        """Aborts the socket without a close handshake, like a network failure (for tests)."""
        if self._ws is not None:
            self._ws.transport.abort()

    # --- background loop ---------------------------------------------------------------------

    def _fail(self, error: BaseException) -> None:
        self._queue.put_nowait(("error", error))

    async def _connect(self) -> ClientConnection:
        query: Dict[str, str] = {}
        if self._resume and self._recv_epoch is not None:
            query["after"] = str(self._recv_seq)
            query["epoch"] = self._recv_epoch
        headers: Dict[str, str] = {}
        subprotocols = [SUBPROTOCOL]
        if self._ticket is not None:
            query["ticket"] = await _resolve(self._ticket)
        else:
            assert self._token is not None
            token = await _resolve(self._token)
            self._current_token = token
            if self._auth == "header":
                headers["Authorization"] = f"Bearer {token}"
            else:
                subprotocols.append(f"bearer.{token}")
        uri = self.url + ("?" + urlencode(query) if query else "")
        return await connect(
            uri,
            additional_headers=headers,
            subprotocols=subprotocols,  # type: ignore[arg-type]
            open_timeout=self.open_timeout_s,
            max_size=self.max_message_bytes,
        )

    async def _main(self) -> None:
        backoff = self.min_backoff_s
        while not self._closing:
            try:
                ws = await self._connect()
            except InvalidStatus as e:
                status = e.response.status_code
                error = error_from_response(status, e.response.body or b"")
                if status in FATAL_STATUSES or not self.reconnect:
                    self._fail(error)
                    return
                log.info("herald: handshake refused (%s), retrying in %.2fs", error, backoff)
            except (OSError, asyncio.TimeoutError, InvalidHandshake) as e:
                if not self.reconnect:
                    self._fail(HeraldConnectionError(f"cannot connect to {self.url}: {e!r}"))
                    return
                log.info("herald: cannot connect (%r), retrying in %.2fs", e, backoff)
            except Exception as e:  # noqa: BLE001  (token provider failed, bad URL, …)
                self._fail(e)
                return
            else:
                code, reason, welcomed = await self._serve(ws)
                if self._closing:
                    return
                self.last_close_code = int(code) if code is not None else None
                if welcomed:
                    backoff = self.min_backoff_s
                if code == CloseCode.DISCONNECTED:
                    self._fail(DisconnectedError("disconnected", reason or "disconnected by an operator", None))
                    return
                if code == CloseCode.TOKEN_EXPIRED and self._ticket is None and not callable(self._token):
                    self._fail(TokenExpiredError("token_expired", "the token expired; pass token= as a callable to renew it", None))
                    return
                if not self.reconnect:
                    self._fail(HeraldConnectionError(f"connection closed: {code} {reason}".strip()))
                    return
                log.info("herald: connection closed (%s %s), resuming", code, reason)
                if code in (CloseCode.TOKEN_EXPIRED, CloseCode.SLOW_CONSUMER):
                    continue  # reconnect at once: nothing is wrong with the server
            await asyncio.sleep(backoff * (0.5 + random.random() / 2))
            backoff = min(self.max_backoff_s, backoff * 2)

    async def _serve(self, ws: ClientConnection) -> Tuple[Optional[int], str, bool]:
        """Reads one connection until it closes; returns (close code, reason, got welcome)."""
        self._ws = ws
        welcomed = False
        try:
            async for raw in ws:
                if isinstance(raw, bytes):
                    continue
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "event":
                    event = Event.from_json(frame)
                    if event.snapshot:
                        # The active-run snapshot (before synced): its frames are no resume points,
                        # the cursor moves at synced.
                        await self._put("event", (event, self._recv_epoch))
                        continue
                    if event.seq <= self._recv_seq:
                        continue  # already delivered by an earlier connection
                    self._recv_seq = event.seq
                    await self._put("event", (event, self._recv_epoch))
                elif kind == "welcome":
                    welcome = Welcome.from_json(frame)
                    welcomed = True
                    self.welcome = welcome
                    self.connects += 1
                    if welcome.recovery != "replayed":
                        self._recv_seq = 0  # backlog: the active runs of this epoch
                    self._recv_epoch = welcome.epoch
                    self._resume = True
                    self._schedule_refresh(ws)
                    await self._put("welcome", welcome)
                elif kind == "synced":
                    self._recv_seq = max(self._recv_seq, int(frame["seq"]))
                    await self._put("synced", (self._recv_epoch, self._recv_seq))
                    self._synced.set()
                elif kind == "pong":
                    while self._pongs:
                        future = self._pongs.popleft()
                        if not future.done():
                            future.set_result(None)
                            break
                elif kind == "refreshed":
                    self._current_token, self._refreshing = self._refreshing, None
                    self.refreshes += 1
                    self._schedule_refresh(ws)
                    await _call(self.on_frame, frame)
                elif kind == "error" and self._refreshing is not None and frame.get("ref") is None and frame.get("code") in REFRESH_ERRORS:
                    log.info("herald: refreshed token refused (%s); reconnecting", frame.get("message"))
                    self._refreshing = None
                    await _call(self.on_frame, frame)
                    await ws.close(CloseCode.NORMAL, "refresh refused")
                else:
                    if kind in ("ack", "error"):
                        self._settle(frame)
                    try:
                        await _call(self.on_frame, frame)
                    except Exception:  # noqa: BLE001
                        log.exception("herald: on_frame failed")
        except ConnectionClosed:
            pass
        except (OSError, ValueError, KeyError) as e:
            log.info("herald: connection failed: %r", e)
            ws.transport.abort()
        finally:
            self._ws = None
            self._refreshing = None
            if self._refresher is not None:
                self._refresher.cancel()
                self._refresher = None
            self._synced.clear()
            self._fail_requests(HeraldConnectionError(f"connection closed ({ws.close_code}) before the answer"))
        return ws.close_code, ws.close_reason or "", welcomed

    def _schedule_refresh(self, ws: ClientConnection) -> None:
        """Sends the provider's next token ``refresh_before_s`` before the current one expires."""
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None
        exp = jwt_exp(self._current_token) if self._current_token else None
        if self.refresh_before_s <= 0 or not callable(self._token) or exp is None:
            return
        delay = exp - time.time() - self.refresh_before_s
        if delay > 0:  # too close: the server's 4001 reconnects with a new token
            self._refresher = asyncio.get_running_loop().create_task(self._refresh(ws, delay))

    async def _refresh(self, ws: ClientConnection, delay: float) -> None:
        await asyncio.sleep(delay)
        assert self._token is not None
        try:
            token = await _resolve(self._token)
        except Exception:  # noqa: BLE001  (the 4001 at expiry asks the provider again)
            log.exception("herald: token provider failed; the connection closes at the token's expiry")
            return
        self._refreshing = token
        try:
            await ws.send(json.dumps({"type": "refresh", "token": token}))
        except ConnectionClosed:
            pass

    async def _put(self, kind: str, item: Any) -> None:
        while self._queue.qsize() >= self.max_queue:
            self._space.clear()
            await self._space.wait()
        self._queue.put_nowait((kind, item))
