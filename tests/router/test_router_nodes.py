"""The router in front of real NodeServers (real Chromium), and the sandbox for real sessions."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import mesh_pb2
from tests.helpers import phone, wait_for

pytestmark = pytest.mark.browser

UNUSED_URL = "http://127.0.0.1:9/"  # for tests that start no session


async def status_of(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details() or ""


async def test_cluster_status_auth_and_bad_input_with_real_nodes(
    node_factory: Any, router_factory: Any, clients: Any
) -> None:
    a = await node_factory(UNUSED_URL, max_sessions=7)
    b = await node_factory(UNUSED_URL, max_sessions=9)
    router = await router_factory([a.address, b.address], admin_tenants=frozenset({"acme"}))
    acme = clients(router.address)
    status = await acme.GetClusterStatus(mesh_pb2.GetClusterStatusRequest())
    got = {n.node_id: n for n in status.nodes}
    assert set(got) == {a.node_id, b.node_id}
    assert (got[a.node_id].capacity, got[b.node_id].capacity) == (7, 9)
    assert got[a.node_id].address == a.address
    assert all(n.health == pb.SERVING and n.memory_bytes > 0 for n in status.nodes)

    code, _ = await status_of(
        clients(router.address, tenant=None).GetClusterStatus(mesh_pb2.GetClusterStatusRequest())
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED
    code, message = await status_of(
        acme.CreateSession(mesh_pb2.CreateSessionRequest(session_id="a b"))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "session_id" in message
    code, _ = await status_of(acme.GetSession(mesh_pb2.GetSessionRequest(session_id="unknown")))
    assert code == grpc.StatusCode.NOT_FOUND


async def test_create_scan_ready_isolation_and_resume_through_the_router(
    sandbox: Any, node_factory: Any, router_factory: Any, clients: Any, watchers: Any
) -> None:
    a = await node_factory(sandbox.url)
    b = await node_factory(sandbox.url)
    router = await router_factory([a.address, b.address])
    acme, globex = clients(router.address, "acme"), clients(router.address, "globex")

    created = await acme.CreateSession(
        mesh_pb2.CreateSessionRequest(session_id="support", auth_strategy=pb.LOCAL)
    )
    assert created.node_id in (a.node_id, b.node_id)
    w = watchers(
        acme.WatchSession(mesh_pb2.WatchSessionRequest(session_id="support"), timeout=None)
    )
    qr = await w.wait_qr()
    assert qr.attempt == 1 and len(qr.code.split(",")) == 5

    # Another tenant cannot see it, and may have a "support" of its own.
    code, _ = await status_of(globex.GetSession(mesh_pb2.GetSessionRequest(session_id="support")))
    assert code == grpc.StatusCode.NOT_FOUND
    theirs = await globex.CreateSession(mesh_pb2.CreateSessionRequest(session_id="support"))
    assert theirs.state in (pb.STARTING, pb.SCAN_QR_CODE)

    status, body = await phone(sandbox.url, "scan", code=qr.code, phone="6281234567890")
    assert status == 200, body
    await w.wait_state(pb.READY)
    got = await acme.GetSession(mesh_pb2.GetSessionRequest(session_id="support"))
    assert got.state == pb.READY and got.phone == "6281234567890"
    mine = await globex.GetSession(mesh_pb2.GetSessionRequest(session_id="support"))
    assert mine.state != pb.READY

    # A watcher that drops and resumes with after_seq misses nothing and sees nothing twice.
    seqs = [e.seq for e in w.events]
    assert seqs == list(range(1, len(seqs) + 1))
    half = seqs[len(seqs) // 2]
    again = watchers(
        acme.WatchSession(
            mesh_pb2.WatchSessionRequest(session_id="support", after_seq=half), timeout=None
        )
    )
    await wait_for(lambda: len(again.events) >= len(seqs) - half, what="the replay")
    assert [e.seq for e in again.events][: len(seqs) - half] == seqs[half:]

    listed = await acme.ListSessions(mesh_pb2.ListSessionsRequest())
    assert [s.session_id for s in listed.sessions] == ["support"]


async def test_full_node_spills_and_all_full_is_resource_exhausted(
    sandbox: Any, node_factory: Any, router_factory: Any, clients: Any
) -> None:
    a = await node_factory(sandbox.url, max_sessions=1)
    b = await node_factory(sandbox.url, max_sessions=1)
    router = await router_factory([a.address, b.address])
    acme = clients(router.address)
    first = await acme.CreateSession(mesh_pb2.CreateSessionRequest(session_id="one"))
    second = await acme.CreateSession(mesh_pb2.CreateSessionRequest(session_id="two"))
    assert {first.node_id, second.node_id} == {a.node_id, b.node_id}
    code, message = await status_of(
        acme.CreateSession(mesh_pb2.CreateSessionRequest(session_id="three"))
    )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "all 2 nodes are full" in message
