"""The public `sessionmesh.v1.SessionMesh` servicer: checks input, places, proxies to nodes."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeAlias

import grpc
import grpc.aio

from router.affinity import Key
from router.directory import DirEntry
from router.errors import (
    ClusterFull,
    NodeFull,
    NodeUnavailable,
    NodeUnreachable,
    PermissionDenied,
    QuotaExceeded,
    RedisUnavailable,
    SessionNotFound,
)
from router.failover import (
    DEFAULT_DRAIN_PARALLELISM,
    MAX_DRAIN_PARALLELISM,
    Mover,
    local_reason,
)
from router.interceptors import current_tenant
from router.nodes import TRANSPORT_CODES, NodeClient, NodePool
from router.placement import placement_key
from router.webhook_api import WebhookApi
from sessionmesh import latency, retry
from sessionmesh.retry import RetryPolicy
from sessionmesh.schema import LIVE_STATES
from sessionmesh.sending import MESSAGE_ID_RE, check_send
from sessionmesh.v1 import common_pb2, mesh_pb2, mesh_pb2_grpc
from sessionmesh.validation import InvalidArgument, check_labels, check_session_id

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# With a directory, a watcher whose node is gone looks the session up again at least this often,
# so it follows a failover run by another router; the router's own moves wake it at once.
RELOCATE_INTERVAL = 1.0
SEND_TIMEOUT = 300.0  # s: a send may wait behind others in its session's queue
CONNECT_TIMEOUT = 10.0  # without a directory: how long a re-opened watch waits for its node
_PAGE_PREFIX = "after:"

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


def encode_page_token(last_session_id: str) -> str:
    raw = (_PAGE_PREFIX + last_session_id).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> str:
    """The last session id of the previous page; InvalidArgument naming page_token if bad."""
    if not token:
        return ""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgument("page_token", "is not a token this API returned") from None
    if not raw.startswith(_PAGE_PREFIX):
        raise InvalidArgument("page_token", "is not a token this API returned")
    try:
        return check_session_id(raw[len(_PAGE_PREFIX) :])
    except InvalidArgument:
        raise InvalidArgument("page_token", "is not a token this API returned") from None


def check_page_size(value: int) -> int:
    if value < 0 or value > MAX_PAGE_SIZE:
        raise InvalidArgument(
            "page_size", f"must be 0-{MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE})"
        )
    return value or DEFAULT_PAGE_SIZE


def check_auth_strategy(value: int) -> int:
    if value not in common_pb2.AuthStrategy.values():
        raise InvalidArgument("auth_strategy", f"{value} is not LOCAL, REMOTE or unspecified")
    return value


class KeyedLocks:
    """One asyncio.Lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[Key, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: Key) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class SessionMeshService(WebhookApi, mesh_pb2_grpc.SessionMeshServicer):  # type: ignore[misc]
    """Servicer; the `Guard` interceptor authenticates and maps errors to status codes."""

    def __init__(
        self,
        pool: NodePool,
        mover: Mover,
        admin_tenants: frozenset[str] = frozenset(),
        backoff: RetryPolicy = retry.STREAM,
        relocate_interval: float = RELOCATE_INTERVAL,
        *,
        max_sessions: int = 0,
        max_streams: int = 0,
        list_cache_ttl: float = 1.0,
    ) -> None:
        self._pool = pool
        self._directory = pool.directory
        self._mover = mover
        self._admins = admin_tenants
        # How a watcher re-opens a broken stream: backoff, looking up the session again at
        # least every `relocate_interval` s when there is a directory (or when woken by a move).
        self.backoff = backoff
        self.relocate_interval = relocate_interval
        self._creating = KeyedLocks()
        self.admitting = True
        self.max_sessions = max_sessions  # MESH_TENANT_MAX_SESSIONS (0: none)
        self.max_streams = max_streams  # MESH_TENANT_MAX_STREAMS (0: none)
        self.streams: dict[str, int] = {}  # open WatchSession streams per tenant
        self._pending: dict[str, set[str]] = {}  # sessions being created, per tenant
        self._view = NodesView(pool, list_cache_ttl)

    def _admit(self) -> None:
        if not self.admitting:
            raise NodeUnavailable("the router is stopping")

    async def CreateSession(
        self, request: mesh_pb2.CreateSessionRequest, context: Context
    ) -> common_pb2.Session:
        self._admit()
        tenant = current_tenant()
        session_id = check_session_id(request.session_id)
        labels = check_labels(dict(request.labels))
        strategy = check_auth_strategy(request.auth_strategy)
        if strategy == common_pb2.REMOTE and self._directory is not None:
            if not await self._directory.ping():
                raise RedisUnavailable(
                    "Redis is unreachable: RemoteAuth sessions cannot start until it is back"
                )
        await self._check_session_quota(tenant, session_id)
        pending = self._pending.setdefault(tenant, set())
        pending.add(session_id)
        try:
            async with self._creating.hold((tenant, session_id)):
                return await self._create(tenant, session_id, strategy, labels)
        finally:
            pending.discard(session_id)
            if not pending:
                self._pending.pop(tenant, None)
            self._view.invalidate()

    async def _check_session_quota(self, tenant: str, session_id: str) -> None:
        """RESOURCE_EXHAUSTED when `tenant` already holds MESH_TENANT_MAX_SESSIONS live
        sessions (counted from the nodes' view, plus creations in flight here)."""
        if not self.max_sessions:
            return
        live = {
            sid
            for sid, s in (await self._tenant_sessions(tenant)).items()
            if s.state in LIVE_STATES
        } | self._pending.get(tenant, set())
        if session_id not in live and len(live) >= self.max_sessions:
            raise QuotaExceeded(
                f"tenant {tenant!r} holds {len(live)} live sessions: "
                f"MESH_TENANT_MAX_SESSIONS={self.max_sessions}; stop or log out one first"
            )

    async def _create(
        self, tenant: str, session_id: str, strategy: int, labels: dict[str, str]
    ) -> common_pb2.Session:
        try:
            node_id, entry = await self._locate(tenant, session_id)
        except SessionNotFound:
            return await self._place(tenant, session_id, strategy, labels)
        if self._pool.is_dead(node_id):
            # Its node is gone: start it anew elsewhere (from Redis when it is RemoteAuth).
            remote = entry is not None and entry.remote
            return await self._place(
                tenant,
                session_id,
                strategy,
                labels,
                takeover=remote,
                exclude=frozenset({node_id}),
            )
        owner = self._client(node_id, session_id)
        return await owner.start_session(tenant, session_id, strategy, labels)

    async def _place(
        self,
        tenant: str,
        session_id: str,
        strategy: int,
        labels: dict[str, str],
        *,
        takeover: bool = False,
        exclude: frozenset[str] = frozenset(),
    ) -> common_pb2.Session:
        loads = self._pool.loads(exclude)
        candidates = self._pool.placement().candidates(placement_key(tenant, session_id), loads)
        refusals: list[Exception] = []
        for address in candidates:
            client = self._pool.by_address(address)
            try:
                session = await client.start_session(
                    tenant, session_id, strategy, labels, takeover=takeover
                )
            except (NodeFull, NodeUnreachable) as e:
                log.info("node %s refused %s/%s: %s", client.label, tenant, session_id, e)
                refusals.append(e)
                continue
            client.node_id = client.node_id or session.node_id
            self._pool.affinity.set(tenant, session_id, client.node_id)
            self._pool.affinity.note_strategy(tenant, session_id, session.auth_strategy)
            client.note_placed()
            return session
        if all(isinstance(e, NodeFull) for e in refusals):
            raise ClusterFull(
                f"all {len(candidates)} nodes are full ({self._full_summary()})"
            ) from refusals[-1]
        raise refusals[-1]

    async def _locate(
        self, tenant: str, session_id: str, *, refresh: bool = False
    ) -> tuple[str, DirEntry | None]:
        """Where a session lives: the cache, else (or with `refresh`, or when the cached node
        is dead) the directory in Redis. SessionNotFound when neither knows it."""
        cached = self._pool.affinity.get(tenant, session_id)
        entry: DirEntry | None = None
        if self._directory is not None and (
            cached is None or refresh or self._pool.is_dead(cached)
        ):
            try:
                entry = await self._directory.get(tenant, session_id)
            except RedisUnavailable as e:
                log.info("locating %s/%s: %s; using the cache", tenant, session_id, e)
            if entry is not None and cached is not None and cached != entry.node_id:
                if self._pool.is_dead(entry.node_id) and not self._pool.is_dead(cached):
                    # This router moved it off the dead node; the new node has not yet
                    # written its claim to the directory.
                    return cached, entry
            if entry is not None:
                self._pool.affinity.set(tenant, session_id, entry.node_id)
                self._pool.affinity.note_strategy(tenant, session_id, entry.auth_strategy)
                return entry.node_id, entry
        if cached is None and self._directory is not None:
            # LocalAuth sessions may have no directory entry; a dead node's set still lists them.
            for dead in self._pool.dead_nodes():
                with contextlib.suppress(RedisUnavailable):
                    if await self._directory.listed_on(dead, tenant, session_id):
                        return dead, None
        if cached is None:
            raise SessionNotFound(f"session {session_id!r} not found")
        return cached, entry

    def _client(self, node_id: str, session_id: str) -> NodeClient:
        client = self._pool.by_id(node_id)
        if client is None:
            raise NodeUnavailable(
                f"session {session_id!r} is on node {node_id}, which the router cannot reach"
            )
        return client

    def _on_dead_node(
        self, tenant: str, session_id: str, node_id: str, entry: DirEntry | None
    ) -> common_pb2.Session:
        """The session as reported while its node is dead: LocalAuth FAILED (the login was
        on that node's disk); RemoteAuth as the directory has it, being moved."""
        strategy = entry.auth_strategy if entry is not None else 0
        strategy = strategy or self._pool.affinity.strategy(tenant, session_id) or common_pb2.LOCAL
        base = entry or DirEntry(node_id)
        if strategy == common_pb2.REMOTE:
            return base.to_session(
                session_id,
                auth_strategy=strategy,
                last_error=f"node {node_id} is down; the session is being moved to another node",
            )
        return base.to_session(
            session_id,
            node_id=node_id,
            auth_strategy=strategy,
            state=common_pb2.FAILED,
            last_error=local_reason(node_id),
        )

    def _full_summary(self) -> str:
        reached = [c for c in self._pool.clients if c.capacity]
        held = sum(c.sessions for c in reached)
        room = sum(c.capacity for c in reached)
        return f"{held}/{room} sessions"

    async def _on_owner(
        self,
        method: str,
        request_id: str,
        call: Callable[[NodeClient, str, str], Awaitable[Any]] | None = None,
    ) -> Any:
        """`method` (or `call`) on the node holding the session, once more after a move."""
        if method != "GetSession":
            self._view.invalidate()
        tenant = current_tenant()
        session_id = check_session_id(request_id)
        node_id, entry = await self._locate(tenant, session_id)
        for second_try in (False, True):
            if self._pool.is_dead(node_id):
                session = self._on_dead_node(tenant, session_id, node_id, entry)
                if method == "GetSession":
                    return session
                raise NodeUnavailable(f"session {session_id!r}: {session.last_error}")
            try:
                client = self._client(node_id, session_id)
                if call is not None:
                    return await call(client, tenant, session_id)
                return await client.session_call(method, tenant, session_id)
            except (SessionNotFound, NodeUnavailable) as e:
                # The cache may be stale (failover, drain): ask the directory once.
                moved_to = ""
                if self._directory is not None and not second_try:
                    with contextlib.suppress(SessionNotFound):
                        moved_to, entry = await self._locate(tenant, session_id, refresh=True)
                if moved_to and moved_to != node_id:
                    node_id = moved_to
                    continue
                if isinstance(e, SessionNotFound):
                    self._pool.affinity.forget(tenant, session_id, node_id)
                raise
        raise AssertionError("unreachable")

    async def GetSession(
        self, request: mesh_pb2.GetSessionRequest, context: Context
    ) -> common_pb2.Session:
        session: common_pb2.Session = await self._on_owner("GetSession", request.session_id)
        return session

    async def StopSession(
        self, request: mesh_pb2.StopSessionRequest, context: Context
    ) -> common_pb2.Session:
        session: common_pb2.Session = await self._on_owner("StopSession", request.session_id)
        return session

    async def SendMessage(
        self, request: mesh_pb2.SendMessageRequest, context: Context
    ) -> mesh_pb2.SendMessageResponse:
        check_send(request, max_media_bytes=self._pool.settings.max_message_bytes)
        timeout = max(self._pool.settings.node_timeout, SEND_TIMEOUT)
        reply: mesh_pb2.SendMessageResponse = await self._on_owner(
            "SendMessage",
            request.session_id,
            lambda client, tenant, _sid: client.send_message(tenant, request, timeout),
        )
        return reply

    async def GetMessageMedia(
        self, request: mesh_pb2.GetMessageMediaRequest, context: Context
    ) -> AsyncIterator[mesh_pb2.MediaChunk]:
        tenant = current_tenant()
        session_id = check_session_id(request.session_id)
        if MESSAGE_ID_RE.fullmatch(request.message_id) is None:
            raise InvalidArgument(
                "message_id", "is not a message id (true_<chat>_<id> or false_...)"
            )
        node_id, _entry = await self._locate(tenant, session_id)
        client = self._client(node_id, session_id)
        call = client.media(tenant, session_id, request.message_id)
        with client.errors():
            async for chunk in call:
                yield chunk

    async def LogoutSession(
        self, request: mesh_pb2.LogoutSessionRequest, context: Context
    ) -> common_pb2.Session:
        session: common_pb2.Session = await self._on_owner("LogoutSession", request.session_id)
        return session

    async def ListSessions(
        self, request: mesh_pb2.ListSessionsRequest, context: Context
    ) -> mesh_pb2.ListSessionsResponse:
        tenant = current_tenant()
        size = check_page_size(request.page_size)
        after = decode_page_token(request.page_token)
        found = await self._tenant_sessions(tenant)
        ids = sorted(sid for sid in found if sid > after)
        page = ids[:size]
        return mesh_pb2.ListSessionsResponse(
            sessions=[found[sid] for sid in page],
            next_page_token=encode_page_token(page[-1]) if len(ids) > size else "",
        )

    async def _tenant_sessions(self, tenant: str) -> dict[str, common_pb2.Session]:
        """Every session of `tenant`, from the nodes that answer, placeholders for the rest."""
        clients, answers = await self._view.get()
        known = self._pool.affinity.sessions_of(tenant)
        found: dict[str, common_pb2.Session] = {}
        answered: set[str] = set()
        for client, answer in zip(clients, answers, strict=True):
            if isinstance(answer, BaseException):
                log.warning("listing sessions: node %s: %s", client.label, answer)
                continue
            answered.add(client.node_id)
            for held in answer:
                if held.tenant != tenant:
                    continue
                sid = held.session.session_id
                if (
                    sid not in found
                    or known.get(sid) == client.node_id
                    or (found[sid].state not in LIVE_STATES and held.session.state in LIVE_STATES)
                ):
                    found[sid] = held.session
        for sid, node_id in known.items():
            if sid not in found and node_id not in answered:
                if self._pool.is_dead(node_id):
                    found[sid] = self._on_dead_node(tenant, sid, node_id, None)
                else:
                    found[sid] = common_pb2.Session(
                        session_id=sid,
                        node_id=node_id,
                        last_error=f"node {node_id} is unreachable; state unknown",
                    )
        if self._directory is not None:
            await self._add_dead_nodes_sessions(tenant, found)
        return found

    async def _add_dead_nodes_sessions(
        self, tenant: str, found: dict[str, common_pb2.Session]
    ) -> None:
        """Sessions listed on dead nodes in Redis that no live node reported."""
        assert self._directory is not None
        for node_id in self._pool.dead_nodes():
            try:
                keys = await self._directory.node_sessions(node_id)
                missing = [sid for t, sid in keys if t == tenant and sid not in found]
                entries = await asyncio.gather(
                    *(self._directory.get(tenant, sid) for sid in missing)
                )
            except RedisUnavailable as e:
                log.warning("listing the sessions of dead node %s: %s", node_id, e)
                continue
            for sid, entry in zip(missing, entries, strict=True):
                if entry is not None and entry.node_id != node_id:
                    owner = self._pool.by_id(entry.node_id)
                    if owner is not None and not owner.dead:
                        continue  # moved to a live node that did not answer: skip, not stale
                found[sid] = self._on_dead_node(tenant, sid, node_id, entry)

    async def WatchSession(
        self, request: mesh_pb2.WatchSessionRequest, context: Context
    ) -> AsyncIterator[common_pb2.SessionEvent]:
        tenant = current_tenant()
        session_id = check_session_id(request.session_id)
        held = self.streams.get(tenant, 0)
        if self.max_streams and held >= self.max_streams:
            raise QuotaExceeded(
                f"tenant {tenant!r} has {held} watch streams open on this router: "
                f"MESH_TENANT_MAX_STREAMS={self.max_streams}"
            )
        self.streams[tenant] = held + 1
        try:
            async for event in self._watch(tenant, session_id, request.after_seq):
                yield event
        finally:
            left = self.streams.get(tenant, 1) - 1
            if left > 0:
                self.streams[tenant] = left
            else:
                self.streams.pop(tenant, None)

    async def _watch(
        self, tenant: str, session_id: str, after_seq: int
    ) -> AsyncIterator[common_pb2.SessionEvent]:
        await self._locate(tenant, session_id)  # NOT_FOUND now, before the stream starts
        last = after_seq
        attempt = 0
        connected_once = False
        # With a directory, re-locate often rather than wait long on a node that may be gone.
        connect_timeout = 1.0 if self._directory is not None else CONNECT_TIMEOUT
        while True:
            try:
                node_id, entry = await self._locate(tenant, session_id, refresh=attempt > 0)
                if self._pool.is_dead(node_id):
                    session = self._on_dead_node(tenant, session_id, node_id, entry)
                    if session.state == common_pb2.FAILED:
                        raise NodeUnavailable(f"session {session_id!r}: {session.last_error}")
                    raise NodeUnreachable(session.last_error)
                owner = self._client(node_id, session_id)
                if attempt:
                    await owner.wait_connected(connect_timeout)
                call = owner.watch(tenant, session_id, last)
                follower = _MoveFollower(self, tenant, session_id, owner.node_id, call)
                try:
                    with self._upstream_errors(owner, connected_once), follower:
                        async for event in call:
                            connected_once = True
                            attempt = 0
                            if event.seq <= last:
                                continue
                            last = event.seq
                            follower.saw(event)
                            yield event
                    log.info(
                        "watch %s/%s: node %s ended the stream", tenant, session_id, owner.label
                    )
                finally:
                    call.cancel()
            except _Reconnect as e:
                log.info(
                    "watch %s/%s: upstream broke (%s); resuming after seq %d",
                    tenant,
                    session_id,
                    e,
                    last,
                )
            except NodeUnreachable as e:
                log.info("watch %s/%s: %s; retrying", tenant, session_id, e)
            attempt += 1
            delay = self.backoff.delay(attempt)
            if self._directory is not None:
                delay = min(delay, self.relocate_interval)
            await self._pool.affinity.wait_moved(tenant, session_id, delay)

    async def _moved_from(self, tenant: str, session_id: str, node_id: str) -> bool:
        """True when the directory says the session now lives on another node."""
        if self._directory is None:
            return False
        try:
            entry = await self._directory.get(tenant, session_id)
        except RedisUnavailable:
            return False
        return entry is not None and entry.node_id != node_id

    @staticmethod
    @contextlib.contextmanager
    def _upstream_errors(owner: NodeClient, connected_once: bool) -> Iterator[None]:
        """Transport errors (and NOT_FOUND while a restarted node restores) mean: reconnect."""
        try:
            yield
        except grpc.aio.AioRpcError as e:
            code = e.code()
            # A new owner may be behind what this watcher saw (events shown during a Redis
            # outage) or still restoring: wait for it, rather than end a stream that worked.
            again = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.OUT_OF_RANGE)
            if code in TRANSPORT_CODES or (connected_once and code in again):
                raise _Reconnect(f"{code.name}: {e.details()}") from e
            raise owner.translate(e) from e

    async def DrainNode(
        self, request: mesh_pb2.DrainNodeRequest, context: Context
    ) -> mesh_pb2.DrainNodeResponse:
        tenant = current_tenant()
        if tenant not in self._admins:
            raise PermissionDenied(
                f"tenant {tenant!r} may not drain nodes (it is not in MESH_ADMIN_TENANTS)"
            )
        node_id = request.node_id.strip()
        if not node_id:
            raise InvalidArgument("node_id", "is required")
        if not 0 <= request.parallelism <= MAX_DRAIN_PARALLELISM:
            raise InvalidArgument(
                "parallelism",
                f"must be 0-{MAX_DRAIN_PARALLELISM} (0 means {DEFAULT_DRAIN_PARALLELISM}), "
                f"got {request.parallelism}",
            )
        try:
            return await self._mover.drain(
                node_id, request.parallelism or DEFAULT_DRAIN_PARALLELISM
            )
        finally:
            self._view.invalidate()

    async def GetClusterStatus(
        self, request: mesh_pb2.GetClusterStatusRequest, context: Context
    ) -> mesh_pb2.ClusterStatus:
        """From the nodes' polled status (no call per request). Admins see it all; a tenant
        sees its own sessions per node, and neither node addresses nor memory."""
        tenant = current_tenant()
        statuses = [c.status() for c in self._pool.clients]
        if tenant in self._admins:
            return mesh_pb2.ClusterStatus(nodes=statuses)
        mine: dict[str, int] = {}
        for session in (await self._tenant_sessions(tenant)).values():
            if session.state in LIVE_STATES:
                mine[session.node_id] = mine.get(session.node_id, 0) + 1
        for status in statuses:
            status.sessions = mine.get(status.node_id, 0)
            status.address = ""
            status.memory_bytes = 0
        return mesh_pb2.ClusterStatus(nodes=statuses)

    async def GetLatency(
        self, request: mesh_pb2.GetLatencyRequest, context: Context
    ) -> mesh_pb2.Latency:
        """The caller's own histograms, summed over the nodes that answer (one call each)."""
        tenant = current_tenant()
        clients = [c for c in self._pool.clients if not c.dead]
        answers = await asyncio.gather(*(c.latency() for c in clients), return_exceptions=True)
        mine: list[common_pb2.LatencyHistogram] = []
        unreachable: list[str] = []
        for client, answer in zip(clients, answers, strict=True):
            if isinstance(answer, BaseException):
                log.warning("latency: node %s: %s", client.label, answer)
                unreachable.append(client.node_id or "(a node not yet named)")
                continue
            mine.extend(h.histogram for h in answer if h.tenant == tenant)
        return mesh_pb2.Latency(
            histograms=latency.merge(mine),
            nodes=len(clients) - len(unreachable),
            unreachable=unreachable,
        )


