"""The backend end of Herald's upstream (docs/protocol.md, "Upstream"): browsers send on their Herald socket, Herald
POSTs here, signed, and this server answers and streams the agent's run back through Herald.

    {"type":"message","user_id","connection_id","ref","thread_id","data":{"text":…}}
        -> starts the fake agent of agent.py for that user; answers 200 {"run_id"}
    {"type":"cancel","user_id","run_id","ref"}
        -> stops that user's run (the run publishes agent_cancelled); answers 200 {"run_id","cancelled"}
    {"type":"presence",…} (herald serve --upstream-presence) -> 200 {}

Every request is checked with herald_client.verify_signature first (401 if it fails); the user id
is Herald's (from the socket's token), so a user can only cancel their own runs.

    HERALD_API_KEY=… HERALD_UPSTREAM_SECRET=… python upstream.py --port 8000

Settings: --url / HERALD_URL (default http://127.0.0.1:7400), --api-key / HERALD_API_KEY,
--secret / HERALD_UPSTREAM_SECRET (the one given to herald serve --upstream-secret).
Plain asyncio and the SDK only: no web framework needed (README shows the same handler in FastAPI).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Awaitable, Dict, Optional, Tuple

from herald_client import SIGNATURE_HEADER, AsyncPublisher, new_id, verify_signature

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agent import answer  # noqa: E402  (the fake agent: thinking, two tools, streamed answer)

log = logging.getLogger("upstream")


class Backend:
    """Handles Herald's upstream requests; runs one agent task per message."""

    def __init__(self, pub: AsyncPublisher, secret: str, pace: float = 1.0) -> None:
        self.pub = pub
        self.secret = secret
        self.pace = pace
        #: Active runs: run id -> (user id, task).
        self.runs: Dict[str, Tuple[str, "asyncio.Task[str]"]] = {}

    async def handle(self, signature: Optional[str], raw: bytes) -> Tuple[int, Dict[str, Any]]:
        """One upstream request: the ``Herald-Signature`` header and the raw body -> (status, JSON)."""
        # Verify on the raw bytes, before parsing: the MAC covers exactly what Herald sent.
        if not verify_signature(self.secret, signature, raw):
            return 401, {"error": "bad or stale Herald-Signature"}
        try:
            req = json.loads(raw)
        except ValueError:
            return 400, {"error": "body is not JSON"}
        kind, user_id = req.get("type"), req.get("user_id")
        if kind == "message":
            data = req.get("data") if isinstance(req.get("data"), dict) else {}
            question = data.get("text") or data.get("question")
            if not question:
                return 400, {"error": "data.text is required"}
            return 200, {"run_id": self.start(user_id, str(question), req.get("thread_id"))}
        if kind == "cancel":
            run_id = req.get("run_id")
            entry = self.runs.get(run_id)
            if entry is None or entry[0] != user_id:
                return 404, {"error": f"no active run {run_id!r} for this user"}
            task = entry[1]
            task.cancel()  # the run's `async with` publishes agent_cancelled on the way out
            await asyncio.wait({task})
            return 200, {"run_id": run_id, "cancelled": True}
        if kind == "presence":
            log.info("presence: %s %s", user_id, req.get("state"))
            return 200, {}
        return 400, {"error": f"unknown type {kind!r}"}

    def start(self, user_id: str, question: str, thread_id: Optional[str]) -> str:
        run_id = new_id()
        task = asyncio.create_task(self.agent_run(user_id, question, thread_id, run_id))
        self.runs[run_id] = (user_id, task)

        def done(t: "asyncio.Task[str]") -> None:
            self.runs.pop(run_id, None)
            if not t.cancelled() and t.exception() is not None:
                log.warning("run %s failed: %r", run_id, t.exception())

        task.add_done_callback(done)
        return run_id

    def agent_run(self, user_id: str, question: str, thread_id: Optional[str], run_id: str) -> "Awaitable[str]":
        """The run that answers one message: the fake agent of agent.py (another backend, such as
        examples/langgraph-agent, overrides this and keeps the rest)."""
        return answer(self.pub, user_id, question, thread_id, run_id=run_id, pace=self.pace)

    async def aclose(self) -> None:
        """Cancels the runs still going (each ends with agent_cancelled)."""
        tasks = [task for _, task in self.runs.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)


class HTTPServer:
    """A started :func:`serve`: ``port`` it listens on; ``close()`` stops it and drops its
    connections (Herald keeps idle ones open for reuse)."""

    def __init__(self, server: asyncio.AbstractServer, writers: "set[asyncio.StreamWriter]") -> None:
        self.server = server
        self.writers = writers
        self.port: int = server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.server.close()
        for writer in list(self.writers):
            writer.close()
        await self.server.wait_closed()


async def serve(backend: Any, host: str = "127.0.0.1", port: int = 8000) -> HTTPServer:
    """A minimal HTTP/1.1 server (keep-alive): every POST goes to ``await backend.handle(signature
    header, raw body)`` -> (status, JSON body)."""
    writers: "set[asyncio.StreamWriter]" = set()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        try:
            while True:  # keep-alive: Herald reuses its connections
                request_line = (await reader.readline()).decode("latin-1")
                if not request_line:
                    break
                headers: Dict[str, str] = {}
                while (line := (await reader.readline()).decode("latin-1").strip()):
                    key, _, value = line.partition(":")
                    headers[key.strip().lower()] = value.strip()
                raw = await reader.readexactly(int(headers.get("content-length", "0")))
                if request_line.startswith("POST "):
                    status, body = await backend.handle(headers.get(SIGNATURE_HEADER.lower()), raw)
                else:
                    status, body = 405, {"error": "POST only"}
                data = json.dumps(body).encode()
                reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed"}
                writer.write(
                    f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n".encode() + data
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writers.discard(writer)
            writer.close()

    return HTTPServer(await asyncio.start_server(on_connection, host, port), writers)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--url", default=os.environ.get("HERALD_URL", "http://127.0.0.1:7400"))
    parser.add_argument("--api-key", default=os.environ.get("HERALD_API_KEY"))
    parser.add_argument("--secret", default=os.environ.get("HERALD_UPSTREAM_SECRET"))
    args = parser.parse_args()
    if not args.api_key:
        parser.error("set --api-key or HERALD_API_KEY (herald serve --dev prints one)")
    if not args.secret:
        parser.error("set --secret or HERALD_UPSTREAM_SECRET (the same as herald serve --upstream-secret)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per published event otherwise

    async with AsyncPublisher(args.url, args.api_key) as pub:
        await serve_until_stopped(Backend(pub, args.secret), args.host, args.port)
    return 0


async def serve_until_stopped(backend: Any, host: str, port: int) -> None:
    """Serves ``backend`` until Ctrl-C, then closes the server and cancels the runs still going."""
    server = await serve(backend, host, port)
    print(f"upstream listening on http://{host}:{server.port}/herald (pass it to --upstream-url)", file=sys.stderr)
    try:
        await asyncio.Event().wait()  # until Ctrl-C
    finally:
        await server.close()
        await backend.aclose()


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        pass
