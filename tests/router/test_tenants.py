"""One tenant cannot starve the others: caps on sessions and streams, listings from a short-lived
view rather than a fan-out per call, and 5,000 watch streams on one router, none cancelled."""

from __future__ import annotations

import asyncio
import resource
from typing import Any

import grpc
import grpc.aio
import pytest

from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import mesh_pb2
from tests.helpers import Watcher, wait_for


def create(sid: str) -> mesh_pb2.CreateSessionRequest:
    return mesh_pb2.CreateSessionRequest(session_id=sid)


async def refusal(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        result = call
        if hasattr(result, "__aiter__"):
            async for _ in result:
                pass
        else:
            await result
    return err.value.code(), err.value.details() or ""


async def test_a_tenant_cap_on_live_sessions(
    fake_nodes: Any, router_factory: Any, clients: Any
) -> None:
    node = await fake_nodes()
    router = await router_factory([node.address], tenant_max_sessions=2)
    acme, globex = clients(router.address, "acme"), clients(router.address, "globex")
    await acme.CreateSession(create("s1"))
    await acme.CreateSession(create("s2"))
    code, message = await refusal(acme.CreateSession(create("s3")))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "MESH_TENANT_MAX_SESSIONS=2" in message
    assert (await acme.CreateSession(create("s1"))).session_id == "s1"  # already live: fine
    await globex.CreateSession(create("s1"))  # another tenant's room is its own
    await acme.StopSession(mesh_pb2.StopSessionRequest(session_id="s2"))
    assert (await acme.CreateSession(create("s3"))).session_id == "s3"


async def test_a_tenant_cap_on_concurrent_streams(
    fake_nodes: Any, router_factory: Any, clients: Any, watchers: Any
) -> None:
    node = await fake_nodes()
    router = await router_factory([node.address], tenant_max_streams=2)
    acme, globex = clients(router.address, "acme"), clients(router.address, "globex")
    await acme.CreateSession(create("s1"))
    await globex.CreateSession(create("s1"))
    request = mesh_pb2.WatchSessionRequest(session_id="s1")
    first, _second = watchers(acme.WatchSession(request)), watchers(acme.WatchSession(request))
    await wait_for(lambda: router.service.streams.get("acme") == 2, what="two open streams")
    code, message = await refusal(acme.WatchSession(request))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "MESH_TENANT_MAX_STREAMS=2" in message
    other = watchers(globex.WatchSession(request))
    await other.wait(lambda w: len(w.events) >= 1, "globex's events")
    await first.aclose()
    await wait_for(lambda: router.service.streams.get("acme") == 1, what="a stream to close")
    again = watchers(acme.WatchSession(request))
    await again.wait(lambda w: len(w.events) >= 1, "events on a new stream")


async def test_listings_come_from_a_short_lived_view_not_a_fan_out_per_call(
    fake_nodes: Any, router_factory: Any, clients: Any
) -> None:
    a, b = await fake_nodes("node-a"), await fake_nodes("node-b")
    router = await router_factory([a.address, b.address], list_cache_ttl=30.0)
    acme = clients(router.address)
    await acme.CreateSession(create("s1"))
    before = a.list_calls + b.list_calls
    pages = await asyncio.gather(
        *(acme.ListSessions(mesh_pb2.ListSessionsRequest()) for _ in range(50)),
        *(acme.GetClusterStatus(mesh_pb2.GetClusterStatusRequest()) for _ in range(50)),
    )
    assert all([s.session_id for s in p.sessions] == ["s1"] for p in pages[:50])
    assert a.list_calls + b.list_calls - before <= 2  # one fan-out: one call per node
    # A change through this router is seen at once.
    await acme.CreateSession(create("s2"))
    listed = await acme.ListSessions(mesh_pb2.ListSessionsRequest())
    assert [s.session_id for s in listed.sessions] == ["s1", "s2"]


STREAMS = 5000
SESSIONS = 50


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.timeout(600)
async def test_five_thousand_watch_streams_on_one_router_none_cancelled(
    fake_nodes: Any, router_factory: Any, clients: Any
) -> None:
    node = await fake_nodes()
    router = await router_factory([node.address], tenant_max_streams=STREAMS)
    acme = clients(router.address)
    for i in range(SESSIONS):
        await acme.CreateSession(create(f"s{i}"))
    before = _rss_mib()
    # No deadline: the clients fixture gives every call 30 s unless told otherwise, and opening
    # 5,000 streams and reaching each with an event can take longer than that on a loaded
    # machine; the streams then ended DEADLINE_EXCEEDED, which read as cancellations.
    made = [
        Watcher(
            acme.WatchSession(
                mesh_pb2.WatchSessionRequest(session_id=f"s{i % SESSIONS}"), timeout=None
            )
        )
        for i in range(STREAMS)
    ]
    try:
        await wait_for(
            lambda: router.service.streams.get("acme", 0) == STREAMS,
            timeout=300,
            what=f"{STREAMS} open streams",
        )
        for i in range(SESSIONS):
            await node.emit("acme", f"s{i}", state=pb.StateChange(state=pb.SCAN_QR_CODE))
        await wait_for(
            lambda: all(len(w.events) >= 2 or w.error for w in made),
            timeout=300,
            what="every stream to get the new event",
        )
        errors = [w.error for w in made if w.error is not None]
        assert errors == [], f"{len(errors)} streams ended: {errors[:3]}"
        assert all(w.events[-1].state.state == pb.SCAN_QR_CODE for w in made)
        print(f"{STREAMS} streams: {_rss_mib() - before:.0f} MiB more (router, node, clients)")
    finally:
        await asyncio.gather(*(w.aclose() for w in made))
