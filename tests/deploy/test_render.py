"""deploy/k8s/render.py: the committed patches are what the model renders, and the model adds up."""

from __future__ import annotations

import json
from pathlib import Path
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


def test_the_overlays_are_the_planners_plans_for_their_inputs(render_module: ModuleType) -> None:
    """The console's planner, given an overlay's inputs, shows what the overlay renders."""
    from console import fit, planner

    r = render_module
    model = fit.model(r.LOADTEST, r.BENCHMARKS).figures
    for overlay in r.OVERLAYS:
        plan = planner.plan(
            overlay.users,
            overlay.active_share,
            overlay.cores,
            overlay.ram_gb,
            planner.REMOTE if overlay.autoscale else planner.LOCAL,
            model,
        )
        folder = ROOT / "deploy" / "k8s" / "overlays" / overlay.name
        env = r.read_env(folder / "node-sizing.env")
        snippet = dict(
            line.split("=", 1) for line in plan.mesh_env.splitlines() if not line.startswith("#")
        )
        assert env["MAX_CONCURRENT_SESSIONS"] == snippet["MAX_CONCURRENT_SESSIONS"]
        resources = (folder / "node-resources.yaml").read_text()
        assert f"memory: {plan.pod.memory_request}Mi" in resources
        assert f"memory: {plan.pod.memory_limit}Mi" in resources
        assert f"cpu: {plan.pod.cpu_request}m" in resources
        if overlay.autoscale:
            scaling = (folder / "node-autoscaling.yaml").read_text()
            low, high = plan.replicas
            assert f"minReplicaCount\n  value: {low}\n" in scaling
            assert f"maxReplicaCount\n  value: {high}\n" in scaling
            assert f'value: "{plan.pod.sessions_target}"' in scaling
        else:
            assert "replicas: 1" in resources
            assert (plan.nodes == 1) == ("WARNING: one node holds only" not in resources)


def test_a_load_test_report_sizes_the_pods_from_its_fitted_model(
    render_module: ModuleType, tmp_path: Path
) -> None:
    from console import fit
    from tests.console.test_fit import report

    path = tmp_path / "loadtest.json"
    path.write_text(json.dumps(report(memory_gib=8, base_mib=400, per_mib=60)))
    loaded = fit.load_report(path)
    figures = render_module.parse_figures(SAMPLE, loaded)
    assert figures.browser_base is None and figures.session_memory == pytest.approx(60 * MIB)
    pod = render_module.NodePod(max_sessions=40, figures=figures, shutdown_grace=10.0)
    assert pod.memory_request == 400 + 40 * 60  # fitted base + per session x MAX, in MiB
    assert pod.cpu_request == 1400  # 0.2 + 0.03 x 40 cores
    assert "fitted base 400 MiB" in render_module.derivation(pod)
    assert figures.handoff_seconds == pytest.approx(0.4)  # drain figures still from the bench
