"""OpenAI Agents SDK → Herald: publish a streamed agent run as one Herald run.

    from herald_client.integrations.openai_agents import run_streamed

    result = await run_streamed(publisher, agent, "Weather in Paris?", user_id="alice", thread_id="t-1")
    print(result.final_output)

or, around a run you start yourself: ``await publish_stream(Runner.run_streamed(agent, input),
publisher, user_id=…)``. Both consume the run's ``stream_events()`` and publish (through an
:class:`~herald_client.AsyncPublisher`):

=======================================================  ==========================================
Agents SDK stream event                                  Herald event
=======================================================  ==========================================
(before the first event)                                 ``agent_started`` ``{"agent": name}``
raw ``response.output_text.delta``                       ``agent_text`` ``{"delta"}``, in order
raw ``response.reasoning_text.delta`` / summary delta    ``agent_thinking`` ``{"text"}``
run item ``tool_called``                                 ``tool_executing`` ``{tool_name, tool_call_id, parameters}``
run item ``tool_output``                                 ``tool_completed`` ``{result}``
``agent_updated_stream_event`` (handoff)                 ``progress`` ``{"agent": new name}`` (on a change)
end of the stream                                        ``agent_completed`` ``{"final_response"}``
an exception / cancellation                              ``agent_error`` / ``agent_cancelled`` (re-raised)
=======================================================  ==========================================

A run that fails right after a tool call may end its stream before the SDK yields that call's
events; they are published from the run's ``new_items`` before ``agent_error``, so the tool call
is never missing from the run.

Needs ``openai-agents`` (the ``openai-agents`` extra); imported only by :func:`run_streamed`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from ..publisher import AsyncPublisher
from ._json import jsonable, parse_arguments

if TYPE_CHECKING:
    from agents import Agent, RunResultStreaming

__all__ = ["AgentsEvents", "publish_stream", "run_streamed"]

Emit = Tuple[str, Dict[str, Any]]

_TEXT_DELTAS = {"response.output_text.delta"}
_REASONING_DELTAS = {"response.reasoning_text.delta", "response.reasoning_summary_text.delta"}


class AgentsEvents:
    """The mapping, without I/O: one stream event in, the Herald events (name, data) out."""

    def __init__(self, agent: Optional[str] = None) -> None:
        #: The agent running now: an update naming it again (the stream's first event) is no handoff.
        self.agent = agent
        self._tool_names: Dict[str, str] = {}
        self._called: set = set()

    def missed(self, items: Any) -> List[Emit]:
        """The tool calls and outputs among a run's ``new_items`` that no stream event brought.

        The SDK ends ``stream_events()`` at an error even with events still queued, so a run
        that fails after a tool call may not have streamed it; its items still say it happened.
        """
        out: List[Emit] = []
        for item in items or []:
            kind = getattr(item, "type", None)
            call_id = _field(getattr(item, "raw_item", None), "call_id")
            if kind == "tool_call_item" and call_id not in self._called:
                out += self._tool_called(item.raw_item)
            elif kind == "tool_call_output_item":  # empty once published: its call is no longer pending
                out += self._tool_output(item)
        return out

    def map(self, event: Any) -> List[Emit]:
        kind = getattr(event, "type", None)
        if kind == "raw_response_event":
            data = event.data
            delta = getattr(data, "delta", None)
            if not isinstance(delta, str) or delta == "":
                return []
            if data.type in _TEXT_DELTAS:
                return [("agent_text", {"delta": delta})]
            if data.type in _REASONING_DELTAS:
                return [("agent_thinking", {"text": delta})]
            return []
        if kind == "run_item_stream_event":
            if event.name == "tool_called":
                return self._tool_called(event.item.raw_item)
            if event.name == "tool_output":
                return self._tool_output(event.item)
            return []
        if kind == "agent_updated_stream_event":
            name = event.new_agent.name
            if name == self.agent:
                return []
            self.agent = name
            return [("progress", {"agent": name})]
        return []

    def _tool_called(self, raw: Any) -> List[Emit]:
        call_id = _field(raw, "call_id") or _field(raw, "id")
        name = _field(raw, "name") or _field(raw, "type") or "tool"
        if not call_id:
            return []
        self._tool_names[call_id] = name
        self._called.add(call_id)
        return [
            (
                "tool_executing",
                {
                    "tool_name": name,
                    "tool_call_id": call_id,
                    "parameters": parse_arguments(_field(raw, "arguments") or {}),
                },
            )
        ]

    def _tool_output(self, item: Any) -> List[Emit]:
        call_id = _field(item.raw_item, "call_id")
        name = self._tool_names.pop(call_id, None) if call_id else None
        if name is None:  # an output whose call we never saw: nothing Herald could pair it with
            return []
        return [("tool_completed", {"tool_name": name, "tool_call_id": call_id, "result": jsonable(item.output)})]


async def publish_stream(
    result: "RunResultStreaming",
    publisher: AsyncPublisher,
    *,
    user_id: str,
    thread_id: Optional[str] = None,
    run_id: Optional[str] = None,
) -> "RunResultStreaming":
    """Consumes ``result.stream_events()`` and publishes the run to Herald; returns ``result``
    (``final_output`` and the rest are there as usual). Raises what the run raises, after
    publishing ``agent_error`` (or ``agent_cancelled``)."""
    agent = getattr(getattr(result, "current_agent", None), "name", None) or "agent"
    events = AgentsEvents(agent)
    async with publisher.run(user_id, thread_id, run_id=run_id, data={"agent": agent}) as run:
        try:
            async for event in result.stream_events():
                for name, data in events.map(event):
                    await run.emit(name, data)
        except Exception:
            # What the run did before it failed, that the stream dropped, precedes agent_error.
            for name, data in events.missed(getattr(result, "new_items", None)):
                await run.emit(name, data)
            raise
        final = jsonable(result.final_output)
        await run.complete(final_response=final)
    return result


async def run_streamed(
    publisher: AsyncPublisher,
    agent: "Agent[Any]",
    input: Any,
    *,
    user_id: str,
    thread_id: Optional[str] = None,
    run_id: Optional[str] = None,
    **runner_kwargs: Any,
) -> "RunResultStreaming":
    """``Runner.run_streamed(agent, input, **runner_kwargs)``, published to Herald as it runs."""
    try:
        from agents import Runner
    except ImportError as e:
        raise ImportError('run_streamed needs the OpenAI Agents SDK: pip install "herald-client[openai-agents]"') from e

    result = Runner.run_streamed(agent, input, **runner_kwargs)
    return await publish_stream(result, publisher, user_id=user_id, thread_id=thread_id, run_id=run_id)


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
