"""The public API through a real RouterServer over in-memory nodes (no browser)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import mesh_pb2
from tests.conftest import TOKENS
from tests.helpers import wait_for


async def status_of(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details() or ""


@pytest.fixture
async def mesh(fake_nodes: Any, router_factory: Any, clients: Any) -> Any:
    a, b = await fake_nodes("node-a"), await fake_nodes("node-b")
    router = await router_factory([a.address, b.address], admin_tenants=frozenset({"acme"}))

    class Mesh:
        nodes = (a, b)
        acme = clients(router.address, "acme")
        globex = clients(router.address, "globex")

    Mesh.router = router  # type: ignore[attr-defined]
    return Mesh


def create(sid: str, **kw: Any) -> mesh_pb2.CreateSessionRequest:
    return mesh_pb2.CreateSessionRequest(session_id=sid, **kw)


async def test_no_or_bad_token_is_unauthenticated(mesh: Any, clients: Any) -> None:
    address = mesh.router.address
    anonymous = clients(address, tenant=None)
    code, message = await status_of(
        anonymous.GetSession(mesh_pb2.GetSessionRequest(session_id="x"))
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED and "authorization" in message
    wrong = clients(address, token="not-a-token-of-anyone")
    for call in (
        wrong.CreateSession(create("x")),
        wrong.ListSessions(mesh_pb2.ListSessionsRequest()),
        wrong.GetClusterStatus(mesh_pb2.GetClusterStatusRequest()),
    ):
        code, _ = await status_of(call)
        assert code == grpc.StatusCode.UNAUTHENTICATED
    code, _ = await status_of(
        wrong.WatchSession(mesh_pb2.WatchSessionRequest(session_id="x")).read()
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert not any(node.starts for node in mesh.nodes)


async def test_health_stays_open(mesh: Any) -> None:
    async with grpc.aio.insecure_channel(mesh.router.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "sessionmesh.v1.SessionMesh"):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_create_get_stop_logout_and_idempotent_create(mesh: Any) -> None:
    s = await mesh.acme.CreateSession(
        create("support", auth_strategy=pb.LOCAL, labels={"team": "cs"})
    )
    assert s.session_id == "support" and s.node_id in ("node-a", "node-b")
    again = await mesh.acme.CreateSession(create("support"))
    assert again.node_id == s.node_id
    assert sum(len(n.starts) for n in mesh.nodes) == 1
    got = await mesh.acme.GetSession(mesh_pb2.GetSessionRequest(session_id="support"))
    assert got.labels["team"] == "cs"
    stopped = await mesh.acme.StopSession(mesh_pb2.StopSessionRequest(session_id="support"))
    assert stopped.state == pb.STOPPED
    restarted = await mesh.acme.CreateSession(create("support"))
    assert restarted.node_id == s.node_id and restarted.state == pb.STARTING
    out = await mesh.acme.LogoutSession(mesh_pb2.LogoutSessionRequest(session_id="support"))
    assert out.state == pb.LOGGED_OUT


async def test_tenants_are_isolated(mesh: Any) -> None:
    await mesh.acme.CreateSession(create("support"))
    for call in (
        mesh.globex.GetSession(mesh_pb2.GetSessionRequest(session_id="support")),
        mesh.globex.StopSession(mesh_pb2.StopSessionRequest(session_id="support")),
        mesh.globex.LogoutSession(mesh_pb2.LogoutSessionRequest(session_id="support")),
        mesh.globex.WatchSession(mesh_pb2.WatchSessionRequest(session_id="support")).read(),
    ):
        code, _ = await status_of(call)
        assert code == grpc.StatusCode.NOT_FOUND
    listed = await mesh.globex.ListSessions(mesh_pb2.ListSessionsRequest())
    assert list(listed.sessions) == []
    # globex may have its own "support": a separate session.
    theirs = await mesh.globex.CreateSession(create("support"))
    assert theirs.session_id == "support"
    assert sum(len(n.starts) for n in mesh.nodes) == 2
    mine = await mesh.acme.GetSession(mesh_pb2.GetSessionRequest(session_id="support"))
    assert mine.state == pb.STARTING


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (create(""), "session_id"),
        (create("x" * 65), "session_id"),
        (create("bad id!"), "session_id"),
        (create("ok", auth_strategy=9), "auth_strategy"),
        (create("ok", labels={"bad key!": "v"}), "labels"),
        (create("ok", labels={"k": "v" * 300}), "labels"),
    ],
)
async def test_bad_create_requests_name_the_field(mesh: Any, request_: Any, field: str) -> None:
    code, message = await status_of(mesh.acme.CreateSession(request_))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in message


async def test_bad_other_requests_name_the_field(mesh: Any) -> None:
    for call, field in (
        (mesh.acme.GetSession(mesh_pb2.GetSessionRequest(session_id="no/slash")), "session_id"),
        (mesh.acme.ListSessions(mesh_pb2.ListSessionsRequest(page_size=1001)), "page_size"),
        (mesh.acme.ListSessions(mesh_pb2.ListSessionsRequest(page_size=-1)), "page_size"),
        (mesh.acme.ListSessions(mesh_pb2.ListSessionsRequest(page_token="garbage!")), "page_token"),
        (mesh.acme.WatchSession(mesh_pb2.WatchSessionRequest(session_id="")).read(), "session_id"),
    ):
        code, message = await status_of(call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, message
        assert field in message


async def test_oversized_requests_are_refused(mesh: Any) -> None:
    code, _ = await status_of(mesh.acme.CreateSession(create("ok", labels={"k": "v" * (2 << 20)})))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert not any(node.starts for node in mesh.nodes)


async def test_unknown_session_is_not_found(mesh: Any) -> None:
    code, message = await status_of(
        mesh.acme.GetSession(mesh_pb2.GetSessionRequest(session_id="nope"))
    )
    assert code == grpc.StatusCode.NOT_FOUND and "nope" in message


async def test_list_sessions_is_sorted_and_paged(mesh: Any) -> None:
    ids = [f"s{i:02d}" for i in range(25)]
    for sid in reversed(ids):
        await mesh.acme.CreateSession(create(sid))
    await mesh.globex.CreateSession(create("s00"))
    assert all(n.sessions for n in mesh.nodes), "both nodes should hold some"
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await mesh.acme.ListSessions(
            mesh_pb2.ListSessionsRequest(page_size=10, page_token=token)
        )
        seen += [s.session_id for s in page.sessions]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == ids and pages == 3
    everything = await mesh.acme.ListSessions(mesh_pb2.ListSessionsRequest())
    assert [s.session_id for s in everything.sessions] == ids
    assert everything.next_page_token == ""


async def test_cluster_status_lists_every_node(
    mesh: Any, fake_nodes: Any, router_factory: Any, clients: Any
) -> None:
    """Admins (acme) see every node in full; another tenant sees only its own sessions per
    node, and neither addresses nor memory."""
    await mesh.acme.CreateSession(create("one"))
    status = await mesh.acme.GetClusterStatus(mesh_pb2.GetClusterStatusRequest())
    by_id = {n.node_id: n for n in status.nodes}
    assert set(by_id) == {"node-a", "node-b"}
    for node in mesh.nodes:
        got = by_id[node.node_id]
        assert got.address == node.address and got.health == pb.SERVING
        assert got.capacity == 50 and got.memory_bytes == 1234
    await wait_for(
        lambda: sum(c.sessions for c in mesh.router.pool.clients) == 1, what="the next poll"
    )
    status = await mesh.acme.GetClusterStatus(mesh_pb2.GetClusterStatusRequest())
    assert sum(n.sessions for n in status.nodes) == 1
    tenant_view = await mesh.globex.GetClusterStatus(mesh_pb2.GetClusterStatusRequest())
    assert {n.node_id for n in tenant_view.nodes} == {"node-a", "node-b"}
    assert all(n.address == "" and n.memory_bytes == 0 for n in tenant_view.nodes)
    assert sum(n.sessions for n in tenant_view.nodes) == 0  # acme's session is not counted
    await mesh.globex.CreateSession(create("two"))
    tenant_view = await mesh.globex.GetClusterStatus(mesh_pb2.GetClusterStatusRequest())
    assert sum(n.sessions for n in tenant_view.nodes) == 1
    # A node that is down is listed as UNREACHABLE, by its address.
    await mesh.nodes[1].stop()

    async def down() -> bool:
        status = await mesh.acme.GetClusterStatus(mesh_pb2.GetClusterStatusRequest())
        found = next(n for n in status.nodes if n.address == mesh.nodes[1].address)
        return bool(found.health == pb.UNREACHABLE)

    await wait_for(down, what="the stopped node to be UNREACHABLE")


async def test_full_node_spills_over_and_all_full_is_resource_exhausted(
    fake_nodes: Any, router_factory: Any, clients: Any
) -> None:
    a, b = await fake_nodes("node-a", capacity=2), await fake_nodes("node-b", capacity=2)
    router = await router_factory([a.address, b.address])
    acme = clients(router.address)
    for i in range(4):
        await acme.CreateSession(create(f"s{i}"))
    assert (a.held(), b.held()) == (2, 2)
    code, message = await status_of(acme.CreateSession(create("s4")))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "all 2 nodes are full (4/4 sessions)" in message


async def test_a_node_refusing_a_start_sends_it_to_the_next(
    fake_nodes: Any, router_factory: Any, clients: Any
) -> None:
    a, b = await fake_nodes("node-a", capacity=5), await fake_nodes("node-b", capacity=5)
    router = await router_factory([a.address, b.address], node_poll_interval=60.0)
    a.capacity = b.capacity = 0  # the router still believes both have room
    code, _ = await status_of(clients(router.address).CreateSession(create("x")))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    b.capacity = 5
    a.draining = True
    s = await clients(router.address).CreateSession(create("x"))
    assert s.node_id == "node-b"


async def test_a_down_node_answers_unavailable_naming_it(mesh: Any) -> None:
    s = await mesh.acme.CreateSession(create("here"))
    node = next(n for n in mesh.nodes if n.node_id == s.node_id)
    await node.stop()
    code, message = await status_of(
        mesh.acme.GetSession(mesh_pb2.GetSessionRequest(session_id="here"))
    )
    assert code == grpc.StatusCode.UNAVAILABLE and node.node_id in message
    # New sessions go to the node that is up.
    await wait_for(lambda: mesh.router.pool.by_id(node.node_id).health == pb.UNREACHABLE)
    other = await mesh.acme.CreateSession(create("elsewhere"))
    assert other.node_id != node.node_id


async def test_a_restarted_router_finds_sessions_where_they_are(
    fake_nodes: Any, router_factory: Any, clients: Any
) -> None:
    a, b = await fake_nodes("node-a"), await fake_nodes("node-b")
    first = await router_factory([a.address, b.address])
    placed = {}
    for i in range(10):
        s = await clients(first.address).CreateSession(create(f"s{i}"))
        placed[s.session_id] = s.node_id
    await first.aclose()
    # A different ring order (reversed list) must not move anything.
    second = await router_factory([b.address, a.address], load_factor=1.0)
    acme = clients(second.address)
    for sid, node_id in placed.items():
        got = await acme.GetSession(mesh_pb2.GetSessionRequest(session_id=sid))
        assert got.node_id == node_id
        again = await acme.CreateSession(create(sid))
        assert again.node_id == node_id
    assert len(a.starts) + len(b.starts) == 10


async def test_watch_resumes_across_upstream_breaks_without_gap_or_duplicate(mesh: Any) -> None:
    s = await mesh.acme.CreateSession(create("w"))
    node = next(n for n in mesh.nodes if n.node_id == s.node_id)
    call = mesh.acme.WatchSession(mesh_pb2.WatchSessionRequest(session_id="w"), timeout=None)
    got: list[int] = []

    async def read(n: int) -> None:
        while len(got) < n:
            event = await call.read()
            assert event is not grpc.aio.EOF
            got.append(event.seq)

    await asyncio.wait_for(read(1), 30)  # STARTING from the create
    for attempt in range(1, 3):
        await node.emit("acme", "w", qr=pb.QrCode(code=f"qr{attempt}", attempt=attempt))
    await asyncio.wait_for(read(3), 30)
    # The node goes away and comes back on the same port with its log; events happen meanwhile.
    await node.stop()
    await node.emit("acme", "w", loading=pb.Loading(percent=50))
    await node.start()
    await node.emit("acme", "w", state=pb.StateChange(state=pb.READY))
    await asyncio.wait_for(read(5), 60)
    assert got == [1, 2, 3, 4, 5]
    call.cancel()


async def test_watch_after_seq_skips_what_the_client_has(mesh: Any) -> None:
    await mesh.acme.CreateSession(create("w2"))
    s = await mesh.acme.GetSession(mesh_pb2.GetSessionRequest(session_id="w2"))
    node = next(n for n in mesh.nodes if n.node_id == s.node_id)
    for i in range(3):
        await node.emit("acme", "w2", loading=pb.Loading(percent=10 * i))
    call = mesh.acme.WatchSession(
        mesh_pb2.WatchSessionRequest(session_id="w2", after_seq=2), timeout=None
    )
    first = await asyncio.wait_for(call.read(), 30)
    assert first.seq == 3
    call.cancel()


def test_tokens_fixture_is_long_enough() -> None:
    assert all(len(t) >= 16 for t in TOKENS.values())
