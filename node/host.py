"""The sessions a node hosts: admission against capacity, start, stop, logout, resume on boot."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from node.auth_store import SnapshotStore
from node.browser import BrowserPool
from node.catalog import LocalCatalog
from node.errors import InvalidRequest, NodeFull, NodeUnavailable, SessionNotFound
from node.session import TERMINAL, HostedSession, SessionInfo
from node.settings import NodeSettings
from sessionmesh.v1 import common_pb2 as pb

log = logging.getLogger(__name__)

Key = tuple[str, str]


class SessionHost:
    def __init__(
        self,
        settings: NodeSettings,
        pool: BrowserPool,
        *,
        local_store: SnapshotStore,
        catalog: LocalCatalog,
        remote_store: SnapshotStore | None = None,
    ) -> None:
        self.settings = settings
        self._pool = pool
        self._local = local_store
        self._remote = remote_store
        self._catalog = catalog
        self._sessions: dict[Key, HostedSession] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self.accepting = True
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

    # -- commands ------------------------------------------------------------------------

    async def start(
        self, tenant: str, session_id: str, auth_strategy: int, labels: dict[str, str]
    ) -> HostedSession:
        if not self.accepting:
            raise NodeUnavailable(
                f"node {self.settings.node_id} is draining; it takes no new sessions"
            )
        strategy = self._strategy(auth_strategy)
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
                session = self._make(info)
                self._sessions[session.key] = session
            self._launch(session)
            return session

    async def stop(self, tenant: str, session_id: str) -> HostedSession:
        session = self.get(tenant, session_id)
        await session.stop("stopped on request")
        return session

    async def logout(self, tenant: str, session_id: str) -> HostedSession:
        session = self.get(tenant, session_id)
        await session.logout()
        return session

    # -- lifecycle -----------------------------------------------------------------------

    async def resume(self) -> int:
        """Bring back the sessions this node held when it last stopped; returns how many."""
        resumed = 0
        for info in await self._catalog.load_all():
            if info.auth_strategy == pb.REMOTE and self._remote is None:
                continue
            session = self._make(info)
            self._sessions[session.key] = session
            if info.resume and info.state not in (pb.LOGGED_OUT,):
                if self.held() >= self.settings.max_sessions:
                    log.warning("not resuming %s/%s: node full", info.tenant, info.session_id)
                    continue
                self._launch(session)
                resumed += 1
        return resumed

    async def shutdown(self) -> None:
        """Stop every session, keeping logins (final snapshots) and marking them to resume."""
        self.accepting = False
        live = [s for s in self._sessions.values() if s.running]
        await asyncio.gather(
            *(asyncio.shield(s.stop("node shutting down", resume=True)) for s in live),
            return_exceptions=True,
        )
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- internals -----------------------------------------------------------------------

    def _strategy(self, requested: int) -> int:
        if requested not in (pb.AUTH_STRATEGY_UNSPECIFIED, pb.LOCAL, pb.REMOTE):
            raise InvalidRequest("auth_strategy", f"unknown value {requested}")
        if requested == pb.AUTH_STRATEGY_UNSPECIFIED:
            requested = pb.REMOTE if self.settings.auth_strategy == "remoteauth" else pb.LOCAL
        if requested == pb.REMOTE and self._remote is None:
            raise NodeUnavailable(
                f"auth_strategy REMOTE needs Redis, and node {self.settings.node_id} has none "
                "configured (REDIS_URL)"
            )
        return requested

    def _make(self, info: SessionInfo) -> HostedSession:
        store = self._remote if info.auth_strategy == pb.REMOTE and self._remote else self._local
        return HostedSession(
            info, settings=self.settings, pool=self._pool, store=store, on_change=self._persist
        )

    def _launch(self, session: HostedSession) -> None:
        task = session.start()
        self._tasks.add(task)
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("session runner %s crashed", task.get_name(), exc_info=task.exception())

    def _persist(self, session: HostedSession) -> None:
        for observe in self.observers:
            try:
                observe(session)
            except Exception:
                log.exception("session observer failed")
        try:
            self._catalog.put(session.info)
        except OSError as e:
            log.error("session record for %s not written: %s", session.info.session_id, e)
