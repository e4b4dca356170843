"""Latency from histograms, state counts and warnings from sessions and nodes."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from console import metrics as m
from sessionmesh import latency
from sessionmesh.v1 import common_pb2 as pb

T0 = 1_700_000_000.0


def ts(t: float) -> Timestamp:
    out = Timestamp()
    out.FromNanoseconds(int(t * 1e9))
    return out


def hist(phase: str, strategy: int, values: list[float]) -> pb.LatencyHistogram:
    b = latency.Buckets()
    for v in values:
        b.observe(v)
    return b.to_proto(phase, strategy)


def test_quantiles_interpolate_within_buckets_like_histogram_quantile() -> None:
    bounds, counts = (1.0, 2.0, 4.0), [10, 30, 60, 0]
    # rank 0.5 x 100 = 50: 10 below 1 s, 30 in (1, 2], so 10 of the 60 in (2, 4]
    assert latency.quantile(0.5, bounds, counts) == pytest.approx(2 + 2 * 10 / 60)
    assert latency.quantile(0.95, bounds, counts) == pytest.approx(2 + 2 * 55 / 60)
    assert latency.quantile(0.05, bounds, counts) == pytest.approx(0.5)  # first bucket from 0
    # a rank past the last bound answers the last bound, as Prometheus does
    assert latency.quantile(0.99, bounds, [0, 0, 1, 9]) == 4.0
    assert latency.quantile(0.5, bounds, [0, 0, 0, 0]) is None
    with pytest.raises(ValueError):
        latency.quantile(1.5, bounds, counts)


def test_quantiles_from_buckets_stay_within_a_bucket_of_the_exact_ones() -> None:
    values = [0.3 + 0.05 * i for i in range(200)]  # 0.3 .. 10.25 s
    b = latency.Buckets()
    for v in values:
        b.observe(v)
    ordered = sorted(values)
    for q in (0.5, 0.95, 0.99):
        exact = ordered[int(q * (len(values) - 1))]
        got = b.quantile(q)
        assert got is not None
        i = next(i for i, bound in enumerate(latency.BOUNDS) if bound >= exact)
        width = latency.BOUNDS[i] - (latency.BOUNDS[i - 1] if i else 0)
        assert abs(got - exact) <= width


def test_a_value_on_a_bound_counts_in_that_bucket_like_le() -> None:
    b = latency.Buckets()
    b.observe(1.0)
    b.observe(1.0001)
    assert b.counts[1] == 1 and b.counts[2] == 1  # le="1" holds 1.0 exactly
    b.observe(500.0)
    assert b.counts[-1] == 1 and b.count == 3


def test_node_histograms_merge_per_phase_and_strategy_across_nodes() -> None:
    one = latency.LatencyTable()
    two = latency.LatencyTable()
    one.observe("acme", latency.FIRST_QR, pb.LOCAL, 0.7)
    two.observe("acme", latency.FIRST_QR, pb.LOCAL, 1.5)
    two.observe("acme", latency.RESTORE, pb.REMOTE, 3.0)
    two.observe("globex", latency.FIRST_QR, pb.LOCAL, 9.0)
    rows = [*one.to_proto().histograms, *two.to_proto().histograms]
    mine = latency.merge(r.histogram for r in rows if r.tenant == "acme")
    assert [(h.phase, h.auth_strategy, h.count) for h in mine] == [
        (latency.FIRST_QR, pb.LOCAL, 2),
        (latency.RESTORE, pb.REMOTE, 1),
    ]
    assert mine[0].sum == pytest.approx(2.2)


def test_summaries_by_phase_and_strategy_in_phase_order() -> None:
    got = m.summarize(
        [
            hist(latency.RESTORE, pb.REMOTE, [2.5]),
            hist(latency.FIRST_QR, pb.REMOTE, [1.2, 1.4]),
            hist(latency.FIRST_QR, pb.LOCAL, [0.2, 0.3, 0.4, 0.6]),
            latency.Buckets().to_proto(latency.READY, pb.LOCAL),  # empty: left out
        ]
    )
    assert [(s.phase, s.strategy, s.count) for s in got] == [
        (m.FIRST_QR, "LocalAuth", 4),
        (m.FIRST_QR, "RemoteAuth", 2),
        (m.RESTORE, "RemoteAuth", 1),
    ]
    local = got[0]
    assert local.p50 == pytest.approx(0.5 * 2 / 3)  # 3 of 4 in (0, 0.5]: rank 2
    assert local.p99 == pytest.approx(0.5 + 0.5 * (3.96 - 3))
    assert local.mean == pytest.approx(0.375)


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
