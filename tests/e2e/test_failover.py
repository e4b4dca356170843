"""RemoteAuth failover end to end: real redis-server, `mesh-node` processes killed with SIGKILL,
routers in-process, the sandbox as WhatsApp Web."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import aiohttp
import pytest

from node.crypto import SnapshotCodec, SnapshotKeys
from node.lease import LeaseManager
from node.remote import CUT_OFF_REASON, LOST_REASON
from node.remote_store import RemoteSnapshotStore
from router.membership import Liveness
from router.server import RouterServer
from sessionmesh.redis_conn import DEFAULT_SESSION_PREFIX, RedisClient, create_redis
from sessionmesh.retry import RetryPolicy
from sessionmesh.schema import SessionKeys
from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import mesh_pb2
from tests.e2e.conftest import DEAD_AFTER, Mesh, NodeProc
from tests.helpers import DEADLINE, Watcher, conflicts, phone, wait_for
from tests.redis_server import settings_for

pytestmark = [pytest.mark.redis, pytest.mark.browser]

_numbers = iter(range(6281300000000, 6281399999999))


def watch(client: Any, sid: str, after: int = 0) -> Any:
    return client.WatchSession(
        mesh_pb2.WatchSessionRequest(session_id=sid, after_seq=after), timeout=None
    )


async def cluster(mesh: Mesh, count: int = 3) -> list[NodeProc]:
    nodes = [await mesh.node(f"node-{n}") for n in range(1, count + 1)]
    await mesh.wait_serving(*nodes)
    return nodes


async def admitted(router: RouterServer, nodes: list[NodeProc]) -> None:
    """Wait until the router has every node as a healthy member."""

    def ready() -> bool:
        clients = {c.node_id: c for c in router.pool.clients}
        return all(n.name in clients and clients[n.name].admitted for n in nodes)

    await wait_for(ready, what="the router to admit every node")


async def create_on(client: Any, node: str, strategy: int, count: int, prefix: str) -> list[str]:
    """Create sessions until `count` landed on `node` (the others show QRs until they fail)."""
    made: list[str] = []
    n = 0
    while len(made) < count:
        n += 1
        assert n < 60, "placement never chose the node"
        sid = f"{prefix}-{n}"
        got = await client.CreateSession(
            mesh_pb2.CreateSessionRequest(session_id=sid, auth_strategy=strategy)
        )
        if got.node_id == node:
            made.append(sid)
    return made


async def link(client: Any, watchers: Any, sandbox_url: str, sid: str) -> Watcher:
    """Watch from the start, scan the first QR with the simulated phone, wait for READY."""
    w: Watcher = watchers(watch(client, sid))
    qr = await w.wait_qr()
    status, body = await phone(sandbox_url, "scan", code=qr.code, phone=str(next(_numbers)))
    assert status == 200, body
    await w.wait_state(pb.READY)
    return w


def exactly_once(w: Watcher) -> None:
    seqs = [e.seq for e in w.events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"gap or duplicate: {seqs}"


async def ready_twice(w: Watcher, timeout: float = DEADLINE) -> None:
    await w.wait(lambda w: w.states().count(pb.READY) >= 2, "READY again elsewhere", timeout)


def failovers(routers: list[RouterServer]) -> int:
    return sum(len(r.mover.completed) for r in routers)


def redis_of(mesh: Mesh) -> RedisClient:
    return create_redis(settings_for(mesh.redis.url, cluster=False))


async def in_redis(redis: RedisClient, sid: str) -> tuple[str, int, dict[str, str], list[int]]:
    """(lease owner, fence, directory entry, seqs of the event stream) of an acme session."""
    holder = await LeaseManager(redis, DEFAULT_SESSION_PREFIX).holder("acme", sid)
    assert holder is not None, f"nobody holds {sid}"
    keys = SessionKeys.of(DEFAULT_SESSION_PREFIX, "acme", sid)
    raw = await redis.hgetall(keys.dir)
    entry = {k.decode(): v.decode() for k, v in raw.items()}
    stream = await redis.xrange(keys.events, "-", "+")
    seqs = [
        int(str(i.decode() if isinstance(i, bytes) else i).split("-")[0]) for i, _ in stream or []
    ]
    return holder[0], holder[1], entry, seqs


async def holders(mesh: Mesh, sid: str) -> dict[str, int]:
    """Per node process that answers, the state of `sid` there (nodes that never had it omitted)."""
    found: dict[str, int] = {}
    for node in mesh.nodes.values():
        if node.proc.poll() is None:
            got = await mesh.session_on(node, sid)
            if got is not None:
                found[node.name] = got.state
    return found


async def test_kill_9_brings_remote_sessions_back_ready_elsewhere_exactly_once(
    mesh: Mesh, watchers: Any, clients: Any
) -> None:
    nodes = await cluster(mesh)
    r1, r2 = await mesh.router(), await mesh.router()
    await admitted(r1, nodes)
    await admitted(r2, nodes)
    via1, via2 = clients(r1.address), clients(r2.address)
    victim = nodes[0]
    remote = await create_on(via1, victim.name, pb.REMOTE, 2, "remote")
    local = await create_on(via1, victim.name, pb.LOCAL, 1, "local")
    # Watchers through the other router: it must follow sessions it did not move.
    ws = {sid: await link(via2, watchers, mesh.sandbox_url, sid) for sid in remote}
    wl = await link(via1, watchers, mesh.sandbox_url, local[0])
    qrs = {sid: len(w.qrs()) for sid, w in ws.items()}

    mesh.kill(victim)
    for w in ws.values():
        await ready_twice(w)
    for sid, w in ws.items():
        assert len(w.qrs()) == qrs[sid], "a failover must not show a QR"
        exactly_once(w)
        for via in (via1, via2):
            got = await via.GetSession(mesh_pb2.GetSessionRequest(session_id=sid))
            assert got.state == pb.READY and got.node_id != victim.name, got

    got = await via2.GetSession(mesh_pb2.GetSessionRequest(session_id=local[0]))
    assert got.state == pb.FAILED
    assert f"its login was on node {victim.name}'s disk and node {victim.name} is down" in (
        got.last_error
    )
    listed = await via1.ListSessions(mesh_pb2.ListSessionsRequest())
    by_id = {s.session_id: s for s in listed.sessions}
    assert by_id[local[0]].state == pb.FAILED
    assert all(by_id[sid].state == pb.READY for sid in remote)
    assert failovers([r1, r2]) == 1, "exactly one router runs a node's failover"
    # The LocalAuth session's watch ends, saying why.
    await wait_for(lambda: wl.error is not None, what="the LocalAuth watch to end")
    assert "disk" in str(wl.error)
    assert await conflicts(mesh.sandbox_url) == {}
    for r in (r1, r2):
        assert r.pool.liveness(victim.name) is Liveness.DEAD


async def test_watchers_follow_a_failover_at_once_not_at_their_next_retry(
    mesh: Mesh, watchers: Any, clients: Any
) -> None:
    """A watcher whose node died waits out its retry delay only until the session moves: the
    router that moves it wakes it. With retries 10 min apart, only that wake brings READY."""
    nodes = await cluster(mesh, 2)
    router = await mesh.router()
    router.service.backoff = RetryPolicy(first=600.0, cap=600.0, jitter=0.0)
    router.service.relocate_interval = 600.0
    await admitted(router, nodes)
    acme = clients(router.address)
    victim = nodes[0]
    sid = (await create_on(acme, victim.name, pb.REMOTE, 1, "wake"))[0]
    w = await link(acme, watchers, mesh.sandbox_url, sid)
    qrs = len(w.qrs())

    mesh.kill(victim)
    await ready_twice(w)
    assert len(w.qrs()) == qrs, "a failover must not show a QR"
    exactly_once(w)
    got = await acme.GetSession(mesh_pb2.GetSessionRequest(session_id=sid))
    assert got.state == pb.READY and got.node_id == nodes[1].name, got
    assert await conflicts(mesh.sandbox_url) == {}


async def test_a_failover_refused_for_want_of_room_is_retried_until_room_frees(
    mesh: Mesh, watchers: Any, clients: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The only other node is full when A dies: the move is tried again, and once a session
    there stops, A's session comes back READY on it, with no QR and no gap."""
    a = await mesh.node("node-a")
    b = await mesh.node("node-b", MAX_CONCURRENT_SESSIONS="1")
    await mesh.wait_serving(a, b)
    router = await mesh.router()
    await admitted(router, [a, b])
    acme = clients(router.address)
    filler = (await create_on(acme, b.name, pb.REMOTE, 1, "filler"))[0]
    await link(acme, watchers, mesh.sandbox_url, filler)  # READY: it holds B's one place
    sid = (await create_on(acme, a.name, pb.REMOTE, 1, "moved"))[0]
    w = await link(acme, watchers, mesh.sandbox_url, sid)
    qrs = len(w.qrs())
    listed = await acme.ListSessions(mesh_pb2.ListSessionsRequest())
    for stray in {s.session_id for s in listed.sessions} - {filler, sid}:  # create_on's others
        await acme.StopSession(mesh_pb2.StopSessionRequest(session_id=stray))

    mesh.kill(a)
    await wait_for(
        lambda: f"failover of acme/{sid}: " in caplog.text and "; retrying" in caplog.text,
        what="a failover refused for want of room",
    )
    assert w.states().count(pb.READY) == 1
    await acme.StopSession(mesh_pb2.StopSessionRequest(session_id=filler))
    await ready_twice(w)
    got = await acme.GetSession(mesh_pb2.GetSessionRequest(session_id=sid))
    assert got.state == pb.READY and got.node_id == b.name, got
    assert len(w.qrs()) == qrs, "a failover must not show a QR"
    exactly_once(w)
    await wait_for(lambda: failovers([router]) == 1, what="the failover to finish")
    assert await conflicts(mesh.sandbox_url) == {}


