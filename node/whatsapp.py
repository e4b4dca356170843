"""Everything the node knows about WhatsApp Web's page internals, and nothing else does.

It reads only what whatsapp-web.js reads: `window.Debug.VERSION`; the module loader's
`WAWebSocketModel.Socket` (state, hasSynced), `WAWebConnModel.Conn` (ref, change:ref),
`WAWebCmd.Cmd` with `WAWebOfflineHandler` (loading progress); the legacy `div[data-ref]`
holding the five-field QR payload; and `last-wid-md` in localStorage for the linked number.
`WA_URL=https://web.whatsapp.com` is the production setting, the sandbox's URL the test one.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page

from node.errors import PageError

# Socket states (WAWebSocketModel.Socket.state).
OPENING = "OPENING"
PAIRING = "PAIRING"
UNPAIRED = "UNPAIRED"
UNPAIRED_IDLE = "UNPAIRED_IDLE"
CONNECTED = "CONNECTED"
CONFLICT = "CONFLICT"
TIMEOUT = "TIMEOUT"
LOGIN_NEEDED = frozenset({UNPAIRED, UNPAIRED_IDLE})

BINDING = "__sessionMeshEvent"

# Runs at document start (an init script): polls until the app is ready, then subscribes to its
# models and reports every change through the binding, starting with the state at that moment.
# Hooking this early means no QR shown before the node looked is ever missed. The QR payload is
# read from the legacy DOM in the same tick as change:ref, which saves a round trip.
_INIT_JS = """
(() => {
  if (window.top !== window) return;
  const binding = "__BINDING__";
  const emit = (kind, value) => window[binding](kind, value);
  const qr = (ref) => {
    const el = document.querySelector('div[data-ref]');
    return {ref: ref, code: el ? el.getAttribute('data-ref') : null};
  };
  const hook = () => {
    if (!(window.Debug && window.Debug.VERSION && typeof window.require === 'function')) {
      return false;
    }
    const Socket = window.require('WAWebSocketModel').Socket;
    const Conn = window.require('WAWebConnModel').Conn;
    const Cmd = window.require('WAWebCmd').Cmd;
    const Offline = window.require('WAWebOfflineHandler').OfflineMessageHandler;
    Socket.on('change:state', (_m, state) => emit('state', state));
    Socket.on('change:hasSynced', (_m, synced) => emit('synced', !!synced));
    Conn.on('change:ref', (_m, ref) => emit('qr', qr(ref)));
    Cmd.on('offline_progress_update', () =>
      emit('progress', Offline.getOfflineDeliveryProgress()));
    emit('hooked', {state: Socket.state, synced: !!Socket.hasSynced,
                    qr: Conn.ref ? qr(Conn.ref) : null});
    window.__sessionMeshHooked = true;
    return true;
  };
  const poll = () => {
    let done = false;
    try { done = hook(); } catch (e) { done = false; }
    if (!done) setTimeout(poll, 20);
  };
  poll();
})();
""".replace("__BINDING__", BINDING)

_WAIT_QR_JS = """
(ref) => {
  const el = document.querySelector('div[data-ref]');
  const code = el && el.getAttribute('data-ref');
  return code && code.startsWith(ref + ',') ? code : null;
}
"""

_LOGOUT_JS = """
() => {
  const Socket = window.require('WAWebSocketModel').Socket;
  if (typeof Socket.logout === 'function') { return Socket.logout(); }
}
"""

_PHONE_JS = "() => window.localStorage.getItem('last-wid-md')"
_WID_RE = re.compile(r"^(\d{5,20})")


@dataclass(frozen=True)
class PageEvent:
    """One change the page reported: kind is state, synced, qr or progress."""

    kind: str
    value: Any


def is_qr_payload(code: str) -> bool:
    """The real five-field form: ref,noiseKeyB64,identityKeyB64,advSecretB64,platform."""
    parts = code.split(",")
    return len(parts) == 5 and all(parts)


class WhatsAppPage:
    """Drives one WhatsApp Web page: load it, hook its models, read the QR and the number."""

    def __init__(self, page: Page, on_event: Callable[[PageEvent], None]) -> None:
        self._page = page
        self._on_event = on_event
        self._hooked = asyncio.Event()

    async def open(self, url: str, *, timeout: float) -> None:
        """Load the app and subscribe to it. The page's state at that moment arrives as a
        `hooked` event, then every change, in order, through `on_event`."""
        await self._page.expose_binding(BINDING, self._binding)
        await self._page.add_init_script(script=_INIT_JS)
        try:
            async with asyncio.timeout(timeout):
                await self._page.goto(url, wait_until="commit", timeout=timeout * 1000)
                # The hook reports itself through the binding; waiting on that (not on a
                # wait_for_function, which polls every animation frame) costs no CPU.
                await self._hooked.wait()
        except PlaywrightError as e:
            raise PageError(f"WhatsApp Web did not load from {url}: {_short(e)}") from e
        except TimeoutError as e:
            raise PageError(f"WhatsApp Web did not load from {url} within {timeout:g}s") from e

    async def logout(self) -> None:
        """Unlink this device, as WhatsApp Web's own menu does (Socket.logout)."""
        await self._page.evaluate(_LOGOUT_JS)

    async def version(self) -> str:
        return str(await self._page.evaluate("() => window.Debug.VERSION"))

    async def qr_payload(self, ref: str, code: str | None, *, timeout: float = 5.0) -> str:
        """The payload for `ref`: the one read with it, else wait for the DOM to catch up."""
        if code and code.startswith(ref + ",") and is_qr_payload(code):
            return code
        try:
            handle = await self._page.wait_for_function(
                _WAIT_QR_JS, arg=ref, timeout=timeout * 1000
            )
            value = await handle.json_value()
        except PlaywrightError as e:
            raise PageError(f"QR payload for ref {ref[:12]}... not in div[data-ref]") from e
        if not isinstance(value, str) or not is_qr_payload(value):
            raise PageError("div[data-ref] does not hold a five-field QR payload")
        return value

    async def phone(self) -> str:
        """The linked number, from the wid WhatsApp Web keeps in localStorage ('' if unknown)."""
        try:
            wid = await self._page.evaluate(_PHONE_JS)
        except PlaywrightError:
            return ""
        if not isinstance(wid, str):
            return ""
        match = _WID_RE.match(wid.strip('"'))
        return match.group(1) if match else ""

    def _binding(self, _source: Any, kind: str, value: Any) -> None:
        if kind == "hooked" and isinstance(value, dict):
            self._hooked.set()
            self._on_event(PageEvent("state", value.get("state")))
            if value.get("qr"):
                self._on_event(PageEvent("qr", value["qr"]))
            if value.get("synced"):
                self._on_event(PageEvent("synced", True))
            return
        self._on_event(PageEvent(kind, value))


def _short(error: Exception) -> str:
    return str(error).splitlines()[0][:200]
