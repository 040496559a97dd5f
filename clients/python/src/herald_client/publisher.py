"""Publishing events to Herald over HTTP (docs/protocol.md, "Publishing"): ``Publisher`` (sync) and ``AsyncPublisher``.

Every event is sent with an idempotency ``id`` (generated when the caller gives none), so the
publishers retry network errors and 503/429 answers with the same body: Herald returns the first
receipt (``duplicate: true``) instead of appending the event twice.
"""

from __future__ import annotations

import asyncio
import random
import time
from urllib.parse import quote
from typing import Any, Dict, Iterable, List, Mapping, Optional, Union

import httpx

from .run import Run, SyncRun
from .errors import HeraldConnectionError, HeraldError, error_from_response
from .types import EventInput, History, Receipt, Ticket, new_id

__all__ = ["Publisher", "AsyncPublisher", "EventLike"]

EventLike = Union[EventInput, Mapping[str, Any]]

#: Statuses worth retrying: nothing was stored, and the same request may succeed later.
RETRY_STATUSES = frozenset({429, 502, 503, 504})


def _snapshot_params(run_id: Optional[str]) -> Dict[str, Any]:
    params: Dict[str, Any] = {"snapshot": "true"}
    if run_id is not None:
        params["run_id"] = run_id
    return params


class _PublisherBase:
    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.1,
        max_backoff_s: float = 2.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        if not api_key:
            raise ValueError("api_key is required (the server's HERALD_API_KEY)")
        self.url = url.rstrip("/")
        self.retries = max(0, retries)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._timeout = timeout
        self._headers = {"Authorization": f"Bearer {api_key}", "User-Agent": "herald-client-python/0.1"}

    # --- request bodies -------------------------------------------------------------------------

    @staticmethod
    def _events_path(user_id: str) -> str:
        return f"/v1/users/{quote(user_id, safe='')}/events"

    @staticmethod
    def _event_body(
        user_id: str,
        event: str,
        run_id: Optional[str],
        thread_id: Optional[str],
        data: Optional[Mapping[str, Any]],
        id: Optional[str],
    ) -> Dict[str, Any]:
        return EventInput(
            user_id=user_id,
            event=event,
            run_id=run_id,
            thread_id=thread_id,
            data=dict(data) if data is not None else None,
            id=id or new_id(),
        ).to_json()

    @staticmethod
    def _batch_body(events: Iterable[EventLike]) -> Dict[str, Any]:
        out: List[Dict[str, Any]] = []
        for e in events:
            if isinstance(e, EventInput):
                out.append(e.to_json())
            else:
                body = dict(e)
                body.setdefault("id", new_id())
                out.append(body)
        return {"events": out}

    def _delay(self, attempt: int) -> float:
        base = min(self.max_backoff_s, self.backoff_s * 2.0**attempt)
        return base * (0.5 + random.random() / 2)

    @staticmethod
    def _parse(response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise error_from_response(response.status_code, response.content)
        try:
            return response.json()
        except ValueError as e:
            raise HeraldError("invalid_response", f"server answered non-JSON: {response.text[:200]!r}") from e

    @staticmethod
    def _receipts(body: Any) -> List[Receipt]:
        return [Receipt.from_json(r) for r in body["results"]]


class Publisher(_PublisherBase):
    """Synchronous publisher (for Flask, Django, scripts). Thread-safe; reuse one per process.

    >>> pub = Publisher("http://127.0.0.1:7400", api_key)        # doctest: +SKIP
    >>> pub.publish("alice", "custom", data={"name": "hello"})   # doctest: +SKIP
    """

    def __init__(self, url: str, api_key: str, *, transport: Optional[httpx.BaseTransport] = None, **kw: Any) -> None:
        super().__init__(url, api_key, **kw)
        self._http = httpx.Client(base_url=self.url, headers=self._headers, timeout=self._timeout, transport=transport)

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kw: Any) -> Any:
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, **kw)
            except httpx.TransportError as e:
                if attempt >= self.retries:
                    raise HeraldConnectionError(f"{method} {self.url}{path}: {e!r}") from e
            else:
                if response.status_code not in RETRY_STATUSES or attempt >= self.retries:
                    return self._parse(response)
            time.sleep(self._delay(attempt))
            attempt += 1

    def publish(
        self,
        user_id: str,
        event: str,
        *,
        run_id: Optional[str] = None,
        thread_id: Optional[str] = None,
        data: Optional[Mapping[str, Any]] = None,
        id: Optional[str] = None,
    ) -> Receipt:
        """Appends one event to ``user_id``'s log; returns once it is stored."""
        body = self._event_body(user_id, event, run_id, thread_id, data, id)
        return Receipt.from_json(self._request("POST", "/v1/events", json=body))

    def publish_batch(self, events: Iterable[EventLike]) -> List[Receipt]:
        """Appends events all-or-nothing (any invalid one: nothing appended, error names the index)."""
        return self._receipts(self._request("POST", "/v1/events", json=self._batch_body(events)))

    def ticket(self, user_id: str, ttl_s: Optional[int] = None) -> Ticket:
        """A single-use ticket a page can connect with (``/ws?ticket=``)."""
        body: Dict[str, Any] = {"user_id": user_id}
        if ttl_s is not None:
            body["ttl_s"] = ttl_s
        return Ticket.from_json(self._request("POST", "/v1/tickets", json=body))

    def history(self, user_id: str, after: int = 0, limit: int = 100, epoch: Optional[str] = None) -> History:
        """The user's retained events after ``after``."""
        params: Dict[str, Any] = {"after": after, "limit": limit}
        if epoch is not None:
            params["epoch"] = epoch
        return History.from_json(self._request("GET", f"/v1/users/{quote(user_id, safe='')}/events", params=params))

    def snapshot(self, user_id: str, run_id: Optional[str] = None) -> History:
        """The compacted state of the user's active runs (or of ``run_id``): each run whole, text
        deltas merged (``Event.snapshot``); ``seq`` is the head it was taken at."""
        return History.from_json(self._request("GET", self._events_path(user_id), params=_snapshot_params(run_id)))

    def run(
        self,
        user_id: str,
        thread_id: Optional[str] = None,
        *,
        run_id: Optional[str] = None,
        data: Optional[Mapping[str, Any]] = None,
    ) -> SyncRun:
        """``with publisher.run(user, thread) as run:`` emits the run's events in a valid order."""
        return SyncRun(self, user_id, thread_id, run_id=run_id, data=data)


