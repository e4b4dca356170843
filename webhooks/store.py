"""What the registry and the outbox need from a store; Redis and SQLite implement it.

The outbox keeps each delivery with its state, in lanes: one lane per (webhook, session),
delivered in order, one at a time, by whichever dispatcher claims the lane. A claim expires
unless renewed, so a dispatcher that dies leaves its lanes to the others; a delivery that was
in flight is tried again (the receiver dedupes on its webhook-id)."""

from __future__ import annotations

import abc
import asyncio
from dataclasses import dataclass

from webhooks.model import Delivery, Endpoint
from webhooks.sealing import Sealer

MAX_WEBHOOKS = 100  # per tenant
RECENT_KEPT = 1000  # deliveries listed per tenant and per webhook
CATCH_UP = 600.0  # s: events older than this are not published again by a new owner


@dataclass
class Claim:
    """A lane this dispatcher holds, and the delivery at its head."""

    lane: str
    head: Delivery
    entry: str = ""  # the Redis stream entry that announced the lane


class LaneLost(Exception):
    """Another dispatcher holds the lane now (our claim expired)."""


@dataclass(frozen=True)
class Stats:
    depth: int  # deliveries not yet delivered or dead
    dead: int  # dead letters kept


class WebhookStore(abc.ABC):
    """One per process; `aclose()` is idempotent."""

    kind = ""

    def __init__(self, sealer: Sealer, *, retention: float, dead_ttl: float, claim_ttl: float):
        self.sealer = sealer
        self.retention = retention
        self.dead_ttl = dead_ttl
        self.claim_ttl = claim_ttl
        self.seen_version = -1  # the registry version the last claim or settle saw
        self._wake = asyncio.Event()

    # -- registry ------------------------------------------------------------------------

    @abc.abstractmethod
    async def version(self) -> int:
        """Goes up on every change of any webhook: caches compare it."""

    @abc.abstractmethod
    async def hooks(self, tenant: str) -> list[Endpoint]: ...

    @abc.abstractmethod
    async def hook(self, tenant: str, webhook_id: str) -> Endpoint | None: ...

    @abc.abstractmethod
    async def add_hook(self, endpoint: Endpoint, limit: int = MAX_WEBHOOKS) -> None:
        """TooManyWebhooks when the tenant holds `limit` already."""

    @abc.abstractmethod
    async def save_hook(self, endpoint: Endpoint) -> bool:
        """Write if the stored version is still `endpoint.version`; False if it changed or the
        webhook is gone."""

    @abc.abstractmethod
    async def remove_hook(self, tenant: str, webhook_id: str) -> bool: ...

    # -- outbox --------------------------------------------------------------------------

    @abc.abstractmethod
    async def enqueue(self, deliveries: list[Delivery]) -> int:
        """Queue new deliveries (one already known by id is skipped); returns how many."""

    @abc.abstractmethod
    async def claim(self, owner: str, limit: int, wait: float) -> list[Claim]:
        """Up to `limit` lanes with a delivery due, waiting up to `wait` s for one."""

    @abc.abstractmethod
    async def settle(self, owner: str, claim: Claim, delivery: Delivery) -> Delivery | None:
        """Record the head's outcome (`delivery.status`: delivered, dead, retrying, or discard
        to drop it); return the lane's next delivery, or None when the lane is given up (empty,
        or parked until its retry is due). LaneLost if the claim expired."""

    @abc.abstractmethod
    async def renew(self, owner: str, claims: list[Claim]) -> list[str]:
        """Extend the claims; returns the lanes lost meanwhile."""

    @abc.abstractmethod
    async def release(self, owner: str, claim: Claim) -> None:
        """Give a lane back untried (shutting down): another dispatcher takes it at once."""

    @abc.abstractmethod
    async def promote(self) -> int:
        """Make lanes whose retry is due claimable; returns how many."""

    @abc.abstractmethod
    async def recent(self, tenant: str, webhook_id: str, limit: int) -> list[Delivery]: ...

    @abc.abstractmethod
    async def dead_letters(
        self, tenant: str, webhook_id: str, limit: int, after: tuple[float, str] | None
    ) -> list[Delivery]:
        """Newest first; `after` is the (finished_at, id) of the last one of the previous page."""

    @abc.abstractmethod
    async def replay(self, tenant: str, ids: list[str]) -> int:
        """Queue these dead letters again under their ids; returns how many were dead."""

    @abc.abstractmethod
    async def dead_ids(self, tenant: str, webhook_id: str) -> list[str]: ...

    @abc.abstractmethod
    async def purge(self, tenant: str, webhook_id: str) -> None:
        """Forget a deleted webhook's dead letters and recent list."""

    @abc.abstractmethod
    async def stats(self) -> Stats: ...

    @abc.abstractmethod
    async def maintain(self) -> None:
        """Drop what outlived its retention (called now and then by dispatchers)."""

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    # -- in-process wake-ups -------------------------------------------------------------

    def notify(self) -> None:
        """New work was queued by this process: a waiting claim looks at once."""
        self._wake.set()

    async def _wait_notified(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            pass
        self._wake.clear()
