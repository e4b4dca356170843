"""A WhatsApp Web page loaded ahead of time, showing a fresh QR, for the next new session.

Loading the real page (its script, its stores) takes most of the time to a first QR. The node
keeps one page loaded in a fresh context, hooked as a session's page is (keys, events), so a
new session (one with no saved login) takes it and shows its QR at once. The page is kept on
the first QR of a series, which lives longest: once that QR has less than MIN_LEFT seconds
to live, the page is loaded again. Restores do not use it: a saved login is written into a
blank page before WhatsApp Web loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from playwright.async_api import BrowserContext, Page
from playwright.async_api import Error as PlaywrightError

from node import whatsapp as wa
from node.browser import BrowserClosed, BrowserPool
from node.errors import PageError
from node.keyring import KeyRing, RealmHooks
from node.settings import NodeSettings
from sessionmesh.aio import cancel_and_wait

log = logging.getLogger(__name__)

MIN_LEFT = 15.0  # seconds a warm page's QR must still have to live when a session takes it
RETRY = 5.0  # seconds before trying again after a warm page failed to load


@dataclass
class WarmPage:
    context: BrowserContext
    page: Page
    ring: KeyRing
    hooks: RealmHooks
    driver: wa.WhatsAppPage
    fresh_until: float = 0.0  # monotonic time its current first QR stops being worth taking
    stale: bool = False  # it left the QR screen (idle, conflict, ...)

    @property
    def fresh(self) -> bool:
        return not self.stale and not self.page.is_closed() and time.monotonic() < self.fresh_until


class WarmPages:
    """Keeps one warm page; `take()` hands it over (or None) and starts the next."""

    def __init__(self, pool: BrowserPool, settings: NodeSettings) -> None:
        self._pool = pool
        self._settings = settings
        self._ready: WarmPage | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._closed = False
        self.taken = 0

    @property
    def useful(self) -> bool:
        """Only when a first QR lives long enough for a warm page to stay worth taking."""
        return self._settings.qr_first_timeout > MIN_LEFT * 2

    def start(self) -> None:
        if self.useful and not self._closed and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._keep(), name="warm page")

    def take(self) -> WarmPage | None:
        warm = self._ready
        if warm is None or not warm.fresh:
            return None
        self._ready = None
        self.taken += 1
        self._changed.set()  # load the next one
        return warm

    async def _keep(self) -> None:
        while not self._closed:
            warm = self._ready
            if warm is None or not warm.fresh:
                self._ready = None
                if warm is not None:
                    await _close(warm.context)
                try:
                    self._ready = await self._load()
                except (PageError, PlaywrightError, BrowserClosed, TimeoutError) as e:
                    log.info("warm WhatsApp Web page not ready (%s); trying again", e)
                    await asyncio.sleep(RETRY)
                    continue
            ready = self._ready
            wait = max(0.5, ready.fresh_until - time.monotonic()) if ready else RETRY
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), wait)

    async def _load(self) -> WarmPage:
        s = self._settings
        context, page = await self._pool.open_page()
        try:
            ring = KeyRing()
            hooks = RealmHooks(page, ring)
            await hooks.install(context)
            first_qr: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            warm = WarmPage(context, page, ring, hooks, wa.WhatsAppPage(page, lambda _e: None))

            def seen(event: wa.PageEvent) -> None:
                # Only the first QR of a series is worth keeping a page for.
                value = event.value
                if event.kind == "qr" and isinstance(value, dict) and value.get("n") == 1:
                    if not first_qr.done():
                        first_qr.set_result(float(value.get("at", 0)) / 1000)
                elif event.kind in ("crash", "closed") or (
                    event.kind == "state" and value not in (wa.OPENING, wa.UNPAIRED)
                ):
                    warm.stale = True
                    self._changed.set()
                    if not first_qr.done():
                        first_qr.set_exception(
                            PageError(f"the warm page went {value or event.kind}")
                        )

            warm.driver.attach(seen)
            page.on("crash", lambda _p: seen(wa.PageEvent("crash", None)))
            await warm.driver.open(
                s.wa_url, navigation_timeout=s.navigation_timeout, timeout=s.auth_timeout
            )
            shown_at = await asyncio.wait_for(first_qr, s.auth_timeout)
            age = max(0.0, time.time() - shown_at) if shown_at else 0.0
            warm.fresh_until = time.monotonic() + s.qr_first_timeout - age - MIN_LEFT
            return warm
        except BaseException:
            await _close(context)
            raise

    async def aclose(self) -> None:
        self._closed = True
        if self._task is not None:
            await cancel_and_wait(self._task)
        warm, self._ready = self._ready, None
        if warm is not None:
            await _close(warm.context)


async def _close(context: BrowserContext) -> None:
    with contextlib.suppress(PlaywrightError):
        await context.close()
