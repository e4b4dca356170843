"""`make loadtest` in its smoke form: the real command, its own Redis, sandbox (light page: a
smoke run, never a capacity figure), browser-backed and simulated nodes, routers, Locust and the
console; the report and the JSON the planner reads have every field, with sane figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]
PAGES = {"overview", "latency", "sessions", "planner", "webhooks"}
CALLS = {"GetClusterStatus", "ListSessions (all pages)", "GetLatency", "GetSession",
         "WatchSession (history replay)"}  # fmt: skip


@pytest.mark.timeout(420)
def test_smoke_loadtest_writes_report_and_json(tmp_path: Path) -> None:
    out = tmp_path / "report"
    log = tmp_path / "loadtest.log"
    with log.open("wb") as f:
        proc = subprocess.run(
            [sys.executable, "-m", "loadtest.run", "--profile", "smoke", "--out", str(out),
             "--workdir", str(tmp_path / "work")],
            cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=400,
        )  # fmt: skip
    output = log.read_text(errors="replace")
    assert proc.returncode == 0, output

    data = json.loads((out / "loadtest.json").read_text())
    assert set(data) == {"generated", "command", "profile", "machine", "page_weight", "browser",
                         "control_plane", "console_pages_s", "console_calls_s"}, data  # fmt: skip
    assert data["profile"] == "smoke" and data["page_weight"] == "light"
    assert set(data["machine"]) == {"cores", "memory_bytes", "load_before"}
    assert data["machine"]["cores"] >= 1 and data["machine"]["memory_bytes"] > 0

    browser = data["browser"]
    assert browser["limit"] in ("first_qr_p95", "memory_headroom", "cpu", "ramp_end")
    assert browser["sessions_per_node"] > 0
    assert browser["thresholds"] == {
        "first_qr_p95_s": 1.5,
        "memory_headroom": 0.2,
        "cpu_saturation": browser["thresholds"]["cpu_saturation"],
    }
    assert 0 < browser["thresholds"]["cpu_saturation"] <= 1
    assert browser["samples"], browser
    for s in browser["samples"]:
        assert set(s) == {"sessions", "memory_bytes", "cpu_cores", "first_qr_p95_s"}
        assert s["sessions"] > 0 and s["memory_bytes"] > 50 * 2**20
        assert s["cpu_cores"] >= 0 and 0 < s["first_qr_p95_s"] < 60

    cp = data["control_plane"]
    assert set(cp) == {"users", "active_accounts", "browser_sessions", "simulated_sessions",
                       "success_rate", "first_qr_s", "ready_s", "redis_ops_per_s", "failover_s",
                       "router_cpu_cores", "router_memory_bytes"}  # fmt: skip
    assert cp["active_accounts"] == round(cp["users"] * 0.1)
    assert cp["browser_sessions"] > 0 and cp["simulated_sessions"] > 0
    assert cp["success_rate"] == 1.0, output
    for key in ("first_qr_s", "ready_s"):
        p = cp[key]
        assert 0 < p["p50"] <= p["p95"] <= p["p99"] < 120, (key, p)
    assert cp["first_qr_s"]["p50"] < cp["ready_s"]["p50"]
    assert cp["redis_ops_per_s"] > 0
    assert cp["failover_s"] is not None and 0 < cp["failover_s"] < 90, output
    assert cp["router_cpu_cores"] >= 0 and cp["router_memory_bytes"] > 10 * 2**20

    assert set(data["console_pages_s"]) == PAGES
    for page, seconds in data["console_pages_s"].items():
        assert seconds is not None and 0 < seconds < 30, (page, seconds)
    assert set(data["console_calls_s"]) == CALLS
    for call, seconds in data["console_calls_s"].items():
        assert seconds is not None and 0 < seconds < 30, (call, seconds)

    md = (out / "loadtest.md").read_text()
    assert "Smoke run (tests only)" in md
    for heading in ("Browser-backed capacity", "Control plane", "Console while the load runs"):
        assert heading in md
    assert "Simulated" in md and "Browser-backed" in md
    for png in ("sessions.png", "memory.png", "latency.png"):
        assert (out / "loadtest" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "loadtest" / "locust-control-plane_stats.csv").exists()
    assert "SendMessage" in (out / "loadtest" / "locust-control-plane_stats.csv").read_text()


def test_smoke_refuses_to_write_into_docs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest.run", "--profile", "smoke"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0 and "smoke" in proc.stderr
