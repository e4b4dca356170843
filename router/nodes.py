"""Clients for the session nodes, their polled status, and the affinity table kept up to date."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import grpc
import grpc.aio

from router.affinity import Affinity
from router.errors import (
    InvalidRequest,
    NodeFailed,
    NodeFull,
    NodeUnavailable,
    NodeUnreachable,
    PreconditionFailed,
    SessionNotFound,
)
from router.placement import NodeLoad
from router.settings import RouterSettings
from sessionmesh.telemetry import client_interceptors
from sessionmesh.v1 import common_pb2, node_pb2, node_pb2_grpc

log = logging.getLogger(__name__)

Health = common_pb2.NodeHealth

# Codes a node answers when the call never took effect there (connection refused, draining).
_UNREACHABLE = {grpc.StatusCode.UNAVAILABLE}
# Codes for which a broken WatchSession stream is re-opened: the transport, not the request.
TRANSPORT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)


@dataclass(frozen=True)
class Backoff:
    """Retry policy for re-opening streams: exponential delays with jitter, a bound per attempt."""

    initial: float = 0.1
    maximum: float = 3.0
    multiplier: float = 2.0
    jitter: float = 0.2
    attempt_timeout: float = 10.0  # how long one attempt may wait for the node to connect

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number `attempt` (1 = the first retry)."""
        base = min(self.maximum, self.initial * self.multiplier ** max(0, attempt - 1))
        return base * (1 + random.uniform(-self.jitter, self.jitter))


