"""What routers read from Redis: the members, each session's directory entry, failover claims.

Keys (docs/remoteauth.md; `M` = MESH_REDIS_PREFIX, `P` = REDIS_SESSION_PREFIX)::

    M{nodes}                 set of node ids                       written by nodes
    M{node:ID}               hash address, epoch, capacity; EX     written by nodes (heartbeat)
    M{node:ID}:sessions      set of "tenant/session_id"            written by nodes
    M{failover:ID:EPOCH}     SET NX EX 120 (the claimant's token)  written by routers (this file)
    P{tenant/session_id}:dir hash node_id, owner, auth_strategy... written by the owner node

Everything here but the failover claim is read-only. Redis errors become `RedisUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Iterator

from router.errors import RedisUnavailable
from sessionmesh.redis_conn import TRANSPORT_ERRORS, RedisClient, redis_outages
from sessionmesh.schema import (
    DirEntry,
    Heartbeat,
    MeshKeys,
    SessionKeys,
    session_member,
    split_member,
    text,
)

log = logging.getLogger(__name__)

FAILOVER_CLAIM_TTL = 120  # seconds a router holds one dead node's failover

__all__ = ["DirEntry", "Directory", "redis_errors", "split_member"]


@contextlib.contextmanager
def redis_errors(what: str) -> Iterator[None]:
    """Redis transport errors become RedisUnavailable (sessionmesh.redis_conn's one map); any
    other Redis error is a bug, answered INTERNAL, and never waited out."""
    with redis_outages(what, RedisUnavailable):
        yield


class Directory:
    """The router's reads of shared state in Redis; it owns the client and closes it."""

    def __init__(
        self, redis: RedisClient, *, session_prefix: str, mesh_prefix: str, timeout: float = 2.0
    ) -> None:
        self._redis = redis
        self._session_prefix = session_prefix
        self._keys = MeshKeys(mesh_prefix)
        self._timeout = timeout
        self._claimant = secrets.token_hex(8)  # the value of the failover claims this one wins
        self._closed = False

    def dir_key(self, tenant: str, session_id: str) -> str:
        return SessionKeys.of(self._session_prefix, tenant, session_id).dir

    def node_key(self, node_id: str) -> str:
        return self._keys.node(node_id)

    def sessions_key(self, node_id: str) -> str:
        return self._keys.node_sessions(node_id)

    def failover_key(self, node_id: str, epoch: str) -> str:
        return self._keys.failover(node_id, epoch)

    @property
    def members_key(self) -> str:
        return self._keys.nodes

    async def ping(self) -> bool:
        """True when Redis answers within the timeout; never raises for an outage."""
        try:
            async with asyncio.timeout(self._timeout):
                return bool(await self._redis.ping())
        except TRANSPORT_ERRORS:
            return False

    async def members(self) -> dict[str, Heartbeat | None]:
        """Every registered node id -> its heartbeat, or None when the heartbeat key is gone."""
        with redis_errors("reading the members"):
            async with asyncio.timeout(self._timeout):
                ids = sorted(text(m) for m in await self._redis.smembers(self.members_key))
                beats = await asyncio.gather(*(self._redis.hgetall(self.node_key(i)) for i in ids))
        return {node_id: Heartbeat.decode(raw) for node_id, raw in zip(ids, beats, strict=True)}

    async def get(self, tenant: str, session_id: str) -> DirEntry | None:
        with redis_errors(f"reading {tenant}/{session_id}'s directory entry"):
            async with asyncio.timeout(self._timeout):
                raw = await self._redis.hgetall(self.dir_key(tenant, session_id))
        return DirEntry.decode(raw)

    async def node_sessions(self, node_id: str) -> list[tuple[str, str]]:
        """(tenant, session_id) of every session listed on `node_id`, sorted."""
        with redis_errors(f"reading node {node_id}'s sessions"):
            async with asyncio.timeout(self._timeout):
                members = await self._redis.smembers(self.sessions_key(node_id))
        keys = (split_member(text(m)) for m in members)
        return sorted(k for k in keys if k is not None)

    async def listed_on(self, node_id: str, tenant: str, session_id: str) -> bool:
        """True when `node_id`'s session set lists the session."""
        with redis_errors(f"reading node {node_id}'s sessions"):
            async with asyncio.timeout(self._timeout):
                found = await self._redis.sismember(
                    self.sessions_key(node_id), session_member(tenant, session_id)
                )
        return bool(found)

    async def claim_failover(self, node_id: str, epoch: str) -> bool:
        """True for the one router that takes this death's failover, also when it asks again
        (a SET retried after its reply was lost finds this router's own claim)."""
        key = self.failover_key(node_id, epoch)
        with redis_errors(f"claiming node {node_id}'s failover"):
            async with asyncio.timeout(self._timeout):
                won = await self._redis.set(key, self._claimant, nx=True, ex=FAILOVER_CLAIM_TTL)
                if not won:
                    won = text(await self._redis.get(key)) == self._claimant
        return bool(won)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(*TRANSPORT_ERRORS):
            await self._redis.aclose()
