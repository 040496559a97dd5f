"""Watches one user's events with the herald_client Client (reconnects and resumes by itself).

    python watch.py --token <JWT>            # HERALD_TOKEN and HERALD_URL work too
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from herald_client import Client, HeraldError, Welcome


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("HERALD_URL", "http://127.0.0.1:7400"))
    parser.add_argument("--token", default=os.environ.get("HERALD_TOKEN"))
    args = parser.parse_args()
    if not args.token:
        parser.error("set --token or HERALD_TOKEN (herald serve --dev prints one)")

    def on_welcome(w: Welcome) -> None:
        print(f"-- connected as {w.user_id} (epoch {w.epoch}, seq {w.seq}, recovery {w.recovery})", flush=True)

    def on_reset(w: Welcome) -> None:
        print("-- the server lost our place (restart?): reload state; active runs follow", flush=True)

    try:
        async with Client(args.url, args.token, on_welcome=on_welcome, on_reset=on_reset) as client:
            async for e in client:
                print(f"{e.seq:>4} {e.ts} {e.run_id or '-':<12.12} {e.event:<16} {json.dumps(e.data)}", flush=True)
    except HeraldError as e:
        print(f"herald: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        pass
