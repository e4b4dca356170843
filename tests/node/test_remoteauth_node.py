"""RemoteAuth on the node: leases, fenced snapshots, directory and events in Redis, membership,
hand-off and failover, Redis outages. Real redis-server, real Chromium, real gRPC, the sandbox."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from node.crypto import SnapshotKeys
from node.lease import LeaseManager
from node.membership import node_key, node_sessions_key, nodes_key
from node.remote import CUT_OFF_REASON
from node.remote_store import StaleFence
from node.settings import NodeSettings
from sessionmesh.config import ConfigError
from sessionmesh.procs import ProcessGroup, wait_serving
from sessionmesh.redis_conn import RedisClient, create_redis
from sessionmesh.schema import SessionKeys
from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import node_pb2, node_pb2_grpc
from tests.helpers import conflicts, free_port, phone, wait_for
from tests.redis_server import RedisServer, key_spec, random_prefix, settings_for

pytestmark = [pytest.mark.redis, pytest.mark.browser]

TENANT = "acme"
KEY_SPEC = key_spec("k1", 7)
LEASE_TTL = 3.0


@pytest.fixture
def prefixes() -> tuple[str, str]:
    """(session prefix, mesh prefix) of this test only."""
    session = random_prefix()
    return session, session.replace("whatsapp:session:", "mesh:")


@pytest.fixture
async def redis(redis_server: str, prefixes: tuple[str, str]) -> Any:
    client = create_redis(settings_for(redis_server, cluster=False))
    yield client
    for prefix in prefixes:
        async for key in client.scan_iter(match=prefix + "*", count=500):
            await client.delete(key)
    await client.aclose()


def remote_settings(url: str, prefixes: tuple[str, str], **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "redis": dataclasses.replace(
            settings_for(url, cluster=False, timeout=0.5), session_prefix=prefixes[0]
        ),
        "snapshot_keys": SnapshotKeys.parse(KEY_SPEC),
        "mesh_prefix": prefixes[1],
        "auth_strategy": "remoteauth",
        "lease_ttl": LEASE_TTL,
        "heartbeat_interval": 0.5,
        "heartbeat_ttl": 3.0,
    }
    fields.update(overrides)
    return fields


def watch(stub: node_pb2_grpc.SessionNodeStub, sid: str, after: int = 0) -> Any:
    return stub.WatchSession(
        node_pb2.NodeWatchRequest(tenant=TENANT, session_id=sid, after_seq=after)
    )


async def start(
    stub: node_pb2_grpc.SessionNodeStub, sid: str, *, takeover: bool = False
) -> pb.Session:
    return await stub.StartSession(
        node_pb2.StartSessionRequest(tenant=TENANT, session_id=sid, takeover=takeover)
    )


async def get(stub: node_pb2_grpc.SessionNodeStub, sid: str) -> pb.Session:
    return await stub.GetSession(node_pb2.NodeSessionRequest(tenant=TENANT, session_id=sid))


async def scan_to_ready(
    sandbox: Any, stub: node_pb2_grpc.SessionNodeStub, watchers: Any, sid: str, number: str
) -> Any:
    await start(stub, sid)
    w = watchers(watch(stub, sid))
    qr = await w.wait_qr()
    status, body = await phone(sandbox.url, "scan", code=qr.code, phone=number)
    assert status == 200, body
    await w.wait_state(pb.READY)
    return w


def keys_of(prefixes: tuple[str, str], sid: str) -> SessionKeys:
    return SessionKeys.of(prefixes[0], TENANT, sid)


def assert_contiguous(events: list[Any], after: int) -> None:
    seqs = [e.seq for e in events]
    assert seqs == list(range(after + 1, after + 1 + len(seqs))), seqs


def test_redis_needs_a_snapshot_key() -> None:
    with pytest.raises(ConfigError, match="MESH_SNAPSHOT_KEY"):
        NodeSettings.from_env({"REDIS_URL": "redis://127.0.0.1:1/0"})
    settings = NodeSettings.from_env(
        {"REDIS_URL": "redis://127.0.0.1:1/0", "MESH_SNAPSHOT_KEY": KEY_SPEC, "MESH_LEASE_TTL": "4"}
    )
    assert settings.redis is not None and settings.lease_ttl == 4.0
    assert settings.mesh_prefix == "mesh:" and settings.heartbeat_interval == 1.0
    assert "base64" not in repr(settings) and KEY_SPEC.split(":")[1] not in repr(settings)
    assert NodeSettings.from_env({}).redis is None


async def test_hand_off_on_graceful_stop_then_takeover_without_qr(
    sandbox: Any,
    node_factory: Any,
    channels: Any,
    watchers: Any,
    redis: RedisClient,
    redis_server: str,
    prefixes: tuple[str, str],
) -> None:
    a = await node_factory(sandbox.url, **remote_settings(redis_server, prefixes))
    b = await node_factory(sandbox.url, **remote_settings(redis_server, prefixes))
    stub_a, stub_b = channels(a.address), channels(b.address)
    w = await scan_to_ready(sandbox, stub_a, watchers, "r1", "6281234567890")
    keys = keys_of(prefixes, "r1")
    await wait_for(lambda: redis.exists(keys.snap), what="snapshot in Redis")
    raw = await redis.get(keys.snap)
    assert raw is not None and raw.startswith(b"SMS1")
    assert b"6281234567890" not in raw and b"origins" not in raw
    # Directory and events are written by the owner, events before watchers see them.
    entry = await redis.hgetall(keys.dir)
    assert entry[b"node_id"] == a.node_id.encode() and entry[b"state"] == b"READY"
    assert entry[b"owner"] == a.owner.encode() and entry[b"auth_strategy"] == b"REMOTE"
    stream = await redis.xrange(keys.events)
    assert [int(i.split(b"-")[0]) for i, _ in stream] == [e.seq for e in w.events]
    members = await redis.smembers(node_sessions_key(prefixes[1], a.node_id))
    assert f"{TENANT}/r1".encode() in members

    await a.aclose()  # SIGTERM path: hand off, deregister
    await w.wait_state(pb.STOPPED)
    assert w.events[-1].state.reason == "moved to another node"
    last_seen = w.events[-1].seq
    assert not await redis.exists(keys.lease)
    assert not await redis.exists(node_key(prefixes[1], a.node_id))
    entry = await redis.hgetall(keys.dir)
    assert entry[b"state"] == b"STOPPED" and int(entry[b"last_seq"]) == last_seen

    session = await start(stub_b, "r1", takeover=True)
    assert session.state == pb.STARTING
    w2 = watchers(watch(stub_b, "r1", after=last_seen))
    await w2.wait_state(pb.READY)
    assert w2.qrs() == []
    assert_contiguous(w2.events, last_seen)
    assert (await get(stub_b, "r1")).phone == "6281234567890"
    entry = await redis.hgetall(keys.dir)
    assert entry[b"node_id"] == b.node_id.encode()
    assert f"{TENANT}/r1".encode() not in await redis.smembers(
        node_sessions_key(prefixes[1], a.node_id)
    )
    # Without takeover, another node's running session is refused.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        c = await node_factory(sandbox.url, **remote_settings(redis_server, prefixes))
        await start(channels(c.address), "r1")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await conflicts(sandbox.url) == {}


async def test_a_busy_main_loop_starves_neither_leases_nor_heartbeats(
    node_factory: Any,
    sandbox: Any,
    redis: RedisClient,
    redis_server: str,
    prefixes: tuple[str, str],
) -> None:
    """Renewals and heartbeats run on the keepalive thread: a main loop held for three lease
    TTLs (a page's long task, a burst of browser events) loses no lease and no heartbeat."""
    ttl = 1.0
    node = await node_factory(
        sandbox.url,
        **remote_settings(
            redis_server, prefixes, lease_ttl=ttl, heartbeat_interval=0.2, heartbeat_ttl=ttl
        ),
    )
    remote, membership = node.remote, node.membership
    lease = await remote.leases.acquire(TENANT, "busy", remote.owner)
    assert lease is not None
    remote.keeper.add(lease)
    await wait_for(lambda: remote.keeper.renewals >= 2, what="two renewals")
    renewals, beats = remote.keeper.renewals, membership.beats
    time.sleep(3 * ttl)  # noqa: ASYNC251 (the point: the main loop is held, nothing on it runs)
    # Read before the main loop runs again: all of this happened while it was held.
    assert remote.keeper.renewals >= renewals + 3, (renewals, remote.keeper.renewals)
    assert membership.beats >= beats + 3, (beats, membership.beats)
    assert remote.keeper.lost == {}
    assert remote.keeper.holds(lease)
    assert await remote.leases.holder(TENANT, "busy") == (lease.owner, lease.fence)
    assert await redis.exists(node_key(prefixes[1], node.node_id))


async def test_killed_node_is_taken_over_after_its_lease_lapses(
    sandbox: Any,
    node_factory: Any,
    channels: Any,
    watchers: Any,
    redis: RedisClient,
    redis_server: str,
    prefixes: tuple[str, str],
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {
        "MESH_NODE_ID": "killed-node",
        "MESH_NODE_LISTEN": f"127.0.0.1:{port}",
        "WA_URL": sandbox.url,
        "SESSION_STORAGE_PATH": str(tmp_path / "a"),
        "QR_FIRST_TIMEOUT": "5",
        "QR_TIMEOUT": "2",
        "REDIS_URL": redis_server,
        "REDIS_SESSION_PREFIX": prefixes[0],
        "MESH_REDIS_PREFIX": prefixes[1],
        "MESH_SNAPSHOT_KEY": KEY_SPEC,
        "MESH_LEASE_TTL": str(LEASE_TTL),
        "AUTH_STRATEGY": "remoteauth",
        "MESH_METRICS_PORT": "0",
    }
    with ProcessGroup(tmp_path / "logs") as procs:
        proc = procs.spawn("node-a", ["mesh-node"], env)
        try:
            await asyncio.to_thread(wait_serving, f"127.0.0.1:{port}", proc, "node a")
            stub_a = channels(f"127.0.0.1:{port}")
            w = await scan_to_ready(sandbox, stub_a, watchers, "k1", "6281200000011")
            keys = keys_of(prefixes, "k1")
            await wait_for(lambda: redis.exists(keys.snap), what="snapshot in Redis")
            await wait_for(
                lambda: redis.exists(node_key(prefixes[1], "killed-node")), what="heartbeat"
            )
            last_seen = w.events[-1].seq
            os.killpg(proc.pid, signal.SIGKILL)  # the node and its Chromium, no hand-off
            # Still A's until it lapses (asked at once: starting B may take longer than that
            # on a loaded machine).
            assert await redis.exists(keys.lease)
            await asyncio.to_thread(proc.wait, 30)
        except BaseException:
            print((tmp_path / "logs" / "node-a.log").read_text(errors="replace"))
            raise
        b = await node_factory(sandbox.url, **remote_settings(redis_server, prefixes))
        stub_b = channels(b.address)
        await start(stub_b, "k1", takeover=True)
        w2 = watchers(watch(stub_b, "k1", after=last_seen))
        await w2.wait_state(pb.READY)
        assert w2.qrs() == []
        assert_contiguous(w2.events, last_seen)
        assert await conflicts(sandbox.url) == {}
        await w2.aclose()
        async with asyncio.timeout(30):
            await b.aclose()  # hands the session off while its keys still exist


async def test_lease_taken_by_another_owner_closes_and_keeps_the_login(
    sandbox: Any,
    node_factory: Any,
    channels: Any,
    watchers: Any,
    redis: RedisClient,
    redis_server: str,
    prefixes: tuple[str, str],
) -> None:
    a = await node_factory(sandbox.url, **remote_settings(redis_server, prefixes))
    stub = channels(a.address)
    await scan_to_ready(sandbox, stub, watchers, "t1", "6281200000021")
    keys = keys_of(prefixes, "t1")
    await wait_for(lambda: redis.exists(keys.snap), what="snapshot in Redis")
    binding = a.host._bindings[(TENANT, "t1")]
    old = binding.lease
    assert old is not None
    # Another owner takes the session (as if A had been paused past its lease).
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(keys.fence)
        await pipe.execute()
    fence = int(await redis.get(keys.fence))
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.lease)
        pipe.hset(keys.lease, mapping={"owner": "intruder:1", "fence": fence})
        pipe.pexpire(keys.lease, 60_000)
        await pipe.execute()

    await wait_for(lambda: a.host.get(TENANT, "t1").state == pb.STOPPED, what="session closed on A")
    assert a.host.get(TENANT, "t1").info.last_error == "lease taken by another node"
    assert await redis.exists(keys.snap)  # the login is kept
    with pytest.raises(StaleFence):
        await a.remote.store.save(TENANT, "t1", {"origins": []}, owner=old.owner, fence=old.fence)
    with pytest.raises(StaleFence):
        await binding.save(TENANT, "t1", {"origins": []})
    manager = LeaseManager(redis, prefixes[0], 1000)
    assert await manager.holder(TENANT, "t1") == ("intruder:1", fence)
    assert await conflicts(sandbox.url) == {}


class RouterPolls:
    """What a router does to every node: GetNodeStatus every `interval` seconds."""

    def __init__(self, stub: node_pb2_grpc.SessionNodeStub, interval: float = 0.5) -> None:
        self._task = asyncio.create_task(self._run(stub, interval))

    @staticmethod
    async def _run(stub: node_pb2_grpc.SessionNodeStub, interval: float) -> None:
        while True:
            await stub.GetNodeStatus(node_pb2.NodeStatusRequest(), timeout=5)
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def test_redis_outage_keeps_sessions_and_writes_due_snapshot_after(
    sandbox: Any,
    node_factory: Any,
    channels: Any,
    watchers: Any,
    private_redis: RedisServer,
    prefixes: tuple[str, str],
) -> None:
    """Redis down past the lease TTL while routers still reach the node: no router declares
    it dead, so its sessions run on, and catch up with Redis when it returns."""
    a = await node_factory(
        sandbox.url, **remote_settings(private_redis.url, prefixes, snapshot_interval=1.0)
    )
    stub = channels(a.address)
    await scan_to_ready(sandbox, stub, watchers, "o1", "6281200000031")
    keys = keys_of(prefixes, "o1")
    redis = create_redis(settings_for(private_redis.url, cluster=False))
    router = RouterPolls(stub)
    try:
        await wait_for(lambda: redis.exists(keys.snap), what="snapshot in Redis")
        binding = a.host._bindings[(TENANT, "o1")]
        private_redis.stop()
        await wait_for(
            lambda: binding._pending_snapshot is not None and a.remote.keeper.lost,
            what="a snapshot due and the lease lapsed during the outage",
        )
        assert (await get(stub, "o1")).state == pb.READY
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await start(stub, "o2")
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "Redis is unreachable" in (err.value.details() or "")

        private_redis.start()  # empty: no persistence
        await wait_for(lambda: redis.exists(keys.snap), what="the due snapshot written")
        await wait_for(lambda: redis.exists(keys.lease), what="the lease re-acquired")
        holder = await LeaseManager(redis, prefixes[0]).holder(TENANT, "o1")
        assert holder is not None and holder[0] == a.owner
        await wait_for(
            lambda: redis.exists(node_key(prefixes[1], a.node_id)), what="heartbeat back"
        )
        assert (await get(stub, "o1")).state == pb.READY
        assert await conflicts(sandbox.url) == {}
    finally:
        await router.stop()
        await redis.aclose()


async def test_cut_off_from_redis_and_routers_a_node_stops_hosting_as_its_lease_lapses(
    sandbox: Any,
    node_factory: Any,
    channels: Any,
    watchers: Any,
    private_redis: RedisServer,
    prefixes: tuple[str, str],
) -> None:
    """Redis down and no router call either: routers may declare the node dead and start its
    sessions elsewhere once the lease lapses, so the node closes them by then (login kept)."""
    a = await node_factory(sandbox.url, **remote_settings(private_redis.url, prefixes))
    stub = channels(a.address)
    await scan_to_ready(sandbox, stub, watchers, "c1", "6281200000032")
    router = RouterPolls(stub)
    await asyncio.sleep(1.0)  # routers in touch
    await router.stop()
    last_call = time.monotonic()
    private_redis.stop()
    try:
        binding = a.host._bindings[(TENANT, "c1")]
        await wait_for(lambda: binding.lost, what="the node to stop hosting the session")
        # Not before the lease could lapse (one renewal round early at most), nor long after.
        assert LEASE_TTL / 3 <= time.monotonic() - last_call <= LEASE_TTL + 2.0
        await wait_for(lambda: binding._session.info.state == pb.STOPPED, what="STOPPED")
        got = await get(stub, "c1")
        assert got.state == pb.STOPPED and got.last_error == CUT_OFF_REASON, got
        async with aiohttp.ClientSession() as http:
            url = f"{sandbox.url}phone/devices?phone=6281200000032"
            async with http.get(url) as resp:
                devices = await resp.json()
        assert not any(d.get("online") for d in devices.get("devices", [])), devices
    finally:
        private_redis.start()


async def test_drain_hand_off_and_membership(
    sandbox: Any,
    node_factory: Any,
    channels: Any,
    watchers: Any,
    redis: RedisClient,
    redis_server: str,
    prefixes: tuple[str, str],
) -> None:
    a = await node_factory(sandbox.url, **remote_settings(redis_server, prefixes))
    stub = channels(a.address)
    hb = node_key(prefixes[1], a.node_id)
    assert a.node_id.encode() in await redis.smembers(nodes_key(prefixes[1]))
    entry = await redis.hgetall(hb)
    assert entry[b"address"] == a.address.encode() and int(entry[b"capacity"]) == 50
    assert entry[b"epoch"] and entry[b"started_at"]
    assert 0 < await redis.pttl(hb) <= 3000

    await start(stub, "d1")
    w = watchers(watch(stub, "d1"))
    await w.wait_qr()
    sessions = node_sessions_key(prefixes[1], a.node_id)
    await wait_for(
        lambda: redis.sismember(sessions, f"{TENANT}/d1"), what="session in the node's set"
    )
    moved = await stub.HandOffSession(node_pb2.NodeSessionRequest(tenant=TENANT, session_id="d1"))
    assert moved.state == pb.STOPPED and moved.last_error == "moved to another node"
    await wait_for(
        lambda: _not(redis.sismember(sessions, f"{TENANT}/d1")), what="session left the set"
    )
    assert not await redis.exists(keys_of(prefixes, "d1").lease)

    status = await stub.Drain(node_pb2.NodeDrainRequest(done=False))
    assert status.health == pb.DRAINING
    assert (await stub.GetNodeStatus(node_pb2.NodeStatusRequest())).health == pb.DRAINING
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await start(stub, "d2")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "draining" in (err.value.details() or "")
    status = await stub.Drain(node_pb2.NodeDrainRequest(done=True))
    assert status.health == pb.NOT_SERVING
    async with grpc.aio.insecure_channel(a.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    await wait_for(
        lambda: _equals(redis.hget(hb, "health"), b"NOT_SERVING"), what="health in the heartbeat"
    )
    await a.aclose()
    assert not await redis.exists(hb)


async def _not(value: Any) -> bool:
    return not await value


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_boot_resumes_only_its_own_live_remote_sessions(
    sandbox: Any,
    node_factory: Any,
    redis: RedisClient,
    redis_server: str,
    prefixes: tuple[str, str],
) -> None:
    """A node back with the same id reads its session set: it resumes a live RemoteAuth session
    its last epoch held (waiting out that lease) and one it handed off at SIGTERM that no router
    has started elsewhere yet, and leaves alone one another node holds, one that stopped, and
    one the directory places elsewhere."""
    node_id = "node-back"
    manager = LeaseManager(redis, prefixes[0], 60_000)
    entries = {
        "mine": (node_id, "READY", f"{node_id}:oldepoch"),
        "held": (node_id, "READY", "node-other:1"),
        "stopped": (node_id, "STOPPED", None),
        "moved": ("node-other", "READY", None),
        "handed-off": (node_id, "STOPPED", None),
    }
    for sid, (where, state, owner) in entries.items():
        keys = keys_of(prefixes, sid)
        await redis.hset(
            f"{keys.tag}:dir",
            mapping={"node_id": where, "auth_strategy": "REMOTE", "state": state, "labels": "{}"},
        )
        if sid == "handed-off":
            await redis.hset(keys.dir, "handed_off", "1")
        await redis.sadd(node_sessions_key(prefixes[1], node_id), f"{TENANT}/{sid}")
        if owner is not None:
            assert await manager.acquire(TENANT, sid, owner) is not None
    # The old epoch's lease lapses soon; the other node's stays.
    await redis.pexpire(keys_of(prefixes, "mine").lease, 1500)

    a = await node_factory(sandbox.url, **remote_settings(redis_server, prefixes, node_id=node_id))
    resuming = a.host._resuming
    assert resuming is not None
    await wait_for(resuming.done, what="the boot resume to finish")
    assert sorted(s.info.session_id for s in a.host.all()) == ["handed-off", "mine"]
    holder = await manager.holder(TENANT, "mine")
    assert holder is not None and holder[0] == a.owner
    assert a.host.get(TENANT, "mine").state != pb.FAILED
    assert (await manager.holder(TENANT, "held")) == ("node-other:1", 1)
