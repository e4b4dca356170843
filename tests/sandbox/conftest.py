"""Fixtures for driving the sandbox page as a careful host does: a real Chromium launched with
`--disable-blink-features=AutomationControlled`, a desktop Chrome user agent with matching client
hints set through `Emulation.setUserAgentOverride`, and hooks that wait for the app's modules."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from sessionmesh import chromium
from tests.helpers import DEADLINE

PHONE = "4915112345678"
MAJOR = "156"
CHROME_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    f"Chrome/{MAJOR}.0.0.0 Safari/537.36"
)


def ua_metadata(major: str = MAJOR, brand: str = "Google Chrome") -> dict[str, Any]:
    return {
        "brands": [
            {"brand": "Chromium", "version": major},
            {"brand": brand, "version": major},
            {"brand": "Not-A.Brand", "version": "99"},
        ],
        "fullVersion": f"{major}.0.0.0",
        "platform": "Linux",
        "platformVersion": "",
        "architecture": "x86",
        "model": "",
        "mobile": False,
    }


# Modules the QR payload is built from, as whatsapp-web.js builds it.
QR_MODULES = [
    "WAWebConnModel",
    "WAWebSignalStoreApi",
    "WAWebUserPrefsInfoStore",
    "WABase64",
    "WAWebUserPrefsMultiDevice",
    "WAWebCompanionRegClientUtils",
]
MSG_MODULES = [
    "WAWebCollections",
    "WAWebWidFactory",
    "WAWebFindChatAction",
    "WAWebSendMsgChatAction",
    "WAWebMsgKey",
    "WAWebUserPrefsMeUser",
    "WAWebGetEphemeralFieldsMsgActionsUtils",
]

QR_FROM_MODULES = """async () => {
  const registrationInfo = await window.require('WAWebSignalStoreApi').waSignalStore.getRegistrationInfo();
  const noiseKeyPair = await window.require('WAWebUserPrefsInfoStore').waNoiseInfo.get();
  const staticKeyB64 = window.require('WABase64').encodeB64(noiseKeyPair.staticKeyPair.pubKey);
  const identityKeyB64 = window.require('WABase64').encodeB64(registrationInfo.identityKeyPair.pubKey);
  const advSecretKey = await window.require('WAWebUserPrefsMultiDevice').getADVSecretKey();
  const platform = window.require('WAWebCompanionRegClientUtils').DEVICE_PLATFORM;
  const ref = window.require('WAWebConnModel').Conn.ref;
  return ref && [ref, staticKeyB64, identityKeyB64, advSecretKey, platform].join(',');
}"""

# Records every Socket state, hasSynced, Conn ref and loading event, once the modules exist
# (polled from the page's own timers, so nothing is required before it is registered).
RECORDER = """
(() => {
  window.__log = [];
  const when = (names, then) => {
    try { then(...names.map((n) => window.require(n))); }
    catch (e) { setTimeout(() => when(names, then), 2); }
  };
  if (window.top !== window) return;
  when(['WAWebSocketModel', 'WAWebConnModel'], ({ Socket }, { Conn }) => {
    window.__log.push('hooked:' + Socket.state);
    Socket.on('change:state', (_m, state) => window.__log.push('state:' + state));
    Socket.on('change:hasSynced', (_m, value) => window.__log.push('synced:' + value));
    Conn.on('change:ref', () => window.__log.push('ref'));
  });
  when(['WAWebCmd', 'WAWebOfflineHandler'], ({ Cmd }, { OfflineMessageHandler }) => {
    Cmd.on('offline_progress_update_from_bridge',
      () => window.__log.push('progress:' + OfflineMessageHandler.getOfflineDeliveryProgress()));
    Cmd.on('offline_progress_update', () => window.__log.push('old-progress-event'));
    Cmd.on('offline_delivery_end_from_bridge', () => window.__log.push('offline-end'));
    Cmd.on('logout logout_from_bridge', () => window.__log.push('logout-event'));
  });
})();
"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=chromium.executable_path(),
            args=[*chromium.launch_args(), "--disable-blink-features=AutomationControlled"],
        )
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def sandbox_at() -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Starts sandboxes with a light page (unless asked otherwise), optionally on a given port
    and with a state file; `sandbox_at(port=..., state_path=..., **knobs)`."""
    from sandbox.app import Sandbox, SandboxSettings

    made: list[Any] = []

    async def make(port: int = 0, state_path: Path | None = None, **knobs: Any) -> Any:
        knobs.setdefault("page_weight", "light")
        sb = Sandbox(SandboxSettings(**knobs), host="127.0.0.1", port=port, state_path=state_path)
        await sb.start()
        made.append(sb)
        return sb

    yield make
    for sb in reversed(made):
        await sb.aclose()


async def open_page(
    ctx: BrowserContext,
    url: str,
    *,
    user_agent: str = CHROME_UA,
    metadata: dict[str, Any] | None = None,
    init_scripts: tuple[str, ...] = (RECORDER,),
    errors: list[str] | None = None,
) -> Page:
    """A page with a fixed user agent and client hints, the given init scripts, at `url`;
    `errors` collects its console errors and warnings and uncaught exceptions."""
    page = await ctx.new_page()
    if errors is not None:
        page.on(
            "console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None
        )
        page.on("pageerror", lambda e: errors.append(str(e)))
    for script in init_scripts:
        await page.add_init_script(script)
    cdp = await ctx.new_cdp_session(page)
    await cdp.send(
        "Emulation.setUserAgentOverride",
        {"userAgent": user_agent, "userAgentMetadata": metadata or ua_metadata()},
    )
    await page.goto(url)
    return page


async def wait_modules(page: Page, names: list[str]) -> None:
    """Wait until every named module can be required (a host hooks only then)."""
    await page.wait_for_function(
        """(names) => names.every((n) => { try { window.require(n); return true; }
                                           catch (e) { return false; } })""",
        arg=names,
        timeout=DEADLINE * 1000,
    )


async def socket_state(page: Page) -> str:
    return str(await page.evaluate("() => window.require('WAWebSocketModel').Socket.state"))


async def wait_state(page: Page, *states: str) -> str:
    """Wait for Socket.state to be one of `states`; returns it."""
    await wait_modules(page, ["WAWebSocketModel"])
    await page.wait_for_function(
        "(states) => states.includes(window.require('WAWebSocketModel').Socket.state)",
        arg=list(states),
        timeout=DEADLINE * 1000,
    )
    return await socket_state(page)


async def qr_code(page: Page) -> str:
    """The QR payload built from the modules, once a QR is on show."""
    await wait_modules(page, QR_MODULES)
    await page.wait_for_function(
        "() => window.require('WAWebConnModel').Conn.ref", timeout=DEADLINE * 1000
    )
    code = await page.evaluate(QR_FROM_MODULES)
    assert isinstance(code, str) and code.count(",") == 4, code
    return code


async def phone_call(
    url: str, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url + path, json=body) as resp,
    ):
        return resp.status, await resp.json()


async def link(page: Page, url: str, phone: str = PHONE) -> dict[str, Any]:
    """Scan the page's QR with the simulated phone and wait until the account has synced."""
    status, reply = await phone_call(
        url, "POST", "phone/scan", {"code": await qr_code(page), "phone": phone}
    )
    assert status == 200, reply
    await wait_synced(page)
    return reply


async def wait_synced(page: Page) -> None:
    await wait_modules(page, ["WAWebSocketModel"])
    await page.wait_for_function(
        "() => window.require('WAWebSocketModel').Socket.hasSynced", timeout=DEADLINE * 1000
    )


async def page_log(page: Page) -> list[str]:
    return list(await page.evaluate("() => window.__log"))
