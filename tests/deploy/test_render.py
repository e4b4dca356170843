"""deploy/k8s/render.py: the committed patches are what the model renders, and the model adds up."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.deploy.conftest import ROOT

MIB = 2**20

SAMPLE = """
| READY sessions | Chromium PSS | with no session | PSS per session | CPU while idle | CPU per session |
|---|---|---|---|---|---|
| 20 | 690 MiB | 150 MiB | 25.1 MiB | 0.014 cores | 0.0006 cores |
| 50 | 10200 MiB | 200 MiB | 200.0 MiB | 0.056 cores | 0.0011 cores |

For the tier planner (at 50 READY sessions): per-session memory: 200.0 MiB; per-session CPU: 0.02 cores (idle).

| auth | restores | p50 | p95 | max |
|---|---|---|---|---|
| LocalAuth | 15 | 0.157 s | 0.199 s | 0.233 s |
| RemoteAuth | 15 | 0.300 s | 0.400 s | 0.500 s |

| settings | sessions per node | killed | back READY | p50 | p95 | max | sandbox conflicts |
|---|---|---|---|---|---|---|---|
| fast | a | b | c | 5.12 s | 5.46 s | 5.46 s | 0 |
| default | a | b | c | 7.10 s | 8.00 s | 8.13 s | 0 |
"""


def test_committed_patches_are_what_the_model_renders(render_module: ModuleType) -> None:
    for path, text in render_module.rendered(render_module.current_figures()).items():
        rel = path.relative_to(ROOT)
        assert path.exists(), f"{rel} is missing: run `make deploy-render`"
        assert path.read_text() == text, f"{rel} is stale: run `make deploy-render` and commit it"


def test_figures_are_read_from_the_benchmark_tables(render_module: ModuleType) -> None:
    f = render_module.parse_figures(SAMPLE)
    assert f.session_memory == 200 * MIB
    assert f.session_cpu == pytest.approx(0.02)
    assert f.browser_base == 200 * MIB  # the row with the most sessions
    assert f.handoff_seconds == pytest.approx(0.4)  # RemoteAuth restore p95, until measured
    assert f.failover_seconds == pytest.approx(8.0)
    measured = render_module.parse_figures(
        SAMPLE + "\nbrowser base: 180 MiB; hand-off per session: 0.9 s\n"
    )
    assert measured.browser_base == 180 * MIB
    assert (measured.handoff_seconds, measured.handoff_source) == (0.9, "hand-off per session")


@pytest.mark.parametrize(
    "cut",
    ["per-session memory", "with no session", "| RemoteAuth", "| default"],
)
def test_a_missing_figure_is_named(render_module: ModuleType, cut: str) -> None:
    text = "\n".join(line for line in SAMPLE.splitlines() if cut not in line)
    with pytest.raises(render_module.FigureMissing):
        render_module.parse_figures(text)


def test_pod_size_adds_up_per_session_times_max_plus_the_base(render_module: ModuleType) -> None:
    r = render_module
    pod = r.NodePod(max_sessions=50, figures=r.parse_figures(SAMPLE), shutdown_grace=10.0)
    base = (r.NODE_PROCESS_MEMORY + 200 * MIB) / MIB
    assert pod.memory_request == base + 50 * 200  # MiB
    assert pod.memory_limit == -(-pod.memory_request // 0.8) + r.SHM_SIZE // MIB
    assert pod.cpu_request == 1500  # reserve 0.5 + 0.02 x 50 cores
    assert pod.handoff_rounds == 13  # 50 sessions, 4 at a time
    assert pod.drain_seconds == pytest.approx(13 * 0.4 + 10)
    assert pod.grace_seconds == 26  # ceil(2 x 13 x 0.4 + 10 + 5)
    assert pod.sessions_target == 40
    assert pod.scale_down_period == 60  # 26 + 8 s, rounded up to 30 s, at least 60


def test_a_heavier_page_grows_the_pod_not_the_session_count(render_module: ModuleType) -> None:
    r = render_module
    light = r.NodePod(50, r.parse_figures(SAMPLE.replace("200.0 MiB;", "23.0 MiB;")), 10.0)
    heavy = r.NodePod(50, r.parse_figures(SAMPLE), 10.0)
    assert heavy.memory_request - light.memory_request == pytest.approx(50 * 177, abs=1)
    assert heavy.sessions_target == light.sessions_target
