"""Latency: time to first QR and to READY, p50/p95/p99 by phase and auth strategy."""

from __future__ import annotations

import streamlit as st

from console import metrics, ui
from console.client import attempt
from console.planner import SEED_QR_SECONDS
from sessionmesh.v1 import mesh_pb2


@st.cache_data(ttl=15, show_spinner="Reading latency histograms…")
def load(router: str, token: str) -> bytes:
    """The tenant's histograms from the router (one call; cached 15 s), serialized.

    The arguments are the cache key only: one entry per router and tenant.
    """
    del router, token
    return ui.client().latency().SerializeToString()


def seed_line(strategy: str) -> str:
    lo, hi = SEED_QR_SECONDS["remoteauth" if strategy == "RemoteAuth" else "localauth"]
    return f"{lo}-{hi} s"


def render() -> None:
    st.title("Latency")
    st.caption(
        "From the nodes' latency histograms (the buckets of mesh_time_to_first_qr and "
        "mesh_time_to_ready), summed by the router over its nodes since each started; "
        "quantiles are interpolated within buckets as Prometheus' histogram_quantile does."
    )
    if st.button("Refresh", icon=":material/refresh:"):
        load.clear()
    raw, error = attempt(lambda: load(ui.settings().router, ui.settings().token))
    if error is not None:
        ui.show_error(error)
        return
    assert raw is not None
    got = mesh_pb2.Latency.FromString(raw)
    summaries = metrics.summarize(got.histograms)
    st.caption(f"{got.nodes} node(s) answered; refreshed every 15 s.")
    if got.unreachable:
        st.warning(
            f"{len(got.unreachable)} node(s) did not answer; their figures are missing: "
            f"{', '.join(got.unreachable[:5])}"
        )
    if not summaries:
        st.info("No session has reached its first QR or READY since the nodes started.")
        return

    st.subheader("Time to first QR: LocalAuth against RemoteAuth")
    first = [s for s in summaries if s.phase == metrics.FIRST_QR]
    cols = st.columns(max(1, len(first)))
    for col, s in zip(cols, first, strict=False):
        col.metric(
            f"{s.strategy}: p50 to first QR",
            f"{s.p50:.1f} s",
            f"p95 {s.p95:.1f} s, p99 {s.p99:.1f} s",
            delta_color="off",
            delta_arrow="off",
        )
        col.caption(f"{s.count} runs. The seed estimates {seed_line(s.strategy)} (§4.1).")

    st.subheader("By phase")
    rows = [
        {
            "phase": s.phase,
            "auth": s.strategy,
            "runs": s.count,
            "p50 (s)": round(s.p50, 2),
            "p95 (s)": round(s.p95, 2),
            "p99 (s)": round(s.p99, 2),
            "mean (s)": round(s.mean, 2),
        }
        for s in summaries
    ]
    st.dataframe(rows, hide_index=True, width="stretch")
    st.caption(
        "To READY with a QR scan includes the time the person took to scan. Restored runs "
        "reached READY from a saved login, with no QR. A single session's own timeline is on "
        "the Sessions page (its event history)."
    )
    st.bar_chart(
        {
            q: {f"{metrics.SHORT[s.phase]} · {s.strategy}": getattr(s, q) for s in summaries}
            for q in ("p50", "p95", "p99")
        },
        stack=False,
        horizontal=True,
        y_label="seconds",
        width="stretch",
    )


ui.require_login()
render()
