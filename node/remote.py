"""RemoteAuth for the node: per-session leases, fenced snapshots, directory entry and event stream.

`RemoteAuth` owns the node's Redis client, snapshot store, lease manager and lease keeper. The
keeper renews on the node's keepalive thread (sessionmesh.aio.LoopThread) with a Redis client of
its own, so that a main loop busy with browsers cannot make a live node's leases lapse.
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
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from node.auth_store import Snapshot
from node.crypto import Sealer, SnapshotCodec, SnapshotError
from node.errors import NodeUnavailable
from node.lease import Lease, LeaseKeeper, LeaseManager, LossReason, map_redis_errors
from node.remote_store import (
    FENCE_CHECK_LUA,
    RemoteSnapshotStore,
    StaleFence,
    StoreUnavailable,
    check_reply,
)
from node.sends import KEEP_SECONDS, SendRecord
from node.settings import NodeSettings
from sessionmesh import retry
from sessionmesh.aio import LoopThread, call_soon_in, cancel_and_wait
from sessionmesh.redis_conn import RedisClient, create_redis, ping
from sessionmesh.schema import DirEntry, SessionKeys, text
from sessionmesh.schema import session_member as session_key
from sessionmesh.v1 import common_pb2 as pb

log = logging.getLogger(__name__)

EVENT_HOLD = 2.0  # during an outage, watchers get an event after this long, durable or not
HISTORY_ATTEMPTS = 6  # reads of a session's events before a claim gives up
FLUSH_TIMEOUT = 5.0
LAPSED_TRY = 1.0  # s: one try to re-take a lease that lapsed in a Redis outage
LOST_REASON = "lease taken by another node"
CUT_OFF_REASON = "lease lapsed while this node was cut off from Redis and from its routers"

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


class _Held(Exception):
    """Another owner holds the lease (retried while a takeover waits for it to lapse)."""


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
        # Renewals and heartbeats: their own thread, loop and client (used only there).
        self.keepalive = LoopThread(f"keepalive {settings.node_id}")
        self.keepalive_redis: RedisClient = create_redis(settings.redis)
        self.keeper = LeaseKeeper(
            LeaseManager(
                self.keepalive_redis,
                settings.redis.session_prefix,
                int(settings.lease_ttl * 1000),
            ),
            self._lost,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self.sealer = Sealer(settings.snapshot_keys)
        self._write = self.redis.register_script(WRITE_LUA)
        # When a router's call was last admitted (monotonic; None: never). NodeServer sets it
        # to its guard's.
        self.router_contact: Callable[[], float | None] = lambda: None
        self._bound: dict[tuple[str, str], RemoteSession] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._closed = False

    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("RemoteAuth is closed")
        self._loop = asyncio.get_running_loop()
        self.keepalive.start()
        self._started = True
        await self.keepalive.run(self.keeper.__aenter__())
        if not await self.reachable():
            log.warning(
                "Redis is unreachable at start (%s); RemoteAuth starts answer UNAVAILABLE "
                "until it answers",
                self.settings.redis,
            )

    async def reachable(self) -> bool:
        return await ping(self.redis, within=2.0)

    def routers_in_touch(self) -> bool:
        """A router called within half a lease TTL (or none ever did: nothing to mirror).
        Routers declare a node dead only when its heartbeat AND their calls to it have failed;
        a node whose lease lapsed in a Redis outage with no router in touch either may be
        failed over at any moment, so it must stop hosting."""
        last = self.router_contact()
        return last is None or time.monotonic() - last < self.settings.lease_ttl / 2

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

    def unbind(self, tenant: str, session_id: str) -> None:
        self._bound.pop((tenant, session_id), None)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    def _lost(self, lease: Lease) -> None:
        """The keeper lost `lease` (called on the keepalive thread): reclaim on the main loop."""
        if self._loop is not None:
            call_soon_in(self._loop, self._reclaim_lost, lease)

    def _reclaim_lost(self, lease: Lease) -> None:
        if self._closed:
            return
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
            args += [event.seq, self.seal_event(lease.tenant, lease.session_id, event)]
        with map_redis_errors(f"writing the events of {lease.name}"):
            reply = await self._write(
                keys=[keys.lease, keys.fence, keys.events, keys.dir], args=args
            )
        check_reply(reply, lease.tenant, lease.session_id, lease.owner, lease.fence)

    def seal_event(self, tenant: str, session_id: str, event: pb.SessionEvent) -> bytes:
        """An event as stored in Redis: sealed, bound to its session and its seq."""
        return self.sealer.seal(
            "event",
            session_key(tenant, session_id),
            event.SerializeToString(),
            str(event.seq).encode(),
        )

    def _open_event(self, name: str, stream_id: str, payload: bytes) -> pb.SessionEvent | None:
        seq = stream_id.split("-", 1)[0]
        try:
            plain = self.sealer.open("event", name, payload, seq.encode())
        except SnapshotError as e:
            log.warning("%s: event %s in Redis rejected: %s", name, stream_id, e)
            return None
        event = pb.SessionEvent()
        event.ParseFromString(plain)
        return event

    def send_log(self, tenant: str, session_id: str) -> SealedSendLog:
        """The session's send log in Redis (``P{K}:sends``), sealed like its events."""
        return SealedSendLog(self, tenant, session_id)

    def seal_dir(self, tenant: str, session_id: str) -> Callable[[bytes], bytes]:
        name = session_key(tenant, session_id)
        return lambda plain: self.sealer.seal("dir", name, plain)

    def _unseal_dir(self, tenant: str, session_id: str) -> Callable[[bytes], bytes]:
        name = session_key(tenant, session_id)

        def unseal(blob: bytes) -> bytes:
            try:
                return self.sealer.open("dir", name, blob)
            except SnapshotError as e:
                log.warning("%s: directory entry's private fields rejected: %s", name, e)
                return b"{}"

        return unseal

    async def directory(self, tenant: str, session_id: str) -> DirEntry | None:
        """A session's directory entry (``P{K}:dir``); None when it has none."""
        keys = self.leases.session_keys(tenant, session_id)
        with map_redis_errors(f"reading the directory entry of {session_key(tenant, session_id)}"):
            entry = await self.redis.hgetall(keys.dir)
        return DirEntry.decode(entry, self._unseal_dir(tenant, session_id))

    async def read_history(
        self, tenant: str, session_id: str
    ) -> tuple[list[pb.SessionEvent], DirEntry | None]:
        """The stream's tail (oldest first) and the directory entry of a session."""
        keys = self.leases.session_keys(tenant, session_id)
        with map_redis_errors(f"reading the events of {session_key(tenant, session_id)}"):
            raw = await self.redis.xrevrange(
                keys.events, "+", "-", count=self.settings.event_log_size
            )
            entry = await self.redis.hgetall(keys.dir)
        events: list[pb.SessionEvent] = []
        name = session_key(tenant, session_id)
        for stream_id, data in reversed(raw or []):
            payload = data.get(b"e") if isinstance(data, dict) else None
            if not isinstance(payload, bytes):
                continue
            event = self._open_event(name, text(stream_id), payload)
            if event is not None:
                events.append(event)
        return events, DirEntry.decode(entry, self._unseal_dir(tenant, session_id))

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
                await asyncio.shield(self.keepalive.run(self._close_keepalive()))
        await asyncio.to_thread(self.keepalive.close)  # a join: not on this loop
        with contextlib.suppress(Exception):
            await self.redis.aclose()

    async def _close_keepalive(self) -> None:
        """On the keepalive loop: stop the keeper (releasing what it holds), close its client."""
        try:
            await self.keeper.aclose()
        finally:
            await self.keepalive_redis.aclose()


