"""Encrypted session snapshots in Redis, written only by the session's current lease holder.

Its keys are the schema's (sessionmesh/schema.py: `:snap` and `:snap:prev` with the store's
TTL, renewed on every save; `:lease` and `:fence` as node/lease.py keeps them), and Redis errors
go through the mesh's one error map (sessionmesh/redis_conn.py).

Errors (under node.errors.NodeError, so node.service maps them)::

    StoreError
    ├── StoreUnavailable   Redis cannot be reached (also a NodeUnavailable: gRPC UNAVAILABLE)
    └── StaleFence         the write's lease is gone or a newer owner holds the session
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

from node.crypto import SnapshotCodec, SnapshotError
from node.errors import NodeError, NodeUnavailable
from sessionmesh.redis_conn import (
    DEFAULT_SESSION_PREFIX,
    DEFAULT_SESSION_TTL,
    RedisClient,
    redis_outages,
)
from sessionmesh.schema import SessionKeys
from sessionmesh.schema import session_member as session_key

__all__ = [
    "RemoteSnapshotStore",
    "SessionKeys",
    "StaleFence",
    "StoreError",
    "StoreUnavailable",
    "map_redis_errors",
    "session_key",
]

log = logging.getLogger(__name__)

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


class StoreError(NodeError):
    """The snapshot store could not do what was asked."""


class StoreUnavailable(StoreError, NodeUnavailable):
    """Redis is unreachable; the message says so, for an UNAVAILABLE answer."""


class StaleFence(StoreError):
    """A write was refused: the caller's lease expired or a newer owner holds the session."""

    def __init__(self, message: str, *, holder: str | None, fence: int | None) -> None:
        super().__init__(message)
        self.holder = holder
        self.fence = fence


def map_redis_errors(what: str) -> contextlib.AbstractContextManager[None]:
    """The mesh's one Redis error map (sessionmesh.redis_conn), raising StoreUnavailable."""
    return redis_outages(what, StoreUnavailable)


# The fence check shared by save and fenced delete. KEYS: lease, fence. ARGV: owner, fence.
# Returns nil when the caller holds the lease with that fence, else {reason, holder, fence}.
_FENCE_CHECK = """
local function fence_check(lease_key, fence_key, owner, fence)
  local holder = redis.call('HMGET', lease_key, 'owner', 'fence')
  local top = tonumber(redis.call('GET', fence_key) or '0')
  if not holder[1] then
    return {'nolease', '', tostring(top)}
  end
  if holder[1] ~= owner or tonumber(holder[2]) ~= fence or top > fence then
    return {'stale', holder[1], tostring(math.max(tonumber(holder[2]), top))}
  end
  return nil
end
"""

# KEYS: snap, prev, lease, fence. ARGV: blob, ttl seconds, owner, fence.
# Refuses unless the caller holds the lease; else keeps the old copy as prev and writes the new one.
SAVE_LUA = (
    _FENCE_CHECK
    + """
local refused = fence_check(KEYS[3], KEYS[4], ARGV[3], tonumber(ARGV[4]))
if refused then return refused end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('RENAME', KEYS[1], KEYS[2])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return {'ok', ARGV[3], ARGV[4]}
"""
)

# KEYS: snap, prev, lease, fence. ARGV: owner, fence.
DELETE_FENCED_LUA = (
    _FENCE_CHECK
    + """
local refused = fence_check(KEYS[3], KEYS[4], ARGV[1], tonumber(ARGV[2]))
if refused then return refused end
redis.call('DEL', KEYS[1], KEYS[2])
return {'ok', ARGV[1], ARGV[2]}
"""
)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _raw(value: bytes | str) -> bytes:
    # The store's clients are made with decode_responses=False; a str means a misconfigured one.
    if isinstance(value, str):
        raise StoreError(
            "the Redis client decodes responses; create it with decode_responses=False"
        )
    return value


FENCE_CHECK_LUA = _FENCE_CHECK  # for other fenced scripts (node/remote.py)


def check_reply(reply: Any, tenant: str, session_id: str, owner: str, fence: int) -> None:
    status, holder, top = (_text(v) for v in reply)
    if status == "ok":
        return
    name = session_key(tenant, session_id)
    top_fence = int(top) if top.lstrip("-").isdigit() else None
    if status == "nolease":
        raise StaleFence(
            f"write to {name} by {owner} (fence {fence}) refused: the lease has expired",
            holder=None,
            fence=top_fence,
        )
    raise StaleFence(
        f"write to {name} by {owner} (fence {fence}) refused: held by {holder} (fence {top})",
        holder=holder,
        fence=top_fence,
    )


