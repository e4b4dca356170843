"""Shared fixtures: real servers on loopback, created by factories that tear down what they made."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import grpc
import grpc.aio
import pytest

from tests.helpers import Watcher

TOKENS = {"acme": "acme-token-0123456789", "globex": "globex-token-0123456789"}


@pytest.fixture
async def sandbox_factory() -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Starts sandboxes on 127.0.0.1 with the given knobs (the light page unless asked)."""
    from sandbox.app import Sandbox, SandboxSettings

    made: list[Any] = []

    async def make(**knobs: Any) -> Any:
        # The light page by name, for speed; benchmarks use the calibrated default.
        knobs.setdefault("page_weight", "light")
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


def router_settings(addresses: list[str], **overrides: Any) -> Any:
    from router.settings import RouterSettings
    from sessionmesh.auth import parse_tokens

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
async def router_factory() -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Starts RouterServers for the given node addresses (settings overridable)."""
    from router.server import RouterServer

    made: list[Any] = []

    async def make(addresses: list[str], **overrides: Any) -> Any:
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
        from sessionmesh.v1 import mesh_pb2_grpc

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
