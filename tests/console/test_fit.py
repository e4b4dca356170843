"""The planner's model fitted from a load-test report: least squares, the first limit, the check."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from console import fit
from console import planner as p

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "loadtest.json"
BENCHMARKS = ROOT / "docs" / "benchmarks.md"


def report(
    *,
    cores: float = 2,
    memory_gib: float = 8,
    limit: str = "first_qr_p95",
    measured: int = 43,
    base_mib: float = 400,
    per_mib: float = 60,
    cpu_base: float = 0.2,
    cpu_per: float = 0.03,
    knee: float = 0.6,  # CPU share past which first-QR p95 climbs
    sessions: tuple[int, ...] = (0, 10, 20, 30, 40, 50, 60),
    noise: float = 0.0,
) -> dict[str, Any]:
    samples = []
    for i, n in enumerate(sessions):
        wobble = noise * (1 if i % 2 else -1)
        cpu = cpu_base + cpu_per * n
        share = cpu / cores
        samples.append(
            {
                "sessions": n,
                "memory_bytes": int((base_mib + per_mib * n) * p.MIB * (1 + wobble)),
                "cpu_cores": cpu * (1 + wobble),
                "first_qr_p95_s": 0.3 + max(0.0, share - knee) * 8,
            }
        )
    return {
        "generated": "2026-11-30T11:00:00Z",
        "command": "make loadtest PROFILE=1000",
        "profile": 1000,
        "machine": {"cores": cores, "memory_bytes": int(memory_gib * p.GIB), "load_before": 0.1},
        "page_weight": "calibrated",
        "browser": {
            "limit": limit,
            "sessions_per_node": measured,
            "thresholds": {"first_qr_p95_s": 1.5, "memory_headroom": 0.2, "cpu_saturation": 0.9},
            "samples": samples,
        },
        "control_plane": {},
        "console_pages_s": {},
    }


def parsed(data: dict[str, Any]) -> fit.LoadReport:
    return fit.parse_report(json.dumps(data), "test.json")


def test_least_squares_recovers_base_and_per_session_through_noise() -> None:
    assert p.fit_line([0, 1, 2, 3], [1, 3, 5, 7]) == pytest.approx((1.0, 2.0))
    figs = fit.fit(parsed(report(noise=0.02)))
    assert figs.memory_bytes == pytest.approx(60 * p.MIB, rel=0.05)
    assert figs.memory_base == pytest.approx(400 * p.MIB, rel=0.1)
    assert figs.cpu_cores == pytest.approx(0.03, rel=0.05)
    assert "fitted over 7 load-test samples" in figs.memory_source
    with pytest.raises(ValueError):
        p.fit_line([1, 1], [2, 3])


def test_the_first_limit_is_predicted_on_the_load_test_machine() -> None:
    # QR p95 passes 1.5 s at CPU share 0.6 + 1.2/8 = 0.75: (1.5 - 0.2) / 0.03 = 43.3 sessions
    r = parsed(report(measured=43))
    c = fit.check(r)
    assert c.predicted.bound == p.FIRST_QR and c.predicted.sessions == 43
    assert c.within and abs(c.error) < 0.03
    # memory: (0.8 x 8 GiB - 400 MiB) / 60 MiB = 102; CPU: (0.9 x 2 - 0.2) / 0.03 = 53
    assert (c.predicted.by_memory, c.predicted.by_cpu) == (102, 53)


def test_a_memory_bound_machine_and_a_cpu_bound_one() -> None:
    small = fit.check(parsed(report(memory_gib=2, knee=5.0, limit="memory_headroom", measured=20)))
    assert small.predicted.bound == p.MEMORY  # (1.6 GiB - 400 MiB) / 60 MiB = 20
    assert small.predicted.sessions == 20 and small.within
    cpu = fit.check(parsed(report(knee=5.0, limit="cpu", measured=53)))
    assert cpu.predicted.bound == p.CPU and cpu.predicted.sessions == 53
    assert cpu.predicted.by_qr is None  # QR never passes its limit on these samples


def test_the_model_carries_to_other_machines_through_cpu_share() -> None:
    figs = fit.fit(parsed(report()))
    bigger = p.capacity(4, 16, figs, 0.2)
    # twice the cores: the QR knee at twice the sessions, less the base counted once
    assert bigger.bound == p.FIRST_QR and bigger.sessions == int((4 * 0.75 - 0.2) / 0.03)


def test_a_prediction_off_by_more_than_15_percent_is_reported_as_such() -> None:
    c = fit.check(parsed(report(measured=60)))
    assert c.error == pytest.approx((43 - 60) / 60)
    assert not c.within


def test_a_ramp_in_steps_measures_a_range_and_the_prediction_is_judged_against_it() -> None:
    """Held at 10, failed at 15: the capacity is 10 to 14, and 12 predicted is no error."""
    sessions = (0, 5, 10, 15, 20)
    c = fit.check(parsed(report(measured=10, sessions=sessions)))
    assert c.failed_at == 15 and c.measured_top == 14
    inside = fit.Check(dataclasses.replace(c.predicted, sessions=12), 10, c.measured_limit, 15)
    assert inside.error == 0.0 and inside.within
    over = fit.Check(dataclasses.replace(c.predicted, sessions=17), 10, c.measured_limit, 15)
    assert over.error == pytest.approx((17 - 14) / 14) and not over.within
    under = fit.Check(dataclasses.replace(c.predicted, sessions=8), 10, c.measured_limit, 15)
    assert under.error == pytest.approx(-0.2) and not under.within


def test_a_ramp_that_ended_first_makes_the_measure_a_floor() -> None:
    c = fit.check(parsed(report(limit="ramp_end", measured=30)))
    assert c.lower_bound and c.within  # 43 predicted, at least 30 measured


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (lambda d: d["browser"].pop("samples"), "browser.samples"),
        (lambda d: d["machine"].pop("cores"), "machine.cores"),
        (lambda d: d["browser"].update(limit="bored"), "browser.limit"),
        (lambda d: d["browser"].update(samples=d["browser"]["samples"][:1]), "two different"),
        (lambda d: d["browser"]["thresholds"].update(cpu_saturation="x"), "cpu_saturation"),
    ],
)
def test_an_unusable_report_names_what_is_wrong(cut: Any, message: str) -> None:
    data = report()
    cut(data)
    with pytest.raises(fit.ReportError, match=message):
        parsed(data)
    with pytest.raises(fit.ReportError, match="not JSON"):
        fit.parse_report("{", "x")


def test_the_model_is_the_load_tests_when_present_else_the_benchmarks(tmp_path: Path) -> None:
    path = tmp_path / "loadtest.json"
    fallback = fit.model(path, BENCHMARKS)
    assert fallback.report is None and fallback.figures.qr is None
    assert fallback.figures.memory_source == "docs/benchmarks.md, sandbox page"
    path.write_text(json.dumps(report()))
    fitted = fit.model(path, BENCHMARKS)
    assert fitted.report is not None and fitted.figures.qr is not None
    assert fitted.source == f"load test ({path})"
    path.write_text("{}")
    with pytest.raises(fit.ReportError):
        fit.model(path, BENCHMARKS)


def test_a_negative_cpu_intercept_reads_the_qr_curve_on_the_line_it_predicts_with() -> None:
    """Noisy low CPU readings can fit a line below zero at zero sessions. The prediction clamps
    that base to 0, so the QR curve must place its samples on the clamped line too: read on
    the unclamped one it put the QR limit 20 % early (16 predicted against 20 measured)."""
    # cpu = -0.3 + 0.06 n; QR p95 passes 1.5 s at share 0.45 + 1.2 / 8 = 0.6, i.e. n = 25
    r = parsed(
        report(cpu_base=-0.3, cpu_per=0.06, knee=0.45, sessions=(5, 10, 15, 20, 25, 30, 35, 40))
    )
    figs = fit.fit(r)
    assert figs.cpu_base == 0.0
    capacity = p.capacity(2, 8, figs, 0.2)
    assert capacity.by_qr is not None and 24 <= capacity.by_qr <= 25, capacity


def test_the_committed_load_test_is_predicted_within_15_percent() -> None:
    if not COMMITTED.is_file():
        pytest.skip(
            "docs/loadtest.json is not committed yet (`make loadtest` writes it); the planner "
            "plans from docs/benchmarks.md until then"
        )
    r = fit.load_report(COMMITTED)
    assert r is not None
    c = fit.check(r)
    assert c.within, (
        f"predicted {c.predicted.sessions} sessions per node ({c.predicted.bound}) against "
        f"{c.measured} measured ({c.measured_bound}) on {r.cores:g} cores: {c.error:+.1%}"
    )


def test_the_machines_other_memory_counts_in_the_check_when_the_report_says_it() -> None:
    """The load test's headroom is machine-wide: its router, Redis and load generator hold
    memory too. With each sample's headroom, the check counts it; a node host does not."""
    data = report(memory_gib=4, knee=5.0, limit="memory_headroom", measured=20)
    other = 1 * p.GIB
    for s in data["browser"]["samples"]:
        s["headroom"] = 1 - (s["memory_bytes"] + other) / (4 * p.GIB)
    r = parsed(data)
    assert r.other_memory == pytest.approx(other, rel=1e-6)
    c = fit.check(r)
    # (0.8 x 4 GiB - 1 GiB - 400 MiB) / 60 MiB = 30.9, not the 47 a bare node would hold
    assert c.predicted.bound == p.MEMORY and c.predicted.sessions == 30
    assert p.capacity(4, 4, fit.fit(r), 0.2).by_memory == 47
    del data["browser"]["samples"][0]["headroom"]
    assert parsed(data).other_memory is None  # only when every sample says it


def test_samples_after_the_node_lost_sessions_are_not_fitted() -> None:
    """A starved node let leases lapse and fell from 15 sessions to 4; the rows after that
    measure its recovery (slow QR at little CPU), and fitted with the ramp they put the
    first-QR limit at 4 sessions where the ramp held 10."""
    data = report(sessions=(0, 10, 20, 30))
    ramp_only = fit.fit(parsed(data))
    data["browser"]["samples"] += [
        {"sessions": 5, "memory_bytes": 900 * p.MIB, "cpu_cores": 0.1, "first_qr_p95_s": 9.0},
        {"sessions": 12, "memory_bytes": 1500 * p.MIB, "cpu_cores": 0.5, "first_qr_p95_s": 6.0},
    ]
    with_recovery = parsed(data)
    assert [s.sessions for s in with_recovery.samples] == [0, 10, 20, 30]
    assert fit.fit(with_recovery) == ramp_only
