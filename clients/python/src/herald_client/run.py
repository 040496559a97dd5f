"""The ``Run`` helper: a context manager that emits a run's events in an order Herald accepts.

    async with publisher.run(user_id, thread_id) as run:     # agent_started
        await run.thinking("Looking it up")                   # agent_thinking
        async with run.tool("search", {"q": "herald"}) as t:  # tool_executing
            t.result = await search("herald")                 # tool_completed (+ duration_ms)
        await run.complete("Here is what I found")            # agent_completed

If the block raises, the run ends with ``agent_error`` (``asyncio.CancelledError``: with
``agent_cancelled``) and the exception propagates. A block that ends without a terminal event is
completed with ``agent_completed``. A tool block that raises still emits ``tool_completed`` (with
``error``), so the run's tool calls are always closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, AsyncIterable, AsyncIterator, Dict, Iterable, List, Mapping, Optional, Type, Union

from .types import Receipt, new_id

if TYPE_CHECKING:
    from types import TracebackType

    from .publisher import AsyncPublisher, Publisher

__all__ = ["Run", "SyncRun", "ToolCall", "SyncToolCall", "TERMINAL_EVENTS"]

log = logging.getLogger("herald_client")

TERMINAL_EVENTS = frozenset({"agent_completed", "agent_error", "agent_cancelled"})


def _merge(base: Optional[Mapping[str, Any]], **fields: Any) -> Dict[str, Any]:
    out = dict(base or {})
    out.update({k: v for k, v in fields.items() if v is not None})
    return out


def _error_data(exc: BaseException) -> Dict[str, Any]:
    return {"message": str(exc) or type(exc).__name__, "error_type": type(exc).__name__}


async def _each(items: Union[AsyncIterable[str], Iterable[str]]) -> AsyncIterator[str]:
    """Iterates an async or a plain iterable alike."""
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


class _RunState:
    def __init__(
        self,
        user_id: str,
        thread_id: Optional[str],
        run_id: Optional[str],
        data: Optional[Mapping[str, Any]],
    ) -> None:
        self.user_id = user_id
        self.thread_id = thread_id
        self.run_id = run_id or new_id()
        self.start_data = dict(data or {})
        #: The terminal event the run ended with, once it has.
        self.ended: Optional[str] = None
        #: Receipts of every event this helper published, in order.
        self.receipts: List[Receipt] = []

    def _record(self, event: str, receipt: Receipt) -> Receipt:
        self.receipts.append(receipt)
        if event in TERMINAL_EVENTS:
            self.ended = event
        return receipt


class Run(_RunState):
    """One agent run, published through an :class:`AsyncPublisher`."""

    def __init__(
        self,
        publisher: "AsyncPublisher",
        user_id: str,
        thread_id: Optional[str] = None,
        *,
        run_id: Optional[str] = None,
        data: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(user_id, thread_id, run_id, data)
        self.publisher = publisher

    async def __aenter__(self) -> "Run":
        # `async with` calls __aexit__ only once __aenter__ has returned, so a task cancelled while
        # its agent_started is on the way would leave the run open: the server may have appended
        # it, and the user's tabs may already show it. The start is let finish, and a start
        # interrupted by a cancellation ends the run with agent_cancelled before the
        # cancellation goes on.
        start = asyncio.ensure_future(self.emit("agent_started", self.start_data))
        try:
            await asyncio.shield(start)
        except asyncio.CancelledError:
            try:
                await start
            except Exception as e:  # noqa: BLE001 - not started: there is no run to end
                log.warning("run %s: cancelled while its agent_started failed: %r", self.run_id, e)
            else:
                await self.__aexit__(asyncio.CancelledError, asyncio.CancelledError(), None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: "Optional[TracebackType]",
    ) -> None:
        if self.ended is not None:
            return
        if exc is None:
            await self.complete()
            return
        # End the run, but never let a failure to publish hide the block's own exception.
        try:
            if isinstance(exc, asyncio.CancelledError):
                await self.cancelled()
            else:
                await self.error(**_error_data(exc))
        except Exception as publish_error:  # noqa: BLE001
            log.warning("run %s: could not publish its end after %r: %r", self.run_id, exc, publish_error)

    async def emit(self, event: str, data: Optional[Mapping[str, Any]] = None, *, id: Optional[str] = None) -> Receipt:
        """Publishes any event of this run."""
        receipt = await self.publisher.publish(
            self.user_id, event, run_id=self.run_id, thread_id=self.thread_id, data=dict(data or {}), id=id
        )
        return self._record(event, receipt)

    async def thinking(self, text: Optional[str] = None, **data: Any) -> Receipt:
        """``agent_thinking`` with ``{"text": …}`` and any other fields."""
        return await self.emit("agent_thinking", _merge(data, text=text))

    async def text(self, delta: str, **data: Any) -> Receipt:
        """``agent_text`` with ``{"delta": …}``: a piece of the streamed answer."""
        return await self.emit("agent_text", _merge(data, delta=delta))

    async def stream_text(self, deltas: Union[AsyncIterable[str], Iterable[str]], **data: Any) -> str:
        """Publishes each delta of an LLM stream as one ``agent_text`` event, in order, as it
        arrives; returns the whole text. Empty deltas are skipped. Each delta is stored before the
        next is read, so a retried delta can never overtake a later one. With a
        :class:`SocketPublisher` each delta is one frame on an open socket, not an HTTP request."""
        parts: List[str] = []
        async for delta in _each(deltas):
            if delta:
                await self.text(delta, **data)
                parts.append(delta)
        return "".join(parts)

    async def progress(self, **data: Any) -> Receipt:
        """``progress`` with free-form fields."""
        return await self.emit("progress", data)

    async def custom(self, name: str, **data: Any) -> Receipt:
        """``custom`` with ``{"name": …}`` within this run."""
        return await self.emit("custom", _merge(data, name=name))

    def tool(
        self, name: str, parameters: Optional[Mapping[str, Any]] = None, *, tool_call_id: Optional[str] = None
    ) -> "ToolCall":
        """``async with run.tool(name, params) as t: t.result = …`` emits tool_executing, then
        tool_completed with ``result`` (or ``error``) and ``duration_ms``."""
        return ToolCall(self, name, parameters, tool_call_id or new_id())

    async def complete(self, final_response: Any = None, **data: Any) -> Receipt:
        """``agent_completed`` (terminal) with ``{"final_response": …}`` when given."""
        return await self.emit("agent_completed", _merge(data, final_response=final_response))

    async def error(self, message: str, **data: Any) -> Receipt:
        """``agent_error`` (terminal); closes the run's open tool calls."""
        return await self.emit("agent_error", _merge(data, message=message))

    async def cancelled(self, **data: Any) -> Receipt:
        """``agent_cancelled`` (terminal)."""
        return await self.emit("agent_cancelled", data)


