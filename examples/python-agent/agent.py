"""A fake agent that streams runs to Herald through the herald_client SDK.

One run per question: agent_started, agent_thinking, two tool calls (tool_executing /
tool_completed with measured durations), the answer streamed as agent_text, agent_completed.
If anything in the run raises, the Run helper publishes agent_error instead (try --fail).

    python agent.py --user dev-user "What is Herald?"          # one run, then exit
    python agent.py --serve 8000                               # POST /ask {"user_id","question"}

Settings: --url / HERALD_URL (default http://127.0.0.1:7400), --api-key / HERALD_API_KEY.
Plain asyncio and the SDK only: no web framework needed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Optional

from herald_client import AsyncPublisher, HeraldError, new_id


async def answer(pub: AsyncPublisher, user_id: str, question: str, thread_id: Optional[str] = None,
                 fail: bool = False, run_id: Optional[str] = None, pace: float = 1.0) -> str:
    """Runs the fake agent for one question; returns the run id. ``pace`` scales its pauses."""
    async with pub.run(user_id, thread_id, run_id=run_id, data={"question": question}) as run:
        print(f"run {run.run_id} for {user_id}: {question!r}", file=sys.stderr)
        await run.thinking(f"The user asks {question!r}. I will search the web, then read the best hit.")

        async with run.tool("web_search", {"query": question}) as search:
            await asyncio.sleep(0.4 * pace)  # pretend to call a search API
            search.result = [
                {"title": "Herald: real-time gateway for agent runs", "url": "https://example.com/herald"},
                {"title": "Delivering events without loss", "url": "https://example.com/delivery"},
            ]

        await run.thinking("The first result looks right; reading it.")
        async with run.tool("read_page", {"url": search.result[0]["url"]}) as page:
            await asyncio.sleep(0.3 * pace)  # pretend to fetch and summarise the page
            if fail:
                raise RuntimeError("read_page: upstream returned 502")
            page.result = {"chars": 5120, "summary": "Herald delivers agent run events to the right user, in order."}

        final = (
            "Herald is a gateway that delivers the events of AI-agent runs to the browsers of the users "
            "who started them: to the right user only, in order, and without loss across reconnects."
        )
        for word in final.split(" "):  # stream the answer as it is "generated"
            await run.text(word + " ")
            await asyncio.sleep(0.02 * pace)
        await run.complete(final)
    return run.run_id


async def serve(pub: AsyncPublisher, port: int) -> None:
    """A minimal HTTP endpoint: POST /ask {"user_id","question","thread_id"?} -> 202 {"run_id"}."""
    tasks: set = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        status, body = 404, {"error": "POST /ask"}
        try:
            request_line = (await reader.readline()).decode()
            headers = {}
            while (line := (await reader.readline()).decode().strip()):
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
            raw = await reader.readexactly(int(headers.get("content-length", "0")))
            if request_line.startswith("POST /ask "):
                req = json.loads(raw or b"{}")
                if not req.get("user_id") or not req.get("question"):
                    status, body = 400, {"error": "user_id and question are required"}
                else:
                    run_id = new_id()
                    task = asyncio.create_task(
                        answer(pub, req["user_id"], req["question"], req.get("thread_id"), run_id=run_id)
                    )
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    status, body = 202, {"run_id": run_id}
        except (ValueError, asyncio.IncompleteReadError) as e:
            status, body = 400, {"error": str(e)}
        data = json.dumps(body).encode()
        reason = {202: "Accepted", 400: "Bad Request", 404: "Not Found"}[status]
        writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print(f"agent listening on http://127.0.0.1:{port}/ask", file=sys.stderr)
    async with server:
        await server.serve_forever()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("question", nargs="?", default="What is Herald?")
    parser.add_argument("--url", default=os.environ.get("HERALD_URL", "http://127.0.0.1:7400"))
    parser.add_argument("--api-key", default=os.environ.get("HERALD_API_KEY"))
    parser.add_argument("--user", default="dev-user")
    parser.add_argument("--thread", default=None)
    parser.add_argument("--fail", action="store_true", help="make the second tool fail (agent_error)")
    parser.add_argument("--serve", type=int, metavar="PORT", help="serve POST /ask instead of one run")
    args = parser.parse_args()
    if not args.api_key:
        parser.error("set --api-key or HERALD_API_KEY (herald serve --dev prints one)")

    async with AsyncPublisher(args.url, args.api_key) as pub:
        if args.serve:
            await serve(pub, args.serve)
            return 0
        try:
            run_id = await answer(pub, args.user, args.question, args.thread, fail=args.fail)
        except HeraldError as e:
            print(f"herald refused an event: {e}", file=sys.stderr)
            return 1
        except RuntimeError as e:
            print(f"the run failed (agent_error was published): {e}", file=sys.stderr)
            return 1
        print(f"run {run_id} completed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
