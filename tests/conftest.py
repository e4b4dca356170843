"""Shared fixtures: real servers on loopback, created by factories that tear down what they made."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.helpers import Watcher


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


@pytest.fixture
async def node_factory(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    """Starts NodeServers on 127.0.0.1 (free port); `make(wa_url, **settings)`. Stops them all."""
    from node.server import NodeServer
    from node.settings import NodeSettings

    made: list[Any] = []
    count = 0

    async def make(wa_url: str, **overrides: Any) -> Any:
        nonlocal count
        count += 1
        fields: dict[str, Any] = {
            "node_id": f"node-{count}",
            "listen": "127.0.0.1:0",
            "wa_url": wa_url,
            "storage_path": tmp_path_factory.mktemp(f"node-{count}"),
            "qr_first_timeout": 5.0,
            "qr_timeout": 2.0,
            "shutdown_grace": 2.0,
        }
        fields.update(overrides)
        server = NodeServer(NodeSettings(**fields))
        await server.start()
        made.append(server)
        return server

    yield make
    for server in reversed(made):
        await server.aclose()


@pytest.fixture
async def watchers() -> AsyncIterator[Callable[[Any], Watcher]]:
    made: list[Watcher] = []

    def make(call: Any) -> Watcher:
        w = Watcher(call)
        made.append(w)
        return w

    yield make
    for w in made:
        await w.aclose()
