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
    FLOOR=1 python3 bench/append_script.py          # and, in the same run, what less work would cost
    REDIS_SERVER=/path/to/valkey-server python3 bench/append_script.py   # another server

FLOOR=1 adds four rows measured the same way on the same server, to show how far the script is
from the least any append could cost Redis: the four commands a per-user seq needs (meta HMGET,
XADD, PUBLISH, meta HSET) in a script with nothing else; the same four commands pipelined with no
script; and a script that keeps no per-user state but the stream (XADD with an auto-seq id, then
PUBLISH), which Herald's checks (epoch, run states, idempotency, retention) could not live with;
and that stream and PUBLISH pipelined with no script at all.

Needs redis-server (or the server REDIS_SERVER names). Stops what it started.
"""

import os
import pathlib
import socket
import subprocess
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = pathlib.Path(os.environ.get("SCRIPT", ROOT / "crates/herald-server/src/engine/redis/append.lua"))
# Another server speaking the same protocol (e.g. a valkey-server binary) to measure instead.
SERVER = os.environ.get("REDIS_SERVER", "redis-server")
USERS = int(os.environ.get("USERS", "20"))
EVENTS = int(os.environ.get("EVENTS", "1"))
CALLS = int(os.environ.get("CALLS", "3000"))
# The run never ends (every event is moved to the run's list when it leaves the window); by
# default the run's events leave the window after it ended (as most runs do), and are not.
LONG_RUN = os.environ.get("LONG_RUN") == "1"
FLOOR = os.environ.get("FLOOR") == "1"
TICK = os.sysconf("SC_CLK_TCK")

# FLOOR=1: the four commands per user that a per-user seq needs, and nothing else (no checks, no
# message header, no retention). Same KEYS and ARGV as append.lua.
FOUR_COMMANDS = b"""
local a, out = 6, {}
for u = 1, tonumber(ARGV[5]) do
  local k = (u - 1) * 5
  local meta = redis.call('HMGET', KEYS[k + 1], 'epoch', 'seq', 'x', 't', 'rv')
  local channel = ARGV[a + 1]
  a = a + 4 + tonumber(ARGV[a + 3]) * 2
  local nev = tonumber(ARGV[a]); a = a + 1
  local records, seq = a + nev * 4, tonumber(meta[2]) or 0
  for e = 0, nev - 1 do
    seq = seq + 1
    redis.call('XADD', KEYS[k + 2], string.format('%d', seq), 'e', ARGV[records + e])
  end
  redis.call('PUBLISH', channel, ARGV[records])
  redis.call('HSET', KEYS[k + 1], 'seq', string.format('%d', seq))
  a = records + nev
  out[u] = '0\\n'
end
return {'ok', table.concat(out)}
"""
# FLOOR=1: no per-user state but the stream: Redis numbers the entries (`1-*`).
STREAM_ONLY = FOUR_COMMANDS.replace(
    b"local meta = redis.call('HMGET', KEYS[k + 1], 'epoch', 'seq', 'x', 't', 'rv')", b"").replace(
    b", tonumber(meta[2]) or 0", b", 0").replace(
    b"redis.call('XADD', KEYS[k + 2], string.format('%d', seq), 'e', ARGV[records + e])",
    b"redis.call('XADD', KEYS[k + 2], '1-*', 'e', ARGV[records + e])").replace(
    b"  redis.call('HSET', KEYS[k + 1], 'seq', string.format('%d', seq))\n", b"")


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


def call_args(r, prefix):
    """Creates USERS users under `prefix` and returns the script's KEYS and ARGV for one call."""
    tail = b',"id":"gen-0123456789","user_id":"u","run_id":"r","event":"agent_text",' \
           b'"timestamp":"2026-12-01T14:00:00.000Z","data":{"delta":"' + b"x" * 200 + b'"}}'
    keys, args = [], [1000, 900_000, "PUBLISH", int(time.time() * 1000), USERS]
    for u in range(USERS):
        user = [b"%s:{u%d}:%s" % (prefix, u, n) for n in (b"meta", b"log", b"ids", b"runs", b"live")]
        r("HSET", user[0], "epoch", "0123456789abcdef", "seq", 0, "rv", 0)
        r("HSET", user[3], "r", "{}")
        if LONG_RUN:
            r("ZADD", user[4], 0, "r")
        keys += user
        args += ["new-epoch", b"%s:{u%d}:ch" % (prefix, u), "0123456789abcdef:0", 0, EVENTS]
        args += ["", "0", "", "agent_text"] * EVENTS  # no publisher id; not a run's start or end
        args += [ns(b"1764590000000") + ns(b"gen-0123456789") + ns(b"r") + ns(b"agent_text") + ns(tail)] * EVENTS
    return keys, args


