"""Fenced session leases and their keeper against a real Redis (standalone and cluster)."""

from __future__ import annotations

import asyncio
import time

import pytest

from node.lease import Lease, LeaseKeeper, LeaseManager, LossReason, new_owner
from sessionmesh.redis_conn import RedisClient, create_redis
from tests.redis_server import RedisServer, settings_for, wait_for

pytestmark = pytest.mark.redis


def test_owner_is_node_plus_epoch() -> None:
    a, b = new_owner("node-1"), new_owner("node-1")
    assert a.startswith("node-1:") and b.startswith("node-1:") and a != b
    with pytest.raises(ValueError):
        new_owner("bad{id}")


async def test_acquire_is_compare_and_set(redis_client: RedisClient, key_prefix: str) -> None:
    leases = LeaseManager(redis_client, key_prefix, 10_000)
    assert await leases.holder("acme", "s") is None
    a = await leases.acquire("acme", "s", "node-a:1")
    assert a is not None and a.fence >= 1 and a.owner == "node-a:1"
    assert await leases.acquire("acme", "s", "node-b:1") is None  # held by a
    assert await leases.holder("acme", "s") == ("node-a:1", a.fence)
    again = await leases.acquire("acme", "s", "node-a:1")  # ours already: same fence
    assert again is not None and again.fence == a.fence
    # A restarted node-a is a new owner and is refused while the old lease lives.
    assert await leases.acquire("acme", "s", "node-a:2") is None
    pttl = await redis_client.pttl(leases.session_keys("acme", "s").lease)
    assert 0 < pttl <= 10_000


async def test_takeover_after_expiry_with_a_higher_fence(
    redis_client: RedisClient, key_prefix: str
) -> None:
    short = LeaseManager(redis_client, key_prefix, 300)
    a = await short.acquire("acme", "s", "node-a:1")
    assert a is not None
    b: Lease | None = None

    async def b_takes_it() -> bool:
        nonlocal b
        b = await short.acquire("acme", "s", "node-b:1")
        return b is not None

    await wait_for(b_takes_it, what="node-b to take the expired lease")
    assert b is not None and b.fence > a.fence
    assert not await short.renew(a)  # a's renewal is refused now
    assert not await short.release(a)  # and a cannot release b's lease
    assert await short.holder("acme", "s") == ("node-b:1", b.fence)


async def test_renew_and_release(redis_client: RedisClient, key_prefix: str) -> None:
    leases = LeaseManager(redis_client, key_prefix, 2_000)
    a = await leases.acquire("acme", "r", "node-a:1")
    assert a is not None
    key = leases.session_keys("acme", "r").lease
    await redis_client.pexpire(key, 500)
    assert await leases.renew(a)
    assert await redis_client.pttl(key) > 1_000
    assert await leases.release(a)
    assert await leases.holder("acme", "r") is None
    assert not await leases.renew(a)
    assert await leases.check_renew(a) is LossReason.EXPIRED
    c = await leases.acquire("acme", "r", "node-c:1")
    assert c is not None and c.fence == a.fence + 1  # the fence survives a release
    assert await leases.check_renew(a) is LossReason.TAKEN


async def test_keeper_keeps_leases_alive_and_releases_on_exit(
    redis_client: RedisClient, key_prefix: str
) -> None:
    leases = LeaseManager(redis_client, key_prefix, 600)
    lost: list[Lease] = []
    held = [await leases.acquire("acme", f"k{n}", "node-a:1") for n in range(3)]
    async with LeaseKeeper(leases, lost.append, renew_every=0.15) as keeper:
        for lease in held:
            assert lease is not None
            keeper.add(lease)
        # Several TTLs pass; the leases hold because they are renewed.
        await wait_for(lambda: keeper.renewals >= 3 * 8, what="eight rounds of renewals")
        for lease in held:
            assert lease is not None
            assert keeper.holds(lease)
            assert await leases.holder("acme", lease.session_id) == ("node-a:1", lease.fence)
        assert lost == []
    for n in range(3):
        assert await leases.holder("acme", f"k{n}") is None


