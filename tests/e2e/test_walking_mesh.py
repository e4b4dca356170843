"""A WhatsApp Web session through router and node against the sandbox, end to end."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import mesh_pb2
from tests.helpers import conflicts, phone, wait_for

pytestmark = pytest.mark.browser


def watch(client: Any, sid: str, after: int = 0) -> Any:
    return client.WatchSession(
        mesh_pb2.WatchSessionRequest(session_id=sid, after_seq=after), timeout=None
    )


async def link(client: Any, watchers: Any, sandbox_url: str, sid: str, number: str) -> Any:
    """Create a session, scan its first QR with the simulated phone, wait for READY."""
    await client.CreateSession(mesh_pb2.CreateSessionRequest(session_id=sid))
    w = watchers(watch(client, sid))
    qr = await w.wait_qr()
    status, body = await phone(sandbox_url, "scan", code=qr.code, phone=number)
    assert status == 200, body
    await w.wait_state(pb.READY)
    return w


async def test_node_restart_brings_session_back_ready_without_qr(
    sandbox: Any, node_factory: Any, router_factory: Any, clients: Any, watchers: Any
) -> None:
    node = await node_factory(sandbox.url)
    router = await router_factory([node.address])
    acme = clients(router.address)
    w = await link(acme, watchers, sandbox.url, "restart-me", "6281100000001")
    qrs_before = len(w.qrs())

    storage = node.settings.storage_path
    await node.aclose()
    # The router's stream outlives the node; a new node on the same disk and port restores it.
    node2 = await node_factory(
        sandbox.url, storage_path=storage, node_id=node.node_id, listen=node.address
    )
    await w.wait(lambda w: w.states().count(pb.READY) >= 2, "READY again after the restart")
    assert len(w.qrs()) == qrs_before, "a restore must not show a QR"
    seqs = [e.seq for e in w.events]
    assert seqs == list(range(1, len(seqs) + 1)), "no gap and no duplicate across the restart"
    got = await acme.GetSession(mesh_pb2.GetSessionRequest(session_id="restart-me"))
    assert got.state == pb.READY and got.node_id == node2.node_id
    assert await conflicts(sandbox.url) == {}


async def test_qr_rotates_until_attempts_run_out_then_failed(
    sandbox_factory: Any, node_factory: Any, router_factory: Any, clients: Any, watchers: Any
) -> None:
    sb = await sandbox_factory(first_qr_ttl=1.0, qr_ttl=0.5, qr_count=4)
    node = await node_factory(sb.url)
    router = await router_factory([node.address])
    acme = clients(router.address)
    await acme.CreateSession(mesh_pb2.CreateSessionRequest(session_id="nobody-scans"))
    w = watchers(watch(acme, "nobody-scans"))
    await w.wait_state(pb.FAILED)
    assert [q.attempt for q in w.qrs()] == [1, 2, 3, 4]
    failed = [e.state for e in w.events if e.WhichOneof("event") == "state"][-1]
    assert "QR attempts exhausted" in failed.reason
    got = await acme.GetSession(mesh_pb2.GetSessionRequest(session_id="nobody-scans"))
    assert got.state == pb.FAILED and "QR attempts exhausted" in got.last_error

    # Creating it again starts a new linking attempt on the same node.
    again = await acme.CreateSession(mesh_pb2.CreateSessionRequest(session_id="nobody-scans"))
    assert again.state == pb.STARTING and again.node_id == node.node_id


async def test_logout_from_phone_gives_logged_out_and_deletes_the_login(
    sandbox: Any, node_factory: Any, router_factory: Any, clients: Any, watchers: Any
) -> None:
    node = await node_factory(sandbox.url)
    router = await router_factory([node.address])
    acme = clients(router.address)
    w = await link(acme, watchers, sandbox.url, "bye", "6281100000002")
    snapshot = node.settings.storage_path / "acme" / "bye.json"
    assert snapshot.exists()
    status, body = await phone(sandbox.url, "logout", phone="6281100000002")
    assert status == 200, body
    await w.wait_state(pb.LOGGED_OUT)
    assert not snapshot.exists()
    got = await acme.GetSession(mesh_pb2.GetSessionRequest(session_id="bye"))
    assert got.state == pb.LOGGED_OUT


async def test_stop_keeps_the_login_and_logout_unlinks(
    sandbox: Any, node_factory: Any, router_factory: Any, clients: Any, watchers: Any
) -> None:
    node = await node_factory(sandbox.url)
    router = await router_factory([node.address])
    acme = clients(router.address)
    w = await link(acme, watchers, sandbox.url, "kept", "6281100000003")
    qrs = len(w.qrs())
    stopped = await acme.StopSession(mesh_pb2.StopSessionRequest(session_id="kept"))
    assert stopped.state == pb.STOPPED
    snapshot = node.settings.storage_path / "acme" / "kept.json"
    assert snapshot.exists()

    # Started again, it comes back from the saved login with no QR.
    await acme.CreateSession(mesh_pb2.CreateSessionRequest(session_id="kept"))
    await w.wait(lambda w: w.states().count(pb.READY) >= 2, "READY after the restart")
    assert len(w.qrs()) == qrs

    out = await acme.LogoutSession(mesh_pb2.LogoutSessionRequest(session_id="kept"))
    assert out.state == pb.LOGGED_OUT
    assert not snapshot.exists()

    async def unlinked() -> bool:
        import aiohttp

        url = f"{sandbox.url}phone/devices?phone=6281100000003"
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            return resp.status == 404 or not (await resp.json()).get("devices")

    await wait_for(unlinked, what="the phone to list no linked device")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await acme.LogoutSession(mesh_pb2.LogoutSessionRequest(session_id="never-made"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert await conflicts(sandbox.url) == {}
