"""The router's membership and directory reads against a real 3-master Redis Cluster.

Node-side writers (node/membership.py, node/remote.py) write the keys; the router's Directory
and NodePool read them, each through its own cluster client, as in production.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from typing import Any

import grpc.aio
import pytest
from grpc_health.v1 import health, health_pb2_grpc
from redis.asyncio.cluster import RedisCluster

from node.crypto import SnapshotKeys
from node.lease import new_owner
from node.membership import Membership, nodes_key
from node.remote import RemoteAuth
from node.settings import NodeSettings
from router.affinity import Affinity
from router.directory import FAILOVER_CLAIM_TTL, Directory
from router.errors import RedisUnavailable
from router.membership import Heartbeat, Liveness
from router.nodes import NodePool
from router.settings import RouterSettings
from sessionmesh.auth import parse_tokens
from sessionmesh.redis_conn import RedisSettings, create_redis
from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import node_pb2_grpc
from tests.helpers import wait_for
from tests.redis_server import RedisClusterServers, free_port, key_spec, random_prefix
from tests.redis_server import settings_for as redis_settings
from tests.router.fakes import FakeNode

pytestmark = pytest.mark.redis

TENANT = "acme"
DIRECTORY_TIMEOUT = 10.0  # generous: the first call of a cluster client reads the slot map


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of one master of a private 3-master cluster (or of REDIS_CLUSTER_URL's cluster)."""
    url = os.environ.get("REDIS_CLUSTER_URL")
    if url:
        yield url
        return
    if os.environ.get("REDIS_URL"):
        pytest.skip(
            "REDIS_URL points at an external server; set REDIS_CLUSTER_URL for cluster runs"
        )
    failed_before = request.session.testsfailed
    with RedisClusterServers() as servers:
        yield servers.url
        if request.session.testsfailed > failed_before:
            reporter = request.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_sep("-", "redis cluster output")
                reporter.write_line(servers.output())


@pytest.fixture
def prefixes() -> tuple[str, str]:
    """(session prefix, mesh prefix) of this test only."""
    session = random_prefix()
    return session, session.replace("whatsapp:session:", "mesh:")


@pytest.fixture
def redis_settings_of(cluster: str, prefixes: tuple[str, str]) -> RedisSettings:
    return replace(redis_settings(cluster, cluster=True, timeout=2.0), session_prefix=prefixes[0])


@pytest.fixture
async def admin(
    redis_settings_of: RedisSettings, prefixes: tuple[str, str]
) -> AsyncIterator[RedisCluster]:
    """The test's own cluster client; every key under the test's prefixes is deleted after it."""
    client = create_redis(redis_settings_of)
    assert isinstance(client, RedisCluster)
    await client.initialize()
    try:
        yield client
        for prefix in prefixes:
            async for key in client.scan_iter(match=prefix + "*", count=500):
                await client.delete(key)
    finally:
        await client.aclose()


@pytest.fixture
async def node_redis(redis_settings_of: RedisSettings) -> AsyncIterator[Any]:
    """The node's client (a separate process's connection in production)."""
    client = create_redis(redis_settings_of)
    yield client
    await client.aclose()


@pytest.fixture
async def directories(
    redis_settings_of: RedisSettings, prefixes: tuple[str, str]
) -> AsyncIterator[Callable[[], Directory]]:
    """Makes router Directories, each with its own cluster client; closes them all."""
    made: list[Directory] = []

    def make() -> Directory:
        directory = Directory(
            create_redis(redis_settings_of),
            session_prefix=prefixes[0],
            mesh_prefix=prefixes[1],
            timeout=DIRECTORY_TIMEOUT,
        )
        made.append(directory)
        return directory

    yield make
    for directory in made:
        await directory.aclose()


@pytest.fixture
async def memberships(
    node_redis: Any, prefixes: tuple[str, str]
) -> AsyncIterator[Callable[..., Membership]]:
    """Makes node Membership writers on the node's client; closes (deregisters) what is left."""
    made: list[Membership] = []

    def make(node_id: str, epoch: str, address: str, **knobs: Any) -> Membership:
        fields: dict[str, Any] = {"capacity": 7, "interval": 0.2, "ttl": 30.0}
        fields.update(knobs)
        membership = Membership(
            node_redis,
            prefix=prefixes[1],
            node_id=node_id,
            epoch=epoch,
            address=lambda: address,
            health=lambda: "SERVING",
            **fields,
        )
        made.append(membership)
        return membership

    yield make
    for membership in made:
        await membership.aclose()