async def test_drain_moves_remote_sessions_and_sets_not_serving(
    mesh: Mesh, watchers: Any, clients: Any
) -> None:
    nodes = await cluster(mesh)
    router = await mesh.router()
    await admitted(router, nodes)
    acme = clients(router.address)
    source = nodes[1]
    remote = await create_on(acme, source.name, pb.REMOTE, 2, "drain")
    ws = {sid: await link(acme, watchers, mesh.sandbox_url, sid) for sid in remote}
    qrs = {sid: len(w.qrs()) for sid, w in ws.items()}

    reply = await acme.DrainNode(
        mesh_pb2.DrainNodeRequest(node_id=source.name, parallelism=2), timeout=DEADLINE * 2
    )
    assert (reply.moved, reply.stayed, list(reply.failed)) == (2, 0, [])
    for sid, w in ws.items():
        await ready_twice(w)
        assert len(w.qrs()) == qrs[sid]
        exactly_once(w)
        got = await acme.GetSession(mesh_pb2.GetSessionRequest(session_id=sid))
        assert got.state == pb.READY and got.node_id != source.name
    status = await acme.GetClusterStatus(mesh_pb2.GetClusterStatusRequest())
    assert {n.node_id: n.health for n in status.nodes}[source.name] == pb.NOT_SERVING
    fresh = await acme.CreateSession(
        mesh_pb2.CreateSessionRequest(session_id="after", auth_strategy=pb.REMOTE)
    )
    assert fresh.node_id != source.name
    assert await conflicts(mesh.sandbox_url) == {}


