"""Moving RemoteAuth sessions: failover off a dead node, and drains (DrainNode).

Both start each session on the next admitted node of the ring with `takeover=true` (the new
node waits out the old owner's lease), a bounded number at a time. A failover is run by the one
router that wins the node's `{mesh}{failover:ID:EPOCH}` claim; LocalAuth sessions never move.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from router.affinity import Key
from router.directory import Directory, DirEntry
from router.errors import (
    ClusterFull,
    NodeFull,
    NodeNotFound,
    NodeUnavailable,
    NodeUnreachable,
    RedisUnavailable,
)
from router.nodes import NodeClient, NodePool
from router.placement import placement_key
from sessionmesh import retry
from sessionmesh.schema import LIVE_STATES
from sessionmesh.telemetry import mesh_metrics
from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import mesh_pb2

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# A failover move refused for want of room or of a node that answers is tried again, with these
# delays (s), for as long as the dead node stays dead and the session is still its own.
RETRIED = (ClusterFull, NodeUnavailable)
DEFAULT_DRAIN_PARALLELISM = 4
MAX_DRAIN_PARALLELISM = 32
# Sessions in use come back first.
_URGENCY: dict[int, int] = {pb.READY: 0, pb.AUTHENTICATED: 1, pb.SCAN_QR_CODE: 2, pb.STARTING: 3}


def _urgency(entry: DirEntry) -> int:
    return 0 if entry.handed_off else _URGENCY.get(entry.state, 9)


def local_reason(node_id: str) -> str:
    """Why a LocalAuth session of a dead node is FAILED."""
    return f"its login was on node {node_id}'s disk and node {node_id} is down"


@dataclass(frozen=True)
class FailoverPlan:
    """What to do with a dead node's sessions."""

    move: list[tuple[Key, DirEntry]] = field(default_factory=list)  # RemoteAuth, in move order
    stay: list[Key] = field(default_factory=list)  # LocalAuth (or no entry): reported FAILED
    skip: list[Key] = field(default_factory=list)  # already elsewhere, or not running


def plan_failover(node_id: str, entries: Mapping[Key, DirEntry | None]) -> FailoverPlan:
    """Sort a dead node's sessions: RemoteAuth ones still on it and running, or handed off at
    its SIGTERM, move (READY and handed-off first, then by key); LocalAuth ones stay; the rest
    (moved already, stopped, failed) are skipped."""
    plan = FailoverPlan()
    for key in sorted(entries):
        entry = entries[key]
        if entry is not None and entry.node_id != node_id:
            plan.skip.append(key)
        elif entry is None or not entry.remote:
            plan.stay.append(key)
        elif entry.state in LIVE_STATES or (entry.handed_off and entry.state == pb.STOPPED):
            plan.move.append((key, entry))  # handed off at SIGTERM: stopped there to move
        else:
            plan.skip.append(key)
    plan.move.sort(key=lambda item: (_urgency(item[1]), item[0]))
    return plan


async def bounded(
    items: Sequence[T], parallelism: int, work: Callable[[T], Awaitable[R]]
) -> list[R | Exception]:
    """`work(item)` for every item, at most `parallelism` at once; errors are returned."""
    gate = asyncio.Semaphore(max(1, parallelism))

    async def one(item: T) -> R | Exception:
        async with gate:
            try:
                return await work(item)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                return e

    return list(await asyncio.gather(*(one(item) for item in items)))


