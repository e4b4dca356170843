"""Running the mesh's parts as child processes (make run, make cluster, benchmarks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

BIN = Path(sys.executable).parent


class ProcessGroup:
    """Children started in their own sessions (so Ctrl-C reaches only the parent, which stops
    them in reverse order); each writes to `<logs>/<name>.log`."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._files: list[IO[bytes]] = []

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_all()

    def spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        out = open(self.logs / f"{name}.log", "ab")  # closed in stop_all
        self._files.append(out)
        proc = subprocess.Popen(
            [str(BIN / argv[0]), *argv[1:]],
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self, timeout: float = 30) -> None:
        """SIGTERM each child in reverse start order, waiting for each before the next: routers
        go before nodes, and nodes finish their final snapshots while Redis is still up."""
        for name, proc in reversed(self.procs):
            if proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                print(f"  {name} did not stop in {timeout:.0f}s; killing it", file=sys.stderr)
                proc.kill()
                proc.wait()
        for f in self._files:
            f.close()
        self._files.clear()

    def dead(self) -> list[str]:
        return [name for name, proc in self.procs if proc.poll() is not None]


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer at {url} within {timeout:.0f}s")


def wait_serving(
    address: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 90
) -> None:
    """Wait until `address` answers grpc.health.v1 Check with SERVING."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"{what} was not SERVING at {address} within {timeout:.0f}s")


def port_from_env(name: str, default: int, what: str) -> int:
    raw = os.environ.get(name, str(default))
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        sys.exit(f"{what}: {name} must be a port number, got {raw!r}")
    return int(raw)


def run_until_interrupted(group: ProcessGroup, what: str, start: Callable[[], None]) -> None:
    """Run `start` (it spawns the parts, waits for them and prints what to try), then wait for
    Ctrl-C, SIGTERM or a part exiting, and stop every part in reverse order. A start-up failure
    stops what had started and exits 1."""

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        start()
        while not group.dead():
            time.sleep(0.5)
        print(f"stopping: {', '.join(group.dead())} exited (see {group.logs}/)")
    except KeyboardInterrupt:
        print("\nstopping...")
    except RuntimeError as e:
        print(f"{what}: {e} (see {group.logs}/)")
        _stop(group)
        sys.exit(1)
    _stop(group)
    print("stopped.")


def _stop(group: ProcessGroup) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    group.stop_all()
