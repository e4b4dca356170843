"""asyncio helpers every process shares: stopping a task without swallowing our own cancellation."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


async def cancel_and_wait(task: asyncio.Future[object] | asyncio.Future[None] | None) -> None:
    """Cancel `task` and wait until it has finished.

    The task's own CancelledError or exception is consumed (logged when it is an error), but a
    cancellation of the caller while it waits propagates: `suppress(CancelledError)` around
    `await task` would swallow that too, and the caller would run on after being cancelled.
    """
    if task is None:
        return
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled() and task.exception() is not None:
        log.warning("%r ended with an error while stopping", task, exc_info=task.exception())
