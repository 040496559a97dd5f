"""LangChain / LangGraph → Herald: a callback handler that publishes one Herald run per invocation.

    from herald_client import AsyncPublisher
    from herald_client.integrations.langchain import HeraldCallbackHandler

    handler = HeraldCallbackHandler(publisher, user_id="alice", thread_id="t-1")
    await agent.ainvoke({"messages": [("user", "Weather?")]}, config={"callbacks": [handler]})

With a :class:`~herald_client.Publisher` the handler publishes synchronously (``invoke``); with an
:class:`~herald_client.AsyncPublisher` it is an async handler (``ainvoke``/``astream``). Events:

=================================  =====================================================
LangChain callback                 Herald event
=================================  =====================================================
first callback of the invocation   ``agent_started`` ``{"agent": name}``
``on_llm_new_token`` (text)        ``agent_text`` ``{"delta"}``, in order
reasoning in a token's chunk       ``agent_thinking`` ``{"text"}``
``on_llm_end`` without tokens      ``agent_text`` with the whole generation
``on_tool_start``                  ``tool_executing`` ``{tool_name, tool_call_id, parameters}``
``on_tool_end`` / ``_error``       ``tool_completed`` ``{result}`` / ``{status: "error", error}``
end of the outermost run           ``agent_completed`` ``{"final_response"}``
error of the outermost run         ``agent_error`` ``{"message", "error_type"}``
=================================  =====================================================

The handler asks chat models to stream (it has ``tap_output_iter``/``tap_output_aiter``, which
LangChain takes as "a streaming handler is attached"), so ``invoke`` still yields tokens. Use one
handler per invocation: it is one Herald run. Needs ``langchain-core`` (the ``langchain`` extra).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncIterator, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union
from uuid import UUID

try:
    from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
except ImportError as e:  # pragma: no cover - exercised by the wheel test in a bare venv
    raise ImportError(
        'herald_client.integrations.langchain needs langchain-core: pip install "herald-client[langchain]"'
    ) from e

from ..publisher import AsyncPublisher, Publisher
from ..run import Run, SyncRun
from ..types import new_id
from ._json import jsonable

__all__ = ["HeraldCallbackHandler", "AsyncHeraldCallbackHandler", "LangChainEvents"]

T = TypeVar("T")
Emit = Tuple[str, Dict[str, Any]]


class LangChainEvents:
    """The mapping itself, without I/O: each method takes one callback's arguments and returns the
    Herald events (name, data) to publish, in order. Shared by the sync and async handlers."""

    def __init__(self, agent: Optional[str] = None) -> None:
        self.agent = agent
        #: LangChain run id of the outermost run (its end ends the Herald run).
        self.root: Optional[UUID] = None
        self.ended = False
        self._tools: Dict[UUID, Tuple[str, str]] = {}
        self._streamed: set = set()

    def begin(self, run_id: UUID, parent_run_id: Optional[UUID], name: Optional[str]) -> List[Emit]:
        """Any start callback: the first one (without a parent) starts the Herald run."""
        if self.root is not None or self.ended or parent_run_id is not None:
            return []
        self.root = run_id
        return [("agent_started", {"agent": self.agent or name or "langchain"})]

    def token(self, token: Any, chunk: Any, run_id: UUID) -> List[Emit]:
        """A streamed chunk: its reasoning, then its text (``token`` is the chunk's content: a
        string, or content blocks for models that stream them)."""
        if self.ended:
            return []
        out: List[Emit] = []
        reasoning = _reasoning_of(chunk)
        if reasoning:
            out.append(("agent_thinking", {"text": reasoning}))
        text = token if isinstance(token, str) else _text_of_blocks(token)
        if text:
            out.append(("agent_text", {"delta": text}))
        if out:
            self._streamed.add(run_id)
        return out

    def llm_end(self, response: Any, run_id: UUID) -> List[Emit]:
        """A model call ended: its text, unless it was streamed token by token."""
        if self.ended:
            return []
        out: List[Emit] = []
        if run_id not in self._streamed:
            text = "".join(getattr(g, "text", "") or "" for gens in getattr(response, "generations", []) for g in gens)
            if text:
                out.append(("agent_text", {"delta": text}))
        self._streamed.discard(run_id)
        if run_id == self.root:
            out += self.end(None, run_id)
        return out

    def tool_start(self, name: str, run_id: UUID, tool_call_id: Optional[str], parameters: Any) -> List[Emit]:
        if self.ended:
            return []
        call_id = tool_call_id or str(run_id)
        self._tools[run_id] = (name, call_id)
        return [("tool_executing", {"tool_name": name, "tool_call_id": call_id, "parameters": jsonable(parameters)})]

    def tool_end(self, output: Any, run_id: UUID, error: Optional[BaseException] = None) -> List[Emit]:
        if self.ended or run_id not in self._tools:
            return []
        name, call_id = self._tools.pop(run_id)
        data: Dict[str, Any] = {"tool_name": name, "tool_call_id": call_id}
        if error is None:
            data["result"] = jsonable(output)
        else:
            data.update(status="error", error=str(error) or type(error).__name__, error_type=type(error).__name__)
        return [("tool_completed", data)]

    def tool_callback(self, serialized: Any, input_str: str, kw: Dict[str, Any]) -> List[Emit]:
        """``on_tool_start`` (its keyword arguments in ``kw``): the run's start if the tool is the
        outermost runnable, then the call."""
        name = _name(serialized) or kw.get("name") or "tool"
        run_id: UUID = kw["run_id"]
        emits = self.begin(run_id, kw.get("parent_run_id"), name)
        inputs = kw.get("inputs")
        parameters = inputs if inputs is not None else {"input": input_str}
        return emits + self.tool_start(name, run_id, kw.get("tool_call_id"), parameters)

    def tool_done(self, output: Any, error: Optional[BaseException], run_id: UUID) -> List[Emit]:
        """``on_tool_end`` / ``on_tool_error``: the call's end, and the run's if the tool was it."""
        if error is None:
            return self.tool_end(output, run_id) + self.end(output, run_id)
        return self.tool_end(None, run_id, error) + self.error(error, run_id)

    def end(self, outputs: Any, run_id: UUID) -> List[Emit]:
        """A run ended: the outermost one completes the Herald run."""
        if self.ended or run_id != self.root:
            return []
        self.ended = True
        final = _final_response(outputs)
        return [("agent_completed", {"final_response": final} if final is not None else {})]

    def error(self, error: BaseException, run_id: UUID) -> List[Emit]:
        """A run failed: the outermost one ends the Herald run (cancelled or error)."""
        if self.ended or run_id != self.root:
            return []
        self.ended = True
        if isinstance(error, asyncio.CancelledError):
            return [("agent_cancelled", {})]
        return [("agent_error", {"message": str(error) or type(error).__name__, "error_type": type(error).__name__})]


class _StreamingTap:
    """Makes LangChain treat the handler as a streaming one, so chat models stream their tokens
    even under ``invoke``; the outputs pass through untouched."""

    def tap_output_aiter(self, run_id: UUID, output: AsyncIterator[T]) -> AsyncIterator[T]:
        return output

    def tap_output_iter(self, run_id: UUID, output: Iterator[T]) -> Iterator[T]:
        return output


class _HandlerBase(_StreamingTap):
    """What the sync and async handlers share: the Herald run, the mapping, the options."""

    #: Called in the caller's thread (not an executor), so events keep their order.
    run_inline = True
    raise_error = False

    def __init__(
        self,
        publisher: Union[Publisher, AsyncPublisher],
        *,
        user_id: str,
        thread_id: Optional[str] = None,
        run_id: Optional[str] = None,
        agent: Optional[str] = None,
        raise_error: bool = False,
    ) -> None:
        super().__init__()
        #: Re-raise a failed publish into the agent (default: LangChain logs it and the agent goes on).
        self.raise_error = raise_error
        self.run: Any = publisher.run(user_id, thread_id, run_id=run_id or new_id())
        self.events = LangChainEvents(agent)

    @property
    def run_id(self) -> str:
        """The Herald run id."""
        return str(self.run.run_id)


class HeraldCallbackHandler(_HandlerBase, BaseCallbackHandler):
    """Publishes one LangChain/LangGraph invocation as one Herald run.

    ``HeraldCallbackHandler(publisher, user_id=…, run_id=…, thread_id=…, agent=…, raise_error=…)``:
    with an :class:`AsyncPublisher` this returns an :class:`AsyncHeraldCallbackHandler`.
    """

    run: SyncRun

    def __new__(cls, publisher: Union[Publisher, AsyncPublisher], *args: Any, **kwargs: Any) -> Any:
        if cls is HeraldCallbackHandler and isinstance(publisher, AsyncPublisher):
            return AsyncHeraldCallbackHandler(publisher, *args, **kwargs)
        return super().__new__(cls)

    def __init__(self, publisher: Publisher, **kwargs: Any) -> None:
        super().__init__(publisher, **kwargs)
        # Tool nodes run parallel tool calls in worker threads: publish one event at a time.
        self._lock = threading.Lock()

    def _publish(self, emits: Sequence[Emit]) -> None:
        with self._lock:
            for event, data in emits:
                self.run.emit(event, data)

    def on_chain_start(
        self, serialized: Any, inputs: Any, *, run_id: UUID, parent_run_id: Optional[UUID] = None, **kw: Any
    ) -> None:
        self._publish(self.events.begin(run_id, parent_run_id, kw.get("name") or _name(serialized)))

    def on_chat_model_start(
        self, serialized: Any, messages: Any, *, run_id: UUID, parent_run_id: Optional[UUID] = None, **kw: Any
    ) -> None:
        self._publish(self.events.begin(run_id, parent_run_id, kw.get("name") or _name(serialized)))

    def on_llm_start(
        self, serialized: Any, prompts: Any, *, run_id: UUID, parent_run_id: Optional[UUID] = None, **kw: Any
    ) -> None:
        self._publish(self.events.begin(run_id, parent_run_id, kw.get("name") or _name(serialized)))

    def on_llm_new_token(self, token: Any, *, chunk: Any = None, run_id: UUID, **kw: Any) -> None:
        self._publish(self.events.token(token, chunk, run_id))

    def on_llm_end(self, response: Any, *, run_id: UUID, **kw: Any) -> None:
        self._publish(self.events.llm_end(response, run_id))

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kw: Any) -> None:
        self._publish(self.events.error(error, run_id))

    def on_tool_start(self, serialized: Any, input_str: str, **kw: Any) -> None:
        self._publish(self.events.tool_callback(serialized, input_str, kw))

    def on_tool_end(self, output: Any, *, run_id: UUID, **kw: Any) -> None:
        self._publish(self.events.tool_done(output, None, run_id))

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kw: Any) -> None:
        self._publish(self.events.tool_done(None, error, run_id))

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kw: Any) -> None:
        self._publish(self.events.end(outputs, run_id))

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kw: Any) -> None:
        self._publish(self.events.error(error, run_id))


class AsyncHeraldCallbackHandler(_HandlerBase, AsyncCallbackHandler):
    """The async form of :class:`HeraldCallbackHandler`, for an :class:`AsyncPublisher`
    (``ainvoke``, ``astream``, LangGraph's async runs). Each callback is awaited before the next,
    so events keep their order."""

    run: Run

    def __init__(self, publisher: AsyncPublisher, **kwargs: Any) -> None:
        super().__init__(publisher, **kwargs)
        # Parallel tool nodes call back concurrently: publish one event at a time, in call order.
        self._lock: Optional[asyncio.Lock] = None
        #: The loop the publisher lives on. LangChain runs sync tools in worker threads and calls
        #: async handlers there on a loop of their own: those publishes are sent back to this one.
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            pass

    async def _publish(self, emits: Sequence[Emit]) -> None:
        if not emits:
            return
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        if loop is not self._loop:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._publish_here(emits), self._loop))
            return
        await self._publish_here(emits)

    async def _publish_here(self, emits: Sequence[Emit]) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            for event, data in emits:
                await self.run.emit(event, data)

    async def on_chain_start(
        self, serialized: Any, inputs: Any, *, run_id: UUID, parent_run_id: Optional[UUID] = None, **kw: Any
    ) -> None:
        await self._publish(self.events.begin(run_id, parent_run_id, kw.get("name") or _name(serialized)))

    async def on_chat_model_start(
        self, serialized: Any, messages: Any, *, run_id: UUID, parent_run_id: Optional[UUID] = None, **kw: Any
    ) -> None:
        await self._publish(self.events.begin(run_id, parent_run_id, kw.get("name") or _name(serialized)))

    async def on_llm_start(
        self, serialized: Any, prompts: Any, *, run_id: UUID, parent_run_id: Optional[UUID] = None, **kw: Any
    ) -> None:
        await self._publish(self.events.begin(run_id, parent_run_id, kw.get("name") or _name(serialized)))

    async def on_llm_new_token(self, token: Any, *, chunk: Any = None, run_id: UUID, **kw: Any) -> None:
        await self._publish(self.events.token(token, chunk, run_id))

    async def on_llm_end(self, response: Any, *, run_id: UUID, **kw: Any) -> None:
        await self._publish(self.events.llm_end(response, run_id))

    async def on_llm_error(self, error: BaseException, *, run_id: UUID, **kw: Any) -> None:
        await self._publish(self.events.error(error, run_id))

    async def on_tool_start(self, serialized: Any, input_str: str, **kw: Any) -> None:
        await self._publish(self.events.tool_callback(serialized, input_str, kw))

    async def on_tool_end(self, output: Any, *, run_id: UUID, **kw: Any) -> None:
        await self._publish(self.events.tool_done(output, None, run_id))

    async def on_tool_error(self, error: BaseException, *, run_id: UUID, **kw: Any) -> None:
        await self._publish(self.events.tool_done(None, error, run_id))

    async def on_chain_end(self, outputs: Any, *, run_id: UUID, **kw: Any) -> None:
        await self._publish(self.events.end(outputs, run_id))

    async def on_chain_error(self, error: BaseException, *, run_id: UUID, **kw: Any) -> None:
        await self._publish(self.events.error(error, run_id))


def _name(serialized: Any) -> Optional[str]:
    if isinstance(serialized, dict):
        name = serialized.get("name")
        if isinstance(name, str):
            return name
    return None


def _reasoning_of(chunk: Any) -> str:
    """Reasoning text carried by a streamed chunk: ``reasoning_content`` (OpenAI-compatible
    servers) or ``reasoning``/``thinking`` content blocks (LangChain standard, Anthropic)."""
    message = getattr(chunk, "message", chunk)
    if message is None:
        return ""
    extra = getattr(message, "additional_kwargs", None) or {}
    if isinstance(extra.get("reasoning_content"), str):
        return extra["reasoning_content"]
    content = getattr(message, "content", None)
    if not isinstance(content, list):
        return ""
    parts = []
    for block in content:
        if isinstance(block, dict) and block.get("type") in ("reasoning", "thinking"):
            text = block.get("reasoning") or block.get("thinking") or ""
            if isinstance(text, str):
                parts.append(text)
    return "".join(parts)


def _text_of_blocks(content: Any) -> str:
    """The text blocks of a list content (``[{"type": "text", "text": …}, …]``), joined."""
    if not isinstance(content, list):
        return ""
    return "".join(
        b["text"] for b in content if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
    )


def _final_response(outputs: Any) -> Any:
    """The answer in a run's outputs: the last message's content (LangGraph state), else the
    outputs themselves when they are plain text."""
    if isinstance(outputs, dict) and isinstance(outputs.get("messages"), list) and outputs["messages"]:
        return jsonable(outputs["messages"][-1])
    if isinstance(outputs, str):
        return outputs
    if hasattr(outputs, "content") and hasattr(outputs, "type"):
        return jsonable(outputs)
    return None
