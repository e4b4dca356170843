"""Where each session lives: (tenant, session_id) -> node id, kept in memory.

Rebuilt from every node's ListSessions at start, merged again whenever a node is polled back
to health and periodically. A session found on two nodes keeps the entry it already has, unless
that node last listed it as not live (FAILED, STOPPED) while the other lists it live: a node
declared dead while only starved keeps its sessions, the node that failed to take them over
lists them FAILED, and clients must be sent to where the session runs.
Watchers waiting to re-open a broken stream wait on `wait_moved`, which `set` (a session placed
on another node) and `wake` (its node declared dead) end at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

log = logging.getLogger(__name__)

Key = tuple[str, str]


class Affinity:
    def __init__(self) -> None:
        self._where: dict[Key, str] = {}
        self._strategy: dict[Key, int] = {}  # auth strategy, where known (dead-node reports)
        self._moves: dict[Key, tuple[asyncio.Event, int]] = {}  # event, waiters
        self._not_live: dict[Key, str] = {}  # the node that last listed the session not live

    def get(self, tenant: str, session_id: str) -> str | None:
        return self._where.get((tenant, session_id))

    def set(self, tenant: str, session_id: str, node_id: str) -> None:
        key = (tenant, session_id)
        previous = self._where.get(key)
        self._where[key] = node_id
        if previous != node_id:
            self.wake([key])

    def wake(self, keys: Iterable[Key]) -> None:
        """End the `wait_moved` of these sessions' watchers."""
        for key in keys:
            found = self._moves.pop(key, None)
            if found is not None:
                found[0].set()

    async def wait_moved(self, tenant: str, session_id: str, timeout: float) -> bool:
        """Wait up to `timeout` s for the session to move (or its node to die); True if it did."""
        key = (tenant, session_id)
        event, waiters = self._moves.get(key, (asyncio.Event(), 0))
        self._moves[key] = (event, waiters + 1)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await event.wait()
            return event.is_set()
        finally:
            current = self._moves.get(key)
            if current is not None and current[0] is event:
                if current[1] <= 1:
                    del self._moves[key]
                else:
                    self._moves[key] = (event, current[1] - 1)

    def note_strategy(self, tenant: str, session_id: str, strategy: int) -> None:
        if strategy:
            self._strategy[(tenant, session_id)] = strategy

    def strategy(self, tenant: str, session_id: str) -> int:
        """The session's auth strategy as last seen (0 when never seen)."""
        return self._strategy.get((tenant, session_id), 0)

    def on_node(self, node_id: str) -> list[Key]:
        return [key for key, node in self._where.items() if node == node_id]

    def forget(self, tenant: str, session_id: str, node_id: str) -> None:
        """Drop the entry if it still points at `node_id`."""
        if self._where.get((tenant, session_id)) == node_id:
            del self._where[(tenant, session_id)]
            self._not_live.pop((tenant, session_id), None)

    def note_not_live(self, node_id: str, keys: Iterable[Key]) -> None:
        """`node_id` lists these sessions, but not live (with a directory, only live ones merge)."""
        for key in keys:
            self._not_live[key] = node_id

    def merge(self, node_id: str, keys: Iterable[Key]) -> int:
        """Record that `node_id` holds `keys` live; returns how many entries were added."""
        added = 0
        for key in keys:
            if self._not_live.get(key) == node_id:
                del self._not_live[key]
            current = self._where.get(key)
            if current is None:
                self._where[key] = node_id
                added += 1
            elif current != node_id and self._not_live.get(key) == current:
                log.warning(
                    "session %s/%s runs on %s, not on %s; following it",
                    key[0],
                    key[1],
                    node_id,
                    current,
                )
                del self._not_live[key]
                self.set(key[0], key[1], node_id)
                added += 1
            elif current != node_id:
                log.warning(
                    "session %s/%s is held by %s and %s; keeping %s",
                    key[0],
                    key[1],
                    current,
                    node_id,
                    current,
                )
        return added

    def sessions_of(self, tenant: str) -> dict[str, str]:
        """session_id -> node id for one tenant."""
        return {sid: node for (t, sid), node in self._where.items() if t == tenant}

    def __len__(self) -> int:
        return len(self._where)
