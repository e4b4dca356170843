"""The planner's per-node model fitted from the load test's report (docs/loadtest.json).

Memory and CPU are fitted as base + per session x sessions by least squares over the report's
browser samples; first-QR p95 is kept as a curve against the node's CPU share of the machine, so
the model carries to a machine with other cores and memory. `check` predicts the load-test
machine itself, with the report's own thresholds, against what the load test measured there.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from console import planner

LIMITS = ("first_qr_p95", "memory_headroom", "cpu", "ramp_end")
# The load test's limit names, as the planner's Capacity.bound says them.
BOUNDS = {
    "first_qr_p95": planner.FIRST_QR,
    "memory_headroom": planner.MEMORY,
    "cpu": planner.CPU,
    "ramp_end": "none (the ramp ended first)",
}
TOLERANCE = 0.15  # the planner must predict the measured sessions per node within this share


class ReportError(ValueError):
    """docs/loadtest.json is missing a field the model needs, or holds too little to fit."""


@dataclass(frozen=True)
class Sample:
    sessions: int
    memory_bytes: float
    cpu_cores: float
    first_qr_p95_s: float


@dataclass(frozen=True)
class LoadReport:
    """What the model reads from docs/loadtest.json."""

    path: str
    generated: str
    command: str
    cores: float
    memory_bytes: float
    limit: str  # one of LIMITS
    sessions_per_node: int  # measured
    qr_limit_s: float
    memory_headroom: float
    cpu_saturation: float
    samples: tuple[Sample, ...]
    # Memory the load-test machine used outside the node (OS, router, Redis, sandbox, Locust),
    # when the samples carry the machine's `headroom` (MemAvailable / MemTotal): the median of
    # used - node. None when they do not.
    other_memory: float | None = None

    @property
    def ram_gb(self) -> float:
        return self.memory_bytes / planner.GIB


def _get(data: Any, *keys: str) -> Any:
    node = data
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            raise ReportError(f"no {'.'.join(keys)}")
        node = node[key]
    return node


def _num(data: Any, *keys: str) -> float:
    value = _get(data, *keys)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ReportError(f"{'.'.join(keys)} is not a number: {value!r}")
    return float(value)


def ramp(raw: list[Any]) -> list[Any]:
    """The samples of the ramp itself: in the report's order, up to the first whose session
    count falls. A node that lost sessions (leases that lapsed on a starved machine) is no
    longer ramping up; what it measures next is its recovery, not its load per session."""
    kept: list[Any] = []
    for s in raw:
        if kept and _num(s, "sessions") < _num(kept[-1], "sessions"):
            break
        kept.append(s)
    return kept


def parse_report(text: str, path: str = "docs/loadtest.json") -> LoadReport:
    """The load test's report; ReportError names what is missing or unusable."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ReportError(f"not JSON: {e}") from e
    limit = _get(data, "browser", "limit")
    if limit not in LIMITS:
        raise ReportError(f"browser.limit must be one of {', '.join(LIMITS)}, got {limit!r}")
    raw = _get(data, "browser", "samples")
    if not isinstance(raw, list):
        raise ReportError("browser.samples is not a list")
    raw = ramp(raw)
    samples = tuple(
        sorted(
            (
                Sample(
                    int(_num(s, "sessions")),
                    _num(s, "memory_bytes"),
                    _num(s, "cpu_cores"),
                    _num(s, "first_qr_p95_s"),
                )
                for s in raw
            ),
            key=lambda s: s.sessions,
        )
    )
    others = [
        _num(data, "machine", "memory_bytes") * (1 - float(s["headroom"]))
        - float(s["memory_bytes"])
        for s in raw
        if isinstance(s, dict) and isinstance(s.get("headroom"), int | float)
    ]
    if len({s.sessions for s in samples}) < 2:
        raise ReportError("browser.samples needs two different session counts to fit a line")
    report = LoadReport(
        path=path,
        generated=str(data.get("generated", "")),
        command=str(data.get("command", "")),
        cores=_num(data, "machine", "cores"),
        memory_bytes=_num(data, "machine", "memory_bytes"),
        limit=limit,
        sessions_per_node=int(_num(data, "browser", "sessions_per_node")),
        qr_limit_s=_num(data, "browser", "thresholds", "first_qr_p95_s"),
        memory_headroom=_num(data, "browser", "thresholds", "memory_headroom"),
        cpu_saturation=_num(data, "browser", "thresholds", "cpu_saturation"),
        samples=samples,
        other_memory=statistics.median(others) if others and len(others) == len(raw) else None,
    )
    if report.cores <= 0 or report.memory_bytes <= 0 or report.sessions_per_node < 0:
        raise ReportError(
            "machine.cores and machine.memory_bytes must be > 0, sessions_per_node >= 0"
        )
    if not 0 <= report.memory_headroom < 1 or not 0 < report.cpu_saturation <= 1:
        raise ReportError("thresholds: memory_headroom within [0, 1), cpu_saturation within (0, 1]")
    return report


