"""Webhook instruments, on the same `sessionmesh` meter as the mesh's other metrics:

mesh_webhook_deliveries        tries by outcome (delivered, retrying, dead, discarded) and event
mesh_webhook_delivery_lag      s from the event to its 2xx answer, by event
mesh_webhook_published         deliveries queued by publishers, by event
mesh_webhook_outbox_depth      deliveries not yet delivered or dead (the whole outbox)
mesh_webhook_dead_letters      dead letters kept
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from sessionmesh.telemetry import METER
from webhooks.store import Stats

LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)


class WebhookMetrics:
    def __init__(self, meter: metrics.Meter) -> None:
        self._sources: dict[int, tuple[str, Callable[[], Stats | None]]] = {}
        self._lock = threading.Lock()
        self.deliveries = meter.create_counter(
            "mesh_webhook_deliveries", description="Webhook tries, by outcome and event"
        )
        self.lag = meter.create_histogram(
            "mesh_webhook_delivery_lag",
            unit="s",
            description="From the event to the receiver's 2xx answer",
            explicit_bucket_boundaries_advisory=LAG_BUCKETS,
        )
        self.published = meter.create_counter(
            "mesh_webhook_published", description="Deliveries queued, by event"
        )
        meter.create_observable_gauge(
            "mesh_webhook_outbox_depth",
            [self._depth],
            description="Deliveries waiting in the outbox (queued or retrying)",
        )
        meter.create_observable_gauge(
            "mesh_webhook_dead_letters", [self._dead], description="Dead letters kept"
        )

    def watch(self, store: str, stats: Callable[[], Stats | None]) -> Callable[[], None]:
        """Report `stats()` (a cheap reader of the last figures) for the outbox `store`."""
        key = id(stats)
        with self._lock:
            self._sources[key] = (store, stats)

        def stop() -> None:
            with self._lock:
                self._sources.pop(key, None)

        return stop

    def _read(self) -> dict[str, Stats]:
        with self._lock:
            sources = list(self._sources.values())
        out: dict[str, Stats] = {}
        for store, reader in sources:
            value = reader()
            if value is not None:
                out[store] = value  # dispatchers of one outbox report the same figures
        return out

    def _depth(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(s.depth, {"outbox": k}) for k, s in self._read().items()]

    def _dead(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(s.dead, {"outbox": k}) for k, s in self._read().items()]


_metrics: WebhookMetrics | None = None
_made = threading.Lock()


def webhook_metrics() -> WebhookMetrics:
    global _metrics
    with _made:
        if _metrics is None:
            _metrics = WebhookMetrics(metrics.get_meter(METER))
        return _metrics
