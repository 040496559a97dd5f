"""Framework objects → JSON values for event data (tool inputs and outputs are often pydantic
models, messages or arbitrary objects; Herald's data is JSON)."""

from __future__ import annotations

import json
from typing import Any


def jsonable(value: Any) -> Any:
    """``value`` as something ``json.dumps`` accepts: JSON values pass through, pydantic models are
    dumped, a message-like object gives its ``content``, anything else its ``str``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    content = getattr(value, "content", None)
    if content is not None and hasattr(value, "type"):  # a LangChain message (ToolMessage, AIMessage)
        return jsonable(content)
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return jsonable(dump(mode="json"))
        except Exception:  # noqa: BLE001 - fall back to str below
            pass
    return str(value)


def parse_arguments(arguments: Any) -> Any:
    """Tool-call arguments as a JSON value: a JSON string is parsed, anything else made jsonable;
    a string that is not JSON is kept as ``{"input": …}``."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            return {"input": arguments}
    return jsonable(arguments)
