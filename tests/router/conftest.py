"""Router fixtures: fake nodes, real routers, authenticated clients; all torn down after."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import grpc
import grpc.aio
import pytest

from router.server import RouterServer
from router.settings import RouterSettings
from sessionmesh.auth import parse_tokens
from sessionmesh.v1 import mesh_pb2_grpc
from tests.router.fakes import FakeNode

TOKENS = {"acme": "acme-token-0123456789", "globex": "globex-token-0123456789"}


@pytest.fixture
async def fake_nodes() -> AsyncIterator[Callable[..., Awaitable[FakeNode]]]:
    """Starts in-memory SessionNodes on 127.0.0.1."""
    made: list[FakeNode] = []

    async def make(node_id: str | None = None, capacity: int = 50) -> FakeNode:
        node = FakeNode(node_id or f"fake-{len(made) + 1}", capacity=capacity)
        await node.start()
        made.append(node)
        return node

    yield make
    for node in made:
        await node.stop()


def router_settings(addresses: list[str], **overrides: Any) -> RouterSettings:
    settings = RouterSettings(
        nodes=tuple(addresses),
        tokens=parse_tokens(",".join(f"{t}:{tok}" for t, tok in TOKENS.items())),
        listen="127.0.0.1:0",
        node_poll_interval=0.1,
        node_timeout=5.0,
        grace=0.5,
    )
    return replace(settings, **overrides)


@pytest.fixture
async def router_factory() -> AsyncIterator[Callable[..., Awaitable[RouterServer]]]:
    """Starts RouterServers for the given node addresses (settings overridable)."""
    made: list[RouterServer] = []

    async def make(addresses: list[str], **overrides: Any) -> RouterServer:
        router = RouterServer(router_settings(addresses, **overrides))
        await router.start()
        made.append(router)
        return router

    yield make
    for router in reversed(made):
        await router.aclose()


class Client:
    """A SessionMesh stub that sends a tenant's bearer token with every call."""

    def __init__(self, channel: grpc.aio.Channel, token: str | None) -> None:
        self.stub = mesh_pb2_grpc.SessionMeshStub(channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.stub, name)

        def call(request: Any, **kwargs: Any) -> Any:
            return method(
                request, metadata=self.metadata, timeout=kwargs.pop("timeout", 30), **kwargs
            )

        return call


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., Client]]:
    """`clients(router.address, tenant="acme")`; tenant=None sends no token, token= overrides."""
    channels: list[grpc.aio.Channel] = []

    def make(address: str, tenant: str | None = "acme", token: str | None = None) -> Client:
        channel = grpc.aio.insecure_channel(address)
        channels.append(channel)
        return Client(channel, token if token is not None else TOKENS.get(tenant or ""))

    yield make
    for channel in channels:
        await channel.close()
