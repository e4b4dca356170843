"""Router fixtures: in-memory SessionNodes over real gRPC, for fast tests of routing alone."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.router.fakes import FakeNode


@pytest.fixture
async def fake_nodes() -> AsyncIterator[Callable[..., Awaitable[FakeNode]]]:
    """Starts in-memory SessionNodes on 127.0.0.1."""
    made: list[FakeNode] = []

    async def make(
        node_id: str | None = None, capacity: int = 50, credentials: Any = None
    ) -> FakeNode:
        node = FakeNode(
            node_id or f"fake-{len(made) + 1}", capacity=capacity, credentials=credentials
        )
        await node.start()
        made.append(node)
        return node

    yield make
    for node in made:
        await node.stop()
