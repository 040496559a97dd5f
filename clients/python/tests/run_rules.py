"""Herald's run rules, checked on the events a client received (the adapters' tests use it: a
framework run must arrive as one valid Herald run)."""

from __future__ import annotations

from typing import Dict, List

from herald_client import Event

TERMINAL = {"agent_completed", "agent_error", "agent_cancelled"}


def assert_valid_run(events: List[Event]) -> None:
    """One run: agent_started first, exactly one terminal event and it is last, every
    tool_completed closes an open tool_executing (by tool_call_id), none open at agent_completed,
    seqs increasing."""
    names = [e.event for e in events]
    assert events, "no events"
    assert len({e.run_id for e in events}) == 1, f"more than one run: {[e.run_id for e in events]}"
    assert names[0] == "agent_started", names
    assert names[-1] in TERMINAL and sum(n in TERMINAL for n in names) == 1, names
    assert names.count("agent_started") == 1, names
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
    open_calls: Dict[str, str] = {}
    for e in events:
        if e.event == "tool_executing":
            call_id = e.data["tool_call_id"]
            assert call_id not in open_calls, f"tool call {call_id} opened twice"
            open_calls[call_id] = e.data["tool_name"]
        elif e.event == "tool_completed":
            call_id = e.data["tool_call_id"]
            assert open_calls.pop(call_id, None) == e.data["tool_name"], f"tool_completed {call_id} pairs no open call"
    if names[-1] == "agent_completed":
        assert not open_calls, f"open tool calls at agent_completed: {open_calls}"
