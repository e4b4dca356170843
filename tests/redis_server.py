"""Private redis-server processes for tests: standalone, stoppable on the same port, and a cluster.

Each server binds 127.0.0.1 on a free port (redis-server refuses --port 0, so a port is picked and
the start retried on a clash), keeps no data on disk, writes its output to a file in its own temp
dir, and is killed at the end. `output()` returns that file's text for failure reports.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from sessionmesh.redis_conn import RedisSettings

REDIS_SERVER = os.environ.get("REDIS_SERVER_BIN") or shutil.which("redis-server")
REDIS_CLI = os.environ.get("REDIS_CLI_BIN") or shutil.which("redis-cli")
START_DEADLINE = float(os.environ.get("MESH_TEST_DEADLINE", "60"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command(port: int, *args: str, timeout: float = 2.0) -> str:
    """Send one inline command over a raw socket; return the raw reply text."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall((" ".join(args) + "\r\n").encode())
        chunks = b""
        s.settimeout(timeout)
        while True:
            chunk = s.recv(65536)
            chunks += chunk
            if not chunk or _complete(chunks):
                return chunks.decode("utf-8", "replace")


def _complete(reply: bytes) -> bool:
    if reply[:1] in (b"+", b"-", b":"):
        return reply.endswith(b"\r\n")
    if reply[:1] == b"$":
        head, _, rest = reply.partition(b"\r\n")
        size = int(head[1:])
        return size < 0 or len(rest) >= size + 2
    return False


def answers_ping(port: int) -> bool:
    try:
        return command(port, "PING", timeout=1.0).startswith("+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server on 127.0.0.1; `stop()` and `start()` again keep the port (outage tests)."""

    def __init__(self, *extra: str, workdir: Path | None = None) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server not found; run deploy/install-redis.sh")
        self._extra = extra
        self._own_dir = workdir is None
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="mesh-redis-"))
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        assert REDIS_SERVER is not None
        return [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--protected-mode", "no",
            *self._extra,
        ]  # fmt: skip

    def start(self) -> RedisServer:
        """Start (again); a first start picks a free port, retrying on a bind clash."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        fixed = self.port != 0
        for _attempt in range(8):
            if not fixed:
                self.port = free_port()
            if self._spawn():
                return self
            if fixed and not self._clashed():
                break
            if fixed:
                time.sleep(0.2)  # the old socket may linger briefly; the port is ours to reuse
        raise RuntimeError(f"redis-server did not start on port {self.port}:\n{self.output()}")

    def _spawn(self) -> bool:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.args(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if answers_ping(self.port):
                return True
            time.sleep(0.05)
        self.kill()
        return False

    def _clashed(self) -> bool:
        return "Address already in use" in self.output()

    def stop(self) -> None:
        """Kill the server (SIGKILL, as an outage); start() brings it back on the same port."""
        self.kill()

    def kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP: the port stays open but nothing answers, like a hung server."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.resume()
            except (OSError, AssertionError):
                pass
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SentinelServer(RedisServer):
    """A redis-server in Sentinel mode watching `master_port` as `master_name` (quorum 1)."""

    def __init__(self, master_port: int, master_name: str = "mymaster") -> None:
        super().__init__()
        self.master_port = master_port
        self.master_name = master_name

    def args(self) -> list[str]:
        assert REDIS_SERVER is not None
        conf = self.dir / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
            f"sentinel monitor {self.master_name} 127.0.0.1 {self.master_port} 1\n"
        )
        return [REDIS_SERVER, str(conf), "--sentinel"]


class RedisClusterServers:
    """Three masters, no replicas, joined with `redis-cli --cluster create`."""

    def __init__(self, masters: int = 3) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mesh-redis-cluster-"))
        self._masters = masters
        self.servers: list[RedisServer] = []
        self.create_log = ""

    @property
    def url(self) -> str:
        return self.servers[0].url

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    def start(self) -> RedisClusterServers:
        if REDIS_CLI is None:
            raise RuntimeError("redis-cli not found")
        for n in range(self._masters):
            workdir = self.dir / f"n{n}"
            workdir.mkdir()
            server = RedisServer(
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(workdir / "nodes.conf"),
                "--cluster-node-timeout", "5000",
                workdir=workdir,
            )  # fmt: skip
            self.servers.append(server)
            server.start()
        created = subprocess.run(
            [
                REDIS_CLI, "--cluster", "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas", "0", "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=START_DEADLINE,
            check=False,
        )  # fmt: skip
        self.create_log = created.stdout + created.stderr
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{self.create_log}")
        deadline = time.monotonic() + START_DEADLINE
        while not all(self._ok(p) for p in self.ports):
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster never reached cluster_state:ok\n{self.output()}")
            time.sleep(0.1)
        return self

    @staticmethod
    def _ok(port: int) -> bool:
        try:
            info = command(port, "CLUSTER", "INFO")
        except OSError:
            return False
        return "cluster_state:ok" in info and "cluster_slots_assigned:16384" in info

    def output(self) -> str:
        logs = [f"--- {s.port}\n{s.output()}" for s in self.servers]
        return "\n".join([self.create_log, *logs])

    def close(self) -> None:
        for server in self.servers:
            server.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisClusterServers:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def random_prefix() -> str:
    """A key prefix no other test run uses, for sharing an external server."""
    return f"test-{uuid.uuid4().hex[:12]}:whatsapp:session:"


def settings_for(url: str, *, cluster: bool, timeout: float = 1.0) -> RedisSettings:
    """Client settings for a test server: short timeouts, one retry."""
    env = {
        "REDIS_URL": url,
        "REDIS_CLUSTER": "true" if cluster else "false",
        "REDIS_SOCKET_TIMEOUT": str(timeout),
        "REDIS_RETRIES": "1",
    }
    return RedisSettings.from_env(env)


def key_spec(kid: str, fill: int) -> str:
    """A MESH_SNAPSHOT_KEY entry with a fixed, recognisable 32-byte key."""
    return f"{kid}:{base64.b64encode(bytes([fill]) * 32).decode()}"


async def wait_for(predicate: Any, *, timeout: float = START_DEADLINE, what: str = "it") -> None:
    """Poll a (possibly async) predicate until true; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.02)
