"""The node's publisher reads sessions' logs by seq: message and ack events included, none
skipped or doubled, nothing waits on the outbox, and a new owner fills only what is missing."""

from __future__ import annotations

import time
from typing import Any

from node.events import EventLog
from sessionmesh.v1 import common_pb2 as pb
from tests.webhooks.conftest import Events, add_hook, wait_for
from webhooks.publisher import Publisher
from webhooks.store import WebhookStore


async def test_observer_publishes_new_events_of_the_log_once(
    store: WebhookStore, receivers: Any, dispatchers: Any
) -> None:
    rx = await receivers()
    await add_hook(store, rx.url)
    await dispatchers(store)
    publisher = Publisher(store)
    publisher.start()
    log = EventLog("demo")
    made = Events()
    log.append(state=pb.StateChange(state=pb.STARTING))
    log.append(loading=pb.Loading(percent=10))  # webhooks never get loading
    publisher.observe("acme", log)
    publisher.observe("acme", log)  # a repeated notification: nothing new
    made.seqs["demo"] = log.last_seq
    # Message and ack events, as the page side will append them: three before one observation.
    log.adopt(
        [
            made.message("demo", "m1", "hi"),
            made.ack("demo", "m1", pb.ACK_SERVER),
            made.ack("demo", "m1", pb.ACK_READ),
        ]
    )
    publisher.observe("acme", log)
    await wait_for(lambda: len(rx.received) == 4, what="4 deliveries")
    assert [r.json["event"] for r in rx.received] == [
        "session.status",
        "message",
        "message.ack",
        "message.ack",
    ]
    assert [r.json["seq"] for r in rx.received] == [1, 3, 4, 5]
    await publisher.aclose()


async def test_a_new_owner_republishes_recent_events_without_doubles(
    store: WebhookStore, receivers: Any, dispatchers: Any
) -> None:
    rx = await receivers()
    await add_hook(store, rx.url)
    old_owner, new_owner = Publisher(store), Publisher(store)
    old_owner.start()
    new_owner.start()
    log = EventLog("demo")
    log.append(state=pb.StateChange(state=pb.STARTING))
    log.append(state=pb.StateChange(state=pb.READY))
    old_owner.observe("acme", log)
    assert await old_owner.flush(10)
    # The old owner died before queueing this one; the new owner adopts the log.
    log.append(state=pb.StateChange(state=pb.STOPPED, reason="node died"))
    stale = pb.SessionEvent(session_id="other", seq=1)
    stale.time.FromSeconds(int(time.time()) - 3600)
    stale.state.state = pb.READY
    adopted = EventLog("other")
    adopted.adopt([stale])
    new_owner.observe("acme", log)
    new_owner.observe("acme", adopted)  # an hour old: not published again
    assert await new_owner.flush(10)
    await dispatchers(store)
    await wait_for(lambda: len(rx.received) == 3, what="3 deliveries")
    assert [r.json["seq"] for r in rx.received] == [1, 2, 3]
    assert len(set(rx.ids())) == 3
    await old_owner.aclose()
    await new_owner.aclose()


async def test_observer_never_waits_on_the_store(store: WebhookStore) -> None:
    publisher = Publisher(store)  # not started: nothing drains the queue
    log = EventLog("demo")
    started = time.perf_counter()
    for _ in range(1000):
        log.append(state=pb.StateChange(state=pb.SCAN_QR_CODE))
        publisher.observe("acme", log)
    assert time.perf_counter() - started < 1.0
