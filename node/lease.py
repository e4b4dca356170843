"""Fenced ownership leases per session, taken by compare-and-set and kept alive by LeaseKeeper.

A lease is the hash ``{prefix}{tenant/session_id}:lease`` = {owner, fence} with a PX TTL. The fence
comes from INCR of ``...:fence`` in the same script, so it only ever grows for a session; snapshot
writes carry it (node/remote_store.py) and are refused once a newer owner exists. The owner is the
node id plus an epoch, so a restarted node is a new owner and never mistakes an old lease for its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType

from node.remote_store import StoreUnavailable
from sessionmesh.aio import call_soon_in, cancel_and_wait
from sessionmesh.redis_conn import DEFAULT_SESSION_PREFIX, RedisClient, redis_outages
from sessionmesh.schema import SessionKeys, text
from sessionmesh.schema import session_member as session_key

log = logging.getLogger(__name__)

DEFAULT_LEASE_TTL_MS = 15_000
DEFAULT_RENEW_EVERY = 5.0
# The fence counter outlives any lease by far; after this long with no acquisition it may restart,
# which is harmless: no lease, hence no writer, can be left from that long ago.
DEFAULT_FENCE_TTL_S = 30 * 24 * 3600

# KEYS: lease, fence. ARGV: owner, ttl ms, fence ttl s.
# Free: INCR the fence and take it. Ours already: refresh the TTL, same fence. Else: who holds it.
ACQUIRE_LUA = """
local cur = redis.call('HMGET', KEYS[1], 'owner', 'fence')
if cur[1] then
  if cur[1] == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {'ok', cur[1], cur[2]}
  end
  return {'held', cur[1], cur[2]}
end
local fence = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'fence', fence)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {'ok', ARGV[1], tostring(fence)}
"""

# KEYS: lease. ARGV: owner, fence, ttl ms. Extends only the exact lease (owner and fence).
RENEW_LUA = """
local cur = redis.call('HMGET', KEYS[1], 'owner', 'fence')
if not cur[1] then return {'gone', '', ''} end
if cur[1] == ARGV[1] and cur[2] == ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'ok', cur[1], cur[2]}
end
return {'taken', cur[1], cur[2]}
"""

# KEYS: lease. ARGV: owner, fence. Deletes only the exact lease; the fence counter stays.
RELEASE_LUA = """
local cur = redis.call('HMGET', KEYS[1], 'owner', 'fence')
if cur[1] == ARGV[1] and cur[2] == ARGV[2] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


def new_owner(node_id: str) -> str:
    """``node_id:epoch``; a fresh epoch per process start, so a restarted node is a new owner."""
    if not node_id or "{" in node_id or "}" in node_id:
        raise ValueError(f"node id {node_id!r} must be non-empty and free of braces")
    return f"{node_id}:{time.time_ns() // 1_000_000:x}{secrets.token_hex(3)}"


def map_redis_errors(what: str) -> contextlib.AbstractContextManager[None]:
    return redis_outages(what, StoreUnavailable)


@dataclass(frozen=True)
class Lease:
    """One held lease. `acquired_at` is the monotonic time the acquiring call was sent."""

    tenant: str
    session_id: str
    owner: str
    fence: int
    ttl_ms: int
    acquired_at: float

    @property
    def name(self) -> str:
        return session_key(self.tenant, self.session_id)


class LossReason(enum.Enum):
    TAKEN = "taken"  # another owner (or a newer fence) holds the session
    EXPIRED = "expired"  # Redis says the key is gone
    UNREACHABLE = "unreachable"  # Redis could not be reached and the TTL certainly ran out