def pipelined(keys, args, meta=True):
    """The four commands of FOUR_COMMANDS for every user of one call (without `meta`: only XADD
    and PUBLISH), as one pipeline with no script; returns a function that sends them and reads
    the replies."""
    seq = [0]

    def send(r):
        seq[0] += EVENTS
        out, a = [], 6
        for u in range(USERS):
            meta_key, log = keys[u * 5], keys[u * 5 + 1]
            channel, records = args[a], a + 4 + EVENTS * 4
            cmds = [("XADD", log, seq[0] - EVENTS + e + 1, "e", args[records + e]) for e in range(EVENTS)]
            cmds.append(("PUBLISH", channel, args[records]))
            if meta:
                cmds += [("HMGET", meta_key, "epoch", "seq", "x", "t", "rv"), ("HSET", meta_key, "seq", seq[0])]
            for cmd in cmds:
                out.append(b"*%d\r\n" % len(cmd))
                for x in cmd:
                    x = x if isinstance(x, bytes) else str(x).encode()
                    out.append(b"$%d\r\n%s\r\n" % (len(x), x))
            a = records + EVENTS
        r.sock.sendall(b"".join(out))
        for _ in range(USERS * (EVENTS + (3 if meta else 1))):
            r.read()
    return send


def measure(r, server, send):
    """Runs `send` CALLS times after a warm-up; returns redis-server's CPU (from /proc) per event,
    the wall time per call and `INFO commandstats` as {name: (calls, usec)}."""
    for _ in range(200):
        send()
    r("CONFIG", "RESETSTAT")
    cpu, started = cpu_s(server.pid), time.time()
    for _ in range(CALLS):
        send()
    wall, cpu = time.time() - started, cpu_s(server.pid) - cpu
    stats = {}
    for line in r("INFO", "commandstats").decode().splitlines():
        if line.startswith("cmdstat_"):
            name, fields = line[8:].split(":", 1)
            kv = dict(f.split("=") for f in fields.split(","))
            stats[name] = (int(kv["calls"]), float(kv["usec"]))
    return cpu / (CALLS * USERS * EVENTS) * 1e6, wall / CALLS * 1e6, stats


def cpu_s(pid):
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def main():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="herald-append-")
    server = subprocess.Popen([SERVER, "--port", str(port), "--save", "", "--appendonly", "no",
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
        keys, args = call_args(r, b"b")
        call = ("EVALSHA", sha, len(keys), *keys, *args)
        first = r(*call)
        assert first[0] == "ok" or first[0] == b"ok", first
        cpu, wall, stats = measure(r, server, lambda: r(*call))
        events = CALLS * USERS * EVENTS
        info = dict(line.split(":", 1) for line in r("INFO", "server").decode().splitlines() if ":" in line)
        name = info.get("server_name", "redis")
        version = info.get(f"{name}_version", info.get("redis_version", "?"))
        print(f"{SCRIPT.name} on {name} {version}: {USERS} users x {EVENTS} events per call, {CALLS} calls"
              + (", a run longer than the window" if LONG_RUN else ""))
        print(f"evalsha: {stats['evalsha'][1] / events:.2f} µs per event "
              f"({stats['evalsha'][1] / CALLS:.0f} µs per call; wall {wall:.0f} µs per call); "
              f"server CPU {cpu:.2f} µs per event")
        print("| command | calls per event | µs per event |\n|---|---:|---:|")
        for name, (calls, usec) in sorted(stats.items(), key=lambda kv: -kv[1][1]):
            if name not in ("evalsha", "config|resetstat"):
                print(f"| {name} | {calls / events:.2f} | {usec / events:.2f} |")
        if not FLOOR:
            return
        rows = [(SCRIPT.name, cpu, stats["evalsha"][1] / events)]
        for name, prefix, script in [("four commands in a script, nothing else", b"f", FOUR_COMMANDS),
                                     ("the stream and PUBLISH only, in a script", b"s", STREAM_ONLY)]:
            keys, args = call_args(r, prefix)
            call = ("EVALSHA", r("SCRIPT", "LOAD", script), len(keys), *keys, *args)
            cpu, _, stats = measure(r, server, lambda: r(*call))
            rows.append((name, cpu, stats["evalsha"][1] / events))
        for name, prefix, meta in [("four commands pipelined, no script", b"p", True),
                                   ("the stream and PUBLISH only, pipelined, no script", b"q", False)]:
            keys, args = call_args(r, prefix)
            send = pipelined(keys, args, meta)
            cpu, _, _ = measure(r, server, lambda: send(r))
            rows.append((name, cpu, None))
        print("\n| what Redis runs per user | redis-server CPU µs per event | of which EVALSHA |\n|---|---:|---:|")
        for name, cpu, evalsha in rows:
            print(f"| {name} | {cpu:.2f} | {'' if evalsha is None else f'{evalsha:.2f}'} |")
    finally:
        server.kill()
        server.wait()
        subprocess.run(["rm", "-rf", workdir])


if __name__ == "__main__":
    main()
