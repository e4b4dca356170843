"""Delivery from the outbox on both backends: order, retries, final answers, 410, replay."""

from __future__ import annotations

from typing import Any

from sessionmesh.v1 import common_pb2 as pb
from tests.webhooks.conftest import Events, add_hook, publish, wait_for
from webhooks.model import DEAD, DELIVERED
from webhooks.store import WebhookStore


async def test_message_then_acks_arrive_in_order_signed_with_envelope(
    store: WebhookStore, receivers: Any, dispatchers: Any, events: Events
) -> None:
    rx = await receivers()
    hook = await add_hook(store, rx.url)
    await dispatchers(store)
    sent = [
        events.state("demo", pb.READY),
        events.message("demo", "m1", "hello"),
        events.ack("demo", "m1", pb.ACK_SERVER),
        events.ack("demo", "m1", pb.ACK_DEVICE),
        events.ack("demo", "m1", pb.ACK_READ),
    ]
    assert await publish(store, *sent) == 5
    await wait_for(lambda: len(rx.received) == 5, what="5 deliveries")
    bodies = [r.json for r in rx.received]
    assert [b["event"] for b in bodies] == [
        "session.status",
        "message",
        "message.ack",
        "message.ack",
        "message.ack",
    ]
    assert [b["seq"] for b in bodies] == [1, 2, 3, 4, 5]
    first = bodies[1]
    assert set(first) == {"event", "session", "tenant", "time", "seq", "payload"}
    assert first["session"] == "demo" and first["tenant"] == "acme"
    assert first["payload"]["text"] == "hello" and first["payload"]["direction"] == "INBOUND"
    assert [b["payload"]["ack"] for b in bodies[2:]] == ["ACK_SERVER", "ACK_DEVICE", "ACK_READ"]
    assert bodies[0]["payload"] == {"state": "READY", "reason": ""}
    headers = rx.received[0].headers
    assert headers["webhook-id"].startswith("msg_")
    assert headers["webhook-signature"].startswith("v1,")
    assert headers["X-Webhook-Hmac-Algorithm"] == "sha512"
    assert "token" not in rx.received[1].body.decode().lower()
    await wait_for(
        lambda: _all_status(store, "acme", hook.id, DELIVERED, 5), what="5 delivered records"
    )


async def _all_status(store: WebhookStore, tenant: str, hook: str, status: str, n: int) -> bool:
    found = await store.recent(tenant, hook, 100)
    return len(found) == n and all(d.status == status for d in found)


async def test_sessions_are_ordered_each_and_delivered_concurrently(
    store: WebhookStore, receivers: Any, dispatchers: Any, events: Events
) -> None:
    rx = await receivers()
    rx.delay = 0.05  # a slow receiver: lanes overlap
    await add_hook(store, rx.url)
    await dispatchers(store)
    sent = [events.state(f"s{i % 10}", pb.STARTING) for i in range(200)]
    await publish(store, *sent)
    await wait_for(lambda: len(rx.received) == 200, what="200 deliveries")
    per_session: dict[str, list[int]] = {}
    for r in rx.received:
        per_session.setdefault(r.json["session"], []).append(r.json["seq"])
    assert all(seqs == sorted(seqs) for seqs in per_session.values())
    assert len(per_session) == 10
    # Lanes overlap (one at a time would never have two requests open), each lane one at a
    # time (ten lanes: never more than ten open).
    assert 1 < rx.most_in_flight <= 10, rx.most_in_flight


async def test_500_then_200_is_retried_and_keeps_its_id(
    store: WebhookStore, receivers: Any, dispatchers: Any, events: Events
) -> None:
    rx = await receivers()
    rx.answer = lambda n: 500 if n < 2 else 200
    hook = await add_hook(store, rx.url)
    await dispatchers(store)
    await publish(store, events.qr("demo"), events.qr("demo", 2))
    await wait_for(lambda: len(rx.ok()) == 2, what="both delivered")
    ids = rx.ids()
    assert len(ids) == 4 and ids[0] == ids[1] == ids[2] and ids[3] != ids[0]
    assert [r.json["seq"] for r in rx.ok()] == [1, 2]
    await wait_for(lambda: _all_status(store, "acme", hook.id, DELIVERED, 2), what="records")
    first = next(d for d in await store.recent("acme", hook.id, 10) if d.seq == 1)
    assert first.attempts == 3 and first.last_status == 200


async def test_final_answers_are_not_retried(
    store: WebhookStore, receivers: Any, dispatchers: Any, events: Events
) -> None:
    for status in (400, 401, 403, 404, 422):
        rx = await receivers()
        rx.answer = lambda _n, s=status: s
        hook = await add_hook(store, rx.url)
        await dispatchers(store)
        await publish(store, events.state(f"s{status}", pb.READY))
        await wait_for(lambda h=hook: _all_status(store, "acme", h.id, DEAD, 1), what="dead")
        assert len(rx.received) == 1, status
        dead = await store.dead_letters("acme", hook.id, 10, None)
        assert [d.last_status for d in dead] == [status]
        assert dead[0].attempts == 1 and f"HTTP {status}" in dead[0].last_error


async def test_410_disables_the_webhook(
    store: WebhookStore, receivers: Any, dispatchers: Any, events: Events
) -> None:
    rx = await receivers()
    rx.answer = lambda _n: 410
    hook = await add_hook(store, rx.url)
    await dispatchers(store)
    await publish(store, events.state("demo", pb.READY), events.qr("demo"))

    async def disabled() -> bool:
        found = await store.hook("acme", hook.id)
        return found is not None and not found.enabled

    await wait_for(disabled, what="the webhook disabled")
    found = await store.hook("acme", hook.id)
    assert found is not None and "410" in found.disabled_reason
    await wait_for(lambda: _all_status(store, "acme", hook.id, DEAD, 2), what="both dead")
    assert len(rx.received) == 1  # the second was never sent: the webhook was off by then
    # A disabled webhook gets nothing new.
    await publish(store, events.state("demo", pb.STOPPED))
    assert len(await store.recent("acme", hook.id, 10)) == 2


