"""Latency: time to first QR and to READY, p50/p95/p99 by phase and auth strategy."""

from __future__ import annotations

import streamlit as st

from console import metrics, replay, ui
from console.client import attempt
from console.planner import SEED_QR_SECONDS

WINDOWS = {
    "last 15 minutes": 15 * 60,
    "last hour": 3600,
    "last 6 hours": 6 * 3600,
    "last 24 hours": 24 * 3600,
    "everything retained": 0,
}


@st.cache_data(ttl=15, show_spinner="Replaying session event logs…")
def load(router: str, token: str) -> replay.Loaded:
    """Every recent session's retained log, replayed and split into runs (cached 15 s).

    The arguments are the cache key only: one entry per router and tenant.
    """
    del router, token
    return replay.replay_all(ui.client())


def seed_line(strategy: str) -> str:
    lo, hi = SEED_QR_SECONDS["remoteauth" if strategy == "RemoteAuth" else "localauth"]
    return f"{lo}-{hi} s"


def render() -> None:
    st.title("Latency")
    st.caption(
        "Measured from each session's retained event log (WatchSession from seq 0): "
        "STARTING, the first QR, AUTHENTICATED and READY, split by auth strategy."
    )
    left, right = st.columns([3, 1])
    window = left.selectbox("Window (runs started in)", list(WINDOWS), index=4)
    if right.button("Refresh", icon=":material/refresh:"):
        load.clear()
    loaded, error = attempt(lambda: load(ui.settings().router, ui.settings().token))
    if error is not None:
        ui.show_error(error)
        return
    assert loaded is not None
    since = loaded.at - WINDOWS[window] if WINDOWS[window] else 0.0
    summaries = metrics.summarize(loaded.runs, since)
    st.caption(
        f"{loaded.replayed} of {loaded.sessions} sessions replayed (the {replay.MAX_SESSIONS} most "
        f"recently updated at most), {len(loaded.runs)} runs; refreshed every 15 s."
    )
    if loaded.failed:
        st.warning(
            f"{len(loaded.failed)} event logs could not be read: {', '.join(loaded.failed[:5])}"
        )
    if not summaries:
        st.info("No session has reached its first QR or READY in this window yet.")
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
            "max (s)": round(s.worst, 2),
        }
        for s in summaries
    ]
    st.dataframe(rows, hide_index=True, width="stretch")
    st.caption(
        "First QR → AUTHENTICATED is the time the person took to scan: it measures people, "
        "not the mesh. Restored runs reached READY from a saved login, with no QR."
    )
    charted = [s for s in summaries if s.phase != metrics.SCAN]
    st.bar_chart(
        {
            q: {f"{metrics.SHORT[s.phase]} · {s.strategy}": getattr(s, q) for s in charted}
            for q in ("p50", "p95", "p99")
        },
        stack=False,
        horizontal=True,
        y_label="seconds",
        width="stretch",
    )


ui.require_login()
render()