class NodesView:
    """What every node holds, fetched at most once per `ttl` seconds however many calls ask
    (one fan-out at a time); a change made through this router invalidates it."""

    def __init__(self, pool: NodePool, ttl: float) -> None:
        self._pool = pool
        self._ttl = ttl
        self._at = -float("inf")
        self._value: tuple[list[NodeClient], list[Any]] = ([], [])
        self._lock = asyncio.Lock()
        self._generation = 0

    def invalidate(self) -> None:
        self._generation += 1
        self._at = -float("inf")

    async def get(self) -> tuple[list[NodeClient], list[Any]]:
        loop = asyncio.get_running_loop()
        if loop.time() - self._at < self._ttl:
            return self._value
        async with self._lock:
            if loop.time() - self._at < self._ttl:
                return self._value  # fetched by the call we waited for
            generation = self._generation
            clients = list(self._pool.clients)
            answers = await asyncio.gather(
                *(c.list_sessions() for c in clients), return_exceptions=True
            )
            self._value = (clients, list(answers))
            if generation == self._generation:
                self._at = loop.time()
            return self._value


class _Reconnect(Exception):
    """The upstream stream broke in a way that re-opening it may fix."""


class _MoveFollower:
    """Notices a session moved away from the node being watched (a drain hands it off).

    After a STOPPED event it polls the directory for a while; when the session's node changes
    it cancels the upstream call, and leaving the `with` block turns that into `_Reconnect`.
    """

    POLL = 0.5
    PATIENCE = 90.0  # seconds to keep looking after a STOPPED event

    def __init__(
        self,
        service: SessionMeshService,
        tenant: str,
        session_id: str,
        node_id: str,
        call: grpc.aio.UnaryStreamCall,
    ) -> None:
        self._service = service
        self._key = (tenant, session_id)
        self._node_id = node_id
        self._call = call
        self._task: asyncio.Task[None] | None = None
        self.moved = False

    def saw(self, event: common_pb2.SessionEvent) -> None:
        if (
            self._task is None
            and event.WhichOneof("event") == "state"
            and event.state.state == common_pb2.STOPPED
            and self._service._directory is not None
        ):
            self._task = asyncio.create_task(self._look(), name="watch-move-follower")

    async def _look(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.PATIENCE
        while loop.time() < deadline:
            await asyncio.sleep(self.POLL)
            if await self._service._moved_from(*self._key, self._node_id):
                self.moved = True
                self._call.cancel()
                return

    def __enter__(self) -> _MoveFollower:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if self._task is not None:
            self._task.cancel()  # finishes at its next await; its result is never needed
        if (
            self.moved
            and kind is not None
            and issubclass(kind, asyncio.CancelledError | grpc.aio.AioRpcError)
        ):
            raise _Reconnect("the session moved to another node") from exc
