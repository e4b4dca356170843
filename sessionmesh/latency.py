"""Latency histograms per tenant, beside the exported ones, and quantiles from their buckets.

Nodes record each run's time to the first QR and to READY here as well as in the OpenTelemetry
histograms (`telemetry.SessionTimings`), with the same bucket bounds, but keyed by tenant so a
router can answer each tenant with its own figures only. `quantile` reads a quantile from
buckets as Prometheus' `histogram_quantile` does.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import node_pb2

FIRST_QR = "first_qr"  # STARTING to the first QR
READY = "ready"  # STARTING to READY through a QR scan
RESTORE = "restore"  # STARTING to READY from a saved login, no QR
PHASES = (FIRST_QR, READY, RESTORE)

# The exported histograms' bounds (sessionmesh.telemetry), in seconds.
BOUNDS = (0.5, 1, 2, 3, 4, 5, 6, 8, 10, 13, 15, 18, 20, 25, 30, 45, 60, 90, 120)


@dataclass
class Buckets:
    """Counts per bucket (the last past the last bound), their sum and count."""

    bounds: tuple[float, ...] = BOUNDS
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)
        if len(self.counts) != len(self.bounds) + 1:
            raise ValueError("a histogram needs one count per bound and one past the last")

    @property
    def count(self) -> int:
        return sum(self.counts)

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def add(self, other: Buckets) -> None:
        if other.bounds != self.bounds:
            raise ValueError("histograms with different bounds do not add up")
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.sum += other.sum

    def to_proto(self, phase: str, strategy: int) -> pb.LatencyHistogram:
        return pb.LatencyHistogram(
            phase=phase,
            auth_strategy=strategy,  # type: ignore[arg-type]
            bounds=self.bounds,
            counts=self.counts,
            sum=self.sum,
            count=self.count,
        )

    @classmethod
    def from_proto(cls, h: pb.LatencyHistogram) -> Buckets:
        return cls(tuple(h.bounds), list(h.counts), h.sum)

    def quantile(self, q: float) -> float | None:
        return quantile(q, self.bounds, self.counts)


def quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """The q-quantile (0-1) of bucketed values, as Prometheus' `histogram_quantile`: linear
    within the bucket the rank falls in, from 0 for the first bucket; a rank in the bucket past
    the last bound answers the last bound. None when there is no value."""
    if not 0 <= q <= 1:
        raise ValueError(f"q must be within 0-1, got {q}")
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            if i == len(bounds):
                return float(bounds[-1])
            lower = 0.0 if i == 0 else float(bounds[i - 1])
            upper = float(bounds[i])
            return lower + (upper - lower) * (rank - seen) / n
        seen += n
    return float(bounds[-1]) if bounds else math.nan


class LatencyTable:
    """A node's histograms keyed by (tenant, phase, auth strategy); safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._table: dict[tuple[str, str, int], Buckets] = {}

    def observe(self, tenant: str, phase: str, strategy: int, seconds: float) -> None:
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        with self._lock:
            self._table.setdefault((tenant, phase, strategy), Buckets()).observe(seconds)

    def to_proto(self) -> node_pb2.NodeLatency:
        with self._lock:
            items = [(k, Buckets(v.bounds, list(v.counts), v.sum)) for k, v in self._table.items()]
        return node_pb2.NodeLatency(
            histograms=[
                node_pb2.TenantLatency(tenant=tenant, histogram=b.to_proto(phase, strategy))
                for (tenant, phase, strategy), b in sorted(items)
            ]
        )


def merge(histograms: Iterable[pb.LatencyHistogram]) -> list[pb.LatencyHistogram]:
    """Histograms of the same (phase, auth strategy) added up, in phase order."""
    merged: dict[tuple[str, int], Buckets] = {}
    for h in histograms:
        key = (h.phase, h.auth_strategy)
        if key in merged:
            merged[key].add(Buckets.from_proto(h))
        else:
            merged[key] = Buckets.from_proto(h)
    order = {p: i for i, p in enumerate(PHASES)}
    return [
        b.to_proto(phase, strategy)
        for (phase, strategy), b in sorted(
            merged.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0][1])
        )
    ]
