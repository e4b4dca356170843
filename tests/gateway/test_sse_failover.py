"""SSE resume across a node failover: a client that drops and reconnects with Last-Event-ID while
its session moves to another node (RemoteAuth, a real redis-server, `mesh-node` processes killed
with SIGKILL) sees every event once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import Mesh
from tests.e2e.test_failover import admitted, cluster
from tests.gateway.conftest import ACME, read_events
from tests.helpers import DEADLINE, conflicts, phone, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.browser]


async def test_a_client_reconnecting_during_failover_sees_every_event_once(
    mesh: Mesh, gateway_factory: Any, http: aiohttp.ClientSession
) -> None:
    nodes = await cluster(mesh, 2)
    router = await mesh.router()
    await admitted(router, nodes)
    gw = await gateway_factory(router.address, heartbeat=0.5)
    victim = nodes[0]

    async def call(method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with http.request(method, gw.url + path, headers=ACME, **kwargs) as resp:
            return resp.status, await resp.json()

    # A RemoteAuth session on the node that will die (others placed elsewhere are stopped).
    sid = ""
    for n in range(1, 40):
        status, made = await call(
            "POST", "/v1/sessions", json={"session_id": f"sse-{n}", "auth_strategy": "REMOTE"}
        )
        assert status == 200, made
        if made["node_id"] == victim.name:
            sid = made["session_id"]
            break
        await call("POST", f"/v1/sessions/{made['session_id']}/stop")
    assert sid, "placement never chose the victim"

    qr: dict[str, Any] = {}

    async def shown() -> bool:
        status, body = await call("GET", f"/v1/sessions/{sid}/qr")
        qr.update(body if status == 200 else {})
        return status == 200

    await wait_for(shown, what="a QR", interval=0.2)
    status, body = await phone(mesh.sandbox_url, "scan", code=qr["code"], phone="6281500000001")
    assert status == 200, body

    seen: list[dict[str, Any]] = []  # every event any connection delivered, in order
    connections = 0

    async def connect_and_read(duration: float | None) -> None:
        """One connection: resume after the last id seen, read for `duration` s, drop."""
        nonlocal connections
        headers = dict(ACME)
        if seen:
            headers["Last-Event-ID"] = seen[-1]["id"]
        async with http.get(f"{gw.url}/v1/sessions/{sid}/events", headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            connections += 1
            reader = asyncio.ensure_future(read_events(resp, seen))
            try:
                if duration is None:
                    await reader
                else:
                    await asyncio.wait({reader}, timeout=duration)
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)

    def readies() -> int:
        return sum(
            1 for e in seen if e.get("event") == "state" and e["data"]["state"]["state"] == "READY"
        )

    # Read until READY, then kill the node and keep dropping and reconnecting while it moves.
    started = time.monotonic()
    while readies() < 1:
        assert time.monotonic() - started < DEADLINE, "never READY"
        await connect_and_read(0.5)
    qrs = sum(1 for e in seen if e.get("event") == "qr")
    mesh.kill(victim)
    started = time.monotonic()
    while readies() < 2:
        assert time.monotonic() - started < DEADLINE * 2, f"not READY again: {seen[-3:]}"
        await connect_and_read(0.4)
    # After the move, an inbound message arrives on a fresh connection too.
    status, sent = await phone(
        mesh.sandbox_url,
        "send",
        phone="6281500000001",
        body="after the move",
        **{"from": "6281577777777"},
    )
    assert status == 200, sent
    started = time.monotonic()
    while not any(e.get("event") == "message" for e in seen):
        assert time.monotonic() - started < DEADLINE, "the inbound message never came"
        await connect_and_read(0.4)

    ids = [int(e["id"]) for e in seen]
    assert ids == list(range(1, len(ids) + 1)), f"a gap or a duplicate: {ids}"
    assert connections >= 4
    assert sum(1 for e in seen if e.get("event") == "qr") == qrs, "a failover must not show a QR"
    status, now = await call("GET", f"/v1/sessions/{sid}")
    assert now["state"] == "READY" and now["node_id"] == nodes[1].name, now
    assert await conflicts(mesh.sandbox_url) == {}
