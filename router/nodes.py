"""Clients for the session nodes, their polled status, and the affinity table kept up to date."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from router.affinity import Affinity
from router.directory import Directory
from router.errors import (
    InvalidRequest,
    NodeFailed,
    NodeFull,
    NodeUnavailable,
    NodeUnreachable,
    OutOfRange,
    PreconditionFailed,
    RedisUnavailable,
    SessionNotFound,
)
from router.membership import Liveness, NodeLiveness
from router.placement import NodeLoad, Placement
from router.settings import RouterSettings
from sessionmesh import retry
from sessionmesh.config import ConfigError
from sessionmesh.retry import RetryPolicy
from sessionmesh.schema import LIVE_STATES
from sessionmesh.telemetry import traced_stub
from sessionmesh.v1 import common_pb2, mesh_pb2, node_pb2, node_pb2_grpc

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


def channel_options(settings: RouterSettings) -> list[tuple[str, str | int]]:
    """Client-side channel options: keepalive for long streams, quick reconnects, and the name
    a node's certificate must carry (MESH_MTLS_NODE_NAME)."""
    return [
        *settings.security.node_channel_options(),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout * 1000)),
        # gRPC 1.85 waits for a ping's answer by this one (60 s by default), not the above: a
        # frozen node must fail its streams within MESH_KEEPALIVE_TIMEOUT.
        ("grpc.http2.ping_timeout_ms", int(settings.keepalive_timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2000),
        ("grpc.max_receive_message_length", 64 << 20),
    ]