async def test_sigterm_hands_sessions_off_and_routers_start_them_elsewhere(
    mesh: Mesh, watchers: Any, clients: Any
) -> None:
    """A node stopped with SIGTERM hands its RemoteAuth sessions off (STOPPED, handed_off in
    the directory) and deregisters; a router then starts them on the other nodes, no QR."""
    nodes = await cluster(mesh, 2)
    router = await mesh.router()
    await admitted(router, nodes)
    acme = clients(router.address)
    source = nodes[0]
    sid = (await create_on(acme, source.name, pb.REMOTE, 1, "term"))[0]
    w = await link(acme, watchers, mesh.sandbox_url, sid)
    qrs = len(w.qrs())

    source.proc.send_signal(signal.SIGTERM)
    await asyncio.to_thread(source.proc.wait, 60)
    await ready_twice(w)
    got = await acme.GetSession(mesh_pb2.GetSessionRequest(session_id=sid))
    assert got.state == pb.READY and got.node_id == nodes[1].name, got
    assert len(w.qrs()) == qrs, "a hand-off must not show a QR"
    exactly_once(w)
    assert await conflicts(mesh.sandbox_url) == {}


async def test_remote_start_while_redis_is_down_is_unavailable(mesh: Mesh, clients: Any) -> None:
    import grpc

    nodes = await cluster(mesh, 1)
    router = await mesh.router()
    await admitted(router, nodes)
    acme = clients(router.address)
    mesh.redis.stop()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await acme.CreateSession(
                mesh_pb2.CreateSessionRequest(session_id="r", auth_strategy=pb.REMOTE)
            )
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "Redis is unreachable" in (info.value.details() or "")
        # Losing Redis alone declares nobody dead, and the node stays admitted.
        await wait_for(lambda: not router.pool.redis_reachable, what="the router to notice")
        assert router.pool.liveness(nodes[0].name) is not Liveness.DEAD
    finally:
        mesh.redis.start()