def load_report(path: Path | None) -> LoadReport | None:
    """The report at `path`, or None when there is none (ReportError when it is unusable)."""
    if path is None or not path.is_file():
        return None
    return parse_report(path.read_text(encoding="utf-8"), str(path))


def fit(report: LoadReport) -> planner.Figures:
    """Memory and CPU lines by least squares over the samples, and the first-QR curve."""
    xs = [float(s.sessions) for s in report.samples]
    memory_base, memory_slope = planner.fit_line(xs, [s.memory_bytes for s in report.samples])
    cpu_base, cpu_slope = planner.fit_line(xs, [s.cpu_cores for s in report.samples])
    if memory_slope <= 0 or cpu_slope <= 0:
        raise ReportError(
            "the samples' memory or CPU does not grow with sessions: nothing to plan with"
        )
    # QR against the CPU share the fitted line gives at each sample (not the sample's own,
    # noisier reading), made non-decreasing. The line is the one predictions use, its base
    # clamped at 0: read on another, the QR limit lands at another session count.
    cpu_base = max(0.0, cpu_base)
    points: list[tuple[float, float]] = []
    worst = 0.0
    for s in report.samples:
        worst = max(worst, s.first_qr_p95_s)
        share = (cpu_base + cpu_slope * s.sessions) / report.cores
        points.append((share, worst))
    source = f"{report.path}, fitted over {len(report.samples)} load-test samples"
    return planner.Figures(
        memory_bytes=memory_slope,
        cpu_cores=cpu_slope,
        memory_source=source,
        cpu_source=source,
        memory_base=max(0.0, memory_base),
        cpu_base=cpu_base,
        qr=planner.QrCurve(tuple(points)),
        qr_limit=report.qr_limit_s,
        cpu_saturation=report.cpu_saturation,
    )


@dataclass(frozen=True)
class Check:
    """The model's prediction for the load-test machine against what was measured there."""

    predicted: planner.Capacity
    measured: int
    measured_limit: str  # one of LIMITS
    # The ramp's first step past the limit: the capacity is under it. The ramp adds several
    # sessions a step, so it measures a range (held at `measured`, failed at this), not a point.
    failed_at: int | None = None

    @property
    def measured_bound(self) -> str:
        return BOUNDS[self.measured_limit]

    @property
    def measured_top(self) -> int:
        """The most sessions the measure allows: one under the step that failed."""
        if self.failed_at is None or self.lower_bound:
            return self.measured
        return max(self.measured, self.failed_at - 1)

    @property
    def error(self) -> float:
        """How far the prediction falls outside the measured range, as a share of its nearer
        end (0 inside it); infinite when nothing fitted and some is predicted."""
        got = self.predicted.sessions
        if self.measured == 0:
            return 0.0 if got == 0 else math.inf
        if got < self.measured:
            return (got - self.measured) / self.measured
        if got > self.measured_top:
            return (got - self.measured_top) / self.measured_top
        return 0.0

    @property
    def lower_bound(self) -> bool:
        """The ramp ended before any limit: the measured figure is a floor, not a capacity."""
        return self.measured_limit == "ramp_end"

    @property
    def within(self) -> bool:
        if self.lower_bound:
            return self.predicted.sessions >= self.measured * (1 - TOLERANCE)
        return abs(self.error) <= TOLERANCE


def check(report: LoadReport, figures: planner.Figures | None = None) -> Check:
    """Predict the load-test machine with the report's thresholds; compare with its measure.

    The load test's memory headroom is the whole machine's: where the report says how much
    its other processes used, that counts against the machine here (not on a node host,
    which runs no load generator)."""
    figures = figures or fit(report)
    if report.other_memory:
        figures = dataclasses.replace(
            figures, memory_base=figures.memory_base + max(0.0, report.other_memory)
        )
    predicted = planner.capacity(report.cores, report.ram_gb, figures, report.memory_headroom)
    past = [s.sessions for s in report.samples if s.sessions > report.sessions_per_node]
    return Check(predicted, report.sessions_per_node, report.limit, min(past, default=None))


@dataclass(frozen=True)
class Model:
    """The planner's model and where it came from; the console's planner and the Kubernetes
    renderer both take it from `model`, so their sizes cannot disagree."""

    figures: planner.Figures
    report: LoadReport | None  # None: no load test; per-session figures only

    @property
    def source(self) -> str:
        if self.report is not None:
            return f"load test ({self.report.path})"
        return self.figures.memory_source


def model(
    loadtest: Path | None,
    benchmarks: Path,
    live_memory: float | None = None,
    live_sessions: int = 0,
) -> Model:
    """The load test's fitted model when its report exists, else docs/benchmarks.md's
    per-session figures (live node memory may stand in, as `planner.resolve_figures` says).

    A report that exists but cannot be used raises ReportError: nothing silently falls back.
    """
    report = load_report(loadtest)
    if report is not None:
        return Model(fit(report), report)
    text = benchmarks.read_text(encoding="utf-8") if benchmarks.is_file() else None
    return Model(planner.benchmark_figures(text, live_memory, live_sessions), None)