def router_settings(redis: RedisSettings, mesh_prefix: str) -> RouterSettings:
    """No static nodes: the members come from the cluster. Short intervals, generous timeouts."""
    return RouterSettings(
        nodes=(),
        tokens=parse_tokens(f"{TENANT}:{TENANT}-token-0123456789"),
        redis=redis,
        mesh_prefix=mesh_prefix,
        node_poll_interval=0.1,
        member_poll_interval=0.1,
        node_timeout=5.0,
        dead_after=0.5,
    )


async def slot_of(admin: RedisCluster, key: str) -> int:
    """CLUSTER KEYSLOT as the server computes it (checked against the client's own hashing)."""
    slot = int(await admin.cluster_keyslot(key))
    assert slot == admin.keyslot(key), key
    return slot


async def stored_in(admin: RedisCluster, key: str) -> bool:
    """The key is among its slot's keys on the master that owns the slot (CLUSTER GETKEYSINSLOT)."""
    keys = await admin.cluster_get_keys_in_slot(await slot_of(admin, key), 10_000)
    return key in {k.decode() if isinstance(k, bytes) else k for k in keys}


def master_of(admin: RedisCluster, key: str) -> str:
    return str(admin.get_node_from_key(key).name)


def short(members: dict[str, Heartbeat | None]) -> dict[str, tuple[str, str, int] | None]:
    return {k: (b.address, b.epoch, b.capacity) if b else None for k, b in members.items()}


async def test_node_heartbeat_is_read_back_until_it_lapses_or_deregisters(
    admin: RedisCluster,
    directories: Callable[[], Directory],
    memberships: Callable[..., Membership],
    prefixes: tuple[str, str],
) -> None:
    directory = directories()
    address = "127.0.0.1:50061"
    beating = memberships("node-a", "e1", address, ttl=1.5)
    await beating.start()  # the first beat is written before start() returns
    assert short(await directory.members()) == {"node-a": (address, "e1", 7)}

    # Node and router name the same keys, and each key sits in the slot of its hash tag alone:
    # the prefix does not move it. A node's heartbeat and session set share a slot; the member
    # set has a slot of its own, so no single command may touch both it and a heartbeat (and
    # none does: the node writes them one command at a time).
    assert beating.key == directory.node_key("node-a")
    assert beating.sessions_key == directory.sessions_key("node-a")
    assert nodes_key(prefixes[1]) == directory.members_key
    node_slot = await slot_of(admin, "node:node-a")
    assert await slot_of(admin, beating.key) == node_slot
    assert await slot_of(admin, beating.sessions_key) == node_slot
    assert await slot_of(admin, "other-prefix:{node:node-a}") == node_slot
    assert await slot_of(admin, directory.members_key) == await slot_of(admin, "nodes")
    assert await stored_in(admin, beating.key)
    assert await stored_in(admin, directory.members_key)

    # Beats renew the 1.5 s TTL: after more than a TTL's worth of beats the heartbeat is there.
    await wait_for(lambda: beating.beats >= 10, what="10 heartbeats (0.2 s apart, TTL 1.5 s)")
    assert short(await directory.members())["node-a"] == (address, "e1", 7)

    # Heartbeats stop without a deregistration (a frozen or killed node): the key lapses, the
    # node stays a member without a heartbeat.
    await beating.aclose(deregister=False)

    async def lapsed() -> bool:
        return (await directory.members()) == {"node-a": None}

    await wait_for(lapsed, what="node-a's heartbeat to lapse")

    # The node restarts (new epoch, long TTL) with a session, then stops gracefully: the
    # heartbeat is deleted at once, the id stays in the member set (every node that ever
    # registered) and the session stays listed for the failover (docs/remoteauth.md).
    restarted = memberships("node-a", "e2", address, capacity=9)
    restarted.place(f"{TENANT}/s1")
    await restarted.start()
    assert short(await directory.members()) == {"node-a": (address, "e2", 9)}
    assert await directory.node_sessions("node-a") == [(TENANT, "s1")]
    assert await admin.pttl(restarted.key) > 10_000
    await restarted.aclose(deregister=True)
    assert await directory.members() == {"node-a": None}
    assert await admin.exists(restarted.key) == 0
    assert await directory.node_sessions("node-a") == [(TENANT, "s1")]


