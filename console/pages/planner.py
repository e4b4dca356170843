"""Tier planner: the seed's tiers for your users and machines, sized by this mesh's measurements."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from console import fit, metrics, planner, ui
from console.client import attempt

DOCS = Path(__file__).resolve().parents[2] / "docs"
BENCHMARKS = Path(os.environ.get("MESH_BENCHMARKS") or DOCS / "benchmarks.md")
LOADTEST = Path(os.environ.get("MESH_LOADTEST") or DOCS / "loadtest.json")
STRATEGIES = {
    "Auto (the seed's choice for the tier)": planner.AUTO,
    "LocalAuth": planner.LOCAL,
    "RemoteAuth": planner.REMOTE,
}


def money(lo: int, hi: int | None) -> str:
    return f"${lo:,}+" if hi is None else f"${lo:,}-{hi:,}"


def figures() -> tuple[planner.Figures, fit.LoadReport | None]:
    """The load test's fitted model when its report exists, else the older sources."""
    try:
        report = fit.load_report(LOADTEST)
        if report is not None:
            return fit.fit(report), report
    except fit.ReportError as e:
        st.warning(f"{LOADTEST} is unusable ({e}); planning from docs/benchmarks.md.")
    nodes, error = attempt(ui.client().cluster)
    if error is not None:
        st.caption(f"Live figures unavailable ({error.code}); using the next source.")
    memory, sessions = metrics.live_memory(nodes or [])
    live = memory / sessions if sessions else None
    m = fit.model(None, BENCHMARKS, live, sessions)
    return m.figures, m.report


def show_model(figs: planner.Figures, report: fit.LoadReport | None) -> None:
    """Where the model comes from and, with a load test, predicted against measured."""
    st.subheader("Model")
    if report is None:
        st.info(
            f"No load-test report ({LOADTEST.name}): sessions per node come from per-session "
            f"figures alone (memory: {figs.memory_source}; CPU: {figs.cpu_source}), without a "
            "first-QR limit. `make loadtest` measures them."
        )
        return
    c = fit.check(report, figs)
    st.caption(
        f"Fitted from {report.path} ({report.command or 'load test'}, {report.generated}): "
        f"memory = {ui.mib(figs.memory_base)} + {ui.mib(figs.memory_bytes)} per session, "
        f"CPU = {figs.cpu_base:.2f} + {figs.cpu_cores:.4f} cores per session (least squares over "
        f"{len(report.samples)} samples); first-QR p95 against the node's CPU share of the "
        f"machine, limit {figs.qr_limit:g} s; CPU saturation at {figs.cpu_saturation or 0:.0%}."
    )
    if report.other_memory:
        st.caption(
            f"The load-test machine's other processes (OS, router, Redis, sandbox, load "
            f"generator) held {ui.mib(report.other_memory)}: counted against it in this check, "
            "not on a node host."
        )
    verdict = "within" if c.within else "outside"
    if c.lower_bound:
        measured = f"{c.measured} (at least: the ramp ended first)"
    elif c.measured_top > c.measured:
        measured = f"{c.measured} to {c.measured_top}: held {c.measured}, failed at {c.failed_at}"
    else:
        measured = f"{c.measured}"
    st.table(
        hide_index=True,
        data={
            "load-test machine": [
                f"{report.cores:g} cores, {report.ram_gb:.1f} GiB, "
                f"{report.memory_headroom:.0%} memory headroom"
            ],
            "predicted sessions per node": [
                f"{c.predicted.sessions} (first limit: {c.predicted.bound})"
            ],
            "measured": [f"{measured} (limit: {c.measured_bound})"],
            "error": [f"{c.error:+.1%} ({verdict} ±{fit.TOLERANCE:.0%})"],
        },
    )


def kubernetes(p: planner.Plan) -> str:
    """The node StatefulSet's sizing and replicas for this plan, from the same model."""
    pod = p.pod
    low, high = p.replicas
    replicas = (
        f"replicas: {low}"
        if low == high
        else f"# autoscaler (KEDA): minReplicaCount {low}, maxReplicaCount {high},\n"
        f"# target {pod.sessions_target} sessions per node"
    )
    return (
        f"{replicas}\n"
        f"# MAX_CONCURRENT_SESSIONS={pod.max_sessions}\n"
        "resources:\n"
        f"  requests: {{cpu: {pod.cpu_request}m, memory: {pod.memory_request}Mi}}\n"
        f"  limits: {{memory: {pod.memory_limit}Mi}}"
    )


