"""RemoteAuth failover end to end: real redis-server, `mesh-node` processes killed with SIGKILL,
routers in-process, the sandbox as WhatsApp Web."""

from __future__ import annotations

import os
from typing import Any

import pytest

from router.membership import Liveness
from router.server import RouterServer
from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import mesh_pb2
from tests.e2e.conftest import Mesh, NodeProc
from tests.helpers import DEADLINE, Watcher, conflicts, phone, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.browser]

_numbers = iter(range(6281300000000, 6281399999999))


def watch(client: Any, sid: str, after: int = 0) -> Any:
    return client.WatchSession(
        mesh_pb2.WatchSessionRequest(session_id=sid, after_seq=after), timeout=None
    )


async def cluster(mesh: Mesh, count: int = 3) -> list[NodeProc]:
    nodes = [await mesh.node(f"node-{n}") for n in range(1, count + 1)]
    await mesh.wait_serving(*nodes)
    return nodes


async def admitted(router: RouterServer, nodes: list[NodeProc]) -> None:
    """Wait until the router has every node as a healthy member."""

    def ready() -> bool:
        clients = {c.node_id: c for c in router.pool.clients}
        return all(n.name in clients and clients[n.name].admitted for n in nodes)

    await wait_for(ready, what="the router to admit every node")


async def create_on(client: Any, node: str, strategy: int, count: int, prefix: str) -> list[str]:
    """Create sessions until `count` landed on `node` (the others show QRs until they fail)."""
    made: list[str] = []
    n = 0
    while len(made) < count:
        n += 1
        assert n < 60, "placement never chose the node"
        sid = f"{prefix}-{n}"
        got = await client.CreateSession(
            mesh_pb2.CreateSessionRequest(session_id=sid, auth_strategy=strategy)
        )
        if got.node_id == node:
            made.append(sid)
    return made


async def link(client: Any, watchers: Any, sandbox_url: str, sid: str) -> Watcher:
    """Watch from the start, scan the first QR with the simulated phone, wait for READY."""
    w: Watcher = watchers(watch(client, sid))
    qr = await w.wait_qr()
    status, body = await phone(sandbox_url, "scan", code=qr.code, phone=str(next(_numbers)))
    assert status == 200, body
    await w.wait_state(pb.READY)
    return w


