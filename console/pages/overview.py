"""Overview: nodes with health, sessions against capacity, memory, states and warnings."""

from __future__ import annotations

import time

import streamlit as st

from console import metrics, ui
from console.client import attempt
from sessionmesh.v1 import common_pb2 as pb

FAILURE_WINDOW = 15 * 60.0  # seconds: the "recent" part of the QR failure trend


def render() -> None:
    st.title("Overview")
    if st.button("Refresh", icon=":material/refresh:"):
        st.rerun()
    api = ui.client()
    nodes, error = attempt(api.cluster)
    if error is not None:
        ui.show_error(error)
        return
    assert nodes is not None
    sessions, error = attempt(api.sessions)
    if error is not None:
        ui.show_error(error)
    sessions = sessions or []
    ov = metrics.overview(nodes, sessions, time.time(), FAILURE_WINDOW)

    cols = st.columns(4)
    cols[0].metric("Nodes serving", f"{ov.serving} / {ov.nodes}")
    cols[1].metric(
        "Sessions held / capacity",
        f"{ov.sessions} / {ov.capacity}",
        f"{ov.use:.0%} used",
        delta_color="off",
        delta_arrow="off",
    )
    cols[2].metric("Browser memory", ui.mib(ov.memory_bytes))
    per_session = metrics.per_session_memory(nodes)
    cols[3].metric("Memory per session", ui.mib(per_session) if per_session else "-")

    st.subheader("Warnings")
    if not ov.warnings:
        st.success("No warnings: every node is serving and below 80% of its capacity.")
    for w in ov.warnings:
        (st.error if w.level == "error" else st.warning)(w.text)

    st.subheader("Nodes")
    st.dataframe(
        [
            {
                "node": n.node_id or "-",
                "address": n.address,
                "health": pb.NodeHealth.Name(n.health),
                "sessions": n.sessions,
                "capacity": n.capacity,
                "use": n.sessions / n.capacity if n.capacity else 0.0,
                "memory (MiB)": round(n.memory_bytes / 2**20),
                "WhatsApp Web": n.wa_version or "-",
                "missing hooks": len(n.missing_hooks),
            }
            for n in nodes
        ],
        column_config={
            "use": st.column_config.ProgressColumn(
                "use", format="percent", min_value=0, max_value=1
            )
        },
        hide_index=True,
        width="stretch",
    )

    st.subheader("Sessions by state")
    counts = metrics.by_state(sessions)
    if not counts:
        st.info("This tenant has no sessions yet.")
        return
    left, right = st.columns([2, 1])
    left.bar_chart({"sessions": counts}, horizontal=True, y_label="sessions", width="stretch")
    right.dataframe([{"state": k, "sessions": v} for k, v in counts.items()], hide_index=True)
    failed = sum(metrics.is_qr_failure(s) for s in sessions)
    right.caption(
        f"{failed} of {len(sessions)} sessions failed with '{metrics.QR_EXHAUSTED}' "
        f"({failed / len(sessions):.0%})."
    )


ui.require_login()
render()