async def test_retry_after_is_honoured(
    store: WebhookStore, receivers: Any, dispatchers: Any, events: Events
) -> None:
    rx = await receivers()
    rx.answer = lambda n: (503, {"Retry-After": "2"}) if n == 0 else 200
    await add_hook(store, rx.url)
    await dispatchers(store)
    await publish(store, events.state("demo", pb.READY))
    await wait_for(lambda: len(rx.ok()) == 1, what="the retry")
    gap = rx.received[1].at - rx.received[0].at
    assert gap >= 1.9, gap  # the backoff alone would be 0.05 s


async def test_out_of_tries_goes_dead_and_replay_keeps_the_webhook_id(
    store: WebhookStore, receivers: Any, dispatchers: Any, events: Events
) -> None:
    rx = await receivers()
    failing = True
    rx.answer = lambda _n: 500 if failing else 200
    hook = await add_hook(store, rx.url)
    await dispatchers(store)
    await publish(store, events.message("demo", "m1", "hi"))
    await wait_for(lambda: _all_status(store, "acme", hook.id, DEAD, 1), what="dead letter")
    assert len(rx.received) == 6  # FAST_RETRY.tries
    dead = await store.dead_letters("acme", "", 10, None)
    assert len(dead) == 1 and "after 6 tries" in dead[0].last_error
    failing = False
    assert await store.replay("globex", [dead[0].id]) == 0  # another tenant's: untouched
    assert await store.replay("acme", [dead[0].id]) == 1
    await wait_for(lambda: len(rx.ok()) == 1, what="the replayed delivery")
    assert rx.ok()[0].headers["webhook-id"] == dead[0].id
    assert await store.dead_letters("acme", "", 10, None) == []
    assert (await store.stats()).depth == 0


async def test_same_event_published_twice_is_one_delivery(
    store: WebhookStore, receivers: Any, dispatchers: Any, events: Events
) -> None:
    rx = await receivers()
    await add_hook(store, rx.url)
    event = events.message("demo", "m1", "once")
    assert await publish(store, event) == 1
    assert await publish(store, event) == 0  # a new owner publishing its adopted log again
    await dispatchers(store)
    await wait_for(lambda: len(rx.received) == 1, what="one delivery")


async def test_session_webhooks_replace_the_tenants_and_tenants_are_apart(
    store: WebhookStore, receivers: Any, dispatchers: Any, events: Events
) -> None:
    wide, own, other = await receivers(), await receivers(), await receivers()
    await add_hook(store, wide.url)
    await add_hook(store, own.url, session_id="vip", events=("message",))
    await add_hook(store, other.url, tenant="globex")
    await dispatchers(store)
    await publish(
        store,
        events.message("vip", "m1", "for own"),
        events.state("vip", pb.READY),  # vip has its own webhook, which skips states
        events.message("plain", "m2", "for wide"),
    )
    await wait_for(lambda: len(own.received) == 1 and len(wide.received) == 1, what="both")
    assert own.received[0].json["payload"]["text"] == "for own"
    assert wide.received[0].json["session"] == "plain"
    assert other.received == []


async def test_webhook_gets_only_events_after_it_was_made(
    store: WebhookStore, receivers: Any, dispatchers: Any, events: Events
) -> None:
    rx = await receivers()
    old = events.state("demo", pb.STARTING)
    await add_hook(store, rx.url, created_at=old.time.ToNanoseconds() / 1e9 + 0.001)
    assert await publish(store, old) == 0
    assert await publish(store, events.state("demo", pb.READY)) == 1


async def test_deleted_webhook_drops_its_queue(
    store: WebhookStore, receivers: Any, dispatchers: Any, events: Events
) -> None:
    rx = await receivers()
    hook = await add_hook(store, rx.url)
    await publish(store, *(events.qr("demo", n) for n in range(1, 4)))
    assert (await store.stats()).depth == 3
    await store.remove_hook("acme", hook.id)
    await dispatchers(store)
    await wait_for(lambda: _depth(store, 0), what="the queue dropped")
    assert rx.received == []


async def _depth(store: WebhookStore, n: int) -> bool:
    return (await store.stats()).depth == n


async def test_guard_refuses_private_targets_at_delivery(
    store: WebhookStore, receivers: Any, dispatchers: Any, events: Events
) -> None:
    """Registered while allowed (or DNS changed since): the dispatcher checks again."""
    from webhooks.settings import Allowlist

    rx = await receivers()
    by_ip = await add_hook(store, rx.url)
    by_name = await add_hook(store, rx.url.replace("127.0.0.1", "localhost"), tenant="globex")
    await dispatchers(store, allow=Allowlist())
    await publish(store, events.state("a", pb.READY))
    await publish(store, events.state("b", pb.READY), tenant="globex")
    await wait_for(lambda: _all_status(store, "acme", by_ip.id, DEAD, 1), what="refused (ip)")
    await wait_for(lambda: _all_status(store, "globex", by_name.id, DEAD, 1), what="refused (name)")
    assert rx.received == []
    for tenant in ("acme", "globex"):
        (dead,) = await store.dead_letters(tenant, "", 10, None)
        assert dead.last_error.startswith("refused") and "MESH_WEBHOOK_ALLOW" in dead.last_error
