"""RemoteAuth for the node: per-session leases, fenced snapshots, directory entry and event stream.

`RemoteAuth` owns the node's Redis client, snapshot store, lease manager and lease keeper.
`RemoteSession` binds one session to its lease: it is the session's SnapshotStore (every save
and delete carries the lease's fence) and its writer of ``P{K}:dir`` and ``P{K}:events``.

Events: the owner appends each event to ``P{K}:events`` (id ``<seq>-0``) in a fenced script
before watchers see it (the session's log is gated; the writer releases what is durable). While
Redis is unreachable, events are shown after `EVENT_HOLD` seconds and written when Redis
returns; a snapshot that comes due meanwhile is kept (the newest only) and written then too.

Lease loss: another owner holding the lease closes the session at once (STOPPED, reason
"lease taken by another node", login kept, nothing written). A lease that merely expired (Redis
was unreachable past the TTL, or restarted empty) is re-acquired when Redis answers; only if
another owner holds it by then does the session close.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from node.auth_store import Snapshot
from node.crypto import SnapshotCodec
from node.errors import NodeUnavailable
from node.lease import Lease, LeaseKeeper, LeaseManager, LossReason
from node.remote_store import (
    FENCE_CHECK_LUA,
    RemoteSnapshotStore,
    SessionKeys,
    StaleFence,
    StoreUnavailable,
    check_reply,
    map_redis_errors,
    session_key,
)
from node.settings import NodeSettings
from sessionmesh.redis_conn import RedisClient, create_redis, ping
from sessionmesh.v1 import common_pb2 as pb

log = logging.getLogger(__name__)

EVENT_HOLD = 2.0  # during an outage, watchers get an event after this long, durable or not
BACKOFF_FIRST = 0.2
BACKOFF_CAP = 5.0
FLUSH_TIMEOUT = 5.0
LOST_REASON = "lease taken by another node"

# KEYS: lease, fence, events, dir. ARGV: owner, fence, maxlen, ttl s, ndir, then ndir field/value
# pairs, then seq/payload pairs. Events at or below the stream's top seq are skipped (a retry of
# a write whose reply was lost), so the script is idempotent.
WRITE_LUA = (
    FENCE_CHECK_LUA
    + """
local refused = fence_check(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]))
if refused then return refused end
local ndir = tonumber(ARGV[5])
local first = 6 + 2 * ndir
if first <= #ARGV then
  local last = 0
  local top = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
  if top[1] then last = tonumber(string.match(top[1][1], '^(%d+)')) end
  for i = first, #ARGV, 2 do
    local seq = tonumber(ARGV[i])
    if seq > last then
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], ARGV[i] .. '-0', 'e', ARGV[i + 1])
      last = seq
    end
  end
  redis.call('EXPIRE', KEYS[3], ARGV[4])
end
if ndir > 0 then
  redis.call('HSET', KEYS[4], unpack(ARGV, 6, 5 + 2 * ndir))
  redis.call('EXPIRE', KEYS[4], ARGV[4])
