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
import json
import logging
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from redis.exceptions import RedisClusterException, RedisError

from router.errors import RedisUnavailable
from router.membership import Heartbeat
from sessionmesh.redis_conn import RedisClient
from sessionmesh.v1 import common_pb2 as pb

log = logging.getLogger(__name__)

FAILOVER_CLAIM_TTL = 120  # seconds a router holds one dead node's failover
# What "Redis is down" raises; a cluster client that reaches no node raises RedisClusterException,
# which is no RedisError.
_REDIS_DOWN = (RedisError, RedisClusterException, OSError, TimeoutError)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _enum(value: str, names: Mapping[str, int]) -> int:
    """An enum field stored as its number or its name; 0 when unreadable."""
    value = value.strip()
    if value.lstrip("-").isdigit():
        return int(value)
    return names.get(value.upper(), 0)


def _timestamp(value: str) -> Timestamp | None:
    """created_at as epoch seconds or ISO 8601; None when absent or unreadable."""
    if not value:
        return None
    ts = Timestamp()
    try:
        ts.FromDatetime(datetime.fromtimestamp(float(value), UTC))
    except ValueError:
        try:
            ts.FromDatetime(datetime.fromisoformat(value))
        except ValueError:
            return None
    return ts


@dataclass(frozen=True)
class DirEntry:
    """One session's directory entry, as its owner node last wrote it."""

    node_id: str
    owner: str = ""
    auth_strategy: int = pb.AUTH_STRATEGY_UNSPECIFIED
    labels: dict[str, str] = field(default_factory=dict)
    created_at: str = ""
    state: int = pb.SESSION_STATE_UNSPECIFIED
    phone: str = ""
    last_error: str = ""
    last_seq: int = 0

    @classmethod
    def parse(cls, raw: Mapping[Any, Any]) -> DirEntry | None:
        fields = {_text(k): _text(v) for k, v in raw.items()}
        if not fields.get("node_id"):
            return None
        try:
            labels = json.loads(fields.get("labels") or "{}")
        except ValueError:
            labels = {}
        seq = fields.get("last_seq", "0")
        return cls(
            node_id=fields["node_id"],
            owner=fields.get("owner", ""),
            auth_strategy=_enum(fields.get("auth_strategy", "0"), dict(pb.AuthStrategy.items())),
            labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
            created_at=fields.get("created_at", ""),
            state=_enum(fields.get("state", "0"), dict(pb.SessionState.items())),
            phone=fields.get("phone", ""),
            last_error=fields.get("last_error", ""),
            last_seq=int(seq) if seq.isdigit() else 0,
        )

    @property
    def remote(self) -> bool:
        return self.auth_strategy == pb.REMOTE

    def to_session(self, session_id: str, **overrides: Any) -> pb.Session:
        """The session as the directory knows it; `overrides` replace fields (state, last_error)."""
        session = pb.Session(
            session_id=session_id,
            state=self.state,  # type: ignore[arg-type]
            node_id=self.node_id,
            auth_strategy=self.auth_strategy,  # type: ignore[arg-type]
            phone=self.phone,
            last_error=self.last_error,
            labels=self.labels,
            last_seq=self.last_seq,
        )
        created = _timestamp(self.created_at)
        if created is not None:
            session.created_at.CopyFrom(created)
        for name, value in overrides.items():
            setattr(session, name, value)
        return session


def split_member(member: str) -> tuple[str, str] | None:
    """`tenant/session_id` -> (tenant, session_id); None when malformed."""
    tenant, sep, session_id = member.partition("/")
    return (tenant, session_id) if sep and tenant and session_id else None


@contextlib.contextmanager
def redis_errors(what: str) -> Iterator[None]:
    """Redis transport and server errors become RedisUnavailable (the one place that does)."""
    try:
        yield
    except _REDIS_DOWN as e:
        raise RedisUnavailable(f"Redis is unreachable ({what}: {type(e).__name__})") from e


class Directory:
    """The router's reads of shared state in Redis; it owns the client and closes it."""

    def __init__(
        self, redis: RedisClient, *, session_prefix: str, mesh_prefix: str, timeout: float = 2.0
    ) -> None:
        self._redis = redis
        self._session_prefix = session_prefix
        self._mesh = mesh_prefix
        self._timeout = timeout
        self._claimant = secrets.token_hex(8)  # the value of the failover claims this one wins
        self._closed = False

    def dir_key(self, tenant: str, session_id: str) -> str:
        return f"{self._session_prefix}{{{tenant}/{session_id}}}:dir"

    def node_key(self, node_id: str) -> str:
        return f"{self._mesh}{{node:{node_id}}}"

    def sessions_key(self, node_id: str) -> str:
        return f"{self._mesh}{{node:{node_id}}}:sessions"

    def failover_key(self, node_id: str, epoch: str) -> str:
        return f"{self._mesh}{{failover:{node_id}:{epoch or 'unknown'}}}"

    @property
    def members_key(self) -> str:
        return f"{self._mesh}{{nodes}}"

    async def ping(self) -> bool:
        """True when Redis answers within the timeout; never raises for an outage."""
        try:
            async with asyncio.timeout(self._timeout):
                return bool(await self._redis.ping())
        except _REDIS_DOWN:
            return False

    async def members(self) -> dict[str, Heartbeat | None]:
        """Every registered node id -> its heartbeat, or None when the heartbeat key is gone."""
        with redis_errors("reading the members"):
            async with asyncio.timeout(self._timeout):
                ids = sorted(_text(m) for m in await self._redis.smembers(self.members_key))
                beats = await asyncio.gather(*(self._redis.hgetall(self.node_key(i)) for i in ids))
        out: dict[str, Heartbeat | None] = {}
        for node_id, raw in zip(ids, beats, strict=True):
            fields = {_text(k): _text(v) for k, v in raw.items()}
            if not fields.get("address"):
                out[node_id] = None
                continue
            capacity = fields.get("capacity", "0")
            out[node_id] = Heartbeat(
                address=fields["address"],
                epoch=fields.get("epoch", ""),
                capacity=int(capacity) if capacity.isdigit() else 0,
            )
        return out

    async def get(self, tenant: str, session_id: str) -> DirEntry | None:
        with redis_errors(f"reading {tenant}/{session_id}'s directory entry"):
            async with asyncio.timeout(self._timeout):
                raw = await self._redis.hgetall(self.dir_key(tenant, session_id))
        return DirEntry.parse(raw)

    async def node_sessions(self, node_id: str) -> list[tuple[str, str]]:
        """(tenant, session_id) of every session listed on `node_id`, sorted."""
        with redis_errors(f"reading node {node_id}'s sessions"):
            async with asyncio.timeout(self._timeout):
                members = await self._redis.smembers(self.sessions_key(node_id))
        keys = (split_member(_text(m)) for m in members)
        return sorted(k for k in keys if k is not None)

    async def listed_on(self, node_id: str, tenant: str, session_id: str) -> bool:
        """True when `node_id`'s session set lists the session."""
        with redis_errors(f"reading node {node_id}'s sessions"):
            async with asyncio.timeout(self._timeout):
                found = await self._redis.sismember(
                    self.sessions_key(node_id), f"{tenant}/{session_id}"
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
                    won = _text(await self._redis.get(key)) == self._claimant
        return bool(won)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(RedisError, OSError):
            await self._redis.aclose()
