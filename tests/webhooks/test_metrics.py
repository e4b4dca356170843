"""The webhook instruments: tries by outcome, delivery lag, outbox depth, dead letters."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sessionmesh.v1 import common_pb2 as pb
from tests.webhooks.conftest import Events, add_hook, fast_settings, publish, wait_for
from webhooks.dispatcher import Dispatcher
from webhooks.metrics import WebhookMetrics
from webhooks.store import WebhookStore


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    out: dict[str, list[Any]] = {}
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                out.setdefault(metric.name, []).extend(metric.data.data_points)
    return out


async def test_outcomes_lag_depth_and_dead_letters(
    store: WebhookStore, receivers: Any, events: Events
) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    rx = await receivers()
    rx.answer = lambda n: 404 if n == 0 else (500 if n == 1 else 200)
    await add_hook(store, rx.url)
    await publish(store, events.state("a", pb.READY))
    await publish(store, events.state("b", pb.READY))
    dispatcher = Dispatcher(
        store, fast_settings(), metrics=WebhookMetrics(provider.get_meter("test"))
    )
    await dispatcher.start()
    try:
        await wait_for(lambda: len(rx.received) == 3, what="a 404, a 500 and a 200")

        def settled() -> bool:
            got = points(reader).get("mesh_webhook_deliveries", [])
            return sum(p.value for p in got) == 3

        await wait_for(settled, what="three tries counted")
        got = points(reader)
        outcomes = {p.attributes["outcome"]: p.value for p in got["mesh_webhook_deliveries"]}
        assert outcomes == {"dead": 1, "retrying": 1, "delivered": 1}
        (lag,) = got["mesh_webhook_delivery_lag"]
        assert lag.count == 1 and 0 <= lag.sum < 10
        await wait_for(
            lambda: dispatcher.stats is not None and dispatcher.stats.dead == 1, what="stats read"
        )
        got = points(reader)
        assert [p.value for p in got["mesh_webhook_dead_letters"]] == [1]
        assert [p.value for p in got["mesh_webhook_outbox_depth"]] in ([0], [1])
    finally:
        await dispatcher.aclose()
        provider.shutdown()


async def test_stats_are_one_snapshot_of_depth_and_dead_letters(
    store: WebhookStore, receivers: Any, dispatchers: Any, events: Events
) -> None:
    """Every delivery is in the outbox or dead, never both and never neither: a read of the
    figures while deliveries die must add up to what was published."""
    rx = await receivers()
    rx.answer = lambda _n: 404
    await add_hook(store, rx.url)
    total = 40
    await publish(store, *(events.state(f"s{i}", pb.READY) for i in range(total)))
    await dispatchers(store)
    reads = []
    while not reads or reads[-1].dead < total:
        reads.append(await store.stats())
        assert len(reads) < 100_000, "the deliveries did not all die"
    torn = [(s.depth, s.dead) for s in reads if s.depth + s.dead != total]
    assert not torn, f"{len(torn)} of {len(reads)} reads do not add up to {total}: {torn[:5]}"
