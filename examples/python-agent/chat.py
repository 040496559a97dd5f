"""Sends one question on the Herald socket (upstream to the backend) and prints the run it starts.

    python chat.py --token <JWT> "What is Herald?"
    python chat.py --token <JWT> --cancel-after-s 0.5 "What is Herald?"   # then cancel the run

The message goes up the same socket the events come down: Herald forwards it, signed, to its
--upstream-url (upstream.py here), which answers with the run id; the run's events follow.
Settings: --url / HERALD_URL (default http://127.0.0.1:7400), --token / HERALD_TOKEN.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Optional

from herald_client import Client, HeraldError

TERMINAL = {"agent_completed", "agent_error", "agent_cancelled"}


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("question", nargs="?", default="What is Herald?")
    parser.add_argument("--url", default=os.environ.get("HERALD_URL", "http://127.0.0.1:7400"))
    parser.add_argument("--token", default=os.environ.get("HERALD_TOKEN"))
    parser.add_argument("--thread", default=None)
    parser.add_argument("--cancel-after-s", type=float, default=None, help="cancel the run after this long")
    args = parser.parse_args()
    if not args.token:
        parser.error("set --token or HERALD_TOKEN (herald serve --dev prints one)")

    try:
        async with Client(args.url, args.token) as client:
            await client.wait_synced(timeout=10)
            ack = await client.send(args.thread, {"text": args.question})
            print(f"-- ack {ack.status} {json.dumps(ack.body)}", flush=True)
            run_id: Optional[str] = (ack.body or {}).get("run_id") if isinstance(ack.body, dict) else None
            if run_id is None:
                return 0
            canceller = None
            if args.cancel_after_s is not None:

                async def cancel_later() -> None:
                    await asyncio.sleep(args.cancel_after_s)
                    try:
                        answer = await client.cancel(run_id)
                    except HeraldError as e:  # e.g. the run had already ended (backend 404)
                        print(f"-- cancel refused: {e}", flush=True)
                        return
                    print(f"-- cancel ack {answer.status} {json.dumps(answer.body)}", flush=True)

                canceller = asyncio.create_task(cancel_later())
            async for e in client:
                if e.run_id != run_id:
                    continue
                print(f"{e.seq:>4} {e.event:<16} {json.dumps(e.data)}", flush=True)
                if e.event in TERMINAL:
                    break
            if canceller is not None:
                if e.event == "agent_cancelled":
                    await canceller  # the backend acks once the run has ended: print its answer
                else:
                    canceller.cancel()
    except HeraldError as e:
        print(f"herald: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        pass