class LeaseManager:
    """Acquire, renew, release and inspect session leases. Transport errors: StoreUnavailable."""

    def __init__(
        self,
        redis: RedisClient,
        prefix: str = DEFAULT_SESSION_PREFIX,
        ttl_ms: int = DEFAULT_LEASE_TTL_MS,
        *,
        fence_ttl_s: int = DEFAULT_FENCE_TTL_S,
    ) -> None:
        if ttl_ms < 10:
            raise ValueError("ttl_ms must be at least 10")
        self._redis = redis
        self._prefix = prefix
        self._ttl_ms = ttl_ms
        self._fence_ttl_s = fence_ttl_s
        self._acquire = redis.register_script(ACQUIRE_LUA)
        self._renew = redis.register_script(RENEW_LUA)
        self._release = redis.register_script(RELEASE_LUA)

    @property
    def ttl_ms(self) -> int:
        return self._ttl_ms

    def session_keys(self, tenant: str, session_id: str) -> SessionKeys:
        return SessionKeys.of(self._prefix, tenant, session_id)

    async def acquire(self, tenant: str, session_id: str, owner: str) -> Lease | None:
        """Take the lease if it is free or already `owner`'s; None while another owner holds it."""
        keys = self.session_keys(tenant, session_id)
        sent = time.monotonic()
        with map_redis_errors(f"acquiring the lease of {session_key(tenant, session_id)}"):
            reply = await self._acquire(
                keys=[keys.lease, keys.fence], args=[owner, self._ttl_ms, self._fence_ttl_s]
            )
        status, _holder, fence = (text(v) for v in reply)
        if status != "ok":
            return None
        return Lease(tenant, session_id, owner, int(fence), self._ttl_ms, sent)

    async def check_renew(self, lease: Lease) -> LossReason | None:
        """Extend the lease by its TTL; None on success, else why it is no longer ours."""
        keys = self.session_keys(lease.tenant, lease.session_id)
        with map_redis_errors(f"renewing the lease of {lease.name}"):
            reply = await self._renew(
                keys=[keys.lease], args=[lease.owner, lease.fence, lease.ttl_ms]
            )
        status = text(reply[0])
        if status == "ok":
            return None
        return LossReason.EXPIRED if status == "gone" else LossReason.TAKEN

    async def renew(self, lease: Lease) -> bool:
        """True when the lease was still ours with the same fence and now runs a full TTL again."""
        return await self.check_renew(lease) is None

    async def release(self, lease: Lease) -> bool:
        """Give the lease up if it is still this one; True when it was."""
        keys = self.session_keys(lease.tenant, lease.session_id)
        with map_redis_errors(f"releasing the lease of {lease.name}"):
            return bool(await self._release(keys=[keys.lease], args=[lease.owner, lease.fence]))

    async def holder(self, tenant: str, session_id: str) -> tuple[str, int] | None:
        """(owner, fence) of the current lease, or None when the session is free."""
        keys = self.session_keys(tenant, session_id)
        with map_redis_errors(f"reading the lease of {session_key(tenant, session_id)}"):
            owner, fence = await self._redis.hmget(keys.lease, ["owner", "fence"])
        if owner is None or fence is None:
            return None
        return text(owner), int(text(fence))


OnLost = Callable[[Lease], Awaitable[None] | None]


@dataclass
class _Held:
    lease: Lease
    expires_at: float  # monotonic; never later than Redis's own expiry of the key
    next_at: float


