"""The Redis outbox on a 3-master Redis Cluster: every key under one hash tag, so the scripts
run on one slot; queue, deliver in order, dead-letter and replay as on one server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from node.crypto import SnapshotKeys
from sessionmesh.redis_conn import create_redis
from tests.redis_server import RedisClusterServers, settings_for
from tests.webhooks.conftest import KEY, Events, add_hook, publish, wait_for
from webhooks.model import DEAD
from webhooks.redis_store import RedisStore
from webhooks.sealing import Sealer

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    url = os.environ.get("REDIS_CLUSTER_URL")
    if url:
        yield url
        return
    with RedisClusterServers() as cluster:
        yield cluster.url


async def test_outbox_on_a_cluster(
    cluster_url: str, receivers: Any, dispatchers: Any, events: Events
) -> None:
    client = create_redis(settings_for(cluster_url, cluster=True, timeout=3.0))
    store = RedisStore(client, Sealer(SnapshotKeys.parse(KEY)), prefix="cl-test:")
    try:
        rx = await receivers()
        rx.answer = lambda n: 422 if n == 0 else 200
        hook = await add_hook(store, rx.url)
        await dispatchers(store)
        await publish(store, *(events.message("demo", f"m{i}", "hi") for i in range(5)))
        await wait_for(lambda: len(rx.received) == 5, what="5 tries")
        assert [r.json["seq"] for r in rx.received] == [1, 2, 3, 4, 5]

        async def dead() -> bool:
            return [d.status for d in await store.dead_letters("acme", hook.id, 10, None)] == [DEAD]

        await wait_for(dead, what="one dead letter")
        (letter,) = await store.dead_letters("acme", hook.id, 10, None)
        assert await store.replay("acme", [letter.id]) == 1
        await wait_for(lambda: len(rx.ok()) == 5, what="the replay")
        assert rx.ok()[-1].headers["webhook-id"] == letter.id
        await store.remove_hook("acme", hook.id)
        assert await store.hooks("acme") == []
    finally:
        async for key in client.scan_iter(match="{cl-test:*", count=500):
            await client.delete(key)
        await store.aclose()
