"""`make run`'s runner: the sandbox, a router and two nodes as processes; Ctrl-C stops them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import free_port, wait_for

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
    finally:
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 90)
    assert code == 0, out_path.read_text()
    assert "stopped." in out_path.read_text()