async def test_restarted_node_resumes_its_remote_sessions(
    mesh: Mesh, watchers: Any, clients: Any
) -> None:
    """kill -9 a node and start it again at once, same id and storage (a new epoch): it resumes
    its RemoteAuth sessions itself, before any router declares it dead."""
    nodes = await cluster(mesh, 2)
    router = await mesh.router(dead_after=600.0)  # the restart must win, however slow it is
    await admitted(router, nodes)
    acme = clients(router.address)
    a = nodes[0]
    sid = (await create_on(acme, a.name, pb.REMOTE, 1, "resume"))[0]
    w = await link(acme, watchers, mesh.sandbox_url, sid)
    qrs = len(w.qrs())
    redis = redis_of(mesh)
    try:
        before, fence, _entry, _seqs = await in_redis(redis, sid)

        mesh.kill(a)
        await mesh.restart(a)
        await ready_twice(w)
        assert len(w.qrs()) == qrs, "a resume must not show a QR"
        exactly_once(w)
        got = await acme.GetSession(mesh_pb2.GetSessionRequest(session_id=sid))
        assert got.state == pb.READY and got.node_id == a.name, got
        assert await holders(mesh, sid) == {a.name: pb.READY}, "exactly one node has it"
        owner, new_fence, entry, seqs = await in_redis(redis, sid)
        assert owner.startswith(f"{a.name}:") and owner != before, "the new epoch owns it"
        assert new_fence == fence + 1
        assert entry["node_id"] == a.name and entry["state"] == "READY"
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert seqs[-1] == w.events[-1].seq
    finally:
        await redis.aclose()
    assert failovers([router]) == 0
    assert router.pool.liveness(a.name) is not Liveness.DEAD
    assert await conflicts(mesh.sandbox_url) == {}


PAUSE_LEASE_TTL = 4.0  # s; a takeover waits for it, and the sandbox's heartbeat (1 s) is far less
FROZEN_DETECTION = 30.0  # s; routers' pings time out after MESH_KEEPALIVE_TIMEOUT (10 s)