def exactly_once(w: Watcher) -> None:
    seqs = [e.seq for e in w.events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"gap or duplicate: {seqs}"


async def ready_twice(w: Watcher, timeout: float = DEADLINE) -> None:
    await w.wait(lambda w: w.states().count(pb.READY) >= 2, "READY again elsewhere", timeout)


def failovers(routers: list[RouterServer]) -> int:
    return sum(len(r.mover.completed) for r in routers)


async def test_kill_9_brings_remote_sessions_back_ready_elsewhere_exactly_once(
    mesh: Mesh, watchers: Any, clients: Any
) -> None:
    nodes = await cluster(mesh)
    r1, r2 = await mesh.router(), await mesh.router()
    await admitted(r1, nodes)
    await admitted(r2, nodes)
    via1, via2 = clients(r1.address), clients(r2.address)
    victim = nodes[0]
    remote = await create_on(via1, victim.name, pb.REMOTE, 2, "remote")
    local = await create_on(via1, victim.name, pb.LOCAL, 1, "local")
    # Watchers through the other router: it must follow sessions it did not move.
    ws = {sid: await link(via2, watchers, mesh.sandbox_url, sid) for sid in remote}
    wl = await link(via1, watchers, mesh.sandbox_url, local[0])
    qrs = {sid: len(w.qrs()) for sid, w in ws.items()}

    mesh.kill(victim)
    for w in ws.values():
        await ready_twice(w)
    for sid, w in ws.items():
        assert len(w.qrs()) == qrs[sid], "a failover must not show a QR"
        exactly_once(w)
        for via in (via1, via2):
            got = await via.GetSession(mesh_pb2.GetSessionRequest(session_id=sid))
            assert got.state == pb.READY and got.node_id != victim.name, got

    got = await via2.GetSession(mesh_pb2.GetSessionRequest(session_id=local[0]))
    assert got.state == pb.FAILED
    assert f"its login was on node {victim.name}'s disk and node {victim.name} is down" in (
        got.last_error
    )
    listed = await via1.ListSessions(mesh_pb2.ListSessionsRequest())
    by_id = {s.session_id: s for s in listed.sessions}
    assert by_id[local[0]].state == pb.FAILED
    assert all(by_id[sid].state == pb.READY for sid in remote)
    assert failovers([r1, r2]) == 1, "exactly one router runs a node's failover"
    # The LocalAuth session's watch ends, saying why.
    await wait_for(lambda: wl.error is not None, what="the LocalAuth watch to end")
    assert "disk" in str(wl.error)
    assert await conflicts(mesh.sandbox_url) == {}
    for r in (r1, r2):
        assert r.pool.liveness(victim.name) is Liveness.DEAD


async def test_drain_moves_remote_sessions_and_sets_not_serving(
    mesh: Mesh, watchers: Any, clients: Any
) -> None:
    nodes = await cluster(mesh)
    router = await mesh.router()
    await admitted(router, nodes)
    acme = clients(router.address)
    source = nodes[1]
    remote = await create_on(acme, source.name, pb.REMOTE, 2, "drain")
    ws = {sid: await link(acme, watchers, mesh.sandbox_url, sid) for sid in remote}
    qrs = {sid: len(w.qrs()) for sid, w in ws.items()}

    reply = await acme.DrainNode(
        mesh_pb2.DrainNodeRequest(node_id=source.name, parallelism=2), timeout=DEADLINE * 2
    )
    assert (reply.moved, reply.stayed, list(reply.failed)) == (2, 0, [])
    for sid, w in ws.items():
        await ready_twice(w)
        assert len(w.qrs()) == qrs[sid]
        exactly_once(w)
        got = await acme.GetSession(mesh_pb2.GetSessionRequest(session_id=sid))
        assert got.state == pb.READY and got.node_id != source.name
    status = await acme.GetClusterStatus(mesh_pb2.GetClusterStatusRequest())
    assert {n.node_id: n.health for n in status.nodes}[source.name] == pb.NOT_SERVING
    fresh = await acme.CreateSession(
        mesh_pb2.CreateSessionRequest(session_id="after", auth_strategy=pb.REMOTE)
    )
    assert fresh.node_id != source.name
    assert await conflicts(mesh.sandbox_url) == {}


async def test_remote_start_while_redis_is_down_is_unavailable(mesh: Mesh, clients: Any) -> None:
    import grpc

    nodes = await cluster(mesh, 1)
    router = await mesh.router()
    await admitted(router, nodes)
    acme = clients(router.address)
    mesh.redis.stop()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await acme.CreateSession(
                mesh_pb2.CreateSessionRequest(session_id="r", auth_strategy=pb.REMOTE)
            )
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "Redis is unreachable" in (info.value.details() or "")
        # Losing Redis alone declares nobody dead, and the node stays admitted.
        await wait_for(lambda: not router.pool.redis_reachable, what="the router to notice")
        assert router.pool.liveness(nodes[0].name) is not Liveness.DEAD
    finally:
        mesh.redis.start()


async def chaos(mesh: Mesh, watchers: Any, clients: Any, rounds: int) -> None:
    """Kill -9 the busiest node, wait for every session READY elsewhere, restart it; repeat."""
    nodes = await cluster(mesh)
    r1, r2 = await mesh.router(), await mesh.router()
    await admitted(r1, nodes)
    via1, via2 = clients(r1.address), clients(r2.address)
    sids = [f"load-{n}" for n in range(4)]
    for sid in sids:
        await via1.CreateSession(
            mesh_pb2.CreateSessionRequest(session_id=sid, auth_strategy=pb.REMOTE)
        )
    ws = {sid: await link(via2, watchers, mesh.sandbox_url, sid) for sid in sids}
    qrs = {sid: len(w.qrs()) for sid, w in ws.items()}
    by_name = {n.name: n for n in nodes}
    for round_ in range(1, rounds + 1):
        where: dict[str, str] = {}
        for sid in sids:
            got = await via1.GetSession(mesh_pb2.GetSessionRequest(session_id=sid))
            where[sid] = got.node_id
        busiest = max(by_name, key=lambda n: sum(1 for v in where.values() if v == n))
        readies = {sid: w.states().count(pb.READY) for sid, w in ws.items()}
        mesh.kill(by_name[busiest])
        for sid, w in ws.items():
            if where[sid] == busiest:
                await w.wait(
                    lambda w, n=readies[sid]: w.states().count(pb.READY) > n,
                    f"{sid} READY after round {round_}",
                )
        for sid in sids:
            got = await via2.GetSession(mesh_pb2.GetSessionRequest(session_id=sid))
            assert got.state == pb.READY and got.node_id != busiest, (round_, got)
        await mesh.restart(by_name[busiest])
        await admitted(r1, nodes)
        await admitted(r2, nodes)
    for sid, w in ws.items():
        assert len(w.qrs()) == qrs[sid], "no QR in any failover"
        exactly_once(w)
    assert failovers([r1, r2]) == rounds
    assert await conflicts(mesh.sandbox_url) == {}


async def test_kill_9_nodes_repeatedly_under_load_short(
    mesh: Mesh, watchers: Any, clients: Any
) -> None:
    await chaos(mesh, watchers, clients, rounds=2)


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_kill_9_nodes_repeatedly_under_load(mesh: Mesh, watchers: Any, clients: Any) -> None:
    await chaos(mesh, watchers, clients, rounds=int(os.environ.get("MESH_CHAOS_ROUNDS", "8")))
