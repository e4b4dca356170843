"""The sessions a node hosts: admission against capacity, start, stop, logout, hand-off, resume.

LocalAuth sessions are recorded in the LocalCatalog (resumed on boot); RemoteAuth sessions in
Redis (node/remote.py: lease, directory entry, event stream) and in the node's session set
(node/membership.py), from which a restarted node (same id, new epoch) resumes them on boot."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from node.auth_store import SnapshotStore
from node.browser import BrowserPool
from node.catalog import LocalCatalog
from node.errors import (
    FailedPrecondition,
    InvalidRequest,
    NodeFull,
    NodeUnavailable,
    SessionNotFound,
)
from node.media_fetch import fetch
from node.membership import Membership
from node.remote import RemoteAuth, RemoteSession
from node.remote_store import StoreUnavailable
from node.sends import FileSendLog
from node.session import LINKED, HostedSession, SessionInfo
from node.settings import NodeSettings
from node.warm import WarmPages
from sessionmesh import retry
from sessionmesh.aio import cancel_and_wait
from sessionmesh.schema import LIVE_STATES
from sessionmesh.schema import TERMINAL_STATES as TERMINAL
from sessionmesh.schema import session_member as session_key
from sessionmesh.sending import Send
from sessionmesh.telemetry import mesh_metrics
from sessionmesh.v1 import common_pb2 as pb
from webhooks.guard import Guard

log = logging.getLogger(__name__)

Key = tuple[str, str]

MAX_MEDIA_BYTES = 64 << 20  # a media file fetched by URL
HANDOFF_PARALLELISM = 4  # sessions handed off at once on SIGTERM
RESUME_PARALLELISM = 4  # RemoteAuth sessions resumed at once on boot
MOVED = "moved to another node"


class SessionHost:
    def __init__(
        self,
        settings: NodeSettings,
        pool: BrowserPool,
        *,
        local_store: SnapshotStore,
        catalog: LocalCatalog,
        remote: RemoteAuth | None = None,
        membership: Membership | None = None,
        address: Callable[[], str] = lambda: "",
        warm: WarmPages | None = None,
    ) -> None:
        self.settings = settings
        self._pool = pool
        self._local = local_store
        self._remote = remote
        self._membership = membership
        self._address = address
        self._warm = warm
        self._catalog = catalog
        self._sessions: dict[Key, HostedSession] = {}
        self._bindings: dict[Key, RemoteSession] = {}
        self._runners: dict[asyncio.Task[None], HostedSession] = {}
        self._failovers: set[Key] = set()  # taken over, not READY yet
        self._tasks: set[asyncio.Task[None]] = set()
        self._resuming: asyncio.Task[None] | None = None
        self._settled: dict[Key, asyncio.Event] = {}  # resumed sessions past their claim
        self._lock = asyncio.Lock()
        self.accepting = True
        self.draining = False
        self._guard = Guard(settings.webhooks.allow)  # what a media URL may point at
        # Called after every change of a session (telemetry hooks in here).
        self.observers: list[Callable[[HostedSession], None]] = []

    # -- queries -------------------------------------------------------------------------

    def held(self) -> int:
        """Sessions that hold (or are about to hold) a browser context."""
        return sum(1 for s in self._sessions.values() if s.state not in TERMINAL or s.running)

    def get(self, tenant: str, session_id: str) -> HostedSession:
        session = self._sessions.get((tenant, session_id))
        if session is None:
            raise SessionNotFound(f"session {session_id!r} not found")
        return session

    def all(self) -> list[HostedSession]:
        return list(self._sessions.values())

    def missing_hooks(self) -> dict[str, int]:
        """For each hook some session's page lacked when it last loaded, how many sessions."""
        counts: dict[str, int] = {}
        for session in list(self._sessions.values()):
            for hook in session.canary.missing:
                counts[hook] = counts.get(hook, 0) + 1
        return counts

    def wa_versions(self) -> list[str]:
        """The WhatsApp Web builds this node's sessions loaded, newest first."""
        versions = {s.canary.version for s in list(self._sessions.values()) if s.canary.version}
        return sorted(versions, reverse=True)

    # -- commands ------------------------------------------------------------------------

    async def start(
        self,
        tenant: str,
        session_id: str,
        auth_strategy: int,
        labels: dict[str, str],
        *,
        takeover: bool = False,
    ) -> HostedSession:
        """Start (or return the running) session. RemoteAuth: another owner's lease refuses the
        start (FAILED_PRECONDITION) unless `takeover`, which waits for that lease to lapse."""
        if not self.accepting:
            raise NodeUnavailable(
                f"node {self.settings.node_id} is draining; it takes no new sessions"
            )
        strategy = self._strategy(auth_strategy)
        if strategy == pb.REMOTE:
            await self._check_remote(tenant, session_id, takeover)
        async with self._lock:
            session = self._sessions.get((tenant, session_id))
            if session is not None and session.state not in TERMINAL:
                return session
            if session is not None:
                await session.finished()  # a runner that just ended may still be closing
            if self.held() >= self.settings.max_sessions:
                raise NodeFull(
                    f"node {self.settings.node_id} is full: {self.held()} of "
                    f"MAX_CONCURRENT_SESSIONS={self.settings.max_sessions} sessions"
                )
            if session is None:
                info = SessionInfo(tenant, session_id, strategy, dict(labels))
                known = self._catalog.get(tenant, session_id) if strategy == pb.LOCAL else None
                if known is not None:  # forgotten here: its seq goes on, never reused
                    info.last_seq, info.created_at = known.last_seq, known.created_at
                session = self._make(info)
                self._sessions[session.key] = session
            elif labels:
                session.info.labels = dict(labels)
            binding = self._bindings.get(session.key)
            if binding is not None:
                binding.takeover = takeover
            self._launch(session)
            if self._membership is not None:
                self._membership.place(session_key(tenant, session_id))
            return session

    async def stop(self, tenant: str, session_id: str) -> HostedSession:
        session = self.get(tenant, session_id)
        await session.stop("stopped on request")
        await self._finish(session)
        return session

    async def logout(self, tenant: str, session_id: str) -> HostedSession:
        session = self.get(tenant, session_id)
        await session.logout()
        await self._finish(session)
        return session

    async def send(self, tenant: str, send: Send) -> Any:
        """Send a message from a hosted session (see HostedSession.send); a media URL is
        fetched by the node, from public addresses only."""
        return await self.get(tenant, send.session_id).send(send, self._fetch_media)

    async def _fetch_media(self, send: Send) -> tuple[Send, bytes]:
        assert send.media is not None
        data, kind = await fetch(send.media.url, self._guard, MAX_MEDIA_BYTES)
        if not send.media.mimetype:
            if not kind:
                raise InvalidRequest(
                    "media.mimetype", "is required: the server sent no Content-Type"
                )
            send = dataclasses.replace(send, media=dataclasses.replace(send.media, mimetype=kind))
        return send, data

    async def media(self, tenant: str, session_id: str, message_id: str) -> dict[str, Any]:
        return await self.get(tenant, session_id).media(message_id)

    async def hand_off(
        self, tenant: str, session_id: str, *, keep_placed: bool = False
    ) -> HostedSession:
        """Final snapshot (fenced), close, release the lease: the session is to start on another
        node (StartSession takeover=true). Redis unreachable: UNAVAILABLE, the session runs on.
        `keep_placed` leaves it in the node's session set (SIGTERM: routers fail it over)."""
        session = self.get(tenant, session_id)
        binding = self._bindings.get(session.key)
        if binding is None:
            raise FailedPrecondition(
                f"session {session_id!r} uses LocalAuth: its login is on node "
                f"{self.settings.node_id}'s disk and cannot move"
            )
        if session.running and session.state in LINKED:
            await asyncio.shield(session.save_snapshot(strict=True))
        session.info.resume = False
        binding.handed_off = True
        await session.close(MOVED)
        if not await binding.finish():
            log.warning(
                "%s/%s handed off, but its last writes did not reach Redis", tenant, session_id
            )
        if self._membership is not None and not keep_placed:
            self._membership.remove(session_key(tenant, session_id))
        return session

    def drain(self) -> None:
        """Take no new sessions (health DRAINING); running ones stay until handed off."""
        self.accepting = False
        self.draining = True

    def forget_finished(self, now: float | None = None) -> int:
        """Drop sessions that finished (STOPPED, LOGGED_OUT, FAILED) more than
        MESH_FINISHED_TTL ago; their logins and records on disk stay. Returns how many."""
        cutoff = (time.time() if now is None else now) - self.settings.finished_ttl
        old = [
            key
            for key, s in self._sessions.items()
            if s.state in TERMINAL and not s.running and s.info.updated_at <= cutoff
        ]
        for key in old:
            del self._sessions[key]
            if self._bindings.pop(key, None) is not None and self._remote is not None:
                self._remote.unbind(*key)
        if old:
            log.info("forgot %d finished sessions", len(old))
        return len(old)

    async def _sweep(self) -> None:
        every = min(60.0, max(0.05, self.settings.finished_ttl / 2))
        while True:
            await asyncio.sleep(every)
            self.forget_finished()

    # -- lifecycle -----------------------------------------------------------------------

    async def resume(self) -> int:
        """Bring back the sessions this node held when it last stopped; returns how many
        LocalAuth ones. RemoteAuth ones come back in the background (`_resume_remote`)."""
        resumed = 0
        sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="forget finished")
        self._tasks.add(sweeper)
        cutoff = time.time() - self.settings.finished_ttl
        for info in await self._catalog.load_all():
            if info.auth_strategy == pb.REMOTE:
                continue  # RemoteAuth sessions live in Redis; routers move them
            if info.state in TERMINAL and not info.resume and info.updated_at <= cutoff:
                continue  # finished long ago: forgotten (its record keeps its seq)
            session = self._make(info)
            self._sessions[session.key] = session
            if self._membership is not None:
                self._membership.place(session_key(info.tenant, info.session_id))
            if info.resume and info.state not in (pb.LOGGED_OUT,):
                if self.held() >= self.settings.max_sessions:
                    log.warning("not resuming %s/%s: node full", info.tenant, info.session_id)
                    continue
                self._launch(session)
                resumed += 1
        if self._remote is not None and self._membership is not None:
            task = asyncio.get_running_loop().create_task(
                self._resume_remote(), name="resume RemoteAuth sessions"
            )
            self._resuming = task
            self._tasks.add(task)
            task.add_done_callback(self._reap)
        return resumed

    async def _resume_remote(self) -> None:
        """Restart the RemoteAuth sessions this node's last epoch was running.

        A node back with the same id before routers declared it dead would strand them: the
        old epoch's leases lapse and nobody starts the sessions. So every session of the
        node's set whose directory entry says REMOTE, a live state and this node is started
        with takeover (it waits for the old epoch's lease), unless another node holds its
        lease: that one has moved on and is left alone. RESUME_PARALLELISM at a time, each
        until it is past its claim and restore (AUTHENTICATED, a QR, or an end)."""
        assert self._membership is not None
        names: list[str] = []
        async for attempt in retry.REDIS.retrying(
            on=(StoreUnavailable,),
            before_sleep=lambda s: log.warning(
                "resuming RemoteAuth sessions waits for Redis: %s",
                s.outcome and s.outcome.exception(),
            ),
        ):
            with attempt:
                names = await self._membership.listed()
        limit = asyncio.Semaphore(RESUME_PARALLELISM)

        async def one(name: str) -> bool:
            async with limit:
                try:
                    return await self._resume_one(name)
                except Exception as e:
                    log.warning("%s not resumed: %s", name, e)
                    return False

        results = await asyncio.gather(*(one(n) for n in names))
        if names:
            log.info(
                "resumed %d of %d sessions in this node's set with RemoteAuth",
                sum(results),
                len(names),
            )

    async def _resume_one(self, name: str) -> bool:
        assert self._remote is not None
        tenant, _, session_id = name.partition("/")
        key = (tenant, session_id)
        if not session_id or key in self._sessions or not self.accepting:
            return False  # LocalAuth (resumed from the catalog), already started, or stopping
        entry = await self._remote.directory(tenant, session_id)
        node_id = self.settings.node_id
        if entry is None or not entry.remote or entry.node_id != node_id:
            return False
        # Handed off at SIGTERM but not yet started elsewhere: it is still this node's to run.
        if not (entry.state in LIVE_STATES or (entry.handed_off and entry.state == pb.STOPPED)):
            return False
        holder = await self._remote.leases.holder(tenant, session_id)
        if holder is not None and holder[0].rsplit(":", 1)[0] != node_id:
            log.info("%s: not resumed, %s holds it", name, holder[0])
            return False
        labels = entry.labels
        settled = self._settled[key] = asyncio.Event()
        try:
            log.info(
                "%s: resuming (it was %s here before the restart)",
                name,
                pb.SessionState.Name(entry.state),
            )
            session = await self.start(tenant, session_id, pb.REMOTE, labels, takeover=True)
            if session.state != pb.STARTING:
                return True
            ttl = self._remote.settings.lease_ttl
            bound = ttl + max(2.0, ttl * 0.2) + self.settings.auth_timeout
            started = time.monotonic()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(bound):
                    await settled.wait()
            if not settled.is_set():
                log.info("%s: still starting after %.0fs", name, time.monotonic() - started)
        finally:
            self._settled.pop(key, None)
        return True

    async def shutdown(self) -> None:
        """Stop every session, keeping logins: RemoteAuth ones are handed off (snapshot first,
        a few at a time; they stay in the node's set so routers start them elsewhere),
        LocalAuth ones stopped with a final snapshot and marked to resume."""
        self.accepting = False
        if self._resuming is not None and not self._resuming.done():
            await cancel_and_wait(self._resuming)
        remote = [s for s in self._sessions.values() if s.running and s.key in self._bindings]
        limit = asyncio.Semaphore(HANDOFF_PARALLELISM)

        async def hand_off(session: HostedSession) -> None:
            async with limit:
                try:
                    await self.hand_off(*session.key, keep_placed=True)
                except Exception as e:
                    log.warning("%s/%s not handed off: %s", *session.key, e)
                    await session.close("node shutting down")
                    await self._finish(session)

        await asyncio.gather(*(asyncio.shield(hand_off(s)) for s in remote), return_exceptions=True)
        live = [s for s in self._sessions.values() if s.running]
        await asyncio.gather(
            *(asyncio.shield(s.stop("node shutting down", resume=True)) for s in live),
            return_exceptions=True,
        )
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        # Every watcher has had what there is: end the streams now, so the server's grace
        # period is not spent waiting on streams that would never end by themselves.
        for session in self._sessions.values():
            session.log.close()

    # -- internals -----------------------------------------------------------------------

    def _strategy(self, requested: int) -> int:
        if requested not in (pb.AUTH_STRATEGY_UNSPECIFIED, pb.LOCAL, pb.REMOTE):
            raise InvalidRequest("auth_strategy", f"unknown value {requested}")
        if requested == pb.AUTH_STRATEGY_UNSPECIFIED:
            requested = pb.REMOTE if self.settings.auth_strategy == "remoteauth" else pb.LOCAL
        if requested == pb.REMOTE and self._remote is None:
            raise FailedPrecondition(
                f"auth_strategy REMOTE needs Redis, and node {self.settings.node_id} has none "
                "configured (REDIS_URL)"
            )
        return requested

    async def _check_remote(self, tenant: str, session_id: str, takeover: bool) -> None:
        """Redis must answer (else UNAVAILABLE), and without `takeover` no other owner may
        hold the session (else FAILED_PRECONDITION)."""
        assert self._remote is not None
        try:
            async with asyncio.timeout(max(2.0, self._remote.settings.lease_ttl / 3)):
                holder = await self._remote.leases.holder(tenant, session_id)
        except TimeoutError as e:
            raise StoreUnavailable("Redis is unreachable (no answer in time)") from e
        if holder is None or takeover or holder[0] == self._remote.owner:
            return
        raise FailedPrecondition(
            f"session {session_id!r} is running on {holder[0].rsplit(':', 1)[0]} "
            f"(lease owner {holder[0]}); start it with takeover=true to move it here"
        )

    def _make(self, info: SessionInfo) -> HostedSession:
        if info.auth_strategy == pb.REMOTE and self._remote is not None:
            key = (info.tenant, info.session_id)
            binding = self._remote.bind(
                info.tenant,
                info.session_id,
                node_id=self.settings.node_id,
                address=self._address,
                on_lost=lambda reason: self._lease_lost(key, reason),
                on_claimed=lambda previous: self._claimed(key, previous),
            )
            self._bindings[key] = binding
            return HostedSession(
                info,
                settings=self.settings,
                pool=self._pool,
                warm=self._warm,
                store=binding,
                on_change=self._persist,
                claim=binding.claim,
                sends=self._remote.send_log(info.tenant, info.session_id),
            )
        return HostedSession(
            info,
            settings=self.settings,
            pool=self._pool,
            warm=self._warm,
            store=self._local,
            on_change=self._persist,
            sends=FileSendLog(self.settings.storage_path, info.tenant, info.session_id),
        )

    async def _lease_lost(self, key: Key, reason: str) -> None:
        session = self._sessions.get(key)
        if session is None:
            return
        await session.close(reason)
        if self._membership is not None:
            self._membership.remove(session_key(*key))

    async def _claimed(self, key: Key, previous: str) -> None:
        """We own a session another node had: tidy its set, count a failover."""
        session = self._sessions.get(key)
        binding = self._bindings.get(key)
        if self._membership is not None:
            await self._membership.remove_from(previous, session_key(*key))
        if session is not None and binding is not None and binding.takeover:
            self._failovers.add(key)

    async def _finish(self, session: HostedSession) -> None:
        """A RemoteAuth session stopped here: last writes, release its lease, leave the set."""
        binding = self._bindings.get(session.key)
        if binding is None:
            return
        await binding.finish()
        if self._membership is not None:
            self._membership.remove(session_key(*session.key))

    def _launch(self, session: HostedSession) -> None:
        task = session.start()
        self._tasks.add(task)
        self._runners[task] = session
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        session = self._runners.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("session runner %s crashed", task.get_name(), exc_info=task.exception())
        if task.cancelled() or session is None or session.key not in self._bindings:
            return  # stop, logout and hand-off finish the session themselves
        # Ended by itself (failed, logged out from the phone): last writes, give the lease up.
        finishing = asyncio.get_running_loop().create_task(
            self._finish(session), name=f"finish {task.get_name()}"
        )
        self._tasks.add(finishing)
        finishing.add_done_callback(self._reap)

    def _persist(self, session: HostedSession) -> None:
        settled = self._settled.get(session.key)
        if settled is not None and session.state != pb.STARTING:
            settled.set()
        for observe in self.observers:
            try:
                observe(session)
            except Exception:
                log.exception("session observer failed")
        binding = self._bindings.get(session.key)
        if binding is not None:
            if session.key in self._failovers and session.state in TERMINAL | {pb.READY}:
                self._failovers.discard(session.key)
                if session.state == pb.READY:
                    mesh_metrics().failover(pb.REMOTE, "takeover")
            binding.changed()
            return
        try:
            self._catalog.put(session.info)
        except OSError as e:
            log.error("session record for %s not written: %s", session.info.session_id, e)
