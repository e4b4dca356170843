"""The public `sessionmesh.v1.SessionMesh` servicer: checks input, places, proxies to nodes."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeAlias

import grpc
import grpc.aio

from router.affinity import Key
from router.errors import ClusterFull, NodeFull, NodeUnavailable, NodeUnreachable, SessionNotFound
from router.interceptors import current_tenant
from router.nodes import TRANSPORT_CODES, Backoff, NodeClient, NodePool
from router.placement import Placement, placement_key
from sessionmesh.v1 import common_pb2, mesh_pb2, mesh_pb2_grpc
from sessionmesh.validation import InvalidArgument, check_labels, check_session_id

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
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


class SessionMeshService(mesh_pb2_grpc.SessionMeshServicer):  # type: ignore[misc]
    """Servicer; the `Guard` interceptor authenticates and maps errors to status codes."""

    def __init__(
        self, pool: NodePool, placement: Placement, backoff: Backoff | None = None
    ) -> None:
        self._pool = pool
        self._placement = placement
        self._backoff = backoff or Backoff()
        self._creating = KeyedLocks()
        self.admitting = True

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
        async with self._creating.hold((tenant, session_id)):
            if self._pool.affinity.get(tenant, session_id) is not None:
                owner = self._pool.owner(tenant, session_id)
                return await owner.start_session(tenant, session_id, strategy, labels)
            return await self._place(tenant, session_id, strategy, labels)

    async def _place(
        self, tenant: str, session_id: str, strategy: int, labels: dict[str, str]
    ) -> common_pb2.Session:
        loads = self._pool.loads()
        candidates = self._placement.candidates(placement_key(tenant, session_id), loads)
        refusals: list[Exception] = []
        for address in candidates:
            client = self._pool.by_address(address)
            try:
                session = await client.start_session(tenant, session_id, strategy, labels)
            except (NodeFull, NodeUnreachable) as e:
                log.info("node %s refused %s/%s: %s", client.label, tenant, session_id, e)
                refusals.append(e)
                continue
            client.node_id = client.node_id or session.node_id
            self._pool.affinity.set(tenant, session_id, client.node_id)
            client.note_placed()
            return session
        if all(isinstance(e, NodeFull) for e in refusals):
            raise ClusterFull(
                f"all {len(candidates)} nodes are full ({self._full_summary()})"
            ) from refusals[-1]
        raise refusals[-1]

    def _full_summary(self) -> str:
        reached = [c for c in self._pool.clients if c.capacity]
        held = sum(c.sessions for c in reached)
        room = sum(c.capacity for c in reached)
        return f"{held}/{room} sessions"

    async def _on_owner(self, method: str, request_id: str) -> common_pb2.Session:
        tenant = current_tenant()
        session_id = check_session_id(request_id)
        owner = self._pool.owner(tenant, session_id)
        try:
            return await owner.session_call(method, tenant, session_id)
        except SessionNotFound:
            self._pool.affinity.forget(tenant, session_id, owner.node_id)
            raise

    async def GetSession(
        self, request: mesh_pb2.GetSessionRequest, context: Context
    ) -> common_pb2.Session:
        return await self._on_owner("GetSession", request.session_id)

    async def StopSession(
        self, request: mesh_pb2.StopSessionRequest, context: Context
    ) -> common_pb2.Session:
        return await self._on_owner("StopSession", request.session_id)

    async def LogoutSession(
        self, request: mesh_pb2.LogoutSessionRequest, context: Context
    ) -> common_pb2.Session:
        return await self._on_owner("LogoutSession", request.session_id)

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
        clients = self._pool.clients
        answers = await asyncio.gather(
            *(c.list_sessions() for c in clients), return_exceptions=True
        )
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
                if sid not in found or known.get(sid) == client.node_id:
                    found[sid] = held.session
        for sid, node_id in known.items():
            if sid not in found and node_id not in answered:
                found[sid] = common_pb2.Session(
                    session_id=sid,
                    node_id=node_id,
                    last_error=f"node {node_id} is unreachable; state unknown",
                )
        return found

    async def WatchSession(
        self, request: mesh_pb2.WatchSessionRequest, context: Context
    ) -> AsyncIterator[common_pb2.SessionEvent]:
        tenant = current_tenant()
        session_id = check_session_id(request.session_id)
        self._pool.owner(tenant, session_id)  # NOT_FOUND now, before the stream starts
        last = request.after_seq
        attempt = 0
        connected_once = False
        while True:
            owner = self._pool.owner(tenant, session_id)
            try:
                if attempt:
                    await owner.wait_connected(self._backoff.attempt_timeout)
                call = owner.watch(tenant, session_id, last)
                try:
                    with self._upstream_errors(owner, connected_once):
                        async for event in call:
                            connected_once = True
                            attempt = 0
                            if event.seq <= last:
                                continue
                            last = event.seq
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
            await asyncio.sleep(self._backoff.delay(attempt))

    @staticmethod
    @contextlib.contextmanager
    def _upstream_errors(owner: NodeClient, connected_once: bool) -> Iterator[None]:
        """Transport errors (and NOT_FOUND while a restarted node restores) mean: reconnect."""
        try:
            yield
        except grpc.aio.AioRpcError as e:
            code = e.code()
            if code in TRANSPORT_CODES or (connected_once and code == grpc.StatusCode.NOT_FOUND):
                raise _Reconnect(f"{code.name}: {e.details()}") from e
            raise owner.translate(e) from e

    async def GetClusterStatus(
        self, request: mesh_pb2.GetClusterStatusRequest, context: Context
    ) -> mesh_pb2.ClusterStatus:
        await self._pool.poll_all()
        return mesh_pb2.ClusterStatus(nodes=[c.status() for c in self._pool.clients])


class _Reconnect(Exception):
    """The upstream stream broke in a way that re-opening it may fix."""