@pytest.mark.timeout(360)
async def test_node_paused_past_its_lease_closes_its_sessions_and_writes_nothing(
    mesh: Mesh, watchers: Any, clients: Any
) -> None:
    """SIGSTOP a node with its Chromium past lease TTL + MESH_DEAD_AFTER: a router fails the
    session over; SIGCONT: the node closes it (lease taken by another node) and writes nothing."""
    # The sandbox closes a frozen page's WebSocket after 1.5 s at most, long before the lease
    # lapses, so the takeover's page is the only one hosting the login: no conflict.
    async with (
        aiohttp.ClientSession() as http,
        http.put(f"{mesh.sandbox_url}sandbox/config", json={"ws_heartbeat": 1.0}) as resp,
    ):
        assert resp.status == 200, await resp.text()
    ttl = {"MESH_LEASE_TTL": str(PAUSE_LEASE_TTL)}
    # A saves a snapshot every second: one comes due while it is frozen; should it fire before
    # A closes the session, the fence refuses it.
    a = await mesh.node("node-a", SESSION_SNAPSHOT_INTERVAL="1", **ttl)
    b = await mesh.node("node-b", **ttl)
    await mesh.wait_serving(a, b)
    # Keepalive pings find the frozen node's connections dead (nodes accept pings 5 s apart at
    # most often); an unanswered ping counts after grpc's ping timeout, see FROZEN_DETECTION.
    router = await mesh.router(keepalive_time=10.0, keepalive_timeout=2.0)
    await admitted(router, [a, b])
    acme = clients(router.address)
    sid = (await create_on(acme, a.name, pb.REMOTE, 1, "pause"))[0]
    w = await link(acme, watchers, mesh.sandbox_url, sid)
    qrs = len(w.qrs())
    redis = redis_of(mesh)
    try:
        old_owner, old_fence, _entry, _seqs = await in_redis(redis, sid)
        assert old_owner.startswith("node-a:")

        pids = mesh.pause(a)
        try:
            assert len(pids) > 2, f"Chromium must be paused too: {pids}"
            started = time.monotonic()
            await asyncio.sleep(PAUSE_LEASE_TTL + DEAD_AFTER + 2.0)  # the pause being tested
            # Failed over to B while A is still frozen. The router notices a frozen node when
            # a gRPC ping goes unanswered: grpc's ping timeout (60 s by default) bounds that.
            await ready_twice(w, timeout=FROZEN_DETECTION + DEADLINE)
            got = await acme.GetSession(mesh_pb2.GetSessionRequest(session_id=sid))
            assert got.state == pb.READY and got.node_id == b.name, got
            paused_for = time.monotonic() - started
        finally:
            mesh.resume(pids)

        async def closed_on_a() -> bool:
            got = await mesh.session_on(a, sid)
            return got is not None and got.state == pb.STOPPED

        await wait_for(closed_on_a, what="A to close the session")
        on_a = await mesh.session_on(a, sid)
        # Frozen, the node could reach neither Redis nor its routers: on waking it finds its
        # lease lapsed with no router in touch and closes the session at once (CUT_OFF_REASON),
        # or first learns that B holds it (LOST_REASON). Either way it writes nothing.
        assert on_a is not None and on_a.last_error in (LOST_REASON, CUT_OFF_REASON), on_a
        assert await holders(mesh, sid) == {a.name: pb.STOPPED, b.name: pb.READY}

        owner, fence, entry, seqs = await in_redis(redis, sid)
        assert owner.startswith(f"{b.name}:") and fence == old_fence + 1, (owner, fence)
        assert entry["node_id"] == b.name and entry["owner"] == owner, entry
        assert entry["state"] == "READY", entry
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"stream: {seqs}"
        store = RemoteSnapshotStore(
            redis,
            SnapshotCodec(SnapshotKeys.parse(mesh.key_spec)),
            DEFAULT_SESSION_PREFIX,
            3600,
        )
        assert await store.load("acme", sid) is not None, "the snapshot must still decode"
    finally:
        await redis.aclose()
    log_a = (mesh.group.logs / f"{a.name}.log").read_text(errors="replace")
    assert LOST_REASON in log_a or CUT_OFF_REASON in log_a
    assert paused_for > PAUSE_LEASE_TTL + DEAD_AFTER
    assert len(w.qrs()) == qrs, "a failover must not show a QR"
    exactly_once(w)
    assert w.events[-1].seq == seqs[-1]
    assert failovers([router]) == 1
    assert await conflicts(mesh.sandbox_url) == {}


async def chaos(mesh: Mesh, watchers: Any, clients: Any, rounds: int) -> None:
    """Kill -9 the busiest node, wait for every session READY elsewhere, restart it; repeat."""
    nodes = await cluster(mesh)
    r1, r2 = await mesh.router(), await mesh.router()
    await admitted(r1, nodes)
    via1, via2 = clients(r1.address), clients(r2.address)
    sids = [f"load-{n}" for n in range(4)]
    for sid in sids:
        await via1.CreateSession(
            mesh_pb2.CreateSessionRequest(session_id=sid, auth_strategy=pb.REMOTE)
        )
    ws = {sid: await link(via2, watchers, mesh.sandbox_url, sid) for sid in sids}
    qrs = {sid: len(w.qrs()) for sid, w in ws.items()}
    by_name = {n.name: n for n in nodes}
    for round_ in range(1, rounds + 1):
        where: dict[str, str] = {}
        for sid in sids:
            got = await via1.GetSession(mesh_pb2.GetSessionRequest(session_id=sid))
            where[sid] = got.node_id
        busiest = max(by_name, key=lambda n: sum(1 for v in where.values() if v == n))
        readies = {sid: w.states().count(pb.READY) for sid, w in ws.items()}
        mesh.kill(by_name[busiest])
        for sid, w in ws.items():
            if where[sid] == busiest:
                await w.wait(
                    lambda w, n=readies[sid]: w.states().count(pb.READY) > n,
                    f"{sid} READY after round {round_}",
                )
        for sid in sids:
            got = await via2.GetSession(mesh_pb2.GetSessionRequest(session_id=sid))
            assert got.state == pb.READY and got.node_id != busiest, (round_, got)
        await mesh.restart(by_name[busiest])
        await admitted(r1, nodes)
        await admitted(r2, nodes)
    for sid, w in ws.items():
        assert len(w.qrs()) == qrs[sid], "no QR in any failover"
        exactly_once(w)
    assert failovers([r1, r2]) == rounds
    assert await conflicts(mesh.sandbox_url) == {}