end
return {'ok', ARGV[1], ARGV[2]}
"""
)


def dir_key(keys: SessionKeys) -> str:
    return f"{keys.tag}:dir"


def events_key(keys: SessionKeys) -> str:
    return f"{keys.tag}:events"


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class RemoteAuth:
    """The node's Redis side for sessions. `start()` connects; `aclose()` is idempotent."""

    def __init__(self, settings: NodeSettings, owner: str) -> None:
        assert settings.redis is not None and settings.snapshot_keys is not None
        self.settings = settings
        self.owner = owner
        self.redis: RedisClient = create_redis(settings.redis)
        self.store = RemoteSnapshotStore(
            self.redis,
            SnapshotCodec(settings.snapshot_keys),
            settings.redis.session_prefix,
            settings.redis.session_ttl,
        )
        self.leases = LeaseManager(
            self.redis, settings.redis.session_prefix, int(settings.lease_ttl * 1000)
        )
        self.keeper = LeaseKeeper(self.leases, self._lost)
        self._write = self.redis.register_script(WRITE_LUA)
        self._bound: dict[tuple[str, str], RemoteSession] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._closed = False

    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("RemoteAuth is closed")
        await self.keeper.__aenter__()
        self._started = True
        if not await self.reachable():
            log.warning(
                "Redis is unreachable at start (%s); RemoteAuth starts answer UNAVAILABLE "
                "until it answers",
                self.settings.redis,
            )

    async def reachable(self) -> bool:
        return await ping(self.redis, within=2.0)

    def bind(
        self,
        tenant: str,
        session_id: str,
        *,
        node_id: str,
        address: Callable[[], str],
        on_lost: Callable[[str], Awaitable[None]],
        on_claimed: Callable[[str], Awaitable[None]],
    ) -> RemoteSession:
        binding = RemoteSession(
            self,
            tenant,
            session_id,
            node_id=node_id,
            address=address,
            on_lost=on_lost,
            on_claimed=on_claimed,
        )
        self._bound[(tenant, session_id)] = binding
        return binding

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    def _lost(self, lease: Lease) -> None:
        binding = self._bound.get((lease.tenant, lease.session_id))
        if binding is None or binding.lease != lease:
            return
        reason = self.keeper.lost.get(lease, LossReason.EXPIRED)
        self.spawn(binding.reclaim(reason), f"reclaim {lease.name}")

    async def write(
        self, lease: Lease, events: list[pb.SessionEvent], fields: dict[str, str]
    ) -> None:
        """Append `events` to the stream and set the directory fields, fenced by `lease`."""
        keys = self.leases.session_keys(lease.tenant, lease.session_id)
        args: list[str | int | bytes] = [
            lease.owner,
            lease.fence,
            self.settings.event_log_size,
            self.store.ttl,
            len(fields),
        ]
        for name, value in fields.items():
            args += [name, value]
        for event in events:
            args += [event.seq, event.SerializeToString()]
        with map_redis_errors(f"writing the events of {lease.name}"):
            reply = await self._write(
                keys=[keys.lease, keys.fence, events_key(keys), dir_key(keys)], args=args
            )
        check_reply(reply, lease.tenant, lease.session_id, lease.owner, lease.fence)

    async def directory(self, tenant: str, session_id: str) -> dict[str, str]:
        """A session's directory entry (``P{K}:dir``); empty when it has none."""
        keys = self.leases.session_keys(tenant, session_id)
        with map_redis_errors(f"reading the directory entry of {session_key(tenant, session_id)}"):
            entry = await self.redis.hgetall(dir_key(keys))
        return {_text(k): _text(v) for k, v in entry.items()}

    async def read_history(
        self, tenant: str, session_id: str
    ) -> tuple[list[pb.SessionEvent], dict[str, str]]:
        """The stream's tail (oldest first) and the directory entry of a session."""
        keys = self.leases.session_keys(tenant, session_id)
        with map_redis_errors(f"reading the events of {session_key(tenant, session_id)}"):
            raw = await self.redis.xrevrange(
                events_key(keys), "+", "-", count=self.settings.event_log_size
            )
            entry = await self.redis.hgetall(dir_key(keys))
        events: list[pb.SessionEvent] = []
        for _id, data in reversed(raw or []):
            payload = data.get(b"e") if isinstance(data, dict) else None
            if not isinstance(payload, bytes):
                continue
            event = pb.SessionEvent()
            event.ParseFromString(payload)
            events.append(event)
        return events, {_text(k): _text(v) for k, v in entry.items()}

    async def aclose(self) -> None:
        """Stop writers and the keeper (releasing what is still held), close the client."""
        if self._closed:
            return
        self._closed = True
        for binding in list(self._bound.values()):
            await binding.stop_writer()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._started:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.keeper.aclose())
        with contextlib.suppress(Exception):
            await self.redis.aclose()