class LeaseKeeper:
    """Renews held leases in one background loop; calls `on_lost(lease)` once a lease is lost.

    A lease is lost when Redis says another owner holds it or it expired, or when Redis cannot be
    reached and the TTL has certainly run out by the monotonic clock (measured from when the last
    successful renewal was sent). An outage never ends the loop: it retries every `retry_every`.

    The loop may run on another thread's event loop than its callers' (a node runs it on its
    keepalive thread, sessionmesh.aio.LoopThread, so that a busy main loop cannot starve it):
    `add`, `discard`, `holds` and `leases` are safe from any thread; `on_lost` is called on the
    keeper's loop; `__aenter__`, `release` and `aclose` belong to that loop.
    """

    def __init__(
        self,
        manager: LeaseManager,
        on_lost: OnLost,
        *,
        renew_every: float | None = None,
        retry_every: float | None = None,
        release_on_exit: bool = True,
    ) -> None:
        ttl = manager.ttl_ms / 1000
        self._manager = manager
        self._on_lost = on_lost
        self._renew_every = renew_every if renew_every is not None else ttl / 3
        if not 0 < self._renew_every < ttl:
            raise ValueError("renew_every must be positive and shorter than the lease TTL")
        self._retry_every = (
            retry_every if retry_every is not None else min(1.0, self._renew_every / 2)
        )
        self._release_on_exit = release_on_exit
        self._held: dict[tuple[str, str], _Held] = {}
        self._lock = threading.Lock()  # guards _held against callers on other threads
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._callbacks: set[asyncio.Future[None]] = set()
        self._closed = False
        self.lost: dict[Lease, LossReason] = {}
        self.iterations = 0  # loop wake-ups
        self.renewals = 0  # successful renewals
        self.failures = 0  # renewals that hit an outage or an error

    def add(self, lease: Lease) -> None:
        """Keep `lease` alive from now on (replaces an older lease of the same session)."""
        if self._closed:
            raise RuntimeError("the lease keeper is closed")
        first_renew = lease.acquired_at + self._renew_every
        expires = lease.acquired_at + lease.ttl_ms / 1000
        with self._lock:
            self._held[(lease.tenant, lease.session_id)] = _Held(lease, expires, first_renew)
        self._poke()

    def discard(self, lease: Lease) -> None:
        """Stop renewing `lease` without releasing it."""
        with self._lock:
            held = self._held.get((lease.tenant, lease.session_id))
            if held is not None and held.lease == lease:
                del self._held[(lease.tenant, lease.session_id)]

    def _poke(self) -> None:
        """Wake the loop, from its own thread or another."""
        if self._loop is None:  # not entered yet: its first turn reads _held anyway
            self._wake.set()
        else:
            call_soon_in(self._loop, self._wake.set)

    async def release(self, lease: Lease) -> bool:
        """Stop renewing `lease` and give it up in Redis."""
        self.discard(lease)
        return await self._manager.release(lease)

    def holds(self, lease: Lease) -> bool:
        held = self._held.get((lease.tenant, lease.session_id))
        return held is not None and held.lease == lease and held.expires_at > time.monotonic()

    @property
    def leases(self) -> list[Lease]:
        with self._lock:
            return [h.lease for h in self._held.values()]

    async def __aenter__(self) -> LeaseKeeper:
        if self._closed or self._task is not None:
            raise RuntimeError("a LeaseKeeper is entered once")
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="lease-keeper")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the loop, wait for on_lost callbacks, and release what is still held. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await cancel_and_wait(self._task)
        if self._callbacks:
            await asyncio.gather(*self._callbacks, return_exceptions=True)
        with self._lock:
            held, self._held = list(self._held.values()), {}
        if self._release_on_exit and held:
            await asyncio.shield(self._release_all([h.lease for h in held]))

    async def _release_all(self, leases: list[Lease]) -> None:
        results = await asyncio.gather(
            *(self._manager.release(lease) for lease in leases), return_exceptions=True
        )
        for lease, result in zip(leases, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("could not release the lease of %s: %s", lease.name, result)

    async def _run(self) -> None:
        # `_closed` too, not only cancel(): a cancel that lands as the timeout below fires is
        # turned into TimeoutError by asyncio.timeout on Python 3.11 and would be lost.
        while not self._closed:
            self.iterations += 1
            now = time.monotonic()
            with self._lock:
                held_now = list(self._held.values())
            for held in held_now:
                if held.expires_at <= now:  # not renewed in time: Redis did not answer
                    self._lose(held, LossReason.UNREACHABLE)
            due = [h for h in held_now if h.next_at <= now and self._current(h)]
            if due:
                await asyncio.gather(*(self._renew(h) for h in due))
            self._wake.clear()  # before reading _held: an add() from now on wakes us again
            with self._lock:
                wake_at = min(
                    (min(h.next_at, h.expires_at) for h in self._held.values()),
                    default=time.monotonic() + self._renew_every,
                )
            delay = max(0.01, wake_at - time.monotonic())
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _renew(self, held: _Held) -> None:
        sent = time.monotonic()
        remaining = held.expires_at - sent
        reason: LossReason | None
        try:
            if remaining <= 0:
                raise TimeoutError
            async with asyncio.timeout(remaining):
                reason = await self._manager.check_renew(held.lease)
        except (StoreUnavailable, TimeoutError) as e:
            self.failures += 1
            if self._current(held):
                if time.monotonic() >= held.expires_at:
                    log.warning("lease of %s expired while Redis was unreachable", held.lease.name)
                    self._lose(held, LossReason.UNREACHABLE)
                else:
                    log.info("lease of %s not renewed, will retry: %s", held.lease.name, e)
                    held.next_at = time.monotonic() + self._retry_every
            return
        except Exception:
            # A bug or an unexpected reply must not end renewals for every other session.
            self.failures += 1
            log.exception("renewing the lease of %s failed", held.lease.name)
            if self._current(held):
                held.next_at = time.monotonic() + self._retry_every
            return
        if not self._current(held):
            return
        if reason is None:
            self.renewals += 1
            held.expires_at = sent + held.lease.ttl_ms / 1000
            held.next_at = sent + self._renew_every
        else:
            log.warning("lease of %s lost: %s", held.lease.name, reason.value)
            self._lose(held, reason)

    def _current(self, held: _Held) -> bool:
        return self._held.get((held.lease.tenant, held.lease.session_id)) is held

    def _lose(self, held: _Held, reason: LossReason) -> None:
        with self._lock:
            if not self._current(held):
                return
            del self._held[(held.lease.tenant, held.lease.session_id)]
        self.lost[held.lease] = reason
        try:
            result = self._on_lost(held.lease)
        except Exception:
            log.exception("on_lost for %s failed", held.lease.name)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._callbacks.add(task)
            task.add_done_callback(self._callback_done)

    def _callback_done(self, task: asyncio.Future[None]) -> None:
        self._callbacks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("on_lost callback failed", exc_info=task.exception())