async def test_exactly_one_of_two_routers_wins_each_failover_claim(
    admin: RedisCluster, directories: Callable[[], Directory]
) -> None:
    first, second = directories(), directories()
    # First read the members, as a router does at start. redis-py 8.1 sends commands issued
    # concurrently before a cluster client has its slot map to random masters, and the MOVED
    # replies make it close its connections under the other commands in flight.
    for directory in (first, second):
        await directory.members()
    deaths = [(f"node-{n}", f"epoch-{n}") for n in range(12)]
    results = await asyncio.gather(
        *(
            asyncio.gather(first.claim_failover(*death), second.claim_failover(*death))
            for death in deaths
        )
    )
    for death, won in zip(deaths, results, strict=True):
        assert sorted(won) == [False, True], f"{death}: {won}"
    keys = [first.failover_key(*death) for death in deaths]
    assert len({master_of(admin, key) for key in keys}) >= 2, "claims on one master only"
    for key in keys:
        assert 0 < await admin.ttl(key) <= FAILOVER_CLAIM_TTL
        assert await stored_in(admin, key)

    # Claiming again (a retried SET whose first reply was lost, or the failover's own retry
    # after an outage) keeps the answer: the winner still holds the claim, the loser does not.
    # A plain SET NX would tell the winner it lost, and nobody would fail the node over.
    for death, won in zip(deaths, results, strict=True):
        again = await asyncio.gather(first.claim_failover(*death), second.claim_failover(*death))
        assert again == won, death

    # The same node's next epoch is a new death with a claim of its own.
    again = await asyncio.gather(
        first.claim_failover("node-0", "epoch-next"), second.claim_failover("node-0", "epoch-next")
    )
    assert sorted(again) == [False, True]


async def test_directory_reads_sessions_spread_over_every_master(
    admin: RedisCluster,
    directories: Callable[[], Directory],
    memberships: Callable[..., Membership],
    redis_settings_of: RedisSettings,
    prefixes: tuple[str, str],
    tmp_path: Any,
) -> None:
    directory = directories()
    # One session per master: their keys hash to slots on different masters.
    by_master: dict[str, str] = {}
    for n in range(200):
        sid = f"s{n}"
        by_master.setdefault(master_of(admin, directory.dir_key(TENANT, sid)), sid)
    assert len(by_master) == len(admin.get_primaries()) >= 2
    sessions = sorted(by_master.values())

    # The entries are written as the owner node writes them: lease, then the fenced script that
    # appends the events and sets the directory entry (four keys: one slot per session).
    settings = NodeSettings(
        node_id="node-a",
        storage_path=tmp_path,
        redis=redis_settings_of,
        snapshot_keys=SnapshotKeys.parse(key_spec("k1", 1)),
        mesh_prefix=prefixes[1],
        auth_strategy="remoteauth",
    )
    owner = new_owner("node-a")
    remote = RemoteAuth(settings, owner)
    await remote.start()
    try:
        for n, sid in enumerate(sessions):
            lease = await remote.leases.acquire(TENANT, sid, owner)
            assert lease is not None
            keys = remote.leases.session_keys(TENANT, sid)
            assert keys.dir == directory.dir_key(TENANT, sid)
            script_keys = (keys.lease, keys.fence, keys.events, keys.dir)
            slots = {await slot_of(admin, k) for k in script_keys}
            assert slots == {await slot_of(admin, f"{TENANT}/{sid}")}
            event = pb.SessionEvent(session_id=sid, seq=n + 1, state=pb.StateChange(state=pb.READY))
            fields = {
                "node_id": "node-a",
                "address": "127.0.0.1:50061",
                "owner": owner,
                "auth_strategy": pb.AuthStrategy.Name(pb.REMOTE),
                "labels": json.dumps({"n": str(n)}, sort_keys=True),
                "created_at": repr(1_700_000_000.0 + n),
                "state": pb.SessionState.Name(pb.READY),
                "phone": f"62812000000{n:02d}",
                "last_error": "",
                "last_seq": str(n + 1),
            }
            await remote.write(lease, [event], fields)
            assert await admin.exists(keys.events) == 1
    finally:
        await remote.aclose()
    membership = memberships("node-a", owner.split(":", 1)[1], "127.0.0.1:50061")
    for sid in sessions:
        membership.place(f"{TENANT}/{sid}")
    await membership.start()

    for n, sid in enumerate(sessions):
        entry = await directory.get(TENANT, sid)
        assert entry is not None, sid
        assert (entry.node_id, entry.owner) == ("node-a", owner)
        assert entry.remote and entry.state == pb.READY
        assert entry.labels == {"n": str(n)}
        assert entry.phone == f"62812000000{n:02d}" and entry.last_seq == n + 1
        assert entry.to_session(sid).created_at.seconds == 1_700_000_000 + n
        assert await directory.listed_on("node-a", TENANT, sid)
        assert not await directory.listed_on("node-b", TENANT, sid)
    assert await directory.node_sessions("node-a") == [(TENANT, sid) for sid in sessions]
    assert await directory.node_sessions("node-b") == []
    assert await directory.get(TENANT, "never-started") is None
    assert not await directory.listed_on("node-a", TENANT, "never-started")


