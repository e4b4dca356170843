"""Gateway fixtures: the real gateway (uvicorn on loopback) in front of a real router, nodes
with Chromium, and the sandbox."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import pytest

from gateway.server import GatewayServer
from gateway.settings import GatewaySettings
from node.crypto import SnapshotKeys, new_key_spec
from tests.conftest import TOKENS
from tests.e2e.conftest import _mesh_redis, mesh  # noqa: F401  (the RemoteAuth mesh, for failover)
from tests.helpers import DEADLINE, phone, wait_for
from tests.redis_server import RedisServer, settings_for
from webhooks.settings import Allowlist, WebhookSettings

ACME = {"Authorization": f"Bearer {TOKENS['acme']}"}
GLOBEX = {"X-Api-Key": TOKENS["globex"]}


@pytest.fixture
async def gateway_factory() -> AsyncIterator[Callable[..., Awaitable[GatewayServer]]]:
    """Starts gateways on 127.0.0.1 (free port) in front of the given router address."""
    made: list[GatewayServer] = []

    async def make(router: str, **overrides: Any) -> GatewayServer:
        settings = replace(
            GatewaySettings(listen="127.0.0.1:0", router=router, access_log=False, grace=1.0),
            **overrides,
        )
        gw = GatewayServer(settings)
        await gw.start()
        made.append(gw)
        return gw

    yield make
    for gw in reversed(made):
        await gw.aclose()


@dataclass
class Stack:
    """A sandbox, node(s), a router and a gateway, all real, on loopback."""

    sandbox: Any
    nodes: list[Any]
    router: Any
    gateway: GatewayServer
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.gateway.url

    async def call(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
        """(status, body as JSON when it is JSON else bytes, headers)."""
        async with self.http.request(
            method, self.url + path, headers=ACME if headers is None else headers, **kwargs
        ) as resp:
            raw = await resp.read()
            kind = resp.headers.get("Content-Type", "")
            body: Any = json.loads(raw) if "json" in kind and raw else raw
            return resp.status, body, resp.headers

    async def link(self, session_id: str, number: str, **create: Any) -> dict[str, Any]:
        """Create a session over HTTP, scan its QR with the simulated phone, wait for READY."""
        status, body, _ = await self.call(
            "POST", "/v1/sessions", json={"session_id": session_id, **create}
        )
        assert status == 200, body
        code = await self.qr_code(session_id)
        scanned, answer = await phone(self.sandbox.url, "scan", code=code, phone=number)
        assert scanned == 200, answer
        await self.wait_state(session_id, "READY")
        _, body, _ = await self.call("GET", f"/v1/sessions/{session_id}")
        return dict(body)

    async def qr_code(self, session_id: str) -> str:
        found: dict[str, Any] = {}

        async def shown() -> bool:
            status, body, _ = await self.call("GET", f"/v1/sessions/{session_id}/qr")
            if status == 200:
                found.update(body)
                return True
            assert status == 409, body
            return False

        await wait_for(shown, what=f"a QR for {session_id}", interval=0.2)
        return str(found["code"])

    async def wait_state(self, session_id: str, state: str, timeout: float = DEADLINE) -> None:
        async def reached() -> bool:
            status, body, _ = await self.call("GET", f"/v1/sessions/{session_id}")
            return status == 200 and body["state"] == state

        await wait_for(reached, timeout=timeout, what=f"{session_id} {state}", interval=0.2)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE * 2)) as s:
        yield s


@pytest.fixture
def stack_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
async def stack(
    stack_redis: RedisServer,
    sandbox: Any,
    node_factory: Any,
    router_factory: Any,
    gateway_factory: Any,
    http: aiohttp.ClientSession,
) -> Stack:
    """One node (capacity 4; LocalAuth by default, RemoteAuth on a private Redis when asked),
    a router (each tenant may hold 3 live sessions; acme is an admin) and a gateway with a
    0.5 s heartbeat."""
    redis = settings_for(stack_redis.url, cluster=False)
    # Webhooks: one key on router and node (it seals secrets and queued bodies), loopback
    # receivers allowed.
    webhooks = WebhookSettings(
        keys=SnapshotKeys.parse(new_key_spec("wh1")), allow=Allowlist.parse("127.0.0.0/8")
    )
    node = await node_factory(
        sandbox.url,
        max_sessions=4,
        redis=redis,
        snapshot_keys=SnapshotKeys.parse(new_key_spec("gw1")),
        heartbeat_interval=0.5,
        webhooks=webhooks,
    )
    router = await router_factory(
        [node.address],
        tenant_max_sessions=3,
        admin_tenants=frozenset({"acme"}),
        redis=redis,
        webhooks=webhooks,
    )
    await wait_for(
        lambda: all(c.admitted for c in router.pool.clients), what="the router to admit the node"
    )
    gw = await gateway_factory(router.address, heartbeat=0.5)
    return Stack(sandbox, [node], router, gw, http)


async def read_events(
    resp: aiohttp.ClientResponse, sink: list[dict[str, Any]], comments: list[str] | None = None
) -> None:
    """Parse an SSE body into `sink` ({id, event, data}) until it ends."""
    current: dict[str, Any] = {}
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if "data" in current or "event" in current:
                if "data" in current:
                    current["data"] = json.loads(current["data"])
                sink.append(current)
            current = {}
            continue
        if line.startswith(":"):
            if comments is not None:
                comments.append(line)
            continue
        name, _, value = line.partition(":")
        current[name] = value[1:] if value.startswith(" ") else value


async def cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, aiohttp.ClientError):
        pass
