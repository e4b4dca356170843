"""The runners' port check: a port held by a listener is refused, one a stopped run left in
TIME_WAIT is not (the servers bind with SO_REUSEADDR, and a restart must not be refused)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sessionmesh.procs import DEATHSIG, check_ports


def test_a_listening_port_is_refused_with_its_name() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(SystemExit) as stopped:
            check_ports({"SANDBOX_PORT": port}, "make run")
    assert f"port {port} (SANDBOX_PORT)" in str(stopped.value)


def test_a_port_left_in_time_wait_by_a_stopped_run_is_free() -> None:
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        served, _ = listener.accept()
        served.close()  # the server side closes first: its end goes to TIME_WAIT
        client.recv(1)
        client.close()
    check_ports({"SANDBOX_PORT": port}, "make run")  # no SystemExit


def test_a_child_whose_launcher_died_before_it_was_armed_does_not_run(tmp_path: Path) -> None:
    """The launcher can be killed between starting a child and the child's PR_SET_PDEATHSIG;
    the signal then never comes and, with setpriv, the child ran on as an orphan (seen under
    load). The child now checks its parent after arming and runs nothing if it has changed."""
    marker = tmp_path / "ran"
    not_the_parent = os.getppid()  # alive, and not the parent of the child started below
    done = subprocess.run(
        [
            sys.executable,
            "-S",
            str(DEATHSIG),
            str(not_the_parent),
            "/bin/sh",
            "-c",
            f"touch {marker}",
        ],
        timeout=30,
    )
    assert done.returncode == 0
    assert not marker.exists()


def test_an_armed_child_runs_its_command(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    done = subprocess.run(
        [sys.executable, "-S", str(DEATHSIG), str(os.getpid()), "/bin/sh", "-c", f"touch {marker}"],
        timeout=30,
    )
    assert done.returncode == 0
    assert marker.exists()
