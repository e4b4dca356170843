"""`make run`'s runner: the sandbox, a router and two nodes as processes; Ctrl-C stops them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest

from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import mesh_pb2, mesh_pb2_grpc
from tests.helpers import free_port, phone, wait_for

pytestmark = pytest.mark.browser


async def test_make_run_serves_a_session_and_stops_cleanly(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MESH_RUN_DIR": str(tmp_path / "run"),
        "SANDBOX_PORT": str(free_port()),
        "ROUTER_PORT": str(free_port()),
        "NODE1_PORT": str(free_port()),
        "NODE2_PORT": str(free_port()),
        "CONSOLE_PORT": str(free_port()),
        "GATEWAY_PORT": str(free_port()),
    }
    out_path = tmp_path / "out.txt"
    with out_path.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sessionmesh.devrun", env=env, stdout=out, stderr=out
        )
    try:
        await wait_for(
            lambda: (
                "Ctrl-C stops everything" in out_path.read_text() or proc.returncode is not None
            ),
            timeout=120,
            what="make run to print its banner",
        )
        assert proc.returncode is None, out_path.read_text()
        text = out_path.read_text()
        token = text.split("token", 1)[1].split()[0]
        cli_env = {**env, "MESH_ROUTER": f"127.0.0.1:{env['ROUTER_PORT']}", "MESH_TOKEN": token}
        meshctl = str(Path(sys.executable).parent / "meshctl")
        created = await asyncio.to_thread(
            subprocess.run, [meshctl, "create", "demo"], env=cli_env, capture_output=True, text=True
        )
        assert created.returncode == 0, created.stderr
        assert "demo" in created.stdout
        cluster = await asyncio.to_thread(
            subprocess.run, [meshctl, "cluster"], env=cli_env, capture_output=True, text=True
        )
        assert cluster.returncode == 0 and cluster.stdout.count("SERVING") == 2, cluster.stdout
        console = f"http://127.0.0.1:{env['CONSOLE_PORT']}/_stcore/health"
        health = await asyncio.to_thread(urllib.request.urlopen, console, timeout=10)
        assert health.status == 200
        gateway = urllib.request.Request(
            f"http://127.0.0.1:{env['GATEWAY_PORT']}/v1/sessions/demo",
            headers={"Authorization": f"Bearer {token}"},
        )
        got = await asyncio.to_thread(urllib.request.urlopen, gateway, timeout=10)
        assert got.status == 200 and b'"session_id":"demo"' in got.read()
    finally:
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 90)
    assert code == 0, out_path.read_text()
    assert "stopped." in out_path.read_text()


async def _start_run(env: dict[str, str], out_path: Path) -> asyncio.subprocess.Process:
    with out_path.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sessionmesh.devrun", env=env, stdout=out, stderr=out
        )
    await wait_for(
        lambda: "Ctrl-C stops everything" in out_path.read_text() or proc.returncode is not None,
        timeout=120,
        what="make run to print its banner",
    )
    assert proc.returncode is None, await asyncio.to_thread(out_path.read_text)
    return proc


async def _stop_run(proc: asyncio.subprocess.Process, out_path: Path) -> None:
    proc.send_signal(signal.SIGINT)
    code = await asyncio.wait_for(proc.wait(), 120)
    assert code == 0, await asyncio.to_thread(out_path.read_text)


async def test_a_linked_session_survives_stop_and_create_and_a_restart_without_a_qr(
    tmp_path: Path, watchers: Any
) -> None:
    """The README's promise: link demo, `meshctl stop` then `create` it, Ctrl-C `make run` and
    start it again: READY each time, never a new QR."""
    env = {
        **os.environ,
        "MESH_RUN_DIR": str(tmp_path / "run"),
        "MESH_DEV_TOKEN": "dev-token-for-the-restart-test",
        "SANDBOX_PAGE_WEIGHT": "light",
        "SANDBOX_PORT": str(free_port()),
        "ROUTER_PORT": str(free_port()),
        "NODE1_PORT": str(free_port()),
        "NODE2_PORT": str(free_port()),
        "CONSOLE_PORT": str(free_port()),
    }
    sandbox = f"http://127.0.0.1:{env['SANDBOX_PORT']}"
    metadata = (("authorization", f"Bearer {env['MESH_DEV_TOKEN']}"),)
    router = f"127.0.0.1:{env['ROUTER_PORT']}"

    def watch(stub: Any, after: int) -> Any:
        return stub.WatchSession(
            mesh_pb2.WatchSessionRequest(session_id="demo", after_seq=after), metadata=metadata
        )

    first = tmp_path / "first.txt"
    proc = await _start_run(env, first)
    try:
        async with grpc.aio.insecure_channel(router) as channel:
            stub = mesh_pb2_grpc.SessionMeshStub(channel)
            await stub.CreateSession(
                mesh_pb2.CreateSessionRequest(session_id="demo"), metadata=metadata
            )
            w = watchers(watch(stub, 0))
            qr = await w.wait_qr()
            status, body = await phone(sandbox, "scan", code=qr.code, phone="6281400000001")
            assert status == 200, body
            await w.wait_state(pb.READY)
            await stub.StopSession(
                mesh_pb2.StopSessionRequest(session_id="demo"), metadata=metadata
            )
            await w.wait_state(pb.STOPPED)
            await stub.CreateSession(
                mesh_pb2.CreateSessionRequest(session_id="demo"), metadata=metadata
            )
            await w.wait(lambda w: w.states().count(pb.READY) == 2, "READY again after create")
            assert len(w.qrs()) == 1, "stop then create must not show a QR"
            last = w.events[-1].seq
            await w.aclose()
    finally:
        await _stop_run(proc, first)

    second = tmp_path / "second.txt"
    proc = await _start_run(env, second)
    try:
        async with grpc.aio.insecure_channel(router) as channel:
            stub = mesh_pb2_grpc.SessionMeshStub(channel)
            w = watchers(watch(stub, last))
            await w.wait_state(pb.READY)
            assert w.qrs() == [], "make run's restart must bring demo back with no QR"
            got = await stub.GetSession(
                mesh_pb2.GetSessionRequest(session_id="demo"), metadata=metadata
            )
            assert got.state == pb.READY and got.phone == "6281400000001"
            assert "node shutting down" not in got.last_error
    finally:
        await _stop_run(proc, second)
