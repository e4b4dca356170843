"""Faults: a receiver down for 30 s, a dispatcher process and a router process killed with
SIGKILL mid-delivery. Nothing is lost; each session's events arrive in order."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from sessionmesh.procs import BIN, wait_serving
from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import mesh_pb2
from tests.conftest import TOKENS
from tests.redis_server import free_port
from tests.router.fakes import FakeNode
from tests.webhooks.conftest import (
    Backend,
    Events,
    Receiver,
    add_hook,
    process_env,
    publish,
    wait_for,
)
from webhooks.settings import RetryPolicy
from webhooks.store import WebhookStore

PATIENT = RetryPolicy(tries=100, first=0.1, cap=1.0, jitter=0.2)  # ~90 s of tries


def complete_and_ordered(rx: Receiver, expected: dict[str, int]) -> None:
    """Every session's seqs 1..n arrived (answered 2xx), first arrivals in order."""
    firsts: dict[str, list[int]] = {}
    seen: set[str] = set()
    for r in rx.ok():
        if r.headers["webhook-id"] in seen:
            continue  # a retry of one already received: receivers dedupe on webhook-id
        seen.add(r.headers["webhook-id"])
        firsts.setdefault(r.json["session"], []).append(r.json["seq"])
    assert {s: len(seqs) for s, seqs in firsts.items()} == expected
    for session, seqs in firsts.items():
        assert seqs == sorted(seqs), (session, seqs)


def delivered(rx: Receiver) -> int:
    return len({r.headers["webhook-id"] for r in rx.ok()})


async def test_receiver_down_30s_then_up_delivers_all_in_order(
    store: WebhookStore, receivers: Any, dispatchers: Any, events: Events
) -> None:
    rx = await receivers()
    await add_hook(store, rx.url)
    await dispatchers(store, retry=PATIENT)
    await publish(store, *(events.state(f"s{i % 3}", pb.READY) for i in range(6)))
    await wait_for(lambda: delivered(rx) == 6, what="6 deliveries before the outage")
    await rx.down()
    down_at = time.monotonic()
    await publish(store, *(events.message(f"s{i % 3}", f"m{i}", "during") for i in range(15)))
    await asyncio.sleep(10)  # the outage goes on; more events meanwhile
    await publish(store, *(events.ack(f"s{i % 3}", f"m{i}", pb.ACK_READ) for i in range(15)))
    await asyncio.sleep(max(0.0, 30 - (time.monotonic() - down_at)))
    assert delivered(rx) == 6
    await rx.up()
    up_at = time.monotonic()
    await wait_for(lambda: delivered(rx) == 36, timeout=60, what="36 deliveries after the outage")
    assert time.monotonic() - up_at < 15
    complete_and_ordered(rx, {"s0": 12, "s1": 12, "s2": 12})
    assert (await store.stats()).depth == 0
    assert await store.dead_letters("acme", "", 10, None) == []


async def test_dispatcher_killed_mid_delivery_another_completes(
    backend: Backend, store: WebhookStore, receivers: Any, dispatchers: Any, spawn: Any
) -> None:
    rx = await receivers()
    rx.delay = 0.3  # requests in flight when the kill comes
    await add_hook(store, rx.url)
    first = spawn("dispatcher-a", [sys.executable, "-m", "webhooks"], process_env(backend))
    await first.wait_output("mesh-webhooks delivering")
    events = Events()
    await publish(store, *(events.state(f"s{i % 5}", pb.READY) for i in range(40)))
    await wait_for(lambda: len(rx.received) >= 8, what="deliveries under way")
    first.kill()
    assert delivered(rx) < 40
    await dispatchers(store, retry=PATIENT)
    # The dead one's claims lapse (MESH_WEBHOOK_TIMEOUT 5 s: claims of 15 s), then ours.
    await wait_for(lambda: delivered(rx) == 40, timeout=90, what="all 40 delivered")
    complete_and_ordered(rx, {f"s{i}": 8 for i in range(5)})
    await wait_for(lambda: _depth(store, 0), what="an empty outbox")


async def _depth(store: WebhookStore, n: int) -> bool:
    return (await store.stats()).depth == n


async def start_router(spawn: Any, backend: Backend, node: FakeNode, name: str) -> Any:
    address = f"127.0.0.1:{free_port()}"
    env = process_env(
        backend,
        MESH_ROUTER_LISTEN=address,
        MESH_NODES=node.address,
        MESH_API_TOKENS=",".join(f"{t}:{k}" for t, k in TOKENS.items()),
    )
    router = spawn(name, [str(Path(BIN) / "mesh-router")], env)
    await asyncio.to_thread(wait_serving, address, router.proc, name, 60)
    router.address = address
    return router


async def test_router_killed_mid_delivery_loses_nothing(
    backend: Backend,
    store: WebhookStore,
    receivers: Any,
    dispatchers: Any,
    spawn: Any,
    clients: Any,
) -> None:
    node = FakeNode("node-a")
    await node.start()
    try:
        rx = await receivers()
        rx.delay = 0.02
        router = await start_router(spawn, backend, node, "router-1")
        made = await clients(router.address).CreateWebhook(
            mesh_pb2.CreateWebhookRequest(url=rx.url, events=["message", "message.ack"])
        )
        await dispatchers(store, retry=PATIENT)
        events = Events()
        for n in range(10):
            await publish(
                store, *(events.message(f"s{i % 4}", f"m{n}-{i}", "hi") for i in range(8))
            )
            if n == 3:
                await wait_for(lambda: delivered(rx) >= 10, what="deliveries under way")
                router.kill()
        await wait_for(lambda: delivered(rx) == 80, timeout=60, what="all 80 delivered")
        complete_and_ordered(rx, {f"s{i}": 20 for i in range(4)})
        again = await start_router(spawn, backend, node, "router-2")
        listed = await clients(again.address).ListDeliveries(
            mesh_pb2.ListDeliveriesRequest(webhook_id=made.id, page_size=1000)
        )
        assert len(listed.deliveries) == 80
        assert all(d.outcome == mesh_pb2.DELIVERED for d in listed.deliveries)
    finally:
        await node.stop()
