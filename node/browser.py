"""One warm Chromium per node; one browser context per session; relaunched if it dies."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from playwright.async_api import Browser, BrowserContext, Page, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError

from node import storage_state as storage
from node.errors import PageError
from sessionmesh import chromium

log = logging.getLogger(__name__)


class BrowserClosed(RuntimeError):
    """The pool was closed; it does not reopen."""


class RestoreError(PageError):
    """A saved login could not be written into a new context (its keys would not import...)."""


class BrowserPool:
    """Owns Playwright and the node's Chromium. `on_relaunch` runs after Chromium died and was
    started again, so the node can bring its sessions back from their snapshots."""

    def __init__(
        self,
        *,
        executable: str | None = None,
        on_relaunch: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._executable = executable
        self._on_relaunch = on_relaunch
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self._identity: chromium.Identity | None = None
        self._closed = False
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        # A fresh context with its page already open: a new session (no saved login) takes it
        # and skips the renderer's start-up, the larger part of its time to the first QR.
        self._spare: asyncio.Task[tuple[BrowserContext, Page]] | None = None
        self.launches = 0

    async def __aenter__(self) -> BrowserPool:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        if self._closed:
            raise BrowserClosed("browser pool is closed")
        self._playwright = await async_playwright().start()
        await self._launch()

    @property
    def alive(self) -> bool:
        return self._browser is not None and self._browser.is_connected()

    @property
    def browser(self) -> Browser:
        if self._browser is None or not self._browser.is_connected():
            raise BrowserClosed("Chromium is not running")
        return self._browser

    async def new_context(self, storage_state: dict[str, Any] | None = None) -> BrowserContext:
        async with self._lock:  # not while a relaunch is half done
            browser = self.browser
        return await browser.new_context(
            storage_state=storage_state,  # type: ignore[arg-type]
            user_agent=self._identity.user_agent if self._identity else None,
        )

    async def _new_page(self, context: BrowserContext) -> Page:
        """A page that shows a desktop Chrome: its user agent and client hints agree."""
        page = await context.new_page()
        if self._identity is not None:
            cdp = await context.new_cdp_session(page)  # lives as long as the page
            await cdp.send("Emulation.setUserAgentOverride", self._identity.override())
        return page

    async def open_page(
        self, storage_state: dict[str, Any] | None = None
    ) -> tuple[BrowserContext, Page]:
        """A new context and its page, the warm spare when there is one, with `storage_state`
        (a saved login) loaded into it through that page (node.storage_state)."""
        if storage_state is not None:
            reason = storage.unsupported(storage_state)
            if reason:
                log.info("saved login loaded by Playwright: %s", reason)
                return await self._fresh_page(storage_state)
        context, page = await self._take_spare() or await self._fresh_page()
        if storage_state is not None:
            try:
                await storage.load(context, page, storage_state)
            except PlaywrightError as e:
                await _close_quietly(context)
                if not self.alive:
                    raise BrowserClosed("Chromium went away while a login was loaded") from e
                raise RestoreError(str(e).splitlines()[0][:200]) from e
            except BaseException:
                await _close_quietly(context)
                raise
        return context, page

    async def _take_spare(self) -> tuple[BrowserContext, Page] | None:
        spare, self._spare = self._spare, None
        if spare is None:
            return None
        try:
            context, page = await spare
        except Exception:
            log.debug("spare page was lost; opening a new one")
            return None
        self._refill()
        if page.is_closed():
            await _close_quietly(context)
            return None
        return context, page

    async def _fresh_page(
        self, storage_state: dict[str, Any] | None = None
    ) -> tuple[BrowserContext, Page]:
        context = await self.new_context(storage_state)
        try:
            page = await self._new_page(context)
        except BaseException:
            await _close_quietly(context)
            raise
        self._refill()
        return context, page

    def _refill(self) -> None:
        if self._closed or self._spare is not None:
            return
        spare = asyncio.get_running_loop().create_task(self._make_spare())
        spare.add_done_callback(lambda t: t.cancelled() or t.exception())  # read, never lost
        self._spare = spare

    async def _make_spare(self) -> tuple[BrowserContext, Page]:
        context = await self.new_context()
        try:
            return context, await self._new_page(context)
        except BaseException:
            await _close_quietly(context)
            raise

    async def _drop_spare(self) -> None:
        spare, self._spare = self._spare, None
        if spare is None:
            return
        spare.cancel()
        try:
            context, _page = await spare
        except BaseException:
            return
        await _close_quietly(context)

    async def _launch(self) -> None:
        assert self._playwright is not None
        path = chromium.executable_path(self._executable)
        browser = await self._playwright.chromium.launch(
            executable_path=path,
            args=chromium.launch_args(),
            headless=True,
            # The node decides when Chromium stops: after the final snapshots.
            handle_sigint=False,
            handle_sigterm=False,
            handle_sighup=False,
        )
        browser.on("disconnected", self._disconnected)
        self._identity = chromium.desktop_identity(browser.version)
        self._browser = browser
        self.launches += 1
        self._spare = None  # any spare died with the previous Chromium
        self._refill()
        log.info("chromium %s started (launch %d)", browser.version, self.launches)

    def _disconnected(self, _browser: Browser) -> None:
        if self._closed:
            return
        log.error("chromium died; relaunching")
        task = asyncio.get_running_loop().create_task(self._relaunch())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relaunch(self) -> None:
        delay = 0.5
        async with self._lock:
            while not self._closed:
                try:
                    await self._launch()
                    break
                except Exception:
                    log.exception("chromium relaunch failed; retrying in %.1fs", delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
        if not self._closed and self._on_relaunch is not None:
            await self._on_relaunch()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._drop_spare()
        if self._browser is not None:
            try:
                await self._browser.close()
            except Exception:
                log.debug("chromium was already gone at close")
        if self._playwright is not None:
            await self._playwright.stop()


async def _close_quietly(context: BrowserContext) -> None:
    try:
        await context.close()
    except Exception:
        log.debug("context was already gone")