class NodeClient:
    """One node: its channel, stub, the status from the last poll, and its health stream."""

    def __init__(
        self, address: str, settings: RouterSettings, *, static: bool = True, node_id: str = ""
    ) -> None:
        self.address = address
        self.static = static  # from MESH_NODES (kept); otherwise learned from Redis
        self.node_id = node_id  # learned from GetNodeStatus (or the member set)
        self.health: int = Health.NODE_HEALTH_UNSPECIFIED
        self.sessions = 0
        self.capacity = 0
        self.memory_bytes = 0
        self.missing_hooks: list[str] = []
        self.wa_version = ""
        # Set by the pool from the node's liveness: only admitted nodes get new sessions.
        self.liveness: Liveness | None = None
        self.stream_ok = False  # the grpc.health.v1 Watch stream is open and has answered
        # The last status poll answered. A stream over a link that silently drops packets
        # stays "open" until keepalive gives up (MESH_KEEPALIVE_TIME + _TIMEOUT); a poll with a
        # short deadline notices within STATUS_DEADLINE.
        self.poll_ok = False
        self.silent_since: float | None = None  # when the first unanswered poll was sent
        self.stream_settled = asyncio.Event()  # the stream answered or failed at least once
        self._timeout = settings.node_timeout
        self._status_timeout = status_deadline(settings)
        self._takeover_timeout = settings.takeover_timeout
        # The one place a channel to a node is made: never in clear off loopback.
        settings.security.check_node_address(address, f"node {node_id or address}")
        credentials = settings.security.node_channel_credentials()
        if credentials is not None:  # mutual TLS: our certificate, the mesh's CA
            self._channel = grpc.aio.secure_channel(
                address, credentials, options=channel_options(settings)
            )
        else:
            self._channel = grpc.aio.insecure_channel(address, options=channel_options(settings))
        self._metadata = settings.security.node_metadata()
        # A client span and trace context on each call (health and status polls untraced).
        self.stub = traced_stub(node_pb2_grpc.SessionNodeStub(self._channel))
        self._health_stub = health_pb2_grpc.HealthStub(self._channel)

    @property
    def label(self) -> str:
        return f"{self.node_id} ({self.address})" if self.node_id else self.address

    @property
    def admitted(self) -> bool:
        """Takes new sessions: polled SERVING and, when it is a member, HEALTHY by liveness."""
        return self.health == Health.SERVING and self.liveness in (None, Liveness.HEALTHY)

    @property
    def dead(self) -> bool:
        return self.liveness is Liveness.DEAD

    @property
    def reachable(self) -> bool:
        """What liveness counts as a good health check: the stream is open and polls answer."""
        return self.stream_ok and self.poll_ok

    @property
    def load(self) -> NodeLoad:
        return NodeLoad(healthy=self.admitted, sessions=self.sessions, capacity=self.capacity)

    def status(self) -> common_pb2.NodeStatus:
        return common_pb2.NodeStatus(
            node_id=self.node_id,
            address=self.address,
            health=Health.UNREACHABLE if self.dead else self.health,  # type: ignore[arg-type]
            sessions=self.sessions,
            capacity=self.capacity,
            memory_bytes=self.memory_bytes,
            missing_hooks=self.missing_hooks,
            wa_version=self.wa_version,
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
        if code == grpc.StatusCode.OUT_OF_RANGE:
            return OutOfRange(details)
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
        sent = time.monotonic()
        try:
            status = await self.stub.GetNodeStatus(
                node_pb2.NodeStatusRequest(), timeout=self._status_timeout, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as e:
            if before != Health.UNREACHABLE:
                log.warning("node %s is unreachable: %s", self.label, e.details() or e.code())
            self.health = Health.UNREACHABLE
            self.poll_ok = False
            if self.silent_since is None:
                self.silent_since = sent  # nothing answered since
            return False
        self.poll_ok, self.silent_since = True, None
        if self.node_id and status.node_id != self.node_id:
            log.warning("node at %s now calls itself %s", self.address, status.node_id)
        self.node_id = status.node_id
        self.health = status.health or Health.SERVING
        self.sessions = status.sessions
        self.capacity = status.capacity
        self.memory_bytes = status.memory_bytes
        self.missing_hooks = list(status.missing_hooks)
        self.wa_version = status.wa_version
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

    async def watch_health(self, backoff: RetryPolicy, on_change: Callable[[], None]) -> None:
        """Follow grpc.health.v1 Watch for ever: `stream_ok` while it answers; re-open on break.

        Any answer counts (a draining node answers NOT_SERVING and is alive); a broken or
        refused stream is what liveness counts as a failed health check.
        """
        attempt = 0
        while True:
            call = self._health_stub.Watch(health_pb2.HealthCheckRequest(service=""))
            try:
                async for _reply in call:
                    attempt = 0
                    if not self.stream_ok:
                        self.stream_ok = True
                        self.stream_settled.set()
                        on_change()
                why = "the stream ended"
            except grpc.aio.AioRpcError as e:
                why = f"{code_name(e.code())}: {e.details()}"
            finally:
                call.cancel()
            if self.stream_ok:
                log.warning("node %s: health stream lost (%s)", self.label, why)
            self.stream_ok = False
            self.stream_settled.set()
            on_change()
            attempt += 1
            await asyncio.sleep(backoff.delay(attempt))

    async def start_session(
        self,
        tenant: str,
        session_id: str,
        auth_strategy: int,
        labels: dict[str, str],
        *,
        takeover: bool = False,
    ) -> common_pb2.Session:
        """StartSession; with `takeover` (failover, move) the node waits out the old lease."""
        request = node_pb2.StartSessionRequest(
            tenant=tenant,
            session_id=session_id,
            auth_strategy=auth_strategy,  # type: ignore[arg-type]
            labels=labels,
            takeover=takeover,
        )
        timeout = self._takeover_timeout if takeover else self._timeout
        with self.errors():
            session: common_pb2.Session = await self.stub.StartSession(
                request, timeout=timeout, metadata=self._metadata
            )
        return session

    async def drain(self, done: bool) -> common_pb2.NodeStatus:
        """Drain(done=False): stop admitting (DRAINING); Drain(done=True): NOT_SERVING."""
        with self.errors():
            status: common_pb2.NodeStatus = await self.stub.Drain(
                node_pb2.NodeDrainRequest(done=done), timeout=self._timeout, metadata=self._metadata
            )
        self.health = status.health or self.health
        return status

    async def hand_off(self, tenant: str, session_id: str) -> common_pb2.Session:
        """Final snapshot, lease released, closed: the session is to start elsewhere."""
        request = node_pb2.NodeSessionRequest(tenant=tenant, session_id=session_id)
        with self.errors():
            session: common_pb2.Session = await self.stub.HandOffSession(
                request, timeout=self._takeover_timeout, metadata=self._metadata
            )
        return session

    async def session_call(self, method: str, tenant: str, session_id: str) -> common_pb2.Session:
        """GetSession, StopSession or LogoutSession."""
        request = node_pb2.NodeSessionRequest(tenant=tenant, session_id=session_id)
        with self.errors():
            session: common_pb2.Session = await getattr(self.stub, method)(
                request, timeout=self._timeout, metadata=self._metadata
            )
        return session

    async def send_message(
        self, tenant: str, request: mesh_pb2.SendMessageRequest, timeout: float
    ) -> mesh_pb2.SendMessageResponse:
        """A send waits its turn in the session's queue: `timeout` allows for that."""
        with self.errors():
            reply: mesh_pb2.SendMessageResponse = await self.stub.SendMessage(
                node_pb2.NodeSendMessageRequest(tenant=tenant, request=request), timeout=timeout
            )
        return reply

    def media(self, tenant: str, session_id: str, message_id: str) -> Any:
        """The node's GetMessageMedia stream (iterate it inside `errors()`)."""
        return self.stub.GetMessageMedia(
            node_pb2.NodeMediaRequest(tenant=tenant, session_id=session_id, message_id=message_id),
            timeout=self._takeover_timeout,
        )

    async def list_sessions(self) -> list[node_pb2.NodeSession]:
        with self.errors():
            response = await self.stub.ListSessions(
                node_pb2.NodeListSessionsRequest(), timeout=self._timeout, metadata=self._metadata
            )
        return list(response.sessions)

    async def latency(self) -> list[node_pb2.TenantLatency]:
        with self.errors():
            response = await self.stub.GetLatency(
                node_pb2.NodeLatencyRequest(), timeout=self._timeout, metadata=self._metadata
            )
        return list(response.histograms)

    async def wait_connected(self, timeout: float) -> None:
        """Wait until the channel is connected; NodeUnreachable after `timeout`."""
        with self.errors():
            await asyncio.wait_for(self._channel.channel_ready(), timeout)

    def watch(self, tenant: str, session_id: str, after_seq: int) -> grpc.aio.UnaryStreamCall:
        request = node_pb2.NodeWatchRequest(
            tenant=tenant, session_id=session_id, after_seq=after_seq
        )
        call: grpc.aio.UnaryStreamCall = self.stub.WatchSession(request, metadata=self._metadata)
        return call

    async def aclose(self) -> None:
        await self._channel.close()


POLL_WAIT = 0.25  # s a poll round waits for answers before liveness is evaluated


def status_deadline(settings: RouterSettings) -> float:
    """Deadline of a status poll: two poll intervals, at least 1 s, at most MESH_NODE_TIMEOUT.
    A node cut off by a partition (packets dropped, no reset) is noticed this fast."""
    return min(settings.node_timeout, max(1.0, 2 * settings.node_poll_interval))


def code_name(code: grpc.StatusCode | None) -> str:
    return code.name if code is not None else "UNKNOWN"


DeathHandler = Callable[[str, str], Awaitable[None]]


class NodePool:
    """The nodes: MESH_NODES plus, with Redis, the live members; polls their status, follows
    their health streams, keeps liveness (router.membership) and the affinity cache in step,
    and calls `on_death(node_id, epoch)` once per declared death."""

    def __init__(
        self,
        settings: RouterSettings,
        affinity: Affinity,
        directory: Directory | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.affinity = affinity
        self.directory = directory
        self.clients: Sequence[NodeClient] = ()
        self.on_death: DeathHandler | None = None
        self.redis_reachable = directory is not None
        self._clock = clock
        self._liveness: dict[str, NodeLiveness] = {}
        self._watchers: dict[NodeClient, asyncio.Task[None]] = {}
        self._polls: dict[NodeClient, asyncio.Task[None]] = {}
        self._deaths: set[asyncio.Task[None]] = set()
        self._backoff = retry.HEALTH
        self._placement: Placement | None = None
        self._task: asyncio.Task[None] | None = None
        self._state = "new"

    async def __aenter__(self) -> NodePool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Open channels, read the members, poll every node once, rebuild the affinity cache."""
        if self._state != "new":
            raise RuntimeError(f"node pool cannot start: it is {self._state}")
        self._state = "open"
        for address in self.settings.nodes:
            self._add(NodeClient(address, self.settings))
        if self.directory is not None:
            await self.sync_members()
        await self._settle(self.clients)
        await asyncio.gather(*(self._poll_and_refresh(c) for c in self.clients))
        self.tick()
        up = sum(1 for c in self.clients if c.admitted)
        log.info(
            "%d of %d nodes serving; %d sessions known", up, len(self.clients), len(self.affinity)
        )
        self._task = asyncio.create_task(self._run(), name="router-node-poller")

    async def aclose(self) -> None:
        if self._state == "closed":
            return
        self._state = "closed"
        tasks = [
            t
            for t in (self._task, *self._watchers.values(), *self._polls.values(), *self._deaths)
            if t
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(c.aclose() for c in self.clients), return_exceptions=True)

    # -- the node set --------------------------------------------------------------------

    def _add(self, client: NodeClient) -> None:
        self.clients = (*self.clients, client)
        self._placement = None
        self._watchers[client] = asyncio.create_task(
            client.watch_health(self._backoff, self.tick), name=f"health-{client.address}"
        )

    async def _remove(self, client: NodeClient) -> None:
        self.clients = tuple(c for c in self.clients if c is not client)
        self._placement = None
        task = self._watchers.pop(client, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await client.aclose()

    async def _settle(self, clients: Sequence[NodeClient], within: float = 2.0) -> None:
        """Give new health streams a moment to answer, so a start does not begin empty."""
        waits = [asyncio.wait_for(c.stream_settled.wait(), within) for c in clients]
        await asyncio.gather(*waits, return_exceptions=True)

    def placement(self) -> Placement:
        """The ring over the current nodes (rebuilt when they change)."""
        if not self.clients:
            raise NodeUnavailable("no node is known yet (none in MESH_NODES or alive in Redis)")
        if self._placement is None:
            self._placement = Placement(
                [c.address for c in self.clients], self.settings.load_factor
            )
        return self._placement

    async def sync_members(self) -> None:
        """Read `{mesh}{nodes}` and the heartbeats; add new members; feed liveness.

        If Redis cannot be read, the last known members stay and no heartbeat counts as lost.
        """
        assert self.directory is not None
        now = self._clock()
        try:
            members = await self.directory.members()
        except RedisUnavailable as e:
            if self.redis_reachable:
                log.warning("membership: %s; keeping the last known members", e)
            self.redis_reachable = False
            for liveness in self._liveness.values():
                liveness.heartbeat(None, now)
            return
        if not self.redis_reachable:
            log.info("membership: Redis is reachable again")
        self.redis_reachable = True
        added: list[NodeClient] = []
        for node_id, beat in members.items():
            known = self._liveness.setdefault(
                node_id, NodeLiveness(node_id, self.settings.dead_after)
            )
            known.heartbeat(beat is not None, now, beat.epoch if beat else "")
            if beat is not None:
                client = await self._member_client(node_id, beat.address)
                if client is not None:
                    added.append(client)
        for node_id, liveness in self._liveness.items():
            if node_id not in members:  # removed from the set: as good as no heartbeat
                liveness.heartbeat(False, now)
        if added:
            await self._settle(added)
            await asyncio.gather(*(self._poll_and_refresh(c) for c in added))

    async def _member_client(self, node_id: str, address: str) -> NodeClient | None:
        """The client for a member at `address`; a new one is returned, a known one is not."""
        known = next((c for c in self.clients if c.address == address), None)
        if known is not None:
            if not known.node_id:
                known.node_id = node_id
            return None
        try:
            self.settings.security.check_node_address(address, f"the heartbeat of {node_id}")
        except ConfigError as e:
            log.error("not calling node %s: %s", node_id, e)
            return None
        for old in [c for c in self.clients if c.node_id == node_id and not c.static]:
            log.info("node %s moved from %s to %s", node_id, old.address, address)
            await self._remove(old)
        client = NodeClient(address, self.settings, static=False, node_id=node_id)
        log.info("node %s joined at %s", node_id, address)
        self._add(client)
        return client

    def liveness(self, node_id: str) -> Liveness | None:
        found = self._liveness.get(node_id)
        return found.state if found is not None else None

    def is_dead(self, node_id: str) -> bool:
        return self.liveness(node_id) is Liveness.DEAD

    def dead_nodes(self) -> list[str]:
        return sorted(i for i, lv in self._liveness.items() if lv.state is Liveness.DEAD)

    def tick(self) -> None:
        """Re-evaluate every node's liveness; start a failover for each new death."""
        now = self._clock()
        for node_id, liveness in self._liveness.items():
            client = self.by_id(node_id)
            ok = client is not None and client.reachable
            silent = client.silent_since if client is not None else None
            # A node is silent since the first poll it left unanswered was sent, not since
            # that poll's deadline passed.
            liveness.health(ok, now if ok or silent is None else min(now, silent))
            before = liveness.state
            died = liveness.declared_dead(now)
            if client is not None:
                client.liveness = liveness.state
            if liveness.state is not before:
                log.info("node %s: %s -> %s", node_id, before.value, liveness.state.value)
            if died:
                log.warning("node %s (epoch %s) is declared dead", node_id, liveness.epoch)
                self.affinity.wake(self.affinity.on_node(node_id))
                self._spawn_death(node_id, liveness.epoch)

    def _spawn_death(self, node_id: str, epoch: str) -> None:
        if self.on_death is None or self._state != "open":
            return
        task = asyncio.create_task(self._run_death(node_id, epoch), name=f"failover-{node_id}")
        self._deaths.add(task)
        task.add_done_callback(self._deaths.discard)

    async def _run_death(self, node_id: str, epoch: str) -> None:
        assert self.on_death is not None
        try:
            await self.on_death(node_id, epoch)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("failover of node %s failed", node_id)

    # -- lookups -------------------------------------------------------------------------

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

    def loads(self, exclude: frozenset[str] = frozenset()) -> dict[str, NodeLoad]:
        """Placement input; nodes whose id is in `exclude` count as unhealthy."""
        return {
            c.address: NodeLoad(False, c.sessions, c.capacity) if c.node_id in exclude else c.load
            for c in self.clients
        }

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

    async def _poll_round(self) -> None:
        """Poll every node at once, waiting at most POLL_WAIT for the answers: a node that does
        not answer (a partition) must hold up neither the others' polls nor the liveness ticks.
        A node still being polled from an earlier round is not polled again."""
        for client in self.clients:
            running = self._polls.get(client)
            if running is None or running.done():
                self._polls[client] = asyncio.create_task(
                    self._poll_and_refresh(client), name=f"poll-{client.address}"
                )
        pending = [t for t in self._polls.values() if not t.done()]
        if pending:  # the answers of nodes that answer at all; a silent one ticks when it fails
            await asyncio.wait(pending, timeout=min(POLL_WAIT, self.settings.node_poll_interval))
        for client, task in list(self._polls.items()):
            if task.done():
                del self._polls[client]
                if not task.cancelled() and task.exception() is not None:
                    log.error("polling node %s failed", client.label, exc_info=task.exception())

    async def refresh(self, client: NodeClient) -> None:
        """Merge what `client` holds into the affinity cache (with Redis: live sessions only,
        since a session handed off elsewhere stays listed, STOPPED, on its old node)."""
        try:
            held = await client.list_sessions()
        except (NodeUnavailable, InvalidRequest, PreconditionFailed, SessionNotFound) as e:
            log.warning("could not list sessions on node %s: %s", client.label, e)
            return
        node_id = client.node_id
        if not node_id:
            return
        live_only = self.directory is not None
        keys, not_live = [], []
        for s in held:
            self.affinity.note_strategy(s.tenant, s.session.session_id, s.session.auth_strategy)
            if not live_only or s.session.state in LIVE_STATES:
                keys.append((s.tenant, s.session.session_id))
            else:
                not_live.append((s.tenant, s.session.session_id))
        self.affinity.note_not_live(node_id, not_live)
        added = self.affinity.merge(node_id, keys)
        if added:
            log.info("learned %d sessions from node %s", added, client.label)

    async def _poll_and_refresh(self, client: NodeClient) -> None:
        was_ok = client.poll_ok
        back = await client.poll()
        if client.poll_ok != was_ok and self._state == "open":
            self.tick()  # liveness learns of a failed (or answered) poll at once
        if back:
            await self.refresh(client)

    async def _run(self) -> None:
        last_refresh = last_members = time.monotonic()
        while True:
            await asyncio.sleep(self.settings.node_poll_interval)
            try:
                if (
                    self.directory is not None
                    and time.monotonic() - last_members >= self.settings.member_poll_interval
                ):
                    last_members = time.monotonic()
                    await self.sync_members()
                await self._poll_round()
                self.tick()
                if time.monotonic() - last_refresh >= self.settings.affinity_refresh_interval:
                    last_refresh = time.monotonic()
                    await asyncio.gather(
                        *(self.refresh(c) for c in self.clients if c.health == Health.SERVING)
                    )
            except Exception:
                log.exception("node poll failed")
