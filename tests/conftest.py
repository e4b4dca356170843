"""Shared fixtures: real servers on loopback, created by factories that tear down what they made."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

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


@pytest.fixture
async def sandbox_factory() -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Starts sandboxes on 127.0.0.1 with the given timing knobs (seconds)."""
    from sandbox.app import Sandbox, SandboxSettings

    made: list[Any] = []

    async def make(**knobs: Any) -> Any:
        sb = Sandbox(SandboxSettings(**knobs), host="127.0.0.1", port=0)
        await sb.start()
        made.append(sb)
        return sb

    yield make
    for sb in reversed(made):
        await sb.aclose()


@pytest.fixture
async def sandbox(sandbox_factory: Callable[..., Awaitable[Any]]) -> Any:
    """A sandbox with short QR lifetimes, so tests run fast."""
    return await sandbox_factory(first_qr_ttl=5.0, qr_ttl=2.0, qr_count=6)
