"""`mesh-webhooks` (or `python -m webhooks`): a dispatcher alone, for deployments that want
webhook delivery apart from the nodes (set MESH_WEBHOOK_DISPATCH=false on the nodes then).
Settings from the environment, as a node reads them; runs until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from sessionmesh.config import ConfigError
from sessionmesh.redis_conn import RedisSettings
from webhooks.backend import open_store
from webhooks.dispatcher import Dispatcher
from webhooks.guard import Guard
from webhooks.registry import Registry
from webhooks.settings import WebhookSettings

REDIS_VARS = ("REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_SENTINELS", "REDIS_CLUSTER")


async def run(settings: WebhookSettings, redis: RedisSettings | None, prefix: str) -> int:
    store, why = open_store(settings, redis, prefix=prefix)
    if store is None:
        print(f"mesh-webhooks: {why}", file=sys.stderr)
        return 2
    registry = Registry(store, Guard(settings.allow))

    async def disable(tenant: str, webhook_id: str, reason: str) -> object:
        return await registry.change(tenant, webhook_id, enabled=False, disabled_reason=reason)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    dispatcher = Dispatcher(store, settings, disable=disable)
    await dispatcher.start()
    print(f"mesh-webhooks delivering from {store!r} as {dispatcher.owner}", flush=True)
    try:
        await stop.wait()
    finally:
        await dispatcher.aclose()
        await store.aclose()
    return 0


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("MESH_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    env = os.environ
    try:
        settings = WebhookSettings.from_env(env)
        redis = RedisSettings.from_env(env) if any(env.get(v) for v in REDIS_VARS) else None
        prefix = env.get("MESH_REDIS_PREFIX") or "mesh:"
    except ConfigError as e:
        print(f"mesh-webhooks: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(asyncio.run(run(settings, redis, prefix)))


if __name__ == "__main__":
    main()