def render() -> None:
    st.title("Tier planner")
    st.caption(
        "The tiers, thresholds and prices of the Redis scalability analysis (the seed), with "
        "sessions per node computed from what this mesh measured."
    )
    with st.form("inputs", border=True):
        c1, c2, c3 = st.columns(3)
        users = c1.number_input("Users", min_value=1, max_value=1_000_000, value=1000, step=100)
        share = c1.slider(
            "Active WhatsApp accounts (% of users)", 1, 100, 10, help="The seed: 5-10%"
        )
        cores = c2.number_input("Cores per machine", min_value=1, max_value=256, value=4)
        ram = c2.number_input("RAM per machine (GB)", min_value=1, max_value=2048, value=8)
        strategy = c3.radio("Auth strategy", list(STRATEGIES))
        headroom = c3.slider("Headroom kept free (%)", 0, 50, 20)
        st.form_submit_button("Plan", type="primary")

    figs, report = figures()
    p = planner.plan(
        int(users),
        share / 100,
        float(cores),
        float(ram),
        STRATEGIES[str(strategy)],
        figs,
        headroom / 100,
    )

    st.subheader(f"{p.tier.name}")
    st.caption(f"The seed: {p.tier.seed}. Scale: {p.tier.seed_scale}.")
    m = st.columns(4)
    m[0].metric("Active accounts", f"{p.active:,}")
    m[1].metric(
        "Sessions per node",
        p.capacity.sessions,
        f"bound by {p.capacity.bound}",
        delta_color="off",
        delta_arrow="off",
    )
    m[2].metric(
        "Nodes",
        p.nodes,
        f"{p.nodes_needed} needed + spare" if p.nodes > p.nodes_needed else None,
        delta_color="off",
        delta_arrow="off",
    )
    m[3].metric("Monthly cost (nodes + Redis)", money(*p.cost))
    for note in p.notes:
        st.warning(note)

    ours, seed = st.columns(2)
    with ours:
        st.markdown("**This plan (measured)**")
        st.table(
            hide_index=True,
            data={
                "item": [
                    "Auth strategy",
                    "Redis",
                    "Per-session memory",
                    "Per-session CPU",
                    "Sessions per node",
                    "Nodes",
                    "Monthly cost",
                ],
                "value": [
                    p.auth,
                    p.redis,
                    f"{ui.mib(p.figures.memory_bytes)} ({p.figures.memory_source})",
                    f"{p.figures.cpu_cores:.3g} cores ({p.figures.cpu_source})",
                    f"{p.capacity.sessions} (memory allows {p.capacity.by_memory}, "
                    f"CPU {p.capacity.by_cpu}"
                    + ("" if p.capacity.by_qr is None else f", first QR {p.capacity.by_qr}")
                    + f", {headroom}% memory headroom)",
                    f"{p.nodes}",
                    f"{money(*p.cost)} for the mesh nodes and Redis",
                ],
            },
        )
    with seed:
        st.markdown("**The seed's own figures**")
        s = p.seed
        st.table(
            hide_index=True,
            data={
                "item": [
                    "Tier",
                    "Active accounts",
                    "Sessions per server",
                    "Servers",
                    "QR time",
                    "Monthly cost",
                    "Machine",
                ],
                "value": [
                    s.tier.name,
                    f"{s.active[0]:,}-{s.active[1]:,} (5-10% of users, §2.1)",
                    f"~{s.sessions_per_server} (MAX_CONCURRENT_SESSIONS)",
                    f"{s.servers}",
                    f"{s.qr_seconds[0]}-{s.qr_seconds[1]} s (§4.1)",
                    f"{money(*s.tier.seed_cost)} (whole stack: app, DB, load balancer)",
                    "4-8 cores, 8-16 GB (§2.1)",
                ],
            },
        )

    show_model(figs, report)

    st.subheader("Environment")
    e1, e2 = st.columns(2)
    with e1:
        st.markdown("**Mesh nodes** (`whatsapp-service/.env` in the seed)")
        st.code(p.mesh_env, language="bash")
        st.markdown("**Router**")
        st.code(p.router_env, language="bash", wrap_lines=True)
    with e2:
        st.markdown("**Laravel app** (`.env`)")
        st.code(p.laravel_env, language="bash")
        st.markdown("**Kubernetes** (what `make deploy-render` renders for these inputs)")
        st.code(kubernetes(p), language="yaml")

    st.subheader("All tiers")
    st.table(
        [
            {
                "tier": ("▶ " if t is p.tier else "") + t.name,
                "auth": t.auth,
                "Redis": t.redis,
                "scale (seed)": t.seed_scale,
                "monthly (seed)": money(*t.seed_cost),
            }
            for t in planner.TIERS
        ],
        hide_index=True,
    )


ui.require_login()
render()