class HealthyFakeNode(FakeNode):
    """A FakeNode that also serves grpc.health.v1, which router liveness watches."""

    async def start(self) -> None:
        server = grpc.aio.server()
        node_pb2_grpc.add_SessionNodeServicer_to_server(self, server)
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self._server = server


async def test_node_pool_learns_a_member_and_declares_its_death_once(
    directories: Callable[[], Directory],
    memberships: Callable[..., Membership],
    redis_settings_of: RedisSettings,
    prefixes: tuple[str, str],
) -> None:
    node = HealthyFakeNode("node-p")
    await node.start()
    directory, rival = directories(), directories()
    deaths: list[tuple[str, str, bool]] = []

    async def on_death(node_id: str, epoch: str) -> None:
        deaths.append((node_id, epoch, await directory.claim_failover(node_id, epoch)))

    pool = NodePool(router_settings(redis_settings_of, prefixes[1]), Affinity(), directory)
    pool.on_death = on_death
    try:
        membership = memberships("node-p", "e1", node.address, ttl=1.0)
        await membership.start()
        await pool.start()

        def admitted() -> bool:
            client = pool.by_id("node-p")
            return client is not None and client.admitted and client.address == node.address

        await wait_for(admitted, what="node-p to be learned from the cluster and admitted")
        assert pool.liveness("node-p") is Liveness.HEALTHY

        # The node stops and deregisters: heartbeat gone and health stream broken -> dead.
        await membership.aclose(deregister=True)
        await node.stop()
        await wait_for(lambda: deaths != [], what="node-p to be declared dead")
        assert deaths == [("node-p", "e1", True)]
        assert pool.is_dead("node-p") and pool.redis_reachable
        assert not await rival.claim_failover("node-p", "e1"), "a second router won the claim too"
    finally:
        await pool.aclose()
        await node.stop()
    assert deaths == [("node-p", "e1", True)], "a death is reported once"


async def test_an_unreachable_cluster_is_redis_unavailable(prefixes: tuple[str, str]) -> None:
    """A cluster client that cannot reach any startup node raises RedisClusterException, which
    is no RedisError: the directory must still report Redis as unavailable, and a router must
    start (keeping MESH_NODES) rather than crash, as it does with a standalone server down."""
    down = replace(
        redis_settings(f"redis://127.0.0.1:{free_port()}/0", cluster=True, timeout=0.5),
        session_prefix=prefixes[0],
    )
    directory = Directory(
        create_redis(down), session_prefix=prefixes[0], mesh_prefix=prefixes[1], timeout=5.0
    )
    pool = NodePool(router_settings(down, prefixes[1]), Affinity(), directory)
    try:
        assert not await directory.ping()
        with pytest.raises(RedisUnavailable):
            await directory.members()
        with pytest.raises(RedisUnavailable):
            await directory.get(TENANT, "s1")
        with pytest.raises(RedisUnavailable):
            await directory.node_sessions("node-a")
        with pytest.raises(RedisUnavailable):
            await directory.listed_on("node-a", TENANT, "s1")
        with pytest.raises(RedisUnavailable):
            await directory.claim_failover("node-a", "e1")
        await pool.start()
        assert not pool.redis_reachable and pool.clients == ()
    finally:
        await pool.aclose()
        await directory.aclose()
