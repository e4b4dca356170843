"""The affinity cache's wake-ups for watchers waiting to re-open a stream."""

from __future__ import annotations

import asyncio

from router.affinity import Affinity


async def test_a_move_wakes_every_watcher_of_that_session_only() -> None:
    affinity = Affinity()
    affinity.set("acme", "s1", "node-1")
    affinity.set("acme", "s2", "node-1")
    waits = [asyncio.create_task(affinity.wait_moved("acme", "s1", 600.0)) for _ in range(2)]
    other = asyncio.create_task(affinity.wait_moved("acme", "s2", 600.0))
    await asyncio.sleep(0)
    affinity.set("acme", "s1", "node-1")  # unchanged: no wake
    await asyncio.sleep(0)
    assert not any(t.done() for t in waits)
    affinity.set("acme", "s1", "node-2")
    assert await asyncio.wait_for(asyncio.gather(*waits), 60) == [True, True]
    assert not other.done()
    affinity.wake(affinity.on_node("node-1"))  # s2's node died
    assert await asyncio.wait_for(other, 60) is True


async def test_a_wait_times_out_false_and_leaves_nothing_behind() -> None:
    affinity = Affinity()
    assert await affinity.wait_moved("acme", "s1", 0.01) is False
    assert affinity._moves == {}
    task = asyncio.create_task(affinity.wait_moved("acme", "s1", 600.0))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert affinity._moves == {}


def test_a_session_follows_the_node_where_it_runs_when_its_entry_points_where_it_failed() -> None:
    """A node declared dead while only starved keeps its sessions; the node that tried to take
    them over lists them FAILED ('held by ...; its lease did not lapse'). The router kept
    sending clients to that node ('held by node-1 and node-3; keeping node-1') for good."""
    affinity = Affinity()
    affinity.set("acme", "s1", "node-1")  # the failover placed it on node-1
    affinity.set("acme", "s2", "node-1")
    affinity.merge("node-3", [("acme", "s1"), ("acme", "s2")])  # still live on node-3
    assert affinity.get("acme", "s1") == "node-1"  # nothing says node-1 lost it yet
    affinity.note_not_live("node-1", [("acme", "s1")])  # s1 FAILED there; s2 live there
    affinity.merge("node-1", [("acme", "s2")])
    affinity.merge("node-3", [("acme", "s1"), ("acme", "s2")])
    assert affinity.get("acme", "s1") == "node-3"
    assert affinity.get("acme", "s2") == "node-1"  # live on both: the entry it had stays
