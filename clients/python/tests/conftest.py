"""Fixtures: a real Herald binary per test (``HERALD_BIN``, default ../../target/debug/herald),
HS256 tokens signed here with the server's secret, and a fresh user id per test."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[3]
JWT_SECRET = "test-secret-0123456789abcdef"
API_KEY = "test-api-key"
LISTENING = re.compile(r"listening on http://([0-9.]+):(\d+)")


def herald_bin() -> Path:
    path = Path(os.environ.get("HERALD_BIN") or REPO / "target" / "debug" / "herald")
    if not path.is_file():
        pytest.fail(f"Herald binary not found at {path}: run `cargo build -p herald` or set HERALD_BIN")
    return path


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_token(sub: str, ttl_s: float = 3600, secret: str = JWT_SECRET, exp: Optional[int] = None) -> str:
    """An HS256 JWT with ``sub`` and ``exp``, signed by hand (no PyJWT needed)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"sub": sub, "exp": exp if exp is not None else int(time.time() + ttl_s)}
    payload = _b64(json.dumps(claims).encode())
    mac = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(mac)}"


class HeraldServer:
    """One `herald serve` process on 127.0.0.1; the port is read from its log line."""

    def __init__(self, *flags: str) -> None:
        self.flags = list(flags)
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None
        self.log: List[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "HeraldServer":
        env = dict(os.environ, HERALD_JWT_SECRET=JWT_SECRET, HERALD_API_KEY=API_KEY, NO_COLOR="1")
        env.pop("HERALD_LISTEN", None)
        cmd = [str(herald_bin()), "serve", "--listen", f"127.0.0.1:{self.port}", *self.flags]
        self.proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        ready = threading.Event()
        found: Dict[str, int] = {}

        def drain(stream) -> None:  # keeps reading so the pipe never fills
            for line in stream:
                self.log.append(line)
                match = LISTENING.search(line)
                if match and not ready.is_set():
                    found["port"] = int(match.group(2))
                    ready.set()
            ready.set()

        threading.Thread(target=drain, args=(self.proc.stderr,), daemon=True).start()
        if not ready.wait(30) or "port" not in found:
            self.stop()
            raise RuntimeError(f"herald did not start: {' '.join(cmd)}\n{''.join(self.log)}")
        self.port = found["port"]
        return self

    def stop(self) -> int:
        """SIGTERM (drain) and wait; returns the exit code."""
        if self.proc is None:
            return 0
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise
        return proc.returncode

    def restart(self) -> "HeraldServer":
        """Stops and starts again on the same port (the memory engine starts a new epoch)."""
        self.stop()
        return self.start()


@pytest.fixture
def herald():
    """Factory: ``herald("--history-size", "5")`` starts a server with extra flags."""
    servers: List[HeraldServer] = []

    def start(*flags: str) -> HeraldServer:
        server = HeraldServer(*flags).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(herald) -> HeraldServer:
    return herald()


@pytest.fixture
def user() -> str:
    return f"u-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def token(user: str) -> str:
    return make_token(user)
