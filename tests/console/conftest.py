"""A real mesh with data for the console: a sandbox, a node, a router, sessions in two states."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import mesh_pb2
from tests.conftest import TOKENS
from tests.helpers import phone


@dataclass
class ConsoleMesh:
    router: str
    token: str
    node_id: str
    ready: str  # a session scanned and READY
    waiting: str  # a session showing its QR


@pytest.fixture
async def console_mesh(
    sandbox_factory: Any,
    node_factory: Any,
    router_factory: Any,
    clients: Any,
    watchers: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> ConsoleMesh:
    """One node behind a router; "alpha" scanned to READY, "beta" waiting on its QR.

    MESH_ROUTER and MESH_TOKEN point the console at it (for AppTest in this process).
    """
    # Long QR lifetimes: "beta" must still show a QR when the pages look at it.
    sandbox = await sandbox_factory(first_qr_ttl=120.0, qr_ttl=60.0, qr_count=6)
    node = await node_factory(sandbox.url, max_sessions=5, qr_first_timeout=120, qr_timeout=60)
    # The console's operators are admins here: node memory feeds the tier planner.
    router = await router_factory([node.address], admin_tenants=frozenset({"acme"}))
    acme = clients(router.address)

    await acme.CreateSession(
        mesh_pb2.CreateSessionRequest(session_id="alpha", auth_strategy=pb.LOCAL)
    )
    w = watchers(acme.WatchSession(mesh_pb2.WatchSessionRequest(session_id="alpha"), timeout=None))
    code = (await w.wait_qr()).code
    status, body = await phone(sandbox.url, "scan", code=code, phone="6281200000001")
    assert status == 200, body
    await w.wait_state(pb.READY)

    await acme.CreateSession(
        mesh_pb2.CreateSessionRequest(session_id="beta", auth_strategy=pb.LOCAL)
    )
    b = watchers(acme.WatchSession(mesh_pb2.WatchSessionRequest(session_id="beta"), timeout=None))
    await b.wait_qr()

    monkeypatch.setenv("MESH_ROUTER", router.address)
    monkeypatch.setenv("MESH_TOKEN", TOKENS["acme"])
    monkeypatch.setenv("MESH_BENCHMARKS", str(tmp_path / "no-benchmarks.md"))
    monkeypatch.setenv("MESH_LOADTEST", str(tmp_path / "no-loadtest.json"))
    return ConsoleMesh(router.address, TOKENS["acme"], node.node_id, "alpha", "beta")
