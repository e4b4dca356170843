"""A node hosting real WhatsApp Web sessions (sandbox) in a real Chromium, over real gRPC."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import node_pb2, node_pb2_grpc
from tests.helpers import conflicts, phone, wait_for

pytestmark = pytest.mark.browser

TENANT = "acme"


def watch(stub: node_pb2_grpc.SessionNodeStub, sid: str, after: int = 0) -> Any:
    return stub.WatchSession(
        node_pb2.NodeWatchRequest(tenant=TENANT, session_id=sid, after_seq=after)
    )


async def start(stub: node_pb2_grpc.SessionNodeStub, sid: str) -> pb.Session:
    return await stub.StartSession(node_pb2.StartSessionRequest(tenant=TENANT, session_id=sid))


async def test_scan_reaches_ready_then_restart_restores_without_qr(
    sandbox: Any, node_factory: Any, channels: Any, watchers: Any
) -> None:
    node = await node_factory(sandbox.url)
    stub = channels(node.address)
    session = await start(stub, "s1")
    assert session.state == pb.STARTING
    w = watchers(watch(stub, "s1"))
    qr = await w.wait_qr()
    assert qr.attempt == 1 and len(qr.code.split(",")) == 5
    status, body = await phone(sandbox.url, "scan", code=qr.code, phone="6281234567890")
    assert status == 200, body
    await w.wait_state(pb.READY)
    states = w.states()
    assert states.index(pb.SCAN_QR_CODE) < states.index(pb.AUTHENTICATED) < states.index(pb.READY)
    assert any(e.WhichOneof("event") == "loading" for e in w.events)
    got = await stub.GetSession(node_pb2.NodeSessionRequest(tenant=TENANT, session_id="s1"))
    assert got.state == pb.READY and got.phone == "6281234567890"
    snapshot = node.settings.storage_path / TENANT / "s1.json"
    assert snapshot.exists() and snapshot.stat().st_mode & 0o777 == 0o600
    last_seq = w.events[-1].seq
    await w.aclose()

    # Restart the node on the same disk: the session comes back READY with no QR.
    storage = node.settings.storage_path
    await node.aclose()
    node2 = await node_factory(sandbox.url, storage_path=storage, node_id="node-1")
    stub2 = channels(node2.address)
    w2 = watchers(watch(stub2, "s1", after=last_seq))
    await w2.wait_state(pb.READY)
    assert w2.qrs() == []
    assert all(e.seq > last_seq for e in w2.events)
    assert await conflicts(sandbox.url) == {}


async def test_logout_from_phone_deletes_login(
    sandbox: Any, node_factory: Any, channels: Any, watchers: Any
) -> None:
    node = await node_factory(sandbox.url)
    stub = channels(node.address)
    await start(stub, "s2")
    w = watchers(watch(stub, "s2"))
    qr = await w.wait_qr()
    await phone(sandbox.url, "scan", code=qr.code, phone="6281200000002")
    await w.wait_state(pb.READY)
    snapshot = node.settings.storage_path / TENANT / "s2.json"
    await wait_for(snapshot.exists, what="snapshot written")
    status, _ = await phone(sandbox.url, "logout", phone="6281200000002")
    assert status == 200
    await w.wait_state(pb.LOGGED_OUT)
    assert not snapshot.exists()


async def test_qr_rotates_until_attempts_run_out(
    sandbox_factory: Any, node_factory: Any, channels: Any, watchers: Any
) -> None:
    sb = await sandbox_factory(first_qr_ttl=1.0, qr_ttl=0.5, qr_count=3)
    node = await node_factory(sb.url)
    stub = channels(node.address)
    await start(stub, "s3")
    w = watchers(watch(stub, "s3"))
    await w.wait_state(pb.FAILED)
    assert [q.attempt for q in w.qrs()] == [1, 2, 3]
    assert len({q.code for q in w.qrs()}) == 3
    got = await stub.GetSession(node_pb2.NodeSessionRequest(tenant=TENANT, session_id="s3"))
    assert "QR attempts exhausted" in got.last_error


async def test_full_node_answers_resource_exhausted(
    sandbox: Any, node_factory: Any, channels: Any
) -> None:
    node = await node_factory(sandbox.url, max_sessions=1)
    stub = channels(node.address)
    await start(stub, "a")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await start(stub, "b")
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "MAX_CONCURRENT_SESSIONS=1" in (err.value.details() or "")
    # Starting an existing session again returns it and takes no new room.
    again = await start(stub, "a")
    assert again.session_id == "a"


async def test_bad_input_names_the_field(sandbox: Any, node_factory: Any, channels: Any) -> None:
    node = await node_factory(sandbox.url)
    stub = channels(node.address)
    for sid, field in [("", "session_id"), ("x" * 65, "session_id"), ("a b", "session_id")]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await start(stub, sid)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetSession(node_pb2.NodeSessionRequest(tenant=TENANT, session_id="nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_chromium_dies_and_sessions_come_back_ready_without_qr(
    sandbox: Any, node_factory: Any, channels: Any, watchers: Any
) -> None:
    import os
    import signal

    from node.memory import descendants

    node = await node_factory(sandbox.url)
    stub = channels(node.address)
    await start(stub, "crash")
    w = watchers(watch(stub, "crash"))
    qr = await w.wait_qr()
    await phone(sandbox.url, "scan", code=qr.code, phone="6281200000009")
    await w.wait_state(pb.READY)
    launches = node.pool.launches

    # Kill the browser process (the first Chromium below the node), as an OOM killer would.
    def chromium_root() -> int:
        for pid in descendants(os.getpid()):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"chrom" in cmd[0].lower() and not any(a.startswith(b"--type=") for a in cmd):
                return pid
        raise AssertionError("no Chromium process found")

    os.kill(chromium_root(), signal.SIGKILL)
    await w.wait(lambda w: w.states().count(pb.READY) >= 2, "READY again after the crash")
    assert node.pool.launches == launches + 1
    assert len(w.qrs()) == 1, "the restore must not show a QR"
    reasons = [e.state.reason for e in w.events if e.WhichOneof("event") == "state"]
    assert any("browser crash" in r for r in reasons)
    assert await conflicts(sandbox.url) == {}
