"""Sessions: search, open one for its live QR and event history, stop, log out or drain."""

from __future__ import annotations

import datetime as dt
import time

import streamlit as st

from console import metrics, ui
from console.client import MeshClient, attempt
from sessionmesh.v1 import common_pb2 as pb

LIVE = (pb.STARTING, pb.SCAN_QR_CODE, pb.AUTHENTICATED)  # states worth refreshing for
REFRESH_SECONDS = 2.0
PENDING = "sessions.pending"  # session_state key: (action, target) awaiting confirmation
DONE = "sessions.done"  # session_state key: the last action's outcome, shown once

ACTIONS = {
    "stop": ("Stop", "Stops the browser and keeps the login: the session can start again."),
    "logout": ("Log out", "Unlinks the device from the phone and deletes the login."),
    "drain": ("Drain node", "Moves the node's sessions away and stops placing new ones on it."),
}


def event_rows(events: list[pb.SessionEvent]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for ev in events:
        kind = ev.WhichOneof("event")
        if kind == "qr":
            detail = f"QR attempt {ev.qr.attempt}, expires {ui.when(ev.qr.expires_at)}"
        elif kind == "state":
            detail = metrics.state_name(ev.state.state)
            if ev.state.reason:
                detail += f" ({ev.state.reason})"
        else:
            detail = f"loading {ev.loading.percent}%"
        rows.append({"seq": ev.seq, "time": ui.when(ev.time), "event": kind, "detail": detail})
    return rows


def live_view(api: MeshClient, session_id: str, shown_state: int) -> None:
    """The session's state, its QR while one shows, and its event log; reruns on a timer."""
    session, error = attempt(lambda: api.session(session_id))
    if error is not None:
        ui.show_error(error)
        return
    assert session is not None
    if session.state != shown_state:
        st.rerun(scope="app")  # the page's actions depend on the state
    events, error = attempt(lambda: api.history(session))
    if error is not None:
        ui.show_error(error)
        events = []
    assert events is not None
    left, right = st.columns([1, 2])
    with left:
        qrs = [e for e in events if e.WhichOneof("event") == "qr"]
        if session.state == pb.SCAN_QR_CODE and qrs:
            qr = qrs[-1].qr
            left_s = metrics.seconds(qr.expires_at) - time.time()
            st.image(
                ui.qr_png(qr.code),
                caption=f"QR attempt {qr.attempt}: scan it with WhatsApp "
                + (
                    f"(expires in {left_s:.0f} s)" if left_s > 0 else "(expired; a new one follows)"
                ),
                width=280,
            )
        elif session.state in LIVE:
            st.info(f"{metrics.state_name(session.state)}: no QR to show right now.")
        else:
            st.info(f"No QR: the session is {metrics.state_name(session.state)}.")
        st.caption(f"Updated {dt.datetime.now():%H:%M:%S}")
    with right:
        st.markdown(f"**Event history** ({len(events)} events retained)")
        st.dataframe(list(reversed(event_rows(events))), hide_index=True, width="stretch")


def ask(action: str, target: str) -> None:
    st.session_state[PENDING] = (action, target)


def confirm_step(api: MeshClient) -> None:
    """The confirmation for a pending action; the action runs only when confirmed."""
    pending = st.session_state.get(PENDING)
    if not pending:
        return
    action, target = pending
    if not ui.is_operator():
        st.session_state.pop(PENDING, None)
        st.error("Only an operator may do that: log in with the API token.")
        return
    label, effect = ACTIONS[action]
    what = f"node **{target}**" if action == "drain" else f"session **{target}**"
    with st.container(border=True):
        st.warning(f"{label} {what}? {effect}")
        yes, no, _ = st.columns([1, 1, 4])
        if yes.button(f"Confirm: {label.lower()}", type="primary", key="confirm"):
            st.session_state.pop(PENDING, None)
            run = {"stop": api.stop, "logout": api.logout, "drain": api.drain}[action]
            result, error = attempt(lambda: run(target))
            if error is not None:
                st.session_state[DONE] = (
                    "error",
                    f"{label} failed: `{error.code}`: {error.details}",
                )
            else:
                state = getattr(result, "state", None)
                after = f": now {metrics.state_name(state)}" if state is not None else ""
                st.session_state[DONE] = ("ok", f"{label} {target}{after}")
            st.rerun()
        if no.button("Cancel", key="cancel"):
            st.session_state.pop(PENDING, None)
            st.rerun()


def render() -> None:
    st.title("Sessions")
    api = ui.client()
    sessions, error = attempt(api.sessions)
    if error is not None:
        ui.show_error(error)
        return
    assert sessions is not None
    done = st.session_state.pop(DONE, None)
    if done:
        (st.success if done[0] == "ok" else st.error)(done[1])

    c1, c2, c3 = st.columns([2, 2, 2])
    needle = c1.text_input("Session id contains", key="search").strip().lower()
    states = sorted({metrics.state_name(s.state) for s in sessions})
    nodes = sorted({s.node_id or "-" for s in sessions})
    want_states = c2.multiselect("State", states, key="states")
    want_nodes = c3.multiselect("Node", nodes, key="nodes")
    found = [
        s
        for s in sessions
        if needle in s.session_id.lower()
        and (not want_states or metrics.state_name(s.state) in want_states)
        and (not want_nodes or (s.node_id or "-") in want_nodes)
    ]
    st.dataframe(
        [
            {
                "session": s.session_id,
                "state": metrics.state_name(s.state),
                "node": s.node_id or "-",
                "auth": metrics.strategy_name(s.auth_strategy),
                "phone": s.phone or "-",
                "updated": ui.when(s.updated_at),
                "last error": s.last_error or "",
            }
            for s in found
        ],
        hide_index=True,
        width="stretch",
    )
    st.caption(f"{len(found)} of {len(sessions)} sessions.")
    if not found:
        return

    ids = [s.session_id for s in found]
    wanted = st.query_params.get("session")
    index = ids.index(wanted) if wanted in ids else 0
    chosen = st.selectbox("Open session", ids, index=index, key="open")
    assert chosen is not None
    st.query_params["session"] = chosen
    session = next(s for s in found if s.session_id == chosen)

    st.subheader(f"Session {session.session_id}")
    st.table(
        [
            {
                "state": metrics.state_name(session.state),
                "node": session.node_id or "—",
                "auth": metrics.strategy_name(session.auth_strategy),
                "phone": session.phone or "—",
                "created": ui.when(session.created_at),
                "ready since": ui.when(session.ready_at) if session.ready_at.seconds else "—",
            }
        ],
        hide_index=True,
    )
    if session.last_error:
        st.caption(f"Last error: {session.last_error}")

    if not ui.is_operator():
        st.caption("Read-only view: stop, log out and drain need the operator login.")
        every = REFRESH_SECONDS if session.state in LIVE else None
        st.fragment(run_every=every)(live_view)(api, session.session_id, session.state)
        return
    a1, a2, a3, _ = st.columns([1, 1, 1, 3])
    terminal = session.state in (pb.STOPPED, pb.LOGGED_OUT)
    a1.button(
        "Stop…", key="stop", disabled=terminal, on_click=ask, args=("stop", session.session_id)
    )
    a2.button(
        "Log out…",
        key="logout",
        disabled=session.state == pb.LOGGED_OUT,
        on_click=ask,
        args=("logout", session.session_id),
    )
    a3.button(
        "Drain node…",
        key="drain",
        disabled=not api.can_drain or not session.node_id,
        on_click=ask,
        args=("drain", session.node_id),
        help=None
        if api.can_drain
        else "Draining comes with the RemoteAuth work: no DrainNode RPC yet.",
    )
    if not api.can_drain:
        st.caption("Drain is not available yet: the router API has no DrainNode call.")
    confirm_step(api)

    every = REFRESH_SECONDS if session.state in LIVE else None
    st.fragment(run_every=every)(live_view)(api, session.session_id, session.state)


ui.require_login()
render()
