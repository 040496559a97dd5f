#!/usr/bin/env python3
"""Streams one answer through POST /v1/agui/events the way an agent posting as it goes does: one
TEXT_MESSAGE_CONTENT per request, to a run the batch does not name (Herald continues the
thread's active run). Prints the mean request time of the first and of the last 200 deltas:
equal when the cost of a delta does not grow with the answer.

    herald serve --listen 127.0.0.1:7400 --publish-rate-per-s 0 &   # HERALD_API_KEY set
    python3 bench/agui_deltas.py 7400 6000

Standard library only; talks to 127.0.0.1.
"""
import http.client
import json
import os
import sys
import time


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: agui_deltas.py PORT DELTAS   (HERALD_API_KEY in the environment)")
    port, n = int(sys.argv[1]), int(sys.argv[2])
    if n < 400:
        sys.exit("DELTAS must be at least 400 (the first and the last 200 are compared)")
    key = os.environ.get("HERALD_API_KEY") or sys.exit("set HERALD_API_KEY (the server's API key)")
    con = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}

    def post(events: list) -> None:
        con.request("POST", "/v1/agui/events", json.dumps({"user_id": "u", "thread_id": "t", "events": events}), headers)
        response = con.getresponse()
        body = response.read()
        if response.status != 200:
            sys.exit(f"POST /v1/agui/events answered {response.status}: {body.decode(errors='replace')}")

    post([{"type": "RUN_STARTED", "threadId": "t", "runId": f"r{time.time_ns()}"},
          {"type": "TEXT_MESSAGE_START", "messageId": "m", "role": "assistant"}])
    took = []
    for i in range(n):
        started = time.perf_counter()
        post([{"type": "TEXT_MESSAGE_CONTENT", "messageId": "m", "delta": f"word{i:05d} " * 10}])
        took.append(time.perf_counter() - started)
    first, last = sum(took[:200]) / 200, sum(took[-200:]) / 200
    print(f"{n} deltas of ~100 B: first 200 {first * 1e6:.0f} us/request, last 200 {last * 1e6:.0f} us/request")


if __name__ == "__main__":
    main()
