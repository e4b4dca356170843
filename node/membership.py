"""The node's membership in Redis: its heartbeat key, the node set, and its set of sessions.

Keys (``M`` = MESH_REDIS_PREFIX, default ``mesh:``)::

    M{nodes}              set of node ids, SADD on every beat
    M{node:ID}            hash address, epoch, capacity, started_at, health, sessions;
                          EX MESH_HEARTBEAT_TTL, rewritten every MESH_HEARTBEAT_INTERVAL
    M{node:ID}:sessions   set of ``tenant/session_id`` placed on the node

The node keeps the set it wants in memory and writes it on every beat (SADD what is placed,
SREM what left), so a Redis restart or outage heals on the next beat; the loop never ends on
an outage and logs it once. Given a keepalive thread (sessionmesh.aio.LoopThread) and a client
for it, the beats run there, so that a main loop busy with browsers cannot delay them until
routers declare a live node dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from node.lease import map_redis_errors
from node.remote_store import StoreUnavailable
from sessionmesh.aio import LoopThread, cancel_and_wait
from sessionmesh.redis_conn import RedisClient
from sessionmesh.schema import Heartbeat, MeshKeys, text

log = logging.getLogger(__name__)

T = TypeVar("T")


def nodes_key(prefix: str) -> str:
    return MeshKeys(prefix).nodes


def node_key(prefix: str, node_id: str) -> str:
    return MeshKeys(prefix).node(node_id)


def node_sessions_key(prefix: str, node_id: str) -> str:
    return MeshKeys(prefix).node_sessions(node_id)


class Membership:
    """Registers the node and keeps its heartbeat and session set; `aclose()` deregisters.

    `place` and `remove` are safe from any thread. With `keepalive`, beats use `beat_redis` on
    that thread's loop, and `start`, `beat` and `aclose` run there whoever calls them.
    """

    def __init__(
        self,
        redis: RedisClient,
        *,
        prefix: str,
        node_id: str,
        epoch: str,
        address: Callable[[], str],
        capacity: int,
        health: Callable[[], str],
        interval: float,
        ttl: float,
        keepalive: LoopThread | None = None,
        beat_redis: RedisClient | None = None,
    ) -> None:
        if (keepalive is None) != (beat_redis is None):
            raise ValueError("keepalive and beat_redis go together")
        self._redis = redis
        self._beat_redis = beat_redis if beat_redis is not None else redis
        self._keepalive = keepalive
        self._lock = threading.Lock()  # guards _placed and _removed
        self._prefix = prefix
        self.node_id = node_id
        self.epoch = epoch
        self._address = address
        self._capacity = capacity
        self._health = health
        self._interval = interval
        self._ttl_ms = max(1000, int(ttl * 1000))
        self._started_at = time.time()
        self._placed: set[str] = set()
        self._removed: set[str] = set()
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._outage = False
        self.beats = 0  # successful heartbeats

    @property
    def key(self) -> str:
        return node_key(self._prefix, self.node_id)

    @property
    def sessions_key(self) -> str:
        return node_sessions_key(self._prefix, self.node_id)

    def place(self, name: str) -> None:
        """`tenant/session_id` now lives on this node (written on the next beat, at once)."""
        with self._lock:
            self._placed.add(name)
            self._removed.discard(name)
        self._poke()

    def remove(self, name: str) -> None:
        with self._lock:
            self._placed.discard(name)
            self._removed.add(name)
        self._poke()

    def _poke(self) -> None:
        if self._keepalive is None:
            self._kick.set()
        else:
            self._keepalive.call_soon(self._kick.set)

    async def _own(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop the beats use."""
        if self._keepalive is None:
            return await coro
        return await self._keepalive.run(coro)

    async def remove_from(self, node_id: str, name: str) -> None:
        """SREM `name` from another node's set (a new owner tidies the previous one's)."""
        if node_id == self.node_id:
            self.remove(name)
            return
        try:
            with map_redis_errors("updating a node's session set"):
                await self._redis.srem(node_sessions_key(self._prefix, node_id), name)
        except StoreUnavailable as e:
            log.info("could not remove %s from %s's sessions: %s", name, node_id, e)

    async def listed(self) -> list[str]:
        """The session set as Redis has it (a restarted node reads what its last epoch placed).
        Raises StoreUnavailable."""
        with map_redis_errors("reading the node's session set"):
            names = [text(n) async for n in self._redis.sscan_iter(self.sessions_key, count=500)]
        return sorted(set(names))

    async def start(self) -> None:
        if self._closed or self._task is not None:
            raise RuntimeError("membership is started once")
        await self._own(self._start())

    async def _start(self) -> None:
        await self._beat_logged()
        self._task = asyncio.create_task(self._run(), name=f"heartbeat {self.node_id}")

    async def aclose(self, *, deregister: bool = True) -> None:
        """Stop beating; with `deregister`, write the session set once more and DEL the key."""
        if self._closed:
            return
        self._closed = True
        await self._own(self._close(deregister))

    async def _close(self, deregister: bool) -> None:
        self._kick.set()
        if self._task is not None:
            try:
                async with asyncio.timeout(max(self._interval, 1.0) * 3):
                    await asyncio.shield(self._task)
            except TimeoutError:
                await cancel_and_wait(self._task)
        if deregister:
            try:
                async with asyncio.timeout(5):
                    await self._sync_sessions()
                    with map_redis_errors("deregistering"):
                        await self._beat_redis.delete(self.key)
                log.info("node %s deregistered", self.node_id)
            except (StoreUnavailable, TimeoutError) as e:
                log.warning(
                    "node %s not deregistered (its key expires by itself): %s", self.node_id, e
                )

    async def beat(self) -> None:
        """One heartbeat: the node's hash with its TTL, the node set, the session set."""
        await self._own(self._beat())

    async def _beat(self) -> None:
        with self._lock:
            placed = len(self._placed)
        beat = Heartbeat(
            address=self._address(),
            epoch=self.epoch,
            capacity=self._capacity,
            started_at=self._started_at,
            health=self._health(),
            sessions=placed,
        )
        redis = self._beat_redis
        with map_redis_errors("heartbeat"):
            await redis.hset(self.key, mapping=beat.encode())  # type: ignore[arg-type]
            await redis.pexpire(self.key, self._ttl_ms)
            await redis.sadd(nodes_key(self._prefix), self.node_id)
        await self._sync_sessions()
        self.beats += 1

    async def _sync_sessions(self) -> None:
        with self._lock:
            placed, removed = sorted(self._placed), sorted(self._removed)
        with map_redis_errors("updating the node's session set"):
            if placed:
                await self._beat_redis.sadd(self.sessions_key, *placed)
            if removed:
                await self._beat_redis.srem(self.sessions_key, *removed)
        with self._lock:  # a name placed again meanwhile left _removed then
            self._removed.difference_update(removed)

    async def _beat_logged(self) -> None:
        try:
            async with asyncio.timeout(max(self._interval, 1.0) * 2):
                await self._beat()
        except (StoreUnavailable, TimeoutError) as e:
            if not self._outage:
                log.warning("heartbeat of %s failed; retrying: %s", self.node_id, e)
            self._outage = True
            return
        if self._outage:
            log.info("heartbeat of %s back", self.node_id)
        self._outage = False

    async def _run(self) -> None:
        # Ends on `_closed`: on Python 3.11 a cancel that lands as a timeout fires can be lost.
        while not self._closed:
            self._kick.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self._interval)
            if self._closed:
                return
            await self._beat_logged()