class Mover:
    """Starts sessions on other nodes (failover, drain) and keeps the caches in step."""

    def __init__(self, pool: NodePool, directory: Directory | None, parallelism: int) -> None:
        self._pool = pool
        self._directory = directory
        self.parallelism = parallelism
        self.completed: list[tuple[str, str]] = []
        self.retry = retry.MOVE  # delays between rounds of moves that found no room  # (node_id, epoch) failovers this router ran

    async def start_elsewhere(
        self, tenant: str, session_id: str, entry: DirEntry, exclude: frozenset[str]
    ) -> NodeClient:
        """Start a session with takeover=true on the first admitted node of the ring that
        takes it, skipping `exclude`; NodeFull/NodeUnreachable move on to the next node."""
        loads = self._pool.loads(exclude)
        candidates = self._pool.placement().candidates(placement_key(tenant, session_id), loads)
        last: Exception | None = None
        for address in candidates:
            client = self._pool.by_address(address)
            try:
                await client.start_session(
                    tenant, session_id, entry.auth_strategy, entry.labels, takeover=True
                )
            except (NodeFull, NodeUnreachable) as e:
                log.info("node %s refused %s/%s: %s", client.label, tenant, session_id, e)
                last = e
                continue
            self._pool.affinity.set(tenant, session_id, client.node_id)
            self._pool.affinity.note_strategy(tenant, session_id, entry.auth_strategy)
            client.note_placed()
            return client
        assert last is not None  # candidates() raises when there is none
        raise last

    # -- failover ------------------------------------------------------------------------

    async def failover(self, node_id: str, epoch: str) -> FailoverPlan | None:
        """Take over a dead node's RemoteAuth sessions, if this router wins the claim.

        Waits for Redis while it is unreachable (and the node still dead); returns the plan
        it carried out, or None when another router has the claim or the node came back.
        """
        assert self._directory is not None
        keys: list[Key] = []
        found: list[DirEntry | None] = []
        async for attempt in retry.REDIS.retrying(
            on=(RedisUnavailable,),
            before_sleep=lambda s: log.warning(
                "failover of node %s waits for Redis: %s",
                node_id,
                s.outcome.exception() if s.outcome else "",
            ),
        ):
            with attempt:
                if not self._pool.is_dead(node_id):
                    log.info("node %s is back; no failover", node_id)
                    return None
                if not await self._directory.claim_failover(node_id, epoch):
                    log.info("node %s: another router runs its failover", node_id)
                    return None
                keys = await self._directory.node_sessions(node_id)
                found = list(await asyncio.gather(*(self._directory.get(t, s) for t, s in keys)))
        plan = plan_failover(node_id, dict(zip(keys, found, strict=True)))
        log.warning(
            "failover of node %s (epoch %s): moving %d RemoteAuth sessions; "
            "%d LocalAuth sessions stay FAILED",
            node_id,
            epoch,
            len(plan.move),
            len(plan.stay),
        )
        exclude = frozenset({node_id})

        async def move(item: tuple[Key, DirEntry]) -> NodeClient:
            (tenant, session_id), entry = item
            client = await self.start_elsewhere(tenant, session_id, entry, exclude)
            mesh_metrics().failover(entry.auth_strategy, "node_dead")
            return client

        for tenant, session_id in plan.stay:
            self._pool.affinity.note_strategy(tenant, session_id, pb.LOCAL)
        pending = plan.move
        rounds = 0
        while True:
            results = await bounded(pending, self.parallelism, move)
            delay = self.retry.delay(rounds + 1)
            again: list[tuple[Key, DirEntry]] = []
            for item, result in zip(pending, results, strict=True):
                (tenant, session_id), _ = item
                if not isinstance(result, Exception):
                    log.info("failover: %s/%s now on %s", tenant, session_id, result.label)
                elif isinstance(result, RETRIED):
                    log.warning(
                        "failover of %s/%s: %s; retrying in %.0fs",
                        tenant,
                        session_id,
                        result,
                        delay,
                    )
                    again.append(item)
                else:
                    log.error("failover of %s/%s failed: %s", tenant, session_id, result)
            if not again:
                break
            rounds += 1
            await asyncio.sleep(delay)
            pending = await self._still_on(node_id, again)
            if not pending:
                break
        self.completed.append((node_id, epoch))
        return plan

    async def _still_on(
        self, node_id: str, items: list[tuple[Key, DirEntry]]
    ) -> list[tuple[Key, DirEntry]]:
        """The items still to move: not if the node came back, nor for sessions that a client
        started elsewhere meanwhile (or stopped). Redis down: all of them, tried again."""
        if not self._pool.is_dead(node_id):
            log.info("node %s is back; its remaining sessions stay with it", node_id)
            return []
        assert self._directory is not None
        try:
            found = await asyncio.gather(*(self._directory.get(*key) for key, _ in items))
        except RedisUnavailable:
            return items
        plan = plan_failover(node_id, {key: e for (key, _), e in zip(items, found, strict=True)})
        return plan.move

    async def failover_quietly(self, node_id: str, epoch: str) -> None:
        """`failover` as a NodePool death handler."""
        await self.failover(node_id, epoch)

    # -- drain ---------------------------------------------------------------------------

    async def drain(self, node_id: str, parallelism: int) -> mesh_pb2.DrainNodeResponse:
        """Stop `node_id` admitting, move its running RemoteAuth sessions, then NOT_SERVING."""
        client = self._pool.by_id(node_id)
        if client is None:
            raise NodeNotFound(f"node {node_id!r} not found")
        await client.drain(done=False)
        held = await client.list_sessions()
        to_move: list[tuple[Key, DirEntry]] = []
        stayed = 0
        for s in held:
            if s.session.state not in LIVE_STATES:
                continue
            key = (s.tenant, s.session.session_id)
            strategy: int = s.session.auth_strategy
            if strategy == pb.AUTH_STRATEGY_UNSPECIFIED and self._directory is not None:
                entry = await self._directory.get(*key)
                strategy = entry.auth_strategy if entry is not None else strategy
            if strategy != pb.REMOTE:
                stayed += 1
                continue
            to_move.append(
                (key, DirEntry(node_id, auth_strategy=pb.REMOTE, labels=dict(s.session.labels)))
            )
        to_move.sort(key=lambda item: item[0])
        exclude = frozenset({node_id})

        async def move(item: tuple[Key, DirEntry]) -> NodeClient:
            (tenant, session_id), entry = item
            await client.hand_off(tenant, session_id)
            target = await self.start_elsewhere(tenant, session_id, entry, exclude)
            mesh_metrics().failover(entry.auth_strategy, "drain")
            return target

        results = await bounded(to_move, parallelism, move)
        failed = [
            f"{tenant}/{session_id}: {result}"
            for ((tenant, session_id), _), result in zip(to_move, results, strict=True)
            if isinstance(result, Exception)
        ]
        await client.drain(done=True)
        moved = len(to_move) - len(failed)
        log.info(
            "drained node %s: %d moved, %d stayed, %d failed", node_id, moved, stayed, len(failed)
        )
        return mesh_pb2.DrainNodeResponse(
            node_id=node_id, moved=moved, stayed=stayed, failed=failed
        )
