"""The runners' port check: a port held by a listener is refused, one a stopped run left in
TIME_WAIT is not (the servers bind with SO_REUSEADDR, and a restart must not be refused)."""

from __future__ import annotations

import socket

import pytest

from sessionmesh.procs import check_ports


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
