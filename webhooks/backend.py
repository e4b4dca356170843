"""Opening the configured store, and a node's webhooks: publisher and dispatcher together."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace

from node.crypto import SnapshotKeys
from sessionmesh.redis_conn import RedisSettings, create_redis
from webhooks.dispatcher import Dispatcher
from webhooks.errors import WebhookError
from webhooks.guard import Guard
from webhooks.publisher import Publisher
from webhooks.redis_store import RedisStore
from webhooks.registry import Registry
from webhooks.sealing import Sealer
from webhooks.settings import WebhookSettings
from webhooks.sqlite_store import SqliteStore
from webhooks.store import WebhookStore

log = logging.getLogger(__name__)

NEED_KEY = (
    "webhooks with Redis need MESH_WEBHOOK_KEY (kid:base64key, the same on routers and nodes) "
    "to seal their secrets and queued messages"
)
OFF = "webhooks are off: configure Redis (REDIS_URL) or set MESH_WEBHOOK_DB to a SQLite file"


def open_store(
    settings: WebhookSettings,
    redis: RedisSettings | None,
    *,
    prefix: str = "mesh:",
    fallback_keys: SnapshotKeys | None = None,
) -> tuple[WebhookStore | None, str]:
    """The store this process should use, or None and why webhooks are off.

    Redis when it is configured (sealed with MESH_WEBHOOK_KEY, else `fallback_keys`: a node's
    MESH_SNAPSHOT_KEY); else the SQLite file MESH_WEBHOOK_DB (sealed only if a key is set)."""
    keys = settings.keys or fallback_keys
    common = {
        "retention": settings.retention,
        "dead_ttl": settings.dead_ttl,
        "claim_ttl": settings.claim_ttl,
    }
    if redis is not None:
        if keys is None:
            return None, NEED_KEY
        # Blocking reads (XREADGROUP BLOCK 1 s) need a socket timeout longer than the block.
        redis = replace(redis, socket_timeout=max(redis.socket_timeout, 3.0))
        return RedisStore(create_redis(redis), Sealer(keys), prefix=prefix, **common), ""
    if settings.db_path is not None:
        store = SqliteStore(
            settings.db_path, Sealer(keys), poll_interval=settings.poll_interval, **common
        )
        return store, ""
    return None, OFF


class NodeWebhooks:
    """What a node runs: `publisher` (register it as a SessionHost observer) and, unless
    MESH_WEBHOOK_DISPATCH=false, a dispatcher. `aclose()` queues what the publisher holds
    (bounded), stops the dispatcher, then closes the store."""

    def __init__(self, store: WebhookStore, settings: WebhookSettings, owner: str) -> None:
        self.store = store
        self.settings = settings
        self.publisher = Publisher(store)
        registry = Registry(store, Guard(settings.allow))

        async def disable(tenant: str, webhook_id: str, reason: str) -> object:
            return await registry.change(tenant, webhook_id, enabled=False, disabled_reason=reason)

        self.dispatcher = (
            Dispatcher(store, settings, owner=owner, disable=disable) if settings.dispatch else None
        )
        self._closed = False

    async def start(self) -> None:
        self.publisher.start()
        if self.dispatcher is not None:
            await self.dispatcher.start()

    async def aclose(self, flush_timeout: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True
        await self.publisher.aclose(flush_timeout)
        if self.dispatcher is not None:
            await self.dispatcher.aclose()
        with contextlib.suppress(WebhookError):
            await self.store.aclose()
