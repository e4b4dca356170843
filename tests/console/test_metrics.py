"""Latency, state counts and warnings from sessions, nodes and event logs."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from console import metrics as m
from sessionmesh.v1 import common_pb2 as pb

T0 = 1_700_000_000.0


def ts(t: float) -> Timestamp:
    out = Timestamp()
    out.FromNanoseconds(int(t * 1e9))
    return out


def state(seq: int, t: float, value: int, reason: str = "") -> pb.SessionEvent:
    return pb.SessionEvent(seq=seq, time=ts(t), state=pb.StateChange(state=value, reason=reason))


def qr(seq: int, t: float, attempt: int = 1) -> pb.SessionEvent:
    return pb.SessionEvent(seq=seq, time=ts(t), qr=pb.QrCode(code="x", attempt=attempt))


def loading(seq: int, t: float, percent: int) -> pb.SessionEvent:
    return pb.SessionEvent(seq=seq, time=ts(t), loading=pb.Loading(percent=percent))


LINKED_LOG = [
    state(1, T0, pb.STARTING),
    state(2, T0 + 8.0, pb.SCAN_QR_CODE),
    qr(3, T0 + 8.5),
    qr(4, T0 + 28.5, attempt=2),
    state(5, T0 + 40.0, pb.AUTHENTICATED),
    loading(6, T0 + 41.0, 50),
    state(7, T0 + 43.0, pb.READY),
    state(8, T0 + 100.0, pb.STOPPED),
    state(9, T0 + 200.0, pb.STARTING),  # restored from the saved login: no QR
    state(10, T0 + 203.0, pb.AUTHENTICATED),
    state(11, T0 + 205.5, pb.READY),
]


def test_runs_split_a_log_at_each_starting_and_time_each_phase() -> None:
    first, second = m.runs("s", pb.LOCAL, reversed(LINKED_LOG))  # order comes from seq
    assert first.strategy == "LocalAuth"
    assert first.durations() == {
        m.FIRST_QR: pytest.approx(8.5),
        m.SCAN: pytest.approx(31.5),
        m.LOAD: pytest.approx(3.0),
        m.TO_READY: pytest.approx(43.0),
    }
    assert second.durations() == {m.LOAD: pytest.approx(2.5), m.RESTORE: pytest.approx(5.5)}


def test_a_log_trimmed_at_its_head_and_an_unfinished_run() -> None:
    log = [qr(40, T0), state(41, T0 + 1, pb.READY), state(42, T0 + 2, pb.STARTING), qr(43, T0 + 9)]
    (run,) = m.runs("s", pb.REMOTE, log)
    assert run.strategy == "RemoteAuth"
    assert run.durations() == {m.FIRST_QR: pytest.approx(7.0)}
    assert m.runs("s", 0, []) == []


def test_percentiles_interpolate_like_numpy() -> None:
    values = [float(v) for v in range(1, 101)]
    assert m.percentile(values, 50) == pytest.approx(50.5)
    assert m.percentile(values, 95) == pytest.approx(95.05)
    assert m.percentile(values, 99) == pytest.approx(99.01)
    assert m.percentile([3.0], 99) == 3.0
    assert m.percentile([4.0, 1.0], 0) == 1.0
    with pytest.raises(ValueError):
        m.percentile([], 50)
    with pytest.raises(ValueError):
        m.percentile([1.0], 101)


def test_summaries_split_by_strategy_keep_phase_order_and_honour_the_window() -> None:
    runs = [
        m.Run("a", "LocalAuth", T0, first_qr=T0 + 9),
        m.Run("b", "LocalAuth", T0 + 50, first_qr=T0 + 61),
        m.Run("c", "RemoteAuth", T0 + 60, first_qr=T0 + 75, authenticated=T0 + 80, ready=T0 + 83),
    ]
    got = m.summarize(runs)
    assert [(s.phase, s.strategy, s.count) for s in got] == [
        (m.FIRST_QR, "LocalAuth", 2),
        (m.FIRST_QR, "RemoteAuth", 1),
        (m.SCAN, "RemoteAuth", 1),
        (m.LOAD, "RemoteAuth", 1),
        (m.TO_READY, "RemoteAuth", 1),
    ]
    assert got[0].p50 == pytest.approx(10.0) and got[0].worst == pytest.approx(11.0)
    recent = m.summarize(runs, since=T0 + 40)
    assert recent[0].count == 1 and recent[0].p99 == pytest.approx(11.0)


def session(sid: str, value: int, updated: float, error: str = "") -> pb.Session:
    return pb.Session(session_id=sid, state=value, updated_at=ts(updated), last_error=error)


EXHAUSTED = "QR attempts exhausted: 6 QR codes shown, none scanned"


def test_by_state_counts_in_lifecycle_order() -> None:
    got = m.by_state(
        [session("a", pb.READY, T0), session("b", pb.SCAN_QR_CODE, T0), session("c", pb.READY, T0)]
    )
    assert list(got.items()) == [("SCAN_QR_CODE", 1), ("READY", 2)]


def test_qr_failure_trend_compares_the_window_with_before() -> None:
    old = [session(f"o{i}", pb.READY, T0) for i in range(4)]
    new = [session(f"n{i}", pb.FAILED, T0 + 1000, EXHAUSTED) for i in range(2)]
    new += [session("n9", pb.FAILED, T0 + 1000, "conflict: ..."), session("r", pb.READY, T0 + 999)]
    trend = m.qr_failure_trend(old + new, now=T0 + 1000, window=60)
    assert (trend.recent, trend.earlier) == (0.5, 0.0)
    assert trend.rising
    few = m.qr_failure_trend(new[:2], now=T0 + 1000, window=60)
    assert few.recent is None and not few.rising  # two sessions say nothing
    flat = m.qr_failure_trend(
        [session(f"x{i}", pb.FAILED, T0, EXHAUSTED) for i in range(3)] + new,
        now=T0 + 1000,
        window=60,
    )
    assert flat.earlier == 1.0 and not flat.rising


def node(nid: str, health: int, sessions: int, capacity: int, memory: int = 0) -> pb.NodeStatus:
    return pb.NodeStatus(
        node_id=nid,
        address=f"{nid}:1",
        health=health,
        sessions=sessions,
        capacity=capacity,
        memory_bytes=memory,
    )


def test_overview_totals_and_warnings() -> None:
    nodes = [
        node("a", pb.SERVING, 8, 10, 800),
        node("b", pb.SERVING, 1, 10, 300),
        node("c", pb.UNREACHABLE, 0, 10),
        node("d", pb.NOT_SERVING, 0, 5),
    ]
    failing = [session(f"f{i}", pb.FAILED, T0, EXHAUSTED) for i in range(3)]
    ov = m.overview(nodes, failing, now=T0 + 10, window=60)
    assert (ov.nodes, ov.serving, ov.sessions, ov.capacity) == (4, 2, 9, 25)
    assert ov.memory_bytes == 1100 and ov.use == pytest.approx(9 / 25)
    texts = [(w.level, w.text) for w in ov.warnings]
    assert ("error", "node c (c:1) is unreachable") in texts
    assert any(level == "warning" and "node a holds 8 of 10" in t for level, t in texts)
    assert any("node d is not serving" in t for _, t in texts)
    assert any("QR failure rate rising: 100%" in t for _, t in texts)
    assert not any("node b" in t for _, t in texts)
    quiet = m.overview([node("a", pb.SERVING, 1, 10)], [], now=T0, window=60)
    assert quiet.warnings == []


def test_a_node_whose_page_lacks_hooks_is_an_error() -> None:
    broken = node("a", pb.SERVING, 1, 10)
    broken.missing_hooks.extend(["WABase64.encodeB64", "WAWebCmd.Cmd:offline_progress_update"])
    broken.wa_version = "2.3000.1030000000"
    ov = m.overview([broken, node("b", pb.SERVING, 1, 10)], [], now=T0, window=60)
    assert [(w.level, w.text.split(" (")[0]) for w in ov.warnings] == [
        (
            "error",
            "node a: WhatsApp Web 2.3000.1030000000 lacks hooks the node relies on: "
            "WABase64.encodeB64, WAWebCmd.Cmd:offline_progress_update",
        )
    ]


def test_live_per_session_memory_skips_empty_and_unreachable_nodes() -> None:
    nodes = [
        node("a", pb.SERVING, 2, 10, 600),
        node("b", pb.SERVING, 0, 10, 250),
        node("c", pb.UNREACHABLE, 3, 10, 999),
    ]
    assert m.per_session_memory(nodes) == 300
    assert m.per_session_memory([node("b", pb.SERVING, 0, 10, 250)]) is None