class SealedSendLog:
    """A session's send log in Redis, readable by its owners only: a record's message id names
    the recipient's chat (a phone number), so each record is sealed (bound to its session and
    its idempotency key) under a field named by a keyed hash of the key, which may say as much.
    A record that does not open (forged, moved) counts as absent."""

    def __init__(self, remote: RemoteAuth, tenant: str, session_id: str) -> None:
        self._redis = remote.redis
        self._sealer = remote.sealer
        self._name = session_key(tenant, session_id)
        self._key = SessionKeys.of(remote.store.prefix, tenant, session_id).sends

    async def get(self, key: str) -> SendRecord | None:
        names = self._sealer.names("send", self._name, key)
        with map_redis_errors(f"reading the send log of {self._name}"):
            found = await self._redis.hmget(self._key, names)
        for blob in found:
            if not isinstance(blob, bytes):
                continue
            try:
                record = SendRecord.decode(
                    self._sealer.open("send", self._name, blob, key.encode())
                )
            except (SnapshotError, ValueError, TypeError) as e:
                log.warning("%s: send record in Redis rejected: %s", self._name, e)
                continue
            if record.key == key:
                return record
        return None

    async def put(self, record: SendRecord) -> None:
        name = self._sealer.names("send", self._name, record.key)[0]
        blob = self._sealer.seal("send", self._name, record.encode().encode(), record.key.encode())
        with map_redis_errors(f"writing the send log of {self._name}"):
            await self._redis.hset(self._key, name, blob)
            await self._redis.expire(self._key, KEEP_SECONDS)


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
        self.handed_off = False  # stopped here to start elsewhere (the directory says so)
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
            self._stale(e, lease)
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
        holder = ""
        lease: Lease | None = None
        try:
            async for attempt in retry.LEASE.retrying(on=(StoreUnavailable, _Held), deadline=wait):
                with attempt:
                    lease = await self.remote.leases.acquire(
                        self.tenant, self.session_id, self.remote.owner
                    )
                    if lease is None:
                        current = await self.remote.leases.holder(self.tenant, self.session_id)
                        holder = current[0] if current else holder
                        raise _Held(holder)
        except _Held:
            raise NodeUnavailable(
                f"the session is held by {holder or 'another node'}"
                + (f"; its lease did not lapse within {wait:.0f}s" if self.takeover else "")
            ) from None
        assert lease is not None
        self.handed_off = False
        self.lease = lease
        self.remote.keeper.add(lease)
        events, entry = await self._history()
        session.log.adopt(events, last_seq=entry.last_seq if entry is not None else 0)
        self._written_seq = session.log.last_seq
        if entry is not None and not session.info.labels and entry.labels:
            session.info.labels = dict(entry.labels)  # a failover start carries none
        previous = entry.node_id if entry is not None else ""
        if previous and previous != self.node_id:
            await self._on_claimed(previous)
        self._start_writer()

    async def _history(self) -> tuple[list[pb.SessionEvent], DirEntry | None]:
        async for attempt in retry.REDIS.retrying(
            on=(StoreUnavailable,), attempts=HISTORY_ATTEMPTS
        ):
            with attempt:
                return await self.remote.read_history(self.tenant, self.session_id)
        raise AssertionError("unreachable: the last attempt re-raises")

    async def reclaim(self, reason: LossReason) -> None:
        """After the keeper lost the lease: close if another owner has it; else take it again
        once Redis answers (the session keeps running meanwhile, unless no router is in touch
        either: see `routers_in_touch`)."""
        async with self._reclaiming:
            old = self.lease
            if self.lost or old is None:
                return
            if reason is LossReason.TAKEN:
                await self._lose()
                return
            lease: Lease | None = None
            lapsed = reason is LossReason.UNREACHABLE
            # A lapsed lease is tried often, each try bounded, so that routers going out of
            # touch meanwhile are noticed within a second (acquiring twice is harmless).
            policy = retry.LAPSED if lapsed else retry.REDIS
            async for attempt in policy.retrying(on=(StoreUnavailable, TimeoutError)):
                with attempt:
                    if self.lease is not old or self.lost:
                        return
                    if lapsed and not self.remote.routers_in_touch():
                        # Cut off from Redis and routers alike: routers declare this node
                        # dead and start the session elsewhere as soon as the lease lapses,
                        # which is now. Stop hosting before that start connects: WhatsApp
                        # must never see two hosts. (No router declares a node dead while
                        # it reaches it.)
                        await self._lose(CUT_OFF_REASON)
                        return
                    async with asyncio.timeout(LAPSED_TRY if lapsed else None):
                        lease = await self.remote.leases.acquire(
                            self.tenant, self.session_id, self.remote.owner
                        )
            if self.lease is old and not self.lost:
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

    def _ours(self, e: StaleFence, used: Lease) -> bool:
        """The write was refused only because it carried a lease this node has since taken
        again (a write begun before Redis returned, refused by our own newer fence)."""
        return (
            used is not self.lease
            and self.lease is not None
            and e.holder == self.lease.owner
            and (e.fence is None or e.fence <= self.lease.fence)
        )

    def _stale(self, e: StaleFence, used: Lease) -> None:
        if self._ours(e, used):
            self._kick.set()  # write again, with the lease we hold now
        elif e.holder is None:  # expired or Redis restarted empty: take it again
            self.remote.spawn(self.reclaim(LossReason.EXPIRED), f"reclaim {self.name}")
        else:
            self.remote.spawn(self.reclaim(LossReason.TAKEN), f"lose {self.name}")

    async def _lose(self, reason: str = LOST_REASON) -> None:
        if self.lost:
            return
        self.lost = True
        if self.lease is not None:
            self.remote.keeper.discard(self.lease)
        log.warning("%s: %s; closing it here, keeping the login", self.name, reason)
        await self.stop_writer()
        if self._session is not None:
            self._session.log.close()
        await self._on_lost(reason)

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

    def _entry(self, last_seq: int) -> DirEntry:
        info = self._session.info
        return DirEntry(
            node_id=self.node_id,
            address=self._address(),
            owner=self.lease.owner if self.lease else "",
            auth_strategy=info.auth_strategy,
            labels=dict(info.labels),
            created_at=repr(info.created_at),
            updated_at=repr(info.updated_at),
            state=info.state,
            phone=info.phone,
            last_error=info.last_error,
            last_seq=last_seq,
            handed_off=self.handed_off,
        )

    async def _write_loop(self) -> None:
        failures = 0
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
            top = events[-1].seq if events else self._written_seq
            fields = self._entry(top).encode(self.remote.seal_dir(self.tenant, self.session_id))
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
                failures += 1
                await asyncio.sleep(retry.REDIS.delay(failures))
                continue
            except StaleFence as e:
                self._dirty = True
                ours = self._ours(e, lease)
                self._stale(e, lease)
                if ours:
                    continue
                if e.holder is not None:
                    return
                failures += 1
                await asyncio.sleep(retry.REDIS.delay(failures))
                continue
            if waiting_since is not None:
                log.info("%s: Redis is back; writes caught up", self.name)
            waiting_since, failures = None, 0
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
            await cancel_and_wait(writer)

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