class _ToolCallState:
    """What :class:`ToolCall` and :class:`SyncToolCall` share: the call's fields and the data of
    its two events. The subclasses only publish (awaiting or not)."""

    def __init__(self, name: str, parameters: Optional[Mapping[str, Any]], tool_call_id: str) -> None:
        self.name = name
        self.parameters = dict(parameters or {})
        self.tool_call_id = tool_call_id
        self.result: Any = None
        self.duration_ms: Optional[float] = None
        self._started = 0.0

    def set_result(self, result: Any) -> None:
        self.result = result

    def _executing(self) -> Dict[str, Any]:
        """Data of ``tool_executing``; starts the clock."""
        self._started = time.monotonic()
        return {"tool_name": self.name, "tool_call_id": self.tool_call_id, "parameters": self.parameters}

    def _completed(self, exc: Optional[BaseException]) -> Dict[str, Any]:
        """Data of ``tool_completed``, with the measured duration and the result or the error."""
        self.duration_ms = round((time.monotonic() - self._started) * 1000, 3)
        data: Dict[str, Any] = {"tool_name": self.name, "tool_call_id": self.tool_call_id, "duration_ms": self.duration_ms}
        if exc is None:
            data["result"] = self.result
        else:
            data.update(status="error", error=str(exc) or type(exc).__name__, error_type=type(exc).__name__)
        return data

    def _not_published(self, exc: BaseException, publish_error: BaseException) -> None:
        log.warning("tool %s: could not publish tool_completed after %r: %r", self.name, exc, publish_error)