async def test_keeper_reports_a_takeover_at_once(
    redis_client: RedisClient, key_prefix: str
) -> None:
    leases = LeaseManager(redis_client, key_prefix, 3_000)
    lost: list[Lease] = []
    closed = asyncio.Event()

    async def on_lost(lease: Lease) -> None:
        lost.append(lease)
        closed.set()

    a = await leases.acquire("acme", "t", "node-a:1")
    other = await leases.acquire("acme", "u", "node-a:1")
    assert a is not None and other is not None
    async with LeaseKeeper(leases, on_lost, renew_every=0.1, release_on_exit=False) as keeper:
        keeper.add(a)
        keeper.add(other)
        # Another node takes the session over (its lease was force-expired).
        await redis_client.delete(leases.session_keys("acme", "t").lease)
        b = await leases.acquire("acme", "t", "node-b:1")
        assert b is not None
        started = time.monotonic()
        await asyncio.wait_for(closed.wait(), timeout=30)
        assert time.monotonic() - started < 2.0  # within a renewal or two, not a TTL
        assert lost == [a] and keeper.lost == {a: LossReason.TAKEN}
        assert not keeper.holds(a) and keeper.holds(other)
        renewals = keeper.renewals
        await wait_for(lambda: keeper.renewals >= renewals + 3, what="renewals of the other lease")
        assert lost == [a]  # reported once
    assert await leases.holder("acme", "t") == ("node-b:1", b.fence)


async def test_keeper_survives_a_hung_redis(private_redis: RedisServer, key_prefix: str) -> None:
    """Redis stops answering (SIGSTOP) for less than the TTL: retries, no loss, no crash."""
    client = create_redis(settings_for(private_redis.url, cluster=False, timeout=0.3))
    leases = LeaseManager(client, key_prefix, 8_000)
    lost: list[Lease] = []
    try:
        a = await leases.acquire("acme", "h", "node-a:1")
        assert a is not None
        async with LeaseKeeper(leases, lost.append, renew_every=0.3, retry_every=0.2) as keeper:
            keeper.add(a)
            await wait_for(lambda: keeper.renewals >= 1, what="a first renewal")
            private_redis.pause()
            try:
                await wait_for(lambda: keeper.failures >= 2, what="renewals to fail")
            finally:
                private_redis.resume()
            renewals = keeper.renewals
            await wait_for(lambda: keeper.renewals > renewals, what="renewals to resume")
            assert lost == [] and keeper.holds(a)
            assert await leases.holder("acme", "h") == ("node-a:1", a.fence)
    finally:
        await client.aclose()


async def test_keeper_survives_redis_down_and_back(
    private_redis: RedisServer, key_prefix: str
) -> None:
    """Redis killed past the TTL: the lease is reported lost once, by the local clock; the
    loop neither crashes nor spins, and works again once Redis is back."""
    client = create_redis(settings_for(private_redis.url, cluster=False, timeout=0.3))
    leases = LeaseManager(client, key_prefix, 1_500)
    lost: list[Lease] = []
    try:
        a = await leases.acquire("acme", "d", "node-a:1")
        assert a is not None
        async with LeaseKeeper(leases, lost.append, renew_every=0.3, retry_every=0.2) as keeper:
            keeper.add(a)
            await wait_for(lambda: keeper.renewals >= 1, what="a first renewal")
            private_redis.stop()
            down_at, iterations_at_stop = time.monotonic(), keeper.iterations
            await wait_for(lambda: lost == [a], what="the lease to be reported lost")
            lost_after = time.monotonic() - down_at
            assert keeper.lost == {a: LossReason.UNREACHABLE}
            assert lost_after <= 1.5 + 1.0  # TTL plus a renewal round's slack
            # Bounded work during the outage: about one attempt per retry_every.
            assert keeper.iterations - iterations_at_stop < 40
            assert keeper.failures >= 1
            # With nothing held, the loop idles rather than spins.
            idle_from = keeper.iterations
            await asyncio.sleep(0.6)  # observation window for a spin check, not a correctness wait
            assert keeper.iterations - idle_from <= 5

            private_redis.start()  # same port, empty (no persistence)
            b = None

            async def reacquired() -> bool:
                nonlocal b
                try:
                    b = await leases.acquire("acme", "d", "node-a:1")
                except Exception:
                    return False
                return b is not None

            await wait_for(reacquired, what="the lease to be taken again after the restart")
            assert b is not None
            keeper.add(b)
            renewals = keeper.renewals
            await wait_for(lambda: keeper.renewals >= renewals + 2, what="renewals after restart")
            assert lost == [a] and keeper.holds(b)
    finally:
        await client.aclose()
