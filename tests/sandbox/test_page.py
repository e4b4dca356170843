"""The sandbox page in a real Chromium: the surfaces a host reads, QR rotation, link, restore."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from sessionmesh import chromium
from tests.helpers import conflicts, phone, wait_for

pytestmark = pytest.mark.browser

PHONE = "4915112345678"

# Hooks the models the moment the app sets window.Debug (require exists by then), and logs every
# event with what the page's storage and DOM held at that moment.
RECORDER = """
(() => {
  window.__log = []; window.__refs = []; window.__atConnected = null;
  let debug;
  Object.defineProperty(window, 'Debug', { configurable: true, get: () => debug, set(value) {
    debug = value;
    window.__debugAt = performance.now();
    const Socket = window.require('WAWebSocketModel').Socket;
    const Conn = window.require('WAWebConnModel').Conn;
    const Cmd = window.require('WAWebCmd').Cmd;
    const Offline = window.require('WAWebOfflineHandler').OfflineMessageHandler;
    Socket.on('change:state', (_m, state) => {
      window.__log.push('state:' + state);
      if (state === 'CONNECTED') {
        const at = { ls: localStorage.getItem('last-wid-md'), token: localStorage.getItem('WAToken2') };
        window.__atConnected = at;
        const open = indexedDB.open('wawc');
        open.onsuccess = () => {
          const get = open.result.transaction('user').objectStore('user').get('last-wid-md');
          get.onsuccess = () => { at.idb = get.result ? get.result.value : null; open.result.close(); };
        };
      }
    });
    Socket.on('change:hasSynced', (_m, value) => window.__log.push('synced:' + value));
    Conn.on('change:ref', (_m, ref) => {
      window.__log.push('ref');
      const el = document.querySelector('div[data-ref]');
      window.__refs.push({ ref, dom: el && el.getAttribute('data-ref') });
    });
    Cmd.on('offline_progress_update',
      () => window.__log.push('progress:' + Offline.getOfflineDeliveryProgress()));
  }});
})();
"""

STORED = """
async () => {
  const db = await new Promise((ok, fail) => {
    const r = indexedDB.open('wawc'); r.onsuccess = () => ok(r.result); r.onerror = () => fail(r.error);
  });
  const rows = await new Promise((ok) => {
    if (!db.objectStoreNames.contains('user')) return ok([]);
    const r = db.transaction('user').objectStore('user').getAll(); r.onsuccess = () => ok(r.result);
  });
  db.close();
  return { idb: rows, wid: localStorage.getItem('last-wid-md'), token: localStorage.getItem('WAToken2') };
}
"""

QR_DRAWN = """
() => {
  const canvas = document.querySelector('div[data-ref] canvas');
  if (!canvas) return false;
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let dark = 0;
  for (let i = 0; i < data.length; i += 4) if (data[i + 3] > 0 && data[i] < 64) dark++;
  return dark > 1000;
}
"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=chromium.executable_path(), args=chromium.launch_args()
        )
        try:
            yield b
        finally:
            await b.close()


async def open_page(ctx: BrowserContext, url: str) -> Page:
    await ctx.add_init_script(RECORDER)
    page = await ctx.new_page()
    await page.goto(url)
    return page


async def state(page: Page) -> str:
    return str(await page.evaluate("() => window.require('WAWebSocketModel').Socket.state"))


async def log(page: Page) -> list[str]:
    return list(await page.evaluate("() => window.__log"))


async def wait_log(page: Page, entry: str, count: int = 1) -> None:
    async def seen() -> bool:
        return (await log(page)).count(entry) >= count

    await wait_for(seen, what=f"{count} x {entry!r} in the page's events")


async def test_surfaces_and_qr_rotation(sandbox_factory: Any, browser: Browser) -> None:
    sb = await sandbox_factory(first_qr_ttl=1.0, qr_ttl=0.5, qr_count=3, load_delay=0.3)
    ctx = await browser.new_context()
    page = await open_page(ctx, sb.url)
    await page.wait_for_function("() => window.Debug && window.Debug.VERSION")
    assert await page.evaluate("() => window.Debug.VERSION") == sb.settings.version
    assert await page.evaluate("() => window.__debugAt") >= 250  # set only after load_delay
    surfaces = await page.evaluate(
        """() => {
          const Socket = window.require('WAWebSocketModel').Socket;
          let unknown = null;
          try { window.require('WAWebNoSuchModule'); } catch (e) { unknown = e.message; }
          return {
            state: typeof Socket.state, synced: Socket.hasSynced,
            on: typeof Socket.on, off: typeof Socket.off,
            ref: 'ref' in window.require('WAWebConnModel').Conn,
            cmd: typeof window.require('WAWebCmd').Cmd.on,
            progress: window.require('WAWebOfflineHandler').OfflineMessageHandler
              .getOfflineDeliveryProgress(),
            unknown,
          };
        }"""
    )
    assert surfaces == {
        "state": "string", "synced": False, "on": "function", "off": "function", "ref": True,
        "cmd": "function", "progress": 0, "unknown": 'Requiring unknown module "WAWebNoSuchModule"',
    }  # fmt: skip

    await wait_log(page, "state:UNPAIRED_IDLE")
    assert await log(page) == ["ref", "state:UNPAIRED", "ref", "ref", "state:UNPAIRED_IDLE"]
    refs = await page.evaluate("() => window.__refs")
    assert len({r["ref"] for r in refs}) == 3
    for r in refs:  # the DOM held the full payload when change:ref fired
        fields = r["dom"].split(",")
        assert len(fields) == 5 and fields[0] == r["ref"] and fields[4] == "WEB"
        assert all(len(f) == 44 for f in fields[1:4])  # 32-byte keys, base64
    assert len({tuple(r["dom"].split(",")[1:4]) for r in refs}) == 1  # one key set per page load
    assert await page.locator("div[data-ref] canvas").count() == 0
    assert await page.evaluate("() => window.require('WAWebConnModel').Conn.ref") is None

    # Retry: a fresh sequence of qr_count codes, then idle again.
    await page.click("div[data-ref] > span > button")
    await wait_log(page, "state:UNPAIRED_IDLE", 2)
    assert (await log(page))[5:] == ["ref", "state:UNPAIRED", "ref", "ref", "state:UNPAIRED_IDLE"]
    await ctx.close()


