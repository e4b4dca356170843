"""`make cluster` as a new user meets it: a node killed with SIGKILL fails over with the cluster
still running (a client sees its session READY elsewhere), the dead node is reported and comes
back on SIGUSR1, SIGKILL of the launcher leaves no orphans, and a taken port refuses the start."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import grpc.aio
import pytest

from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import mesh_pb2
from tests.conftest import Client
from tests.helpers import Watcher, free_port, phone, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.redis]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


async def test_make_cluster_survives_a_node_killed_and_leaves_no_orphans(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MESH_RUN_DIR": str(tmp_path / "run"),
        "SANDBOX_PORT": str(free_port()),
        **{f"ROUTER{i}_PORT": str(free_port()) for i in (1, 2)},
        **{f"NODE{i}_PORT": str(free_port()) for i in (1, 2, 3)},
        "GATEWAY_PORT": str(free_port()),
    }
    env.pop("REDIS_URL", None)
    out_path = tmp_path / "out.txt"
    with out_path.open("wb") as out:
        launcher = subprocess.Popen(  # noqa: ASYNC220 - waited on in threads, never blocking
            [sys.executable, "-m", "sessionmesh.cluster"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    pids: dict[str, int] = {}
    channel: grpc.aio.Channel | None = None
    watcher: Watcher | None = None
    try:
        await wait_for(
            lambda: (
                "Ctrl-C stops everything" in out_path.read_text() or launcher.poll() is not None
            ),
            timeout=180,
            what="make cluster's banner",
        )
        text = out_path.read_text()
        assert launcher.poll() is None, text
        pids = {m[0]: int(m[1]) for m in re.findall(r"^  (\S+)\s+\S+\s+pid (\d+)", text, re.M)}
        assert set(pids) >= {"router-1", "router-2", "node-1", "node-2", "node-3"}, text
        assert len(re.findall(r"metrics http://127\.0\.0\.1:\d+/metrics", text)) == 5
        token = re.search(r"token\s+(\S+)", text).group(1)  # type: ignore[union-attr]
        ca = (tmp_path / "run" / "tls" / "ca.pem").read_bytes()
        address = f"127.0.0.1:{env['ROUTER1_PORT']}"
        channel = grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(ca))
        api = Client(channel, token)
        await api.CreateSession(
            mesh_pb2.CreateSessionRequest(session_id="demo", auth_strategy=pb.REMOTE)
        )
        watcher = Watcher(api.WatchSession(mesh_pb2.WatchSessionRequest(session_id="demo")))
        qr = await watcher.wait_qr()
        sandbox = f"http://127.0.0.1:{env['SANDBOX_PORT']}"
        status, body = await phone(sandbox, "scan", code=qr.code, phone="6281234567890")
        assert status == 200, body
        await watcher.wait_state(pb.READY, timeout=60)
        before = await api.GetSession(mesh_pb2.GetSessionRequest(session_id="demo"))
        victim = before.node_id
        qrs = len(watcher.qrs())
        os.kill(pids[victim], signal.SIGKILL)

        async def moved() -> bool:
            try:
                now = await api.GetSession(mesh_pb2.GetSessionRequest(session_id="demo"))
            except grpc.aio.AioRpcError as e:  # UNAVAILABLE until the node is declared dead
                assert e.code() == grpc.StatusCode.UNAVAILABLE, e
                return False
            return bool(now.node_id != victim and now.state == pb.READY)

        await wait_for(moved, timeout=90, what=f"demo READY on a node other than {victim}")
        await watcher.wait(
            lambda w: w.states().count(pb.READY) >= 2, "the watcher to see READY again", 60
        )
        assert len(watcher.qrs()) == qrs, "the failover asked for a new QR"
        assert launcher.poll() is None, out_path.read_text()
        assert f"{victim} (pid {pids[victim]}) exited" in out_path.read_text()
        launcher.send_signal(signal.SIGUSR1)
        await wait_for(
            lambda: f"{victim} is back" in out_path.read_text(), timeout=120, what="the restart"
        )
        back = re.search(rf"{victim} starting again \(pid (\d+)\)", out_path.read_text())
        assert back is not None
        pids[victim] = int(back.group(1))
    finally:
        if watcher is not None:
            await watcher.aclose()
        if channel is not None:
            await channel.close()
        launcher.kill()  # SIGKILL: no chance to stop its children itself
        launcher.wait()
    await wait_for(
        lambda: not any(alive(pid) for pid in pids.values()),
        timeout=60,
        what=f"every part to die with the launcher: {pids}",
    )


def test_make_run_refuses_to_start_on_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "MESH_RUN_DIR": str(tmp_path / "run"),
            "SANDBOX_PORT": str(free_port()),
            "ROUTER_PORT": str(port),
            "NODE1_PORT": str(free_port()),
            "NODE2_PORT": str(free_port()),
            "CONSOLE_PORT": str(free_port()),
            "GATEWAY_PORT": str(free_port()),
        }
        done = subprocess.run(
            [sys.executable, "-m", "sessionmesh.devrun"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode != 0
    assert f"port {port} (ROUTER_PORT)" in done.stderr, done.stderr + done.stdout
    assert "running" not in done.stdout


async def test_orphans_die_with_a_killed_launcher(tmp_path: Path) -> None:
    """The ProcessGroup itself: children of a launcher killed with SIGKILL are not left."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from sessionmesh.procs import ProcessGroup\n"
        "g = ProcessGroup(Path(sys.argv[1]))\n"
        "p = g.spawn('sleeper', ['python', '-c', 'import time; time.sleep(600)'])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    launcher = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, str(tmp_path), stdout=asyncio.subprocess.PIPE
    )
    assert launcher.stdout is not None
    child = int((await asyncio.wait_for(launcher.stdout.readline(), 30)).decode())
    assert alive(child)
    launcher.kill()
    await launcher.wait()
    await wait_for(lambda: not alive(child), timeout=30, what="the child to die with its parent")
