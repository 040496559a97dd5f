#!/usr/bin/env python3
"""The Redis engine's append script alone: what one call costs Redis, per event and per command.

Calls crates/herald-server/src/engine/redis/append.lua the way a node does — USERS users per call,
EVENTS `agent_text` events per user, each in a run, 200-byte deltas, no publisher ids — on a
private redis-server started here on a free port, and prints `EVALSHA`'s time per event and the
commands the script ran (`INFO commandstats`, reset after a warm-up). Herald is not involved, so
this isolates the script from the network, pub/sub and the node: use it to compare versions of
the script (SCRIPT=path/to/other.lua), then confirm with bench/redis_engine.py.

    python3 bench/append_script.py                  # 20 users x 1 event per call (the compare workload's shape)
    USERS=1 EVENTS=20 python3 bench/append_script.py # one user's batch of 20 (a token stream)
    LONG_RUN=1 python3 bench/append_script.py       # a run longer than the window (the worst case)

Needs redis-server. Stops what it started.
"""

import os
import pathlib
import socket
import subprocess
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = pathlib.Path(os.environ.get("SCRIPT", ROOT / "crates/herald-server/src/engine/redis/append.lua"))
USERS = int(os.environ.get("USERS", "20"))
EVENTS = int(os.environ.get("EVENTS", "1"))
CALLS = int(os.environ.get("CALLS", "3000"))
# The run never ends (every event is moved to the run's list when it leaves the window); by
# default the run's events leave the window after it ended (as most runs do), and are not.
LONG_RUN = os.environ.get("LONG_RUN") == "1"


class Redis:
    """A minimal RESP client (one connection, one command at a time)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.file = self.sock.makefile("rb")

    def __call__(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self.read()

    def read(self):
        line = self.file.readline()
        kind, rest = line[:1], line[1:-2]
        if kind in (b"+", b":"):
            return int(rest) if kind == b":" else rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.file.read(n + 2)[:-2]
        if kind == b"*":
            return [self.read() for _ in range(int(rest))]
        raise RuntimeError(f"unexpected reply {line!r}")


def ns(b):
    return b"%d:%s" % (len(b), b)


def main():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="herald-append-")
    server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                               "--dir", workdir], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                r = Redis(port)
                r("PING")
                break
            except OSError:
                time.sleep(0.05)
        sha = r("SCRIPT", "LOAD", SCRIPT.read_bytes())
        tail = b',"id":"gen-0123456789","user_id":"u","run_id":"r","event":"agent_text",' \
               b'"timestamp":"2026-12-01T14:00:00.000Z","data":{"delta":"' + b"x" * 200 + b'"}}'
        keys, args = [], [1000, 900_000, "PUBLISH", int(time.time() * 1000), USERS]
        for u in range(USERS):
            user = [b"b:{u%d}:%s" % (u, n) for n in (b"meta", b"log", b"ids", b"runs", b"live")]
            r("HSET", user[0], "epoch", "0123456789abcdef", "seq", 0, "rv", 0)
            r("HSET", user[3], "r", "{}")
            if LONG_RUN:
                r("ZADD", user[4], 0, "r")
            keys += user
            args += ["new-epoch", b"b:{u%d}:ch" % u, "0123456789abcdef:0", 0, EVENTS]
            args += ["", "0", "", "agent_text"] * EVENTS  # no publisher id; not a run's start or end
            args += [ns(b"1764590000000") + ns(b"gen-0123456789") + ns(b"r") + ns(b"agent_text") + ns(tail)] * EVENTS
        call = ("EVALSHA", sha, len(keys), *keys, *args)
        first = r(*call)
        assert first[0] == "ok" or first[0] == b"ok", first
        for _ in range(200):
            r(*call)
        r("CONFIG", "RESETSTAT")
        started = time.time()
        for _ in range(CALLS):
            r(*call)
        wall = time.time() - started
        stats = {}
        for line in r("INFO", "commandstats").decode().splitlines():
            if line.startswith("cmdstat_"):
                name, fields = line[8:].split(":", 1)
                kv = dict(f.split("=") for f in fields.split(","))
                stats[name] = (int(kv["calls"]), float(kv["usec"]))
        events = CALLS * USERS * EVENTS
        print(f"{SCRIPT.name}: {USERS} users x {EVENTS} events per call, {CALLS} calls"
              + (", a run longer than the window" if LONG_RUN else ""))
        print(f"evalsha: {stats['evalsha'][1] / events:.2f} µs per event "
              f"({stats['evalsha'][1] / CALLS:.0f} µs per call; wall {wall / CALLS * 1e6:.0f} µs per call)")
        print("| command | calls per event | µs per event |\n|---|---:|---:|")
        for name, (calls, usec) in sorted(stats.items(), key=lambda kv: -kv[1][1]):
            if name not in ("evalsha", "config|resetstat"):
                print(f"| {name} | {calls / events:.2f} | {usec / events:.2f} |")
    finally:
        server.kill()
        server.wait()
        subprocess.run(["rm", "-rf", workdir])


if __name__ == "__main__":
    main()
