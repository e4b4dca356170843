"""Placement: consistent hashing with bounded load."""

from __future__ import annotations

from collections import Counter

import pytest

from router.errors import ClusterFull, NodeUnavailable
from router.placement import NodeLoad, Placement, placement_key

NODES = ["10.0.0.1:50061", "10.0.0.2:50061", "10.0.0.3:50061"]


def loads(
    sessions: list[int], capacity: int = 50, healthy: list[bool] | None = None
) -> dict[str, NodeLoad]:
    healthy = healthy or [True] * len(sessions)
    return {
        name: NodeLoad(healthy=h, sessions=s, capacity=capacity)
        for name, s, h in zip(NODES, sessions, healthy, strict=True)
    }


def simulate(placement: Placement, n: int, capacity: int = 1000) -> Counter[str]:
    held: Counter[str] = Counter({name: 0 for name in NODES})
    for i in range(n):
        current = {name: NodeLoad(True, held[name], capacity) for name in NODES}
        held[placement.candidates(placement_key("acme", f"s{i}"), current)[0]] += 1
    return held


def test_first_choice_is_deterministic_and_follows_the_ring() -> None:
    a, b = Placement(NODES), Placement(list(NODES))
    for i in range(50):
        key = placement_key("acme", f"s{i}")
        assert a.ring_order(key) == b.ring_order(key)
        assert sorted(a.ring_order(key)) == sorted(NODES)
        assert a.candidates(key, loads([0, 0, 0]))[0] == a.ring_order(key)[0]


def test_the_key_includes_the_tenant() -> None:
    placement = Placement(NODES)
    orders = {tuple(placement.ring_order(placement_key(t, "support"))) for t in "abcdefghij"}
    assert len(orders) > 1


def test_sessions_spread_across_nodes() -> None:
    held = simulate(Placement(NODES, load_factor=1.25), 300)
    assert all(count > 0 for count in held.values())
    assert max(held.values()) <= 1.25 * 300 / 3 + 1


@pytest.mark.parametrize("factor", [1.0, 1.1, 1.25, 2.0])
def test_bounded_load_is_respected(factor: float) -> None:
    placement = Placement(NODES, load_factor=factor)
    held: Counter[str] = Counter({name: 0 for name in NODES})
    for i in range(200):
        current = {name: NodeLoad(True, held[name], 1000) for name in NODES}
        cap = placement.cap(current)
        choice = placement.candidates(placement_key("t", f"id-{i}"), current)[0]
        assert held[choice] < cap
        held[choice] += 1


def test_a_full_node_spills_to_the_next_on_the_ring() -> None:
    placement = Placement(NODES)
    key = placement_key("acme", "support")
    first, second, third = placement.ring_order(key)
    current = {
        first: NodeLoad(True, 2, 2),
        second: NodeLoad(True, 0, 2),
        third: NodeLoad(True, 0, 2),
    }
    assert placement.candidates(key, current) == [second, third]


def test_an_unhealthy_node_is_skipped() -> None:
    placement = Placement(NODES)
    key = placement_key("acme", "support")
    first, second, third = placement.ring_order(key)
    current = {
        first: NodeLoad(False, 0, 50),
        second: NodeLoad(True, 0, 50),
        third: NodeLoad(True, 0, 50),
    }
    assert placement.candidates(key, current) == [second, third]
    del current[second]  # never polled: as good as unhealthy
    assert placement.candidates(key, current) == [third]


def test_nodes_over_the_cap_but_with_room_come_last() -> None:
    placement = Placement(NODES, load_factor=1.0)
    key = placement_key("acme", "support")
    first, second, third = placement.ring_order(key)
    # total 12 -> cap ceil(13/3) = 5: first and second are over it, third is under.
    current = {
        first: NodeLoad(True, 6, 50),
        second: NodeLoad(True, 6, 50),
        third: NodeLoad(True, 0, 50),
    }
    assert placement.candidates(key, current) == [third, first, second]
    # Every healthy node over the cap: the first with room in ring order wins.
    current = {
        first: NodeLoad(True, 10, 10),
        second: NodeLoad(True, 9, 10),
        third: NodeLoad(False, 0, 10),
    }
    assert placement.candidates(key, current) == [second]


def test_all_full_is_resource_exhausted_with_counts() -> None:
    placement = Placement(NODES)
    with pytest.raises(ClusterFull, match=r"all 3 nodes are full \(6/6 sessions\)"):
        placement.candidates("t/x", loads([2, 2, 2], capacity=2))


def test_no_healthy_node_is_unavailable() -> None:
    placement = Placement(NODES)
    with pytest.raises(NodeUnavailable, match="no node is reachable"):
        placement.candidates("t/x", loads([0, 0, 0], healthy=[False, False, False]))


def test_bad_construction() -> None:
    with pytest.raises(ValueError):
        Placement([])
    with pytest.raises(ValueError):
        Placement(NODES, load_factor=0.5)