async def test_link_restore_conflict_logout(sandbox_factory: Any, browser: Browser) -> None:
    sb = await sandbox_factory(first_qr_ttl=60.0, sync_delay=0.5)
    url = sb.url
    ctx1 = await browser.new_context()
    page1 = await open_page(ctx1, url)
    await page1.wait_for_function(QR_DRAWN)
    code = await page1.get_attribute("div[data-ref]", "data-ref")
    assert code is not None and len(code.split(",")) == 5
    conn_ref = await page1.evaluate("() => window.require('WAWebConnModel').Conn.ref")
    assert code.split(",")[0] == conn_ref

    # Scan: PAIRING, progress to 100, credentials stored, CONNECTED, then hasSynced.
    status, reply = await phone(url, "scan", code=code, phone=PHONE)
    assert status == 200 and reply["phone"] == PHONE and reply["device"] == 1
    await wait_log(page1, "synced:true")
    events = await log(page1)
    assert events[:3] == ["ref", "state:UNPAIRED", "state:PAIRING"]
    assert events[-2:] == ["state:CONNECTED", "synced:true"]
    progress = [int(e.split(":")[1]) for e in events[3:-2]]
    assert len(progress) >= 3 and progress == sorted(progress) and progress[-1] == 100
    wid = f"{PHONE}:1@c.us"
    await wait_for(
        lambda: page1.evaluate("() => window.__atConnected && 'idb' in window.__atConnected"),
        what="the IndexedDB read made at CONNECTED",
    )
    at_connected = await page1.evaluate("() => window.__atConnected")
    assert at_connected["ls"] == wid and at_connected["idb"] == wid and at_connected["token"]
    stored = await page1.evaluate(STORED)
    assert {r["key"]: r["value"] for r in stored["idb"]} == {
        "last-wid-md": wid,
        "WAToken2": stored["token"],
    }
    assert await page1.locator("[data-icon='search']").is_visible()
    assert await page1.locator("div[data-ref]").count() == 0

    status, reply = await phone(url, "send", phone=PHONE, **{"from": "4915100000001"}, body="hi!")
    assert status == 200 and reply["delivered"] == 1
    await page1.locator("#pane-side", has_text="hi!").wait_for()

    # Reload: straight to CONNECTED from the stored credentials, no QR.
    await page1.reload()
    await wait_log(page1, "synced:true")
    events = await log(page1)
    assert events[0] == "state:CONNECTED" and events[-1] == "synced:true"
    assert "ref" not in events and "progress:100" in events

    # A new context given the same storage (what the node does) restores too; the older page
    # is switched to CONFLICT and stops.
    snapshot = await ctx1.storage_state(indexed_db=True)
    ctx2 = await browser.new_context(storage_state=snapshot)
    page2 = await open_page(ctx2, url)
    await wait_log(page2, "synced:true")
    assert (await log(page2))[0] == "state:CONNECTED"
    await wait_log(page1, "state:CONFLICT")
    assert await page1.locator("#conflict").is_visible()
    assert sb.conflicts() == {PHONE: 1}

    # Logout from the phone: UNPAIRED, credentials cleared, a new QR.
    status, reply = await phone(url, "logout", phone=PHONE)
    assert status == 200 and reply["browsers"] == 1
    await wait_log(page2, "state:UNPAIRED")
    await page2.wait_for_function(QR_DRAWN)
    assert await page2.evaluate(STORED) == {"idb": [], "wid": None, "token": None}

    # The old snapshot is now invalid: the page clears it and shows a QR.
    ctx3 = await browser.new_context(storage_state=snapshot)
    page3 = await open_page(ctx3, url)
    await wait_log(page3, "state:UNPAIRED")
    assert await page3.evaluate(STORED) == {"idb": [], "wid": None, "token": None}
    assert "state:CONNECTED" not in await log(page3)
    assert await conflicts(url) == {PHONE: 1}
    for ctx in (ctx1, ctx2, ctx3):
        await ctx.close()
