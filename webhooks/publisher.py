"""The node's side: every session event some webhook wants becomes deliveries in the outbox.

`Publisher` is a SessionHost observer. The observer only copies new events into a queue in
memory, so a session (its QR and state events) never waits on webhooks; a task writes them to
the outbox in batches, retrying while the store is down. Events are read from the session's
log by seq, so none is skipped when several arrive between two observations (and events of a
RemoteAuth log are taken before they are durable, so webhooks do not wait on that either).

A session seen for the first time (started here, resumed, or taken over from a node that
died) has its log's events of the last CATCH_UP seconds published again: deliveries have
stable ids and the outbox skips ids it holds, so this only fills what a dead node never queued.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable
from typing import Any, Protocol

from sessionmesh.v1 import common_pb2 as pb
from webhooks.envelope import body, delivery_id, event_name, event_time
from webhooks.errors import WebhookError
from webhooks.metrics import webhook_metrics
from webhooks.model import Delivery, Endpoint, select
from webhooks.store import CATCH_UP, WebhookStore

log = logging.getLogger(__name__)

BATCH = 500
BACKLOG = 100_000  # events held in memory while the store is down; past it the oldest go
RETRY_FIRST, RETRY_CAP = 0.1, 5.0


async def cancel_all(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Cancel and wait; again if a task swallowed the cancellation (the Redis client may turn
    it into a connection error, which these loops survive)."""
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=0.5)


class EventLogLike(Protocol):
    session_id: str
    last_seq: int

    def pending(self, after_seq: int) -> list[pb.SessionEvent]: ...


class EndpointCache:
    """Webhooks per tenant, dropped whenever the registry's version moves."""

    def __init__(self, store: WebhookStore) -> None:
        self._store = store
        self._version = -1
        self._tenants: dict[str, list[Endpoint]] = {}

    def sync(self, version: int) -> None:
        if version != self._version:
            self._tenants.clear()
            self._version = version

    async def endpoints(self, tenant: str) -> list[Endpoint]:
        found = self._tenants.get(tenant)
        if found is None:
            found = self._tenants[tenant] = await self._store.hooks(tenant)
        return found

    async def get(self, tenant: str, webhook_id: str) -> Endpoint | None:
        for endpoint in await self.endpoints(tenant):
            if endpoint.id == webhook_id:
                return endpoint
        return None


class Publisher:
    def __init__(self, store: WebhookStore, *, backlog: int = BACKLOG) -> None:
        self.store = store
        self._cache = EndpointCache(store)
        self._cursors: dict[tuple[str, str], int] = {}
        self._queue: deque[tuple[str, pb.SessionEvent]] = deque()
        self._backlog = backlog
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    # -- the observer (synchronous, on the session's own path) -----------------------------

    def __call__(self, session: Any) -> None:
        self.observe(session.info.tenant, session.log)

    def observe(self, tenant: str, events: EventLogLike) -> None:
        key = (tenant, events.session_id)
        last = events.last_seq
        cursor = self._cursors.get(key)
        if cursor == last:
            return
        if cursor is None or last < cursor:
            cutoff = time.time() - CATCH_UP
            fresh = [e for e in events.pending(0) if event_time(e) >= cutoff]
        else:
            fresh = events.pending(cursor)
        self._cursors[key] = last
        for event in fresh:
            if event_name(event) is not None:
                self.submit(tenant, event)

    def submit(self, tenant: str, event: pb.SessionEvent) -> None:
        """Queue one event for publishing (the way in for events that reach no log too)."""
        if len(self._queue) >= self._backlog:
            self._queue.popleft()
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.error("webhook backlog full (%d events): dropping the oldest", self._backlog)
        self._queue.append((tenant, event))
        self._idle.clear()
        self._wake.set()

    # -- the writer -------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="webhook publisher"
            )

    async def flush(self, timeout: float) -> bool:
        """Wait until every queued event is in the outbox; False if `timeout` s went by."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
            return True
        except TimeoutError:
            return False

    async def aclose(self, timeout: float = 5.0) -> None:
        if self._task is None:
            return
        if not await self.flush(timeout):
            log.warning("%d webhook events not queued at stop", len(self._queue))
        await cancel_all([self._task])
        self._task = None

    async def _run(self) -> None:
        delay = RETRY_FIRST
        while True:
            if not self._queue:
                self._idle.set()
                await self._wake.wait()
                self._wake.clear()
                continue
            batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
            try:
                await self.publish(batch)
                delay = RETRY_FIRST
            except WebhookError as e:
                log.warning("webhook events not queued yet (%s); retrying in %.1fs", e, delay)
                self._queue.extendleft(reversed(batch))
                await asyncio.sleep(delay)
                delay = min(RETRY_CAP, delay * 2)

    async def publish(self, events: list[tuple[str, pb.SessionEvent]]) -> int:
        """Turn events into deliveries for the webhooks that want them, and queue those."""
        self._cache.sync(await self.store.version())
        deliveries: list[Delivery] = []
        for tenant, event in events:
            name = event_name(event)
            if name is None:
                continue
            at = event_time(event)
            chosen = select(await self._cache.endpoints(tenant), event.session_id, name)
            encoded: bytes | None = None
            for endpoint in chosen:
                if at < endpoint.created_at:
                    continue  # a webhook gets only what happened after it was made
                encoded = encoded or body(tenant, event)
                deliveries.append(
                    Delivery(
                        id=delivery_id(tenant, endpoint.id, event),
                        tenant=tenant,
                        webhook_id=endpoint.id,
                        session_id=event.session_id,
                        event=name,
                        seq=event.seq,
                        created_at=at,
                        body=encoded,
                    )
                )
        added = await self.store.enqueue(deliveries) if deliveries else 0
        counter = webhook_metrics().published
        for d in deliveries:
            counter.add(1, {"event": d.event})
        return added