class RemoteSnapshotStore:
    """Session snapshots in Redis: encrypted, fenced, with the previous good copy kept."""

    def __init__(
        self,
        redis: RedisClient,
        codec: SnapshotCodec,
        prefix: str = DEFAULT_SESSION_PREFIX,
        ttl: int = DEFAULT_SESSION_TTL,
        *,
        owns_client: bool = False,
    ) -> None:
        if ttl < 1:
            raise ValueError("ttl must be at least 1 second")
        self._redis = redis
        self._codec = codec
        self._prefix = prefix
        self._ttl = ttl
        self._owns_client = owns_client
        self._closed = False
        self._save = redis.register_script(SAVE_LUA)
        self._delete_fenced = redis.register_script(DELETE_FENCED_LUA)

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def ttl(self) -> int:
        return self._ttl

    def session_keys(self, tenant: str, session_id: str) -> SessionKeys:
        return SessionKeys.of(self._prefix, tenant, session_id)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the snapshot store is closed")

    async def load(self, tenant: str, session_id: str) -> dict[str, Any] | None:
        """The session's last snapshot, or None. Falls back to the previous copy if the
        current one does not decrypt; raises SnapshotError when neither does."""
        self._check_open()
        keys = self.session_keys(tenant, session_id)
        name = session_key(tenant, session_id)
        with map_redis_errors(f"loading {name}"):
            blob = await self._redis.get(keys.snap)
        if blob is None:
            return None
        try:
            return await asyncio.to_thread(self._codec.decode, name, _raw(blob))
        except SnapshotError as current_error:
            with map_redis_errors(f"loading {name}"):
                prev = await self._redis.get(keys.prev)
            if prev is None:
                raise
            try:
                state = await asyncio.to_thread(self._codec.decode, name, _raw(prev))
            except SnapshotError:
                raise current_error from None
            log.warning(
                "snapshot of %s unreadable (%s); using the previous copy", name, current_error
            )
            return state

    async def save(
        self, tenant: str, session_id: str, state: dict[str, Any], *, owner: str, fence: int
    ) -> None:
        """Write a snapshot if `owner` still holds the session's lease with `fence`.

        Atomic (one Lua script): the old copy moves to `:snap:prev` and the new one replaces it,
        both with the store's TTL; StaleFence when the lease is gone or newer."""
        self._check_open()
        keys = self.session_keys(tenant, session_id)
        name = session_key(tenant, session_id)
        blob = await asyncio.to_thread(self._codec.encode, name, state)
        with map_redis_errors(f"saving {name}"):
            reply = await self._save(
                keys=[keys.snap, keys.prev, keys.lease, keys.fence],
                args=[blob, self._ttl, owner, fence],
            )
        check_reply(reply, tenant, session_id, owner, fence)

    async def delete(
        self,
        tenant: str,
        session_id: str,
        *,
        owner: str | None = None,
        fence: int | None = None,
    ) -> None:
        """Remove the snapshot and its previous copy. With `owner` and `fence`, only while
        that lease holds (StaleFence otherwise); without them, unconditionally (admin)."""
        self._check_open()
        keys = self.session_keys(tenant, session_id)
        name = session_key(tenant, session_id)
        if (owner is None) != (fence is None):
            raise ValueError("give both owner and fence, or neither")
        with map_redis_errors(f"deleting {name}"):
            if owner is None or fence is None:
                await self._redis.delete(keys.snap, keys.prev)
                return
            reply = await self._delete_fenced(
                keys=[keys.snap, keys.prev, keys.lease, keys.fence], args=[owner, fence]
            )
        check_reply(reply, tenant, session_id, owner, fence)

    async def exists(self, tenant: str, session_id: str) -> bool:
        self._check_open()
        keys = self.session_keys(tenant, session_id)
        with map_redis_errors(f"checking {session_key(tenant, session_id)}"):
            return bool(await self._redis.exists(keys.snap))

    async def ttl_of(self, tenant: str, session_id: str) -> int | None:
        """Seconds left on the snapshot, or None when there is none."""
        self._check_open()
        keys = self.session_keys(tenant, session_id)
        with map_redis_errors(f"checking {session_key(tenant, session_id)}"):
            left = int(await self._redis.ttl(keys.snap))
        return left if left >= 0 else None

    async def list_sessions(self, *, count: int = 500) -> AsyncIterator[tuple[str, str]]:
        """(tenant, session_id) of every stored snapshot, by SCAN (all masters on a cluster)."""
        self._check_open()
        pattern = _GLOB_SPECIAL.sub(r"\\\1", self._prefix) + "{*}:snap"
        head = len(self._prefix) + 1
        seen: set[tuple[str, str]] = set()
        with map_redis_errors("listing sessions"):
            async for raw in self._redis.scan_iter(match=pattern, count=count):
                key = _text(raw)
                inner = key[head : -len("}:snap")]
                tenant, sep, session_id = inner.partition("/")
                if not sep or (tenant, session_id) in seen:
                    continue
                seen.add((tenant, session_id))  # SCAN may repeat a key
                yield tenant, session_id

    async def aclose(self) -> None:
        """Idempotent; closes the client only when the store owns it."""
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            await self._redis.aclose()

    async def __aenter__(self) -> RemoteSnapshotStore:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