class RemoteSession:
    """One RemoteAuth session's binding to its lease: SnapshotStore, claim, writer, release."""

    def __init__(
        self,
        remote: RemoteAuth,
        tenant: str,
        session_id: str,
        *,
        node_id: str,
        address: Callable[[], str],
        on_lost: Callable[[str], Awaitable[None]],
        on_claimed: Callable[[str], Awaitable[None]],
    ) -> None:
        self.remote = remote
        self.tenant = tenant
        self.session_id = session_id
        self.name = session_key(tenant, session_id)
        self.node_id = node_id
        self._address = address
        self._on_lost = on_lost
        self._on_claimed = on_claimed
        self.lease: Lease | None = None
        self.takeover = False
        self.lost = False
        self._session: Any = None  # HostedSession (typed loosely: session.py imports us not)
        self._written_seq = 0
        self._pending_snapshot: Snapshot | None = None
        self._dirty = False
        self._kick = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._writer: asyncio.Task[None] | None = None
        self._reclaiming = asyncio.Lock()

    # -- SnapshotStore -------------------------------------------------------------------

    async def load(self, tenant: str, session_id: str) -> Snapshot | None:
        return await self.remote.store.load(tenant, session_id)

    async def save(self, tenant: str, session_id: str, state: Snapshot) -> None:
        lease = self._require_lease()
        try:
            await self.remote.store.save(
                tenant, session_id, state, owner=lease.owner, fence=lease.fence
            )
        except StoreUnavailable:
            self._pending_snapshot = state  # written by the writer when Redis returns
            self._kick.set()
            raise
        except StaleFence as e:
            self._stale(e)
            raise
        self._pending_snapshot = None

    async def delete(self, tenant: str, session_id: str) -> None:
        lease = self._require_lease()
        self._pending_snapshot = None
        await self.remote.store.delete(tenant, session_id, owner=lease.owner, fence=lease.fence)

    def _require_lease(self) -> Lease:
        if self.lease is None or self.lost:
            raise StaleFence(
                f"{self.name}: this node holds no lease for the session", holder=None, fence=None
            )
        return self.lease

    # -- claim ---------------------------------------------------------------------------

    async def claim(self, session: Any) -> None:
        """Take the lease (waiting for a previous owner's to lapse when taking over), adopt the
        stream's events, then start the writer. Raises NodeError when it cannot."""
        self._session = session
        self.lost = False
        ttl = self.remote.settings.lease_ttl
        wait = ttl + max(2.0, ttl * 0.2) if self.takeover else 0.0
        deadline = time.monotonic() + wait
        delay = BACKOFF_FIRST
        holder = ""
        while True:
            try:
                lease = await self.remote.leases.acquire(
                    self.tenant, self.session_id, self.remote.owner
                )
                if lease is not None:
                    break
                current = await self.remote.leases.holder(self.tenant, self.session_id)
                holder = current[0] if current else holder
            except StoreUnavailable as e:
                if time.monotonic() >= deadline:
                    raise
                log.info("%s: claiming the lease: %s", self.name, e)
            if time.monotonic() >= deadline:
                raise NodeUnavailable(
                    f"the session is held by {holder or 'another node'}"
                    + (f"; its lease did not lapse within {wait:.0f}s" if self.takeover else "")
                )
            await asyncio.sleep(min(delay, max(0.05, deadline - time.monotonic())))
            delay = min(delay * 2, 0.5)
        self.lease = lease
        self.remote.keeper.add(lease)
        events, entry = await self._history()
        seq = int(entry.get("last_seq") or 0)
        session.log.adopt(events, last_seq=seq)
        self._written_seq = session.log.last_seq
        previous = entry.get("node_id", "")
        if previous and previous != self.node_id:
            await self._on_claimed(previous)
        self._start_writer()

    async def _history(self) -> tuple[list[pb.SessionEvent], dict[str, str]]:
        delay = BACKOFF_FIRST
        for _ in range(5):
            try:
                return await self.remote.read_history(self.tenant, self.session_id)
            except StoreUnavailable as e:
                log.info("%s: reading history: %s", self.name, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_CAP)
        return await self.remote.read_history(self.tenant, self.session_id)

    async def reclaim(self, reason: LossReason) -> None:
        """After the keeper lost the lease: close if another owner has it; else take it again
        once Redis answers (the session keeps running meanwhile)."""
        async with self._reclaiming:
            old = self.lease
            if self.lost or old is None:
                return
            if reason is LossReason.TAKEN:
                await self._lose()
                return
            delay = BACKOFF_FIRST
            while self.lease is old and not self.lost:
                try:
                    lease = await self.remote.leases.acquire(
                        self.tenant, self.session_id, self.remote.owner
                    )
                except StoreUnavailable:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_CAP)
                    continue
                if lease is None:
                    await self._lose()
                    return
                if old.fence < lease.fence - 1:  # someone else owned it in between
                    with contextlib.suppress(StoreUnavailable):
                        await self.remote.leases.release(lease)
                    await self._lose()
                    return
                log.info("%s: lease re-acquired (fence %d)", self.name, lease.fence)
                self.lease = lease
                self.remote.keeper.add(lease)
                self._kick.set()
                return

    def _stale(self, e: StaleFence) -> None:
        if e.holder is None:  # expired or Redis restarted empty: take it again
            self.remote.spawn(self.reclaim(LossReason.EXPIRED), f"reclaim {self.name}")
        else:
            self.remote.spawn(self.reclaim(LossReason.TAKEN), f"lose {self.name}")

    async def _lose(self) -> None:
        if self.lost:
            return
        self.lost = True
        if self.lease is not None:
            self.remote.keeper.discard(self.lease)
        log.warning("%s: %s; closing it here, keeping the login", self.name, LOST_REASON)
        await self.stop_writer()
        if self._session is not None:
            self._session.log.close()
        await self._on_lost(LOST_REASON)

    # -- the writer ----------------------------------------------------------------------

    def changed(self) -> None:
        """The session changed (state, event): persist it."""
        self._dirty = True
        self._idle.clear()
        self._kick.set()

    def _start_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(
                self._write_loop(), name=f"writer {self.name}"
            )
        self._kick.set()

    def _fields(self) -> dict[str, str]:
        info = self._session.info
        return {
            "node_id": self.node_id,
            "address": self._address(),
            "owner": self.lease.owner if self.lease else "",
            "auth_strategy": pb.AuthStrategy.Name(info.auth_strategy),
            "labels": json.dumps(info.labels, sort_keys=True),
            "created_at": repr(info.created_at),
            "updated_at": repr(info.updated_at),
            "state": pb.SessionState.Name(info.state),
            "phone": info.phone,
            "last_error": info.last_error,
        }

    async def _write_loop(self) -> None:
        delay = BACKOFF_FIRST
        waiting_since: float | None = None
        while True:
            if not self._dirty and self._pending_snapshot is None:
                self._idle.set()
                await self._kick.wait()
            self._kick.clear()
            lease = self.lease
            if lease is None or self.lost:
                return
            self._dirty = False
            log_ = self._session.log
            events = log_.pending(self._written_seq)
            fields = self._fields()
            top = events[-1].seq if events else self._written_seq
            fields["last_seq"] = str(top)
            try:
                await self.remote.write(lease, events, fields)
                snapshot = self._pending_snapshot
                if snapshot is not None:
                    await self.remote.store.save(
                        self.tenant, self.session_id, snapshot, owner=lease.owner, fence=lease.fence
                    )
                    if self._pending_snapshot is snapshot:
                        self._pending_snapshot = None
                    log.info("%s: a snapshot due during the outage is written", self.name)
            except StoreUnavailable as e:
                self._dirty = True
                now = time.monotonic()
                if waiting_since is None:
                    waiting_since = now
                    log.warning("%s: writes wait for Redis: %s", self.name, e)
                if now - waiting_since >= EVENT_HOLD:
                    log_.release(log_.last_seq)  # shown now, persisted when Redis returns
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_CAP)
                continue
            except StaleFence as e:
                self._dirty = True
                self._stale(e)
                if e.holder is not None:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_CAP)
                continue
            if waiting_since is not None:
                log.info("%s: Redis is back; writes caught up", self.name)
            waiting_since, delay = None, BACKOFF_FIRST
            self._written_seq = max(self._written_seq, top)
            log_.release(top)

    async def flush(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        """Wait until what changed so far is written; False if that took longer than `timeout`."""
        if self._writer is None or self._writer.done():
            return not self._dirty
        try:
            async with asyncio.timeout(timeout):
                while self._dirty or self._pending_snapshot is not None or not self._idle.is_set():
                    self._kick.set()
                    await self._idle.wait()
                    await asyncio.sleep(0)
        except TimeoutError:
            return False
        return True

    async def stop_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None and not writer.done():
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer

    async def finish(self, *, release: bool = True) -> bool:
        """The session stopped here: write what is left, give the lease up, stop writing.
        False when Redis did not take the last writes in time (the lease then lapses)."""
        flushed = await self.flush()
        await self.stop_writer()
        if self._session is not None:
            self._session.log.release(self._session.log.last_seq)
            self._session.log.close()
        lease, self.lease = self.lease, None
        if lease is not None:
            self.remote.keeper.discard(lease)
            if release and flushed:
                try:
                    await self.remote.leases.release(lease)
                except StoreUnavailable as e:
                    log.warning("%s: lease not released (it lapses by itself): %s", self.name, e)
                    return False
        return flushed
