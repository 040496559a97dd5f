"""Test helpers: a task that iterates a Client and lets tests await conditions on what arrived."""

from __future__ import annotations

import asyncio
from typing import Any, Callable, List, Optional, Tuple

from herald_client import AsyncPublisher, Client, Event, Welcome

WAIT_S = 15.0


class Collector:
    """Iterates ``client`` in a task; records events and resets; ``wait`` awaits a condition."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.events: List[Event] = []
        self.resets: List[Welcome] = []
        self.welcomes: List[Welcome] = []
        self.error: Optional[BaseException] = None
        self._changed = asyncio.Condition()
        client.on_reset = self._on_reset
        client.on_welcome = self._on_welcome
        self.task = asyncio.get_running_loop().create_task(self._consume())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _on_reset(self, welcome: Welcome) -> None:
        self.resets.append(welcome)
        await self._notify()

    async def _on_welcome(self, welcome: Welcome) -> None:
        self.welcomes.append(welcome)
        await self._notify()

    async def _consume(self) -> None:
        try:
            async for event in self.client:
                self.events.append(event)
                await self._notify()
        except Exception as e:  # noqa: BLE001
            self.error = e
        finally:
            await self._notify()

    async def wait(self, predicate: Callable[["Collector"], bool], timeout: float = WAIT_S) -> None:
        async def until() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self) or self.task.done())
            if not predicate(self):
                raise AssertionError(f"consumer ended ({self.error!r}) before the condition held; events: {self.names()}")

        await asyncio.wait_for(until(), timeout)

    async def wait_events(self, n: int, timeout: float = WAIT_S) -> List[Event]:
        await self.wait(lambda c: len(c.events) >= n, timeout)
        return self.events

    async def wait_event(self, name: str, timeout: float = WAIT_S) -> Event:
        await self.wait(lambda c: any(e.event == name for e in c.events), timeout)
        return next(e for e in self.events if e.event == name)

    def names(self) -> List[str]:
        return [e.event for e in self.events]

    async def stop(self) -> None:
        await self.client.close()
        await asyncio.wait_for(self.task, WAIT_S)


async def connected(server, token: str) -> Collector:
    """A collected Client of ``token``'s user on ``server``, past its first ``synced``."""
    client = Client(server.url, token)
    collector = Collector(client)
    await client.wait_synced(timeout=10)
    return collector


class UpstreamLoops:
    """Example backends behind Herald's upstream: ``start`` serves a backend (its ``pub`` set once
    Herald's URL is known) and starts Herald forwarding to it; ``close`` stops them all."""

    def __init__(self, herald: Callable[..., Any], secret: str) -> None:
        self.herald = herald
        self.secret = secret
        self.started: List[Tuple[Any, Any]] = []

    async def start(self, backend: Any, serve: Callable[..., Any], herald_secret: Optional[str] = None) -> Any:
        from conftest import API_KEY

        http = await serve(backend, "127.0.0.1", 0)
        server = self.herald("--upstream-url", f"http://127.0.0.1:{http.port}/herald", "--upstream-secret", herald_secret or self.secret)
        backend.pub = AsyncPublisher(server.url, API_KEY)
        self.started.append((backend, http))
        return server

    async def close(self) -> None:
        for backend, http in self.started:
            await backend.aclose()
            await http.close()
            await backend.pub.aclose()
