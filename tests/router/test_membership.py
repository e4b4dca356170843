"""Liveness hysteresis with a fake clock, failover planning and ordering, bounded moves."""

from __future__ import annotations

import asyncio

import pytest

from router.directory import DirEntry
from router.failover import bounded, local_reason, plan_failover
from router.membership import Liveness, NodeLiveness
from sessionmesh.v1 import common_pb2 as pb

DEAD_AFTER = 6.0


def fresh(registered: bool = True) -> NodeLiveness:
    node = NodeLiveness("n1", DEAD_AFTER, registered=registered)
    node.heartbeat(True, 0.0, epoch="e1")
    return node


def test_a_new_node_is_not_healthy_until_it_answers_a_health_check() -> None:
    node = fresh()
    assert node.evaluate(0.0) is Liveness.NEW
    node.health(True, 1.0)
    assert node.evaluate(1.0) is Liveness.HEALTHY


def test_either_signal_lost_is_suspected_and_recovers() -> None:
    node = fresh()
    node.health(True, 0.0)
    node.heartbeat(False, 1.0)
    assert node.evaluate(1.0) is Liveness.SUSPECTED
    assert node.evaluate(100.0) is Liveness.SUSPECTED, "heartbeat alone never kills"
    node.heartbeat(True, 101.0)
    assert node.evaluate(101.0) is Liveness.HEALTHY
    node.health(False, 102.0)
    assert node.evaluate(200.0) is Liveness.SUSPECTED, "a broken health stream alone never kills"


def test_dead_only_when_both_signals_are_lost_for_dead_after() -> None:
    node = fresh()
    node.health(True, 0.0)
    node.heartbeat(False, 10.0)
    node.health(False, 12.0)
    assert not node.declared_dead(17.9), "both lost since 12.0: not yet 6 s"
    assert node.state is Liveness.SUSPECTED
    assert node.declared_dead(18.0)
    assert node.state is Liveness.DEAD
    assert not node.declared_dead(19.0), "a death is reported once"
    assert node.evaluate(30.0) is Liveness.DEAD


def test_a_signal_coming_back_resets_the_margin() -> None:
    node = fresh()
    node.health(True, 0.0)
    node.heartbeat(False, 1.0)
    node.health(False, 1.0)
    node.heartbeat(True, 5.0)  # a beat arrives just in time
    assert not node.declared_dead(8.0)
    node.heartbeat(False, 8.0)
    assert not node.declared_dead(13.9)
    assert node.declared_dead(14.0)


def test_redis_unreachable_never_declares_a_node_dead() -> None:
    node = fresh()
    node.health(True, 0.0)
    node.health(False, 1.0)
    node.heartbeat(None, 1.0)  # Redis cannot be read
    node.heartbeat(None, 50.0)
    assert not node.declared_dead(60.0)
    assert node.state is Liveness.SUSPECTED
    node.heartbeat(False, 61.0)  # Redis is back and the key is gone: the margin starts now
    assert not node.declared_dead(66.9)
    assert node.declared_dead(67.0)


def test_a_node_that_is_no_member_is_never_declared_dead() -> None:
    node = fresh(registered=False)
    node.health(True, 0.0)
    node.heartbeat(False, 1.0)
    node.health(False, 1.0)
    assert not node.declared_dead(1000.0)


def test_a_node_that_died_before_any_router_saw_it_is_declared_dead() -> None:
    node = NodeLiveness("gone", DEAD_AFTER)
    node.heartbeat(False, 0.0)
    node.health(False, 0.0)
    assert node.evaluate(1.0) is Liveness.NEW
    assert node.declared_dead(6.0)


def test_a_restarted_node_back_to_healthy_can_die_again() -> None:
    node = fresh()
    node.health(True, 0.0)
    node.heartbeat(False, 0.0)
    node.health(False, 0.0)
    assert node.declared_dead(6.0)
    node.heartbeat(True, 7.0, epoch="e2")
    node.health(True, 7.0)
    assert node.evaluate(7.0) is Liveness.HEALTHY
    assert node.epoch == "e2"
    node.heartbeat(False, 8.0)
    node.health(False, 8.0)
    assert node.declared_dead(14.0)


def entry(node: str, strategy: int, state: int = pb.READY, handed_off: bool = False) -> DirEntry:
    return DirEntry(node_id=node, auth_strategy=strategy, state=state, handed_off=handed_off)


def test_failover_plan_moves_running_remote_sessions_ready_first() -> None:
    entries = {
        ("acme", "b-qr"): entry("dead", pb.REMOTE, pb.SCAN_QR_CODE),
        ("acme", "c-ready"): entry("dead", pb.REMOTE),
        ("acme", "a-ready"): entry("dead", pb.REMOTE),
        ("acme", "local"): entry("dead", pb.LOCAL),
        ("acme", "no-entry"): None,
        ("acme", "moved"): entry("other", pb.REMOTE),
        ("acme", "stopped"): entry("dead", pb.REMOTE, pb.STOPPED),
        ("globex", "auth"): entry("dead", pb.REMOTE, pb.AUTHENTICATED),
        # Stopped by the node's SIGTERM to start elsewhere: it moves, with the READY ones.
        ("acme", "b-handed"): entry("dead", pb.REMOTE, pb.STOPPED, handed_off=True),
    }
    plan = plan_failover("dead", entries)
    assert [key for key, _ in plan.move] == [
        ("acme", "a-ready"),
        ("acme", "b-handed"),
        ("acme", "c-ready"),
        ("globex", "auth"),
        ("acme", "b-qr"),
    ]
    assert plan.stay == [("acme", "local"), ("acme", "no-entry")]
    assert plan.skip == [("acme", "moved"), ("acme", "stopped")]


def test_local_reason_names_the_node_and_its_disk() -> None:
    assert local_reason("node-2") == "its login was on node node-2's disk and node node-2 is down"


async def test_bounded_runs_at_most_parallelism_at_once_and_returns_errors() -> None:
    running = 0
    peak = 0

    async def work(n: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        if n == 3:
            raise ValueError("three")
        return n * 2

    results = await bounded(list(range(10)), 3, work)
    assert peak == 3
    assert results[:3] == [0, 2, 4]
    assert isinstance(results[3], ValueError)


def test_dir_entry_parses_what_the_node_writes() -> None:
    raw = {
        b"node_id": b"node-2",
        b"owner": b"node-2:abc",
        b"auth_strategy": b"REMOTE",
        b"labels": b'{"team": "cs"}',
        b"created_at": b"1700000000.5",
        b"state": b"READY",
        b"phone": b"62811",
        b"last_error": b"",
        b"last_seq": b"7",
    }
    parsed = DirEntry.decode(raw)
    assert parsed is not None
    assert parsed.remote and parsed.state == pb.READY and parsed.last_seq == 7
    session = parsed.to_session("s1", state=pb.FAILED)
    assert session.state == pb.FAILED and session.labels == {"team": "cs"}
    assert session.created_at.seconds == 1700000000
    assert DirEntry.decode({b"state": b"4"}) is None


@pytest.mark.parametrize("state", ["4", "READY"])
def test_dir_entry_reads_enums_by_number_or_name(state: str) -> None:
    parsed = DirEntry.decode({"node_id": "n", "state": state, "auth_strategy": "2"})
    assert parsed is not None and parsed.state == pb.READY and parsed.remote