class ToolCall(_ToolCallState):
    """One tool call of a :class:`Run`; set ``result`` inside the block."""

    def __init__(self, run: Run, name: str, parameters: Optional[Mapping[str, Any]], tool_call_id: str) -> None:
        super().__init__(name, parameters, tool_call_id)
        self.run = run

    async def __aenter__(self) -> "ToolCall":
        await self.run.emit("tool_executing", self._executing())
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: "Optional[TracebackType]",
    ) -> None:
        data = self._completed(exc)
        if exc is None:
            await self.run.emit("tool_completed", data)
            return
        try:
            await self.run.emit("tool_completed", data)
        except Exception as publish_error:  # noqa: BLE001
            self._not_published(exc, publish_error)


class SyncRun(_RunState):
    """One agent run, published through a synchronous :class:`Publisher` (``with`` block)."""

    def __init__(
        self,
        publisher: "Publisher",
        user_id: str,
        thread_id: Optional[str] = None,
        *,
        run_id: Optional[str] = None,
        data: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(user_id, thread_id, run_id, data)
        self.publisher = publisher

    def __enter__(self) -> "SyncRun":
        self.emit("agent_started", self.start_data)
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: "Optional[TracebackType]",
    ) -> None:
        if self.ended is not None:
            return
        if exc is None:
            self.complete()
            return
        try:
            if isinstance(exc, KeyboardInterrupt):
                self.cancelled()
            else:
                self.error(**_error_data(exc))
        except Exception as publish_error:  # noqa: BLE001
            log.warning("run %s: could not publish its end after %r: %r", self.run_id, exc, publish_error)

    def emit(self, event: str, data: Optional[Mapping[str, Any]] = None, *, id: Optional[str] = None) -> Receipt:
        receipt = self.publisher.publish(
            self.user_id, event, run_id=self.run_id, thread_id=self.thread_id, data=dict(data or {}), id=id
        )
        return self._record(event, receipt)

    def thinking(self, text: Optional[str] = None, **data: Any) -> Receipt:
        return self.emit("agent_thinking", _merge(data, text=text))

    def text(self, delta: str, **data: Any) -> Receipt:
        return self.emit("agent_text", _merge(data, delta=delta))

    def stream_text(self, deltas: Iterable[str], **data: Any) -> str:
        """Publishes each delta as one ``agent_text`` event, in order; returns the whole text."""
        parts: List[str] = []
        for delta in deltas:
            if delta:
                self.text(delta, **data)
                parts.append(delta)
        return "".join(parts)

    def progress(self, **data: Any) -> Receipt:
        return self.emit("progress", data)

    def custom(self, name: str, **data: Any) -> Receipt:
        return self.emit("custom", _merge(data, name=name))

    def tool(
        self, name: str, parameters: Optional[Mapping[str, Any]] = None, *, tool_call_id: Optional[str] = None
    ) -> "SyncToolCall":
        return SyncToolCall(self, name, parameters, tool_call_id or new_id())

    def complete(self, final_response: Any = None, **data: Any) -> Receipt:
        return self.emit("agent_completed", _merge(data, final_response=final_response))

    def error(self, message: str, **data: Any) -> Receipt:
        return self.emit("agent_error", _merge(data, message=message))

    def cancelled(self, **data: Any) -> Receipt:
        return self.emit("agent_cancelled", data)


class SyncToolCall(_ToolCallState):
    """One tool call of a :class:`SyncRun`."""

    def __init__(self, run: SyncRun, name: str, parameters: Optional[Mapping[str, Any]], tool_call_id: str) -> None:
        super().__init__(name, parameters, tool_call_id)
        self.run = run

    def __enter__(self) -> "SyncToolCall":
        self.run.emit("tool_executing", self._executing())
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: "Optional[TracebackType]",
    ) -> None:
        data = self._completed(exc)
        if exc is None:
            self.run.emit("tool_completed", data)
            return
        try:
            self.run.emit("tool_completed", data)
        except Exception as publish_error:  # noqa: BLE001
            self._not_published(exc, publish_error)
