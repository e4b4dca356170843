"""Helpers for tests with real parts: waiting on conditions, the simulated phone, event streams."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

# Generous: these tests run on loaded 2-core machines.
DEADLINE = float(os.environ.get("MESH_TEST_DEADLINE", "60"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for(
    predicate: Callable[[], Awaitable[bool] | bool],
    *,
    timeout: float = DEADLINE,
    interval: float = 0.05,
    what: str = "condition",
) -> None:
    """Poll `predicate` until it is true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


async def phone(sandbox_url: str, action: str, **body: Any) -> tuple[int, dict[str, Any]]:
    """Call the sandbox's simulated phone: POST /phone/<action> with a JSON body."""
    import aiohttp

    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{sandbox_url.rstrip('/')}/phone/{action}", json=body) as resp,
    ):
        return resp.status, await resp.json()


async def phone_get(sandbox_url: str, action: str, **query: str) -> dict[str, Any]:
    """GET /phone/<action>?<query> of the sandbox's simulated phone (devices, messages)."""
    import aiohttp

    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{sandbox_url.rstrip('/')}/phone/{action}", params=query) as resp,
    ):
        assert resp.status == 200, await resp.text()
        data: dict[str, Any] = await resp.json()
        return data


async def conflicts(sandbox_url: str) -> dict[str, int]:
    import aiohttp

    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{sandbox_url.rstrip('/')}/phone/conflicts") as resp,
    ):
        data: dict[str, int] = await resp.json()
        return data


class Watcher:
    """Reads a WatchSession stream in the background; tests wait on what it has seen."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.events: list[Any] = []
        self.error: BaseException | None = None
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for event in self.call:
                self.events.append(event)
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # the test decides whether an error matters
            self.error = e

    def states(self) -> list[int]:
        return [e.state.state for e in self.events if e.WhichOneof("event") == "state"]

    def qrs(self) -> list[Any]:
        return [e.qr for e in self.events if e.WhichOneof("event") == "qr"]

    async def wait(
        self, predicate: Callable[[Watcher], bool], what: str, timeout: float = DEADLINE
    ) -> None:
        def check() -> bool:
            if predicate(self):
                return True
            if self.error is not None:
                raise AssertionError(f"stream ended with {self.error!r} while waiting for {what}")
            return False

        await wait_for(check, timeout=timeout, what=f"{what}; saw states {self.states()}")

    async def wait_state(self, state: int, timeout: float = DEADLINE) -> None:
        await self.wait(lambda w: state in w.states(), f"state {state}", timeout)

    async def wait_qr(self, count: int = 1, timeout: float = DEADLINE) -> Any:
        await self.wait(lambda w: len(w.qrs()) >= count, f"{count} QR events", timeout)
        return self.qrs()[count - 1]

    async def aclose(self) -> None:
        self.call.cancel()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
