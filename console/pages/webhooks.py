"""Webhooks: endpoints, recent deliveries and failures, delivery lag, dead letters with replay."""

from __future__ import annotations

import streamlit as st

from console import ui
from console.client import attempt
from console.settings import ConsoleSettings
from console.webhook_client import WebhookClient, lag
from sessionmesh.v1 import mesh_pb2

OUTCOMES = {mesh_pb2.DELIVERED: "delivered", mesh_pb2.RETRYING: "retrying", mesh_pb2.DEAD: "dead"}


@st.cache_resource(show_spinner=False)
def _client(router: str, token: str, timeout: float) -> WebhookClient:
    return WebhookClient(ConsoleSettings(router=router, token=token, timeout=timeout))


def client() -> WebhookClient:
    s = ui.settings()
    return _client(s.router, s.token, s.timeout)


def rows(items: list[mesh_pb2.Delivery]) -> list[dict[str, object]]:
    return [
        {
            "webhook-id": d.id,
            "webhook": d.webhook_id,
            "event": d.event,
            "session": d.session_id,
            "outcome": OUTCOMES.get(d.outcome, "-"),
            "tries": d.attempts,
            "last status": d.last_status or "-",
            "event time": ui.when(d.created_at),
            "finished": ui.when(d.finished_at),
            "next try": ui.when(d.next_attempt_at),
            "error": d.last_error or "",
        }
        for d in items
    ]


def render() -> None:
    st.title("Webhooks")
    st.caption(
        "Deliveries leave a durable outbox, each (webhook, session) in order, signed with "
        "Standard Webhooks headers; receivers dedupe on webhook-id, which replays keep."
    )
    if st.button("Refresh", icon=":material/refresh:"):
        st.rerun()
    api = client()
    hooks, error = attempt(api.webhooks)
    if error is not None:
        ui.show_error(error)
        return
    assert hooks is not None
    recent, error = attempt(lambda: api.deliveries(limit=1000))
    if error is not None:
        ui.show_error(error)
        return
    assert recent is not None
    dead, error = attempt(api.dead_letters)
    if error is not None:
        ui.show_error(error)
        return
    assert dead is not None
    failing = [d for d in recent if d.outcome == mesh_pb2.RETRYING and d.attempts > 0]
    measured = lag(recent)

    cols = st.columns(4)
    enabled = sum(1 for h in hooks if h.enabled)
    cols[0].metric("Endpoints enabled", f"{enabled} / {len(hooks)}")
    cols[1].metric("Failing now", len(failing))
    cols[2].metric("Dead letters", len(dead))
    if measured is None:
        cols[3].metric("Delivery lag p50", "-")
    else:
        cols[3].metric(
            "Delivery lag p50",
            f"{measured.p50 * 1000:.0f} ms",
            f"p95 {measured.p95 * 1000:.0f} ms, max {measured.worst:.1f} s",
            delta_color="off",
            delta_arrow="off",
        )
    st.caption("Lag: the event's time to the receiver's 2xx, over the recent deliveries below.")

    st.subheader("Endpoints")
    if not hooks:
        st.info("No webhooks yet: `meshctl webhook add URL --events message,message.ack`.")
    else:
        st.dataframe(
            [
                {
                    "id": h.id,
                    "url": h.url,
                    "events": ", ".join(h.events),
                    "session": h.session_id or "(every session)",
                    "enabled": h.enabled,
                    "disabled because": h.disabled_reason,
                    "updated": ui.when(h.updated_at),
                }
                for h in hooks
            ],
            hide_index=True,
            width="stretch",
        )
        for h in hooks:
            if not h.enabled:
                st.warning(f"`{h.id}` ({h.url}) is disabled: {h.disabled_reason}")

    st.subheader("Failures")
    if failing:
        st.dataframe(rows(failing), hide_index=True, width="stretch")
    else:
        st.success("No delivery is failing.")

    st.subheader("Recent deliveries")
    st.dataframe(rows(recent[:200]), hide_index=True, width="stretch")

    st.subheader("Dead letters")
    if not dead:
        st.success("No dead letters.")
        return
    st.dataframe(rows(dead), hide_index=True, width="stretch")
    chosen = st.multiselect("Replay these", [d.id for d in dead], placeholder="all of them")
    count = len(chosen) or len(dead)
    if st.button(f"Replay {count} dead letters…", icon=":material/replay:"):
        st.session_state["webhooks_replay"] = list(chosen)
    pending = st.session_state.get("webhooks_replay")
    if pending is not None:
        what = f"{len(pending)} chosen" if pending else f"all {len(dead)}"
        st.warning(
            f"Replay {what} dead letters? They are delivered again under their original "
            "webhook-id, after anything already queued for their session."
        )
        confirm, cancel = st.columns(2)
        if confirm.button("Confirm replay", type="primary"):
            done, error = attempt(lambda: api.replay(pending or None))
            st.session_state.pop("webhooks_replay", None)
            if error is not None:
                ui.show_error(error)
            else:
                st.success(f"Replayed {done} dead letters.")
        if cancel.button("Cancel"):
            st.session_state.pop("webhooks_replay", None)
            st.rerun()


render()
