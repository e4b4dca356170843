"""Snapshot writes that outlive a cancelled caller still have their outcome read."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from node.session import unabandoned


async def test_a_write_that_fails_after_its_caller_was_cancelled_is_not_reported_unretrieved() -> (
    None
):
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        release = asyncio.Event()

        async def write() -> None:
            await release.wait()
            raise RuntimeError("the lease has expired")

        tasks: set[asyncio.Future[None]] = set()

        async def caller() -> None:
            await asyncio.shield(unabandoned(write(), tasks))

        waiting = asyncio.ensure_future(caller())
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        release.set()
        await asyncio.wait(set(tasks))  # wait reads no outcome
        await asyncio.sleep(0)  # the done callbacks run
        del waiting
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert [c.get("message") for c in reported] == []
