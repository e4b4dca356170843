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