class AsyncPublisher(_PublisherBase):
    """Asynchronous publisher (FastAPI, LangGraph, asyncio agents). Reuse one per event loop."""

    def __init__(
        self, url: str, api_key: str, *, transport: Optional[httpx.AsyncBaseTransport] = None, **kw: Any
    ) -> None:
        super().__init__(url, api_key, **kw)
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=self._headers, timeout=self._timeout, transport=transport
        )

    async def __aenter__(self) -> "AsyncPublisher":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kw: Any) -> Any:
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, path, **kw)
            except httpx.TransportError as e:
                if attempt >= self.retries:
                    raise HeraldConnectionError(f"{method} {self.url}{path}: {e!r}") from e
            else:
                if response.status_code not in RETRY_STATUSES or attempt >= self.retries:
                    return self._parse(response)
            await asyncio.sleep(self._delay(attempt))
            attempt += 1

    async def publish(
        self,
        user_id: str,
        event: str,
        *,
        run_id: Optional[str] = None,
        thread_id: Optional[str] = None,
        data: Optional[Mapping[str, Any]] = None,
        id: Optional[str] = None,
    ) -> Receipt:
        """Appends one event to ``user_id``'s log; returns once it is stored."""
        body = self._event_body(user_id, event, run_id, thread_id, data, id)
        return Receipt.from_json(await self._send_event(body))

    async def publish_batch(self, events: Iterable[EventLike]) -> List[Receipt]:
        """Appends events all-or-nothing (any invalid one: nothing appended, error names the index)."""
        return [Receipt.from_json(r) for r in await self._send_batch(self._batch_body(events)["events"])]

    # The transport of publish and publish_batch (SocketPublisher sends them over its socket).

    async def _send_event(self, body: Dict[str, Any]) -> Dict[str, Any]:
        """Sends one event body; returns its receipt as JSON."""
        return await self._request("POST", "/v1/events", json=body)

    async def _send_batch(self, events: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """Sends a batch's event bodies; returns their receipts as JSON."""
        return (await self._request("POST", "/v1/events", json={"events": events}))["results"]

    async def ticket(self, user_id: str, ttl_s: Optional[int] = None) -> Ticket:
        """A single-use ticket a page can connect with (``/ws?ticket=``)."""
        body: Dict[str, Any] = {"user_id": user_id}
        if ttl_s is not None:
            body["ttl_s"] = ttl_s
        return Ticket.from_json(await self._request("POST", "/v1/tickets", json=body))

    async def history(
        self, user_id: str, after: int = 0, limit: int = 100, epoch: Optional[str] = None
    ) -> History:
        """The user's retained events after ``after``."""
        params: Dict[str, Any] = {"after": after, "limit": limit}
        if epoch is not None:
            params["epoch"] = epoch
        return History.from_json(await self._request("GET", f"/v1/users/{quote(user_id, safe='')}/events", params=params))

    async def snapshot(self, user_id: str, run_id: Optional[str] = None) -> History:
        """The compacted state of the user's active runs (or of ``run_id``): each run whole, text
        deltas merged (``Event.snapshot``); ``seq`` is the head it was taken at."""
        params = _snapshot_params(run_id)
        return History.from_json(await self._request("GET", self._events_path(user_id), params=params))

    def run(
        self,
        user_id: str,
        thread_id: Optional[str] = None,
        *,
        run_id: Optional[str] = None,
        data: Optional[Mapping[str, Any]] = None,
    ) -> Run:
        """``async with publisher.run(user, thread) as run:`` emits the run's events in a valid order."""
        return Run(self, user_id, thread_id, run_id=run_id, data=data)

