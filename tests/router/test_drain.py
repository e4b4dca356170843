"""DrainNode through a real router over in-memory nodes: who may call it, what moves, meshctl."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import grpc
import pytest

from sessionmesh import meshctl
from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import mesh_pb2
from tests.conftest import TOKENS
from tests.helpers import wait_for


@pytest.fixture
async def mesh(fake_nodes: Any, router_factory: Any, clients: Any) -> Any:
    a, b, c = [await fake_nodes(f"node-{n}") for n in "abc"]
    router = await router_factory(
        [a.address, b.address, c.address], admin_tenants=frozenset({"acme"})
    )
    return router, (a, b, c), clients(router.address), clients(router.address, "globex")


async def create_on(acme: Any, node: Any, strategy: int, count: int) -> list[str]:
    """Create sessions until `count` of them landed on `node`."""
    made: list[str] = []
    n = 0
    while len(made) < count:
        n += 1
        sid = f"s{strategy}-{n}"
        got = await acme.CreateSession(
            mesh_pb2.CreateSessionRequest(session_id=sid, auth_strategy=strategy)
        )
        if got.node_id == node.node_id:
            made.append(sid)
    return made


async def test_drain_moves_remote_sessions_keeps_local_and_stops_serving(mesh: Any) -> None:
    _, (a, b, c), acme, _ = mesh
    remote = await create_on(acme, a, pb.REMOTE, 3)
    local = await create_on(acme, a, pb.LOCAL, 1)
    reply = await acme.DrainNode(mesh_pb2.DrainNodeRequest(node_id=a.node_id, parallelism=2))
    assert (reply.node_id, reply.moved, reply.stayed, list(reply.failed)) == (
        a.node_id,
        3,
        1,
        [],
    )
    assert sorted(sid for _, sid in a.handed_off) == sorted(remote)
    assert sorted(sid for _, sid in b.takeovers + c.takeovers) == sorted(remote)
    assert a.drained
    for sid in remote:
        got = await acme.GetSession(mesh_pb2.GetSessionRequest(session_id=sid))
        assert got.node_id in (b.node_id, c.node_id) and got.state == pb.STARTING
    got = await acme.GetSession(mesh_pb2.GetSessionRequest(session_id=local[0]))
    assert got.node_id == a.node_id
    status = await acme.GetClusterStatus(mesh_pb2.GetClusterStatusRequest())
    health = {n.node_id: n.health for n in status.nodes}
    assert health[a.node_id] == pb.NOT_SERVING
    # A drained node takes no new sessions.
    new = await acme.CreateSession(mesh_pb2.CreateSessionRequest(session_id="after-drain"))
    assert new.node_id != a.node_id


async def test_drain_refuses_non_admins_bad_nodes_and_bad_parallelism(mesh: Any) -> None:
    _, (a, _, _), acme, globex = mesh
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await globex.DrainNode(mesh_pb2.DrainNodeRequest(node_id=a.node_id))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "MESH_ADMIN_TENANTS" in (info.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await acme.DrainNode(mesh_pb2.DrainNodeRequest(node_id="no-such-node"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-node" in (info.value.details() or "")
    for bad in (-1, 33):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await acme.DrainNode(mesh_pb2.DrainNodeRequest(node_id=a.node_id, parallelism=bad))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "parallelism" in (info.value.details() or "")
    assert not a.draining, "a refused drain changes nothing"


async def test_meshctl_drain(mesh: Any) -> None:
    router, (a, _, _), acme, _ = mesh
    await create_on(acme, a, pb.REMOTE, 2)

    async def ctl(*argv: str) -> tuple[int, str]:
        out = io.StringIO()
        args = ["--router", router.address, "--token", TOKENS["acme"], *argv]
        return await asyncio.to_thread(meshctl.main, args, out), out.getvalue()

    code, out = await ctl("drain", a.node_id, "--parallelism", "1")
    assert code == 0, out
    assert f"node {a.node_id}: 2 moved, 0 stayed (LocalAuth), 0 failed" in out
    code, _ = await ctl("drain", a.node_id, "--parallelism", "40")
    assert code == 2
    await wait_for(lambda: a.drained, what="node a drained")
