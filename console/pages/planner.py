"""Tier planner: the seed's tiers for your users and machines, sized by this mesh's measurements."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from console import metrics, planner, ui
from console.client import attempt

BENCHMARKS = Path(
    os.environ.get("MESH_BENCHMARKS") or Path(__file__).resolve().parents[2] / "docs/benchmarks.md"
)
STRATEGIES = {
    "Auto (the seed's choice for the tier)": planner.AUTO,
    "LocalAuth": planner.LOCAL,
    "RemoteAuth": planner.REMOTE,
}


def money(lo: int, hi: int | None) -> str:
    return f"${lo:,}+" if hi is None else f"${lo:,}-{hi:,}"


def figures() -> planner.Figures:
    bench = None
    if BENCHMARKS.is_file():
        bench = planner.parse_benchmarks(BENCHMARKS.read_text(encoding="utf-8"))
    nodes, error = attempt(ui.client().cluster)
    if error is not None:
        st.caption(f"Live figures unavailable ({error.code}); using the next source.")
    memory, sessions = metrics.live_memory(nodes or [])
    return planner.resolve_figures(bench, memory / sessions if sessions else None, sessions)


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

    figs = figures()
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
                    f"{p.figures.cpu_cores:.2f} cores ({p.figures.cpu_source})",
                    f"{p.capacity.sessions} (memory allows {p.capacity.by_memory}, "
                    f"CPU {p.capacity.by_cpu}, {headroom}% headroom)",
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
