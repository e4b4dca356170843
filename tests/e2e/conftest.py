"""A RemoteAuth mesh for failover tests: a private redis-server, the sandbox, nodes as real
`mesh-node` processes (so they can be killed with SIGKILL) and routers in-process. Routers and
nodes talk mutual TLS, with certificates from a throwaway CA made for the test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from node.crypto import new_key_spec
from node.memory import descendants
from router.server import RouterServer
from router.settings import RouterSettings
from sessionmesh.auth import parse_tokens
from sessionmesh.certs import Authority
from sessionmesh.procs import ProcessGroup, wait_serving
from sessionmesh.tls import TransportSecurity
from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import node_pb2, node_pb2_grpc
from tests.conftest import TOKENS
from tests.helpers import DEADLINE, free_port
from tests.redis_server import RedisServer, settings_for

LEASE_TTL = 3.0  # s: small, so a takeover waits little
HEARTBEAT_TTL = 3.0
DEAD_AFTER = 2.0


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@dataclass
class NodeProc:
    name: str
    address: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    restarts: int = 0


@dataclass
class Mesh:
    """What `mesh` started; `node()`, `kill()`, `restart()`, `router()` add to it."""

    redis: RedisServer
    sandbox_url: str
    group: ProcessGroup
    root: Path
    key_spec: str = field(default_factory=lambda: new_key_spec("k1"))
    nodes: dict[str, NodeProc] = field(default_factory=dict)
    routers: list[RouterServer] = field(default_factory=list)
    paused: list[int] = field(default_factory=list)  # SIGSTOPped pids, resumed at teardown
    ca: Authority | None = None

    @property
    def authority(self) -> Authority:
        if self.ca is None:
            self.ca = Authority(self.root / "ca")
        return self.ca

    def security(self, name: str) -> TransportSecurity:
        """mTLS settings for a process named `name` (a router, or a test acting as one)."""
        issued = self.authority.issue(name, role="router")
        return TransportSecurity.from_env(self.authority.mtls_env(issued))

    def credentials(self) -> grpc.ChannelCredentials:
        credentials = self.security("test-client").node_channel_credentials()
        assert credentials is not None
        return credentials

    def _spawn(self, node: NodeProc) -> None:
        label = node.name if not node.restarts else f"{node.name}.{node.restarts}"
        node.proc = self.group.spawn(label, ["mesh-node"], node.env)

    async def node(self, name: str, **env: str) -> NodeProc:
        address = f"127.0.0.1:{free_port()}"
        full = {
            "MESH_NODE_ID": name,
            "MESH_NODE_LISTEN": address,
            "WA_URL": self.sandbox_url,
            "AUTH_STRATEGY": "remoteauth",
            "SESSION_STORAGE_PATH": str(self.root / name / "sessions"),
            "REDIS_URL": self.redis.url,
            "REDIS_SOCKET_TIMEOUT": "1",
            "MESH_SNAPSHOT_KEY": self.key_spec,
            "MESH_LEASE_TTL": str(LEASE_TTL),
            "MESH_HEARTBEAT_TTL": str(HEARTBEAT_TTL),
            "MESH_HEARTBEAT_INTERVAL": "0.5",
            "QR_FIRST_TIMEOUT": "5",
            "QR_TIMEOUT": "2",
            "SHUTDOWN_GRACE": "2",
            "LOG_LEVEL": "INFO",
            **self.authority.mtls_env(self.authority.issue(name)),
            **env,
        }
        node = NodeProc(name, address, full, proc=None)  # type: ignore[arg-type]
        self._spawn(node)
        self.nodes[name] = node
        return node

    async def wait_serving(self, *nodes: NodeProc) -> None:
        await asyncio.gather(
            *(
                asyncio.to_thread(
                    wait_serving, n.address, n.proc, n.name, DEADLINE * 2, self.credentials()
                )
                for n in nodes
            )
        )

    def kill(self, node: NodeProc) -> None:
        """SIGKILL: no final snapshot, no deregistration, sockets reset."""
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(timeout=30)

    def pause(self, node: NodeProc) -> list[int]:
        """SIGSTOP the node and every descendant (Chromium runs in process groups of its own,
        so each is stopped by pid); returns the pids, for `resume`."""
        pids = [node.proc.pid]
        self.paused += pids
        os.kill(node.proc.pid, signal.SIGSTOP)
        # Stopped parents fork nothing more; walk until no new descendant shows up.
        while True:
            fresh = [p for p in descendants(node.proc.pid) if p not in pids]
            if not fresh:
                return pids
            self.paused += fresh
            for pid in fresh:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            pids += fresh

    def resume(self, pids: list[int]) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
            with contextlib.suppress(ValueError):
                self.paused.remove(pid)

    async def session_on(self, node: NodeProc, session_id: str) -> pb.Session | None:
        """The session as `node` itself reports it (SessionNode GetSession), None if unknown."""
        async with grpc.aio.secure_channel(node.address, self.credentials()) as channel:
            stub = node_pb2_grpc.SessionNodeStub(channel)
            try:
                reply: pb.Session = await stub.GetSession(
                    node_pb2.NodeSessionRequest(tenant="acme", session_id=session_id),
                    timeout=10,
                )
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    return None
                raise
        return reply

    async def restart(self, node: NodeProc) -> None:
        node.restarts += 1
        self._spawn(node)
        await self.wait_serving(node)

    async def router(self, **overrides: Any) -> RouterServer:
        fields: dict[str, Any] = {
            "nodes": (),
            "tokens": parse_tokens(",".join(f"{t}:{tok}" for t, tok in TOKENS.items())),
            "listen": "127.0.0.1:0",
            "node_poll_interval": 0.2,
            "member_poll_interval": 0.2,
            "node_timeout": 10.0,
            "grace": 0.5,
            "redis": settings_for(self.redis.url, cluster=False),
            "dead_after": DEAD_AFTER,
            "admin_tenants": frozenset({"acme"}),
            "security": self.security(f"router-{len(self.routers) + 1}"),
        }
        fields.update(overrides)
        router = RouterServer(RouterSettings(**fields))
        await router.start()
        self.routers.append(router)
        return router

    def logs(self) -> str:
        out = []
        for path in sorted(self.group.logs.glob("*.log")):
            out.append(f"--- {path.name}\n{path.read_text(errors='replace')[-6000:]}")
        return "\n".join(out)


@pytest.fixture
def _mesh_redis(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"--- redis-server output ---\n{server.output()}")


@pytest.fixture
async def mesh(
    request: pytest.FixtureRequest, _mesh_redis: RedisServer, sandbox: Any, tmp_path: Path
) -> AsyncIterator[Mesh]:
    group = ProcessGroup(tmp_path / "logs")
    made = Mesh(_mesh_redis, sandbox.url, group, tmp_path)
    try:
        yield made
    finally:
        made.resume(list(made.paused))
        for router in reversed(made.routers):
            await router.aclose()
        await asyncio.to_thread(group.stop_all, 20)
        report = getattr(request.node, "rep_call", None)
        if (report is not None and report.failed) or os.environ.get("MESH_TEST_LOGS"):
            print(made.logs())