def channel_options(settings: RouterSettings) -> list[tuple[str, int]]:
    """Client-side channel options: keepalive for long streams, quick reconnects."""
    return [
        ("grpc.keepalive_time_ms", int(settings.keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2000),
        ("grpc.max_receive_message_length", 64 << 20),
    ]


class NodeClient:
    """One configured node: its channel, stub, and the status from the last poll."""

    def __init__(self, address: str, settings: RouterSettings) -> None:
        self.address = address
        self.node_id = ""  # learned from GetNodeStatus
        self.health: int = Health.NODE_HEALTH_UNSPECIFIED
        self.sessions = 0
        self.capacity = 0
        self.memory_bytes = 0
        self._timeout = settings.node_timeout
        self._channel = grpc.aio.insecure_channel(
            address, options=channel_options(settings), interceptors=client_interceptors()
        )
        self.stub = node_pb2_grpc.SessionNodeStub(self._channel)

    @property
    def label(self) -> str:
        return f"{self.node_id} ({self.address})" if self.node_id else self.address

    @property
    def load(self) -> NodeLoad:
        return NodeLoad(
            healthy=self.health == Health.SERVING, sessions=self.sessions, capacity=self.capacity
        )

    def status(self) -> common_pb2.NodeStatus:
        return common_pb2.NodeStatus(
            node_id=self.node_id,
            address=self.address,
            health=self.health,  # type: ignore[arg-type]
            sessions=self.sessions,
            capacity=self.capacity,
            memory_bytes=self.memory_bytes,
        )

    def note_placed(self) -> None:
        """Count a session placed here until the next poll says otherwise."""
        self.sessions += 1

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Translate this node's gRPC errors into router errors (the one place that does)."""
        try:
            yield
        except grpc.aio.AioRpcError as e:
            raise self.translate(e) from e
        except TimeoutError as e:
            self._mark_unreachable()
            raise NodeUnreachable(f"node {self.label} is unreachable: no connection") from e

    def translate(self, e: grpc.aio.AioRpcError) -> Exception:
        code, details = e.code(), e.details() or code_name(e.code())
        if code == grpc.StatusCode.NOT_FOUND:
            return SessionNotFound(details)
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return NodeFull(details)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return InvalidRequest(details)
        if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS):
            return PreconditionFailed(details)
        if code in _UNREACHABLE:
            self._mark_unreachable()
            return NodeUnreachable(f"node {self.label} is unavailable: {details}")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return NodeFailed(f"node {self.label} did not answer within {self._timeout:g}s")
        return NodeFailed(f"node {self.label} failed: {code_name(code)}: {details}")

    def _mark_unreachable(self) -> None:
        if self.health == Health.SERVING:
            log.warning("node %s is unreachable", self.label)
        self.health = Health.UNREACHABLE

    async def poll(self) -> bool:
        """Refresh status; returns True when the node was just reached after being out of reach."""
        before = self.health
        try:
            status = await self.stub.GetNodeStatus(
                node_pb2.NodeStatusRequest(), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as e:
            if before != Health.UNREACHABLE:
                log.warning("node %s is unreachable: %s", self.label, e.details() or e.code())
            self.health = Health.UNREACHABLE
            return False
        if self.node_id and status.node_id != self.node_id:
            log.warning("node at %s now calls itself %s", self.address, status.node_id)
        self.node_id = status.node_id
        self.health = status.health or Health.SERVING
        self.sessions = status.sessions
        self.capacity = status.capacity
        self.memory_bytes = status.memory_bytes
        if before in (Health.NODE_HEALTH_UNSPECIFIED, Health.UNREACHABLE):
            log.info(
                "node %s is %s (%d/%d sessions)",
                self.label,
                Health.Name(self.health),
                self.sessions,
                self.capacity,
            )
            return True
        return False

    async def start_session(
        self, tenant: str, session_id: str, auth_strategy: int, labels: dict[str, str]
    ) -> common_pb2.Session:
        request = node_pb2.StartSessionRequest(
            tenant=tenant,
            session_id=session_id,
            auth_strategy=auth_strategy,  # type: ignore[arg-type]
            labels=labels,
        )
        with self.errors():
            session: common_pb2.Session = await self.stub.StartSession(
                request, timeout=self._timeout
            )
        return session

    async def session_call(self, method: str, tenant: str, session_id: str) -> common_pb2.Session:
        """GetSession, StopSession or LogoutSession."""
        request = node_pb2.NodeSessionRequest(tenant=tenant, session_id=session_id)
        with self.errors():
            session: common_pb2.Session = await getattr(self.stub, method)(
                request, timeout=self._timeout
            )
        return session

    async def list_sessions(self) -> list[node_pb2.NodeSession]:
        with self.errors():
            response = await self.stub.ListSessions(
                node_pb2.NodeListSessionsRequest(), timeout=self._timeout
            )
        return list(response.sessions)

    async def wait_connected(self, timeout: float) -> None:
        """Wait until the channel is connected; NodeUnreachable after `timeout`."""
        with self.errors():
            await asyncio.wait_for(self._channel.channel_ready(), timeout)

    def watch(self, tenant: str, session_id: str, after_seq: int) -> grpc.aio.UnaryStreamCall:
        request = node_pb2.NodeWatchRequest(
            tenant=tenant, session_id=session_id, after_seq=after_seq
        )
        call: grpc.aio.UnaryStreamCall = self.stub.WatchSession(request)
        return call

    async def aclose(self) -> None:
        await self._channel.close()


def code_name(code: grpc.StatusCode | None) -> str:
    return code.name if code is not None else "UNKNOWN"


class NodePool:
    """All configured nodes: polls their status and keeps the affinity table in step."""

    def __init__(self, settings: RouterSettings, affinity: Affinity) -> None:
        self.settings = settings
        self.affinity = affinity
        self.clients: Sequence[NodeClient] = ()
        self._task: asyncio.Task[None] | None = None
        self._state = "new"

    async def __aenter__(self) -> NodePool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Open channels, poll every node once and rebuild the affinity table from them."""
        if self._state != "new":
            raise RuntimeError(f"node pool cannot start: it is {self._state}")
        self._state = "open"
        self.clients = tuple(NodeClient(a, self.settings) for a in self.settings.nodes)
        await asyncio.gather(*(self._poll_and_refresh(c) for c in self.clients))
        up = sum(1 for c in self.clients if c.health == Health.SERVING)
        log.info(
            "%d of %d nodes serving; %d sessions known", up, len(self.clients), len(self.affinity)
        )
        self._task = asyncio.create_task(self._run(), name="router-node-poller")

    async def aclose(self) -> None:
        if self._state == "closed":
            return
        self._state = "closed"
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.gather(*(c.aclose() for c in self.clients), return_exceptions=True)

    def by_id(self, node_id: str) -> NodeClient | None:
        for client in self.clients:
            if client.node_id == node_id:
                return client
        return None

    def by_address(self, address: str) -> NodeClient:
        for client in self.clients:
            if client.address == address:
                return client
        raise KeyError(address)

    def loads(self) -> dict[str, NodeLoad]:
        return {c.address: c.load for c in self.clients}

    def owner(self, tenant: str, session_id: str) -> NodeClient:
        """The node holding a session; SessionNotFound for unknown (or another tenant's) ids."""
        node_id = self.affinity.get(tenant, session_id)
        if node_id is None:
            raise SessionNotFound(f"session {session_id!r} not found")
        client = self.by_id(node_id)
        if client is None:
            raise NodeUnavailable(
                f"session {session_id!r} is on node {node_id}, which the router cannot reach"
            )
        return client

    async def poll_all(self) -> None:
        await asyncio.gather(*(self._poll_and_refresh(c) for c in self.clients))

    async def refresh(self, client: NodeClient) -> None:
        """Merge what `client` holds into the affinity table."""
        try:
            held = await client.list_sessions()
        except (NodeUnavailable, InvalidRequest, PreconditionFailed, SessionNotFound) as e:
            log.warning("could not list sessions on node %s: %s", client.label, e)
            return
        node_id = client.node_id
        added = self.affinity.merge(
            node_id, ((s.tenant, s.session.session_id) for s in held if node_id)
        )
        if added:
            log.info("learned %d sessions from node %s", added, client.label)

    async def _poll_and_refresh(self, client: NodeClient) -> None:
        if await client.poll():
            await self.refresh(client)

    async def _run(self) -> None:
        last_refresh = time.monotonic()
        while True:
            await asyncio.sleep(self.settings.node_poll_interval)
            try:
                await self.poll_all()
                if time.monotonic() - last_refresh >= self.settings.affinity_refresh_interval:
                    last_refresh = time.monotonic()
                    await asyncio.gather(
                        *(self.refresh(c) for c in self.clients if c.health == Health.SERVING)
                    )
            except Exception:
                log.exception("node poll failed")
