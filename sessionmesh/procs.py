"""Running the mesh's parts as child processes (make run, make cluster, benchmarks).

Children die with the launcher, even when it is killed with SIGKILL (PR_SET_PDEATHSIG), so no
orphan keeps a port that the next `make run` would find answering. A part marked restartable
(nodes, routers) may die without stopping the rest: the launcher reports it and starts it again
on SIGUSR1 (or `restart NAME` typed on its terminal).
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

BIN = Path(sys.executable).parent
DEATHSIG = Path(__file__).with_name("deathsig.py")


def _dying_with_parent(argv: list[str]) -> list[str]:
    """`argv` run so that the child gets SIGTERM when this launcher dies (deathsig.py)."""
    return [sys.executable, "-S", str(DEATHSIG), str(os.getpid()), *argv]


@dataclass
class Part:
    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    restartable: bool = False
    reported: bool = False  # its death was reported
    restarts: int = 0


class ProcessGroup:
    """Children started in their own sessions (so Ctrl-C reaches only the parent, which stops
    them in reverse order); each writes to `<logs>/<name>.log`."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.parts: list[Part] = []
        self._files: list[IO[bytes]] = []

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_all()

    @property
    def procs(self) -> list[tuple[str, subprocess.Popen[bytes]]]:
        return [(part.name, part.proc) for part in self.parts]

    def _popen(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        out = open(self.logs / f"{name}.log", "ab")  # closed in stop_all
        self._files.append(out)
        return subprocess.Popen(
            _dying_with_parent([str(BIN / argv[0]), *argv[1:]]),
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def spawn(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        *,
        restartable: bool = False,
    ) -> subprocess.Popen[bytes]:
        proc = self._popen(name, argv, env or {})
        self.parts.append(Part(name, argv, env or {}, proc, restartable))
        return proc

    def part(self, name: str) -> Part | None:
        return next((p for p in self.parts if p.name == name), None)

    def restart(self, name: str) -> subprocess.Popen[bytes]:
        """Start a dead part again, with the same command and environment."""
        part = self.part(name)
        if part is None:
            raise KeyError(name)
        if part.proc.poll() is None:
            return part.proc
        part.restarts += 1
        part.proc = self._popen(part.name, part.argv, part.env)
        part.reported = False
        return part.proc

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

    def fatal(self) -> list[str]:
        """Dead parts the rest cannot run without (Redis, the sandbox...)."""
        return [p.name for p in self.parts if not p.restartable and p.proc.poll() is not None]


def check_ports(ports: dict[str, int], what: str, host: str = "127.0.0.1") -> None:
    """Exit naming the first port already taken (an orphan of an earlier run, another
    program): starting anyway would print "running" for whoever answers there."""
    for name, port in ports.items():
        with socket.socket() as s:
            # As the servers themselves bind: connections of a run just stopped (TIME_WAIT)
            # do not hold the port, a listening socket does.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
                s.listen()
            except OSError:
                sys.exit(
                    f"{what}: port {port} ({name}) on {host} is taken; stop whatever holds it "
                    f"(`ss -ltnp 'sport = :{port}'`) or set {name} to another port"
                )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


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
    address: str,
    proc: subprocess.Popen[bytes],
    what: str,
    timeout: float = 90,
    credentials: grpc.ChannelCredentials | None = None,
) -> None:
    """Wait until `address` answers grpc.health.v1 Check with SERVING (over TLS with
    `credentials`)."""
    deadline = time.monotonic() + timeout
    channel = (
        grpc.insecure_channel(address)
        if credentials is None
        else grpc.secure_channel(address, credentials)
    )
    with channel:
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


def _read_commands(commands: queue.Queue[str]) -> None:
    for line in sys.stdin:
        commands.put(line.strip())


def run_until_interrupted(
    group: ProcessGroup,
    what: str,
    start: Callable[[], None],
    *,
    restarted: Callable[[str], None] | None = None,
) -> None:
    """Run `start` (it spawns the parts, waits for them and prints what to try), then wait for
    Ctrl-C, SIGTERM or an essential part exiting, and stop every part in reverse order. A
    restartable part that dies is reported and the rest runs on; SIGUSR1 (or `restart NAME`
    on stdin) starts dead parts again, and `restarted(name)` waits for each. A start-up
    failure stops what had started and exits 1."""

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    restart_all = threading.Event()
    commands: queue.Queue[str] = queue.Queue()
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGUSR1, lambda *_: restart_all.set())
    if sys.stdin is not None and sys.stdin.isatty():
        threading.Thread(target=_read_commands, args=(commands,), daemon=True).start()
    try:
        start()
        while not group.fatal():
            time.sleep(0.2)
            for part in group.parts:
                if part.restartable and part.proc.poll() is not None and not part.reported:
                    part.reported = True
                    print(
                        f"{part.name} (pid {part.proc.pid}) exited with code "
                        f"{part.proc.returncode}; the rest runs on. To start it again: "
                        f"`kill -USR1 {os.getpid()}` (or type `restart {part.name}`)",
                        flush=True,
                    )
            wanted: list[str] = []
            if restart_all.is_set():
                restart_all.clear()
                wanted = [p.name for p in group.parts if p.restartable]
            while not commands.empty():
                verb, _, name = commands.get().partition(" ")
                if verb == "restart" and group.part(name.strip()) is not None:
                    wanted.append(name.strip())
            for name in wanted:
                found = group.part(name)
                if found is None or found.proc.poll() is None:
                    continue
                proc = group.restart(name)
                print(f"{name} starting again (pid {proc.pid})", flush=True)
                if restarted is not None:
                    restarted(name)
                print(f"{name} is back", flush=True)
        print(f"stopping: {', '.join(group.fatal())} exited (see {group.logs}/)")
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
