"""Pure figures for the pages: QR and READY latency from histograms, states, warnings.

Nothing here calls the router: the pages pass in sessions, nodes and histograms.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sessionmesh import latency
from sessionmesh.v1 import common_pb2 as pb

QR_EXHAUSTED = "QR attempts exhausted"
NEAR_CAPACITY = 0.8  # a node at or above this share of its capacity gets a warning
QR_FAILURE_WARN = 0.2  # recent QR failure share that gets a warning when it is rising
MIN_FOR_RATE = 3  # sessions in a window before its failure rate means anything

# Phases the nodes' latency histograms time (sessionmesh.latency), as the pages name them.
FIRST_QR = "STARTING → first QR"
TO_READY = "STARTING → READY (with a QR scan)"
RESTORE = "STARTING → READY (restored, no QR)"
PHASES = {latency.FIRST_QR: FIRST_QR, latency.READY: TO_READY, latency.RESTORE: RESTORE}
SHORT = {FIRST_QR: "first QR", TO_READY: "to READY", RESTORE: "restore"}

STRATEGIES: dict[int, str] = {pb.LOCAL: "LocalAuth", pb.REMOTE: "RemoteAuth"}


def strategy_name(value: int) -> str:
    return STRATEGIES.get(value, "default")


def state_name(value: int) -> str:
    return str(pb.SessionState.Name(value)) if value else "UNSPECIFIED"


def seconds(ts: object) -> float:
    """A protobuf Timestamp as float seconds since the epoch; 0.0 when unset."""
    secs = getattr(ts, "seconds", 0)
    nanos = getattr(ts, "nanos", 0)
    return float(secs) + float(nanos) / 1e9


@dataclass(frozen=True)
class Summary:
    phase: str
    strategy: str
    count: int
    p50: float
    p95: float
    p99: float
    mean: float


def summarize(histograms: Iterable[pb.LatencyHistogram]) -> list[Summary]:
    """p50/p95/p99 per (phase, strategy) from bucket counts, interpolated within buckets as
    Prometheus' histogram_quantile does (so a quantile is at most a bucket's width off)."""
    out: list[Summary] = []
    order = list(PHASES)
    for h in sorted(histograms, key=lambda h: (order.index(h.phase), h.auth_strategy)):
        counts = list(h.counts)
        p50, p95, p99 = (latency.quantile(q, h.bounds, counts) for q in (0.5, 0.95, 0.99))
        if p50 is None or p95 is None or p99 is None:
            continue
        total = sum(counts)
        out.append(
            Summary(
                PHASES[h.phase],
                strategy_name(h.auth_strategy),
                total,
                p50,
                p95,
                p99,
                h.sum / total,
            )
        )
    return out


def by_state(sessions: Iterable[pb.Session]) -> dict[str, int]:
    """Session counts per state name, in lifecycle order, zeros left out."""
    counts = Counter(s.state for s in sessions)
    return {state_name(k): counts[k] for k in sorted(counts)}


def is_qr_failure(session: pb.Session) -> bool:
    return session.state == pb.FAILED and session.last_error.startswith(QR_EXHAUSTED)


@dataclass(frozen=True)
class FailureTrend:
    recent: float | None  # share of sessions updated in the window that failed on QR
    earlier: float | None  # the same share for sessions updated before the window
    recent_count: int
    earlier_count: int

    @property
    def rising(self) -> bool:
        if self.recent is None or self.recent < QR_FAILURE_WARN:
            return False
        return self.earlier is None or self.recent > self.earlier


def qr_failure_trend(sessions: Iterable[pb.Session], now: float, window: float) -> FailureTrend:
    """QR failure share among sessions last updated within `window` seconds, against before."""
    recent = [0, 0]
    earlier = [0, 0]
    for s in sessions:
        bucket = recent if seconds(s.updated_at) >= now - window else earlier
        bucket[0] += 1
        bucket[1] += is_qr_failure(s)

    def share(bucket: list[int]) -> float | None:
        return bucket[1] / bucket[0] if bucket[0] >= MIN_FOR_RATE else None

    return FailureTrend(share(recent), share(earlier), recent[0], earlier[0])


@dataclass(frozen=True)
class Alert:
    level: str  # "error" or "warning"
    text: str


@dataclass(frozen=True)
class Overview:
    nodes: int
    serving: int
    sessions: int
    capacity: int
    memory_bytes: int
    warnings: list[Alert] = field(default_factory=list)

    @property
    def use(self) -> float:
        return self.sessions / self.capacity if self.capacity else 0.0


def overview(
    nodes: Sequence[pb.NodeStatus], sessions: Sequence[pb.Session], now: float, window: float
) -> Overview:
    """Totals over the cluster and the warnings an operator should act on."""
    warnings: list[Alert] = []
    for n in nodes:
        name = n.node_id or n.address
        if n.health == pb.UNREACHABLE:
            warnings.append(Alert("error", f"node {name} ({n.address}) is unreachable"))
        elif n.health == pb.NOT_SERVING:
            warnings.append(Alert("warning", f"node {name} is not serving (draining or stopping)"))
        if n.missing_hooks:
            build = f"WhatsApp Web {n.wa_version}" if n.wa_version else "WhatsApp Web"
            warnings.append(
                Alert(
                    "error",
                    f"node {name}: {build} lacks hooks the node relies on: "
                    f"{', '.join(n.missing_hooks)} (a new WhatsApp Web build changed them; "
                    "sessions may fail until the node is updated)",
                )
            )
        if n.capacity and n.sessions / n.capacity >= NEAR_CAPACITY:
            warnings.append(
                Alert(
                    "warning",
                    f"node {name} holds {n.sessions} of {n.capacity} sessions "
                    f"({n.sessions / n.capacity:.0%}, warning at {NEAR_CAPACITY:.0%})",
                )
            )
    trend = qr_failure_trend(sessions, now, window)
    if trend.rising and trend.recent is not None:
        before = f"{trend.earlier:.0%} before" if trend.earlier is not None else "none before"
        warnings.append(
            Alert(
                "warning",
                f"QR failure rate rising: {trend.recent:.0%} of the {trend.recent_count} sessions "
                f"updated in the last {window / 60:.0f} min failed with '{QR_EXHAUSTED}' ({before})",
            )
        )
    reachable = [n for n in nodes if n.health != pb.UNREACHABLE]
    return Overview(
        nodes=len(nodes),
        serving=sum(n.health == pb.SERVING for n in nodes),
        sessions=sum(n.sessions for n in reachable),
        capacity=sum(n.capacity for n in reachable),
        memory_bytes=sum(n.memory_bytes for n in reachable),
        warnings=warnings,
    )


def per_session_memory(nodes: Iterable[pb.NodeStatus]) -> float | None:
    """Live bytes per held session over the reachable nodes that hold any; None without data.

    An upper estimate: a node's figure includes its warm browser's own base memory.
    """
    memory, sessions = live_memory(nodes)
    return memory / sessions if sessions else None


def live_memory(nodes: Iterable[pb.NodeStatus]) -> tuple[int, int]:
    """(browser bytes, sessions held) over the reachable nodes that hold sessions."""
    memory = sessions = 0
    for n in nodes:
        if n.health != pb.UNREACHABLE and n.sessions > 0 and n.memory_bytes > 0:
            memory += n.memory_bytes
            sessions += n.sessions
    return memory, sessions
