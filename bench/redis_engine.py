#!/usr/bin/env python3
"""The memory engine and the Redis engine side by side, with Redis's own cost.

Runs the compare workload (50 users x 2 connections, 4 publishers, batches of 20, 200-byte
payload) with `herald bench` against one Herald on the memory engine and one on the Redis engine,
in interleaved rounds. The Redis engine uses a private redis-server started here on a free port
(so no other client's work is counted), or a Redis Cluster of 3 masters with CLUSTER=1. For every
run it reads Herald's and redis-server's CPU from /proc and `INFO commandstats` (reset before the
run), and prints delivered/s, CPU per delivered frame, redis-server CPU per appended event and the
per-command table.

    python3 bench/redis_engine.py                      # 2 rounds of 10 s
    ROUNDS=1 DURATION=5s HERALD_BIN=target/release/herald python3 bench/redis_engine.py
    CLUSTER=1 python3 bench/redis_engine.py            # the Redis engine on a 3-master cluster
    HERALD_ARGS="--redis-wait-replicas 1" REPLICA=1 python3 bench/redis_engine.py

Needs a release build (`cargo build --release -p herald`), redis-server and redis-cli.
"""

import json
import os
import pathlib
import secrets
import socket
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
HERALD = os.environ.get("HERALD_BIN", str(ROOT / "target/release/herald"))
ROUNDS = int(os.environ.get("ROUNDS", "2"))
DURATION = os.environ.get("DURATION", "10s")
CLUSTER = os.environ.get("CLUSTER") == "1"
REPLICA = os.environ.get("REPLICA") == "1"
ENGINES = os.environ.get("ENGINES", "memory redis").split()
WORKLOAD = ["--users", "50", "--conns-per-user", "2", "--publishers", "4", "--batch", "20",
            "--payload-bytes", "200", "--rate", "max", "--duration", DURATION]
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port < 55536:
            return port


def cpu_s(pid):
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True).stdout


def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


class Redis:
    """A private redis-server (or 3-master cluster; or master + replica with REPLICA=1)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="herald-bench-redis-")
        self.procs, self.ports = [], []
        count = 3 if CLUSTER else (2 if REPLICA else 1)
        for _ in range(count):
            port = free_port()
            args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--dir", self.dir]
            if CLUSTER:
                args += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
            self.procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL))
            self.ports.append(port)
        for port in self.ports:
            wait_port(port)
        if CLUSTER:
            subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                            "--cluster-yes"], capture_output=True, check=True)
            while not all("cluster_state:ok" in cli(p, "CLUSTER", "INFO") for p in self.ports):
                time.sleep(0.1)
        if REPLICA:
            cli(self.ports[1], "REPLICAOF", "127.0.0.1", str(self.ports[0]))
            while "master_link_status:up" not in cli(self.ports[1], "INFO", "replication"):
                time.sleep(0.1)
        self.masters = self.ports if CLUSTER else self.ports[:1]

    def url(self):
        return ",".join(f"redis://127.0.0.1:{p}" for p in self.masters)

    def cpu(self):
        return sum(cpu_s(p.pid) for p in self.procs)

    def reset_stats(self):
        for port in self.ports:
            cli(port, "CONFIG", "RESETSTAT")

    def commandstats(self):
        """{command: [calls, usec]} summed over the masters."""
        stats = {}
        for port in self.masters:
            for line in cli(port, "INFO", "commandstats").splitlines():
                if not line.startswith("cmdstat_"):
                    continue
                name, rest = line[len("cmdstat_"):].split(":", 1)
                kv = dict(item.split("=") for item in rest.split(","))
                entry = stats.setdefault(name, [0, 0])
                entry[0] += int(kv["calls"])
                entry[1] += int(kv["usec"])
        return stats

    def stop(self):
        for p in self.procs:
            p.kill()
            p.wait()
        subprocess.run(["rm", "-rf", self.dir])


def run(engine, redis, round_no):
    port = free_port()
    env = dict(os.environ, HERALD_JWT_SECRET=secrets.token_hex(32), HERALD_API_KEY=secrets.token_hex(16),
               RUST_LOG="warn")
    args = [HERALD, "serve", "--listen", f"127.0.0.1:{port}", "--max-connections-per-ip", "0",
            "--publish-rate-per-s", "0", "--engine", engine]
    if engine == "redis":
        args += ["--redis-url", redis.url(), "--redis-prefix", f"bench{round_no}"]
        if CLUSTER:
            args += ["--redis-cluster"]
        args += os.environ.get("HERALD_ARGS", "").split()
    server = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port)
        time.sleep(0.3)
        redis.reset_stats()
        redis_cpu = redis.cpu()
        out = subprocess.run([HERALD, "bench", "--url", f"http://127.0.0.1:{port}", "--server-pid",
                              str(server.pid), *WORKLOAD, "--json"], env=env, capture_output=True, text=True)
        redis_cpu = redis.cpu() - redis_cpu
        if out.returncode != 0:
            sys.exit(f"herald bench failed: {out.stderr[-2000:]}")
        result = json.loads(out.stdout)
        result["redis_cpu_s"] = redis_cpu if engine == "redis" else 0.0
        result["commandstats"] = redis.commandstats() if engine == "redis" else {}
        return result
    finally:
        server.kill()
        server.wait()


def main():
    redis = Redis()
    load = open("/proc/loadavg").read().split()[:3]
    print(f"{os.cpu_count()} cores, load {' '.join(load)}; herald {HERALD}; "
          f"{'cluster of 3 masters' if CLUSTER else 'one redis-server'}{' + replica' if REPLICA else ''}",
          file=sys.stderr)
    results = {e: [] for e in ENGINES}
    try:
        for round_no in range(ROUNDS):
            for engine in ENGINES:
                results[engine].append(run(engine, redis, round_no))
                print(f"round {round_no + 1}: {engine} done", file=sys.stderr)
    finally:
        redis.stop()
    med = lambda xs: sorted(xs)[len(xs) // 2]
    print(f"\n| engine | delivered/s | Herald CPU µs/frame | redis-server CPU µs/frame | total CPU µs/frame "
          f"| redis-server µs/appended event | lost+reordered |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for engine, runs in results.items():
        delivered = med([r["delivered_per_s"] for r in runs])
        herald = med([r["server_cpu_s"] * 1e6 / max(r["delivered"], 1) for r in runs])
        redis_frame = med([r["redis_cpu_s"] * 1e6 / max(r["delivered"], 1) for r in runs])
        # Appended events: the script's XADDs (commands inside scripts are counted too).
        published = med([r["redis_cpu_s"] * 1e6 / max(r["commandstats"].get("xadd", [1])[0], 1) for r in runs])
        lost = sum(r["lost"] + r["reordered"] for r in runs)
        print(f"| {engine} | {delivered:,.0f} | {herald:.1f} | {redis_frame:.1f} | {herald + redis_frame:.1f} "
              f"| {published:.1f} | {lost} |")
    for engine, runs in results.items():
        if engine != "redis":
            continue
        last = runs[-1]
        events = max(last["commandstats"].get("xadd", [1])[0], 1)
        print(f"\n`INFO commandstats`, last round ({events:,} events appended):\n")
        print("| command | calls per event | µs per call | µs per event |")
        print("|---|---:|---:|---:|")
        for name, (calls, usec) in sorted(last["commandstats"].items(), key=lambda kv: -kv[1][1]):
            print(f"| {name} | {calls / events:.3f} | {usec / max(calls, 1):.2f} | {usec / events:.2f} |")


if __name__ == "__main__":
    main()