async def test_kill_9_nodes_repeatedly_under_load_short(
    mesh: Mesh, watchers: Any, clients: Any
) -> None:
    await chaos(mesh, watchers, clients, rounds=2)


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_kill_9_nodes_repeatedly_under_load(mesh: Mesh, watchers: Any, clients: Any) -> None:
    await chaos(mesh, watchers, clients, rounds=int(os.environ.get("MESH_CHAOS_ROUNDS", "8")))


async def test_messages_across_a_failover_are_sent_once_and_told_once(
    mesh: Mesh, watchers: Any, clients: Any
) -> None:
    """A send retried with its key across a kill -9 sends once; a message sent while the
    session moves goes once its new node has it; inbound messages are told once."""
    import grpc

    from tests.helpers import phone_get

    nodes = await cluster(mesh, 2)
    router = await mesh.router()
    await admitted(router, nodes)
    acme = clients(router.address)
    victim = nodes[0]
    sid = (await create_on(acme, victim.name, pb.REMOTE, 1, "msg"))[0]
    w = await link(acme, watchers, mesh.sandbox_url, sid)
    me = (await acme.GetSession(mesh_pb2.GetSessionRequest(session_id=sid))).phone
    friend = "6281399990001"

    def send(key: str, text: str) -> Any:
        return acme.SendMessage(
            mesh_pb2.SendMessageRequest(session_id=sid, to=friend, idempotency_key=key, text=text)
        )

    before = await send("before-kill", "sent before the kill")
    mesh.kill(victim)
    # While the session moves: UNAVAILABLE (or NOT_FOUND/FAILED_PRECONDITION while it is not
    # READY again); retrying with the same keys is safe.
    outcomes: dict[str, Any] = {}

    async def until_sent(key: str, text: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                outcomes[key] = await send(key, text)
                return
            except grpc.aio.AioRpcError as e:
                assert e.code() in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    grpc.StatusCode.NOT_FOUND,
                ), e
                assert time.monotonic() < deadline, f"{key} never went: {e.details()}"
                await asyncio.sleep(0.2)

    await asyncio.gather(
        until_sent("before-kill", "sent before the kill"),
        until_sent("during-move", "sent while it moved"),
    )
    await ready_twice(w)
    assert outcomes["before-kill"].duplicate
    assert outcomes["before-kill"].message_id == before.message_id
    assert not outcomes["during-move"].duplicate
    status, _ = await phone(mesh.sandbox_url, "send", phone=me, **{"from": friend, "body": "back"})
    assert status == 200
    await w.wait(
        lambda w: any(
            e.WhichOneof("event") == "message" and e.message.text == "back" for e in w.events
        ),
        "the reply after the failover",
    )

    async def received() -> list[str]:
        return [
            m["body"]
            for m in (await phone_get(mesh.sandbox_url, "messages", phone=friend))["messages"]
        ]

    async def both_there() -> bool:
        return sorted(await received()) == ["sent before the kill", "sent while it moved"]

    await wait_for(both_there, what="each message at the phone once")
    told = [e.message.id for e in w.events if e.WhichOneof("event") == "message"]
    assert len(told) == len(set(told)), "each message told once"
    exactly_once(w)
    assert await conflicts(mesh.sandbox_url) == {}
