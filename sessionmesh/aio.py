"""asyncio helpers every process shares: stopping a task without swallowing our own cancellation,
and an event loop on a thread of its own for timers that must not wait behind the main loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

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


def call_soon_in(
    loop: asyncio.AbstractEventLoop, callback: Callable[..., object], *args: object
) -> None:
    """`callback(*args)` on `loop`, from any thread: at once when called on that loop itself,
    else at its next turn; dropped once the loop is closed."""
    try:
        here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        here = None
    if here is loop:
        callback(*args)
    elif not loop.is_closed():
        with contextlib.suppress(RuntimeError):  # it closed meanwhile
            loop.call_soon_threadsafe(callback, *args)


class LoopThread:
    """An event loop on a daemon thread of its own.

    For work that must keep time whatever the process's main loop is doing: on a loaded node a
    burst of browser events or a slow page call holds the main loop for seconds, and a lease
    renewal or heartbeat queued behind it lapses although the node is alive. Objects used on
    this loop (a Redis client, say) must be used only here; `run()` is the way in.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._started = False
        self._closed = False

    def start(self) -> None:
        if self._started or self._closed:
            raise RuntimeError(f"loop thread {self.name} is started once")
        self._started = True
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def on_thread(self) -> bool:
        return threading.get_ident() == self._thread.ident

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on this loop and wait for it from the caller's; cancelling the caller
        cancels it. Called from this loop itself, it simply awaits."""
        if self.on_thread():
            return await coro
        if not self._started or self._closed:
            coro.close()
            raise RuntimeError(f"loop thread {self.name} is not running")
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def call_soon(self, callback: Callable[..., object], *args: object) -> None:
        """`callback(*args)` on this loop, from any thread; dropped once the loop is closed."""
        call_soon_in(self.loop, callback, *args)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the loop (its tasks are cancelled) and join the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self._started:
            self.loop.close()
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("loop thread %s did not stop within %.0f s", self.name, timeout)
