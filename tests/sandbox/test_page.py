"""The sandbox page in a real Chromium, driven as a careful host drives WhatsApp Web: the browser
check, modules that register gradually, the QR from the modules, linking and the login storage,
restores, end states, logouts and the passkey step."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from tests.helpers import wait_for
from tests.sandbox.conftest import (
    PHONE,
    QR_MODULES,
    link,
    open_page,
    page_log,
    phone_call,
    qr_code,
    socket_state,
    ua_metadata,
    wait_modules,
    wait_state,
    wait_synced,
)

pytestmark = pytest.mark.browser

APP_LOADED = (
    "() => typeof window.require === 'function' && !!(window.Debug && window.Debug.VERSION)"
)
UPDATE_PAGE = "() => !!document.getElementById('update-browser')"
WID = f"{PHONE}:1@c.us"

STORAGE = """
async () => {
  const b64len = (s) => atob(s).length;
  const ls = Object.fromEntries(Object.entries(localStorage));
  const open = (name) => new Promise((ok, fail) => {
    const r = indexedDB.open(name); r.onsuccess = () => ok(r.result); r.onerror = () => fail(r.error);
  });
  const all = (db, store) => new Promise((ok, fail) => {
    const r = db.transaction(store).objectStore(store).getAll();
    r.onsuccess = () => ok(r.result); r.onerror = () => fail(r.error);
  });
  const describeKey = (k) => k instanceof CryptoKey
    ? { crypto: true, type: k.type, extractable: k.extractable, algorithm: k.algorithm.name,
        usages: [...k.usages] }
    : { crypto: false };
  const out = { ls, dbs: (await indexedDB.databases()).map((d) => d.name).sort() };
  const enc = await open('wawc_db_enc');
  out.enc = {};
  for (const store of ['keys', 'fts_hmac_keys', 'worm_ear_keys']) {
    const rows = await all(enc, store);
    out.enc[store] = rows.map((r) => ({ id: r.id, expiration: typeof r._expiration,
                                        key: describeKey(r.key) }));
  }
  out.store = enc.transaction('keys').objectStore('keys');
  out.keyPath = out.store.keyPath; out.autoIncrement = out.store.autoIncrement; delete out.store;
  // Decrypt WANoiseInfo with the stored key, as the app does on load.
  const rows = await all(enc, 'keys');
  const salt = Uint8Array.from(atob(JSON.parse(ls.WAWebEncKeySalt)), (c) => c.charCodeAt(0));
  const ivs = JSON.parse(ls.WANoiseInfoIv).map((s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0)));
  const noise = JSON.parse(ls.WANoiseInfo);
  const key = await crypto.subtle.deriveKey(
    { name: 'HKDF', hash: 'SHA-256', salt, info: new Uint8Array(1) }, rows[rows.length - 1].key,
    { name: 'AES-CBC', length: 128 }, false, ['decrypt']);
  const pub = new Uint8Array(await crypto.subtle.decrypt({ name: 'AES-CBC', iv: ivs[1] }, key,
    Uint8Array.from(atob(noise.pubKey), (c) => c.charCodeAt(0))));
  out.noisePub = btoa(String.fromCharCode(...pub));
  enc.close();
  const signal = await open('signal-storage');
  out.signal = { stores: [...signal.objectStoreNames].sort(), cryptoKeys: 0, maps: 0 };
  for (const store of signal.objectStoreNames) {
    for (const row of await all(signal, store)) {
      for (const v of Object.values(row)) {
        if (v instanceof CryptoKey) out.signal.cryptoKeys++;
        if (v instanceof Map) out.signal.maps++;
      }
    }
  }
  signal.close();
  const model = await open('model-storage');
  out.model = { stores: model.objectStoreNames.length };
  const msgs = await all(model, 'message');
  out.model.messages = msgs.length;
  out.model.sealed = msgs.every((m) => m.msgRowOpaqueData && m.msgRowOpaqueData.ct instanceof Uint8Array);
  out.model.chats = (await all(model, 'chat')).length;
  model.close();
  out.lengths = {
    salt: b64len(JSON.parse(ls.WAWebEncKeySalt)),
    privKey: b64len(noise.privKey), pubKey: b64len(noise.pubKey),
    recoveryToken: b64len(noise.recoveryToken), ivs: ivs.map((iv) => iv.length),
  };
  return out;
}
"""


async def app_or_update(page: Page) -> str:
    """ "app" or "update": which page the browser got."""
    await page.wait_for_function(f"() => ({APP_LOADED})() || ({UPDATE_PAGE})()")
    return "update" if await page.evaluate(UPDATE_PAGE) else "app"


async def test_identity_gate(sandbox_at: Any, browser: Browser) -> None:
    sb = await sandbox_at()
    ctx = await browser.new_context()

    # The headless shell as it is: the server answers with the update page; no app at all.
    page = await ctx.new_page()
    response = await page.goto(sb.url)
    assert (
        response is not None and "script-src 'self'" in response.headers["content-security-policy"]
    )
    assert await page.evaluate(UPDATE_PAGE)
    assert await page.evaluate("() => [typeof window.Debug, typeof window.require]") == [
        "undefined",
        "undefined",
    ]

    # An outdated Chrome, in the user agent and the client hints.
    old = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36"
    page = await open_page(
        ctx, sb.url, user_agent=old, metadata=ua_metadata("119"), init_scripts=()
    )
    assert await app_or_update(page) == "update"

    # A careful host's identity gets the app.
    page = await open_page(ctx, sb.url, init_scripts=())
    assert await app_or_update(page) == "app"

    # The page re-checks navigator: a user agent or brands that still say HeadlessChrome.
    spoof_ua = "Object.defineProperty(Navigator.prototype, 'userAgent', {get: () => 'Mozilla/5.0 HeadlessChrome/156.0.0.0'});"
    page = await open_page(ctx, sb.url, init_scripts=(spoof_ua,))
    assert await app_or_update(page) == "update"
    assert await page.evaluate("() => typeof window.Debug") == "undefined"
    spoof_brands = (
        "Object.defineProperty(Navigator.prototype, 'userAgentData', {get: () => ({brands: "
        "[{brand: 'HeadlessChrome', version: '156'}], mobile: false, platform: 'Linux'})});"
    )
    page = await open_page(ctx, sb.url, init_scripts=(spoof_brands,))
    assert await app_or_update(page) == "update"

    # navigator.webdriver: refused only with the refuse_webdriver knob.
    webdriver = "Object.defineProperty(Navigator.prototype, 'webdriver', {get: () => true});"
    page = await open_page(ctx, sb.url, init_scripts=(webdriver,))
    assert await app_or_update(page) == "app"
    sb.configure(refuse_webdriver=True)
    page = await open_page(ctx, sb.url, init_scripts=(webdriver,))
    assert await app_or_update(page) == "update"
    page = await open_page(ctx, sb.url, init_scripts=())
    assert await page.evaluate("() => navigator.webdriver") is False
    assert await app_or_update(page) == "app"
    await ctx.close()


MODULE_WATCH = """
(() => {
  const names = %s;
  window.__modules = {};
  window.__early = null;
  window.addEventListener('load', () => { window.__loadAt = performance.now(); });
  const poll = () => {
    if (window.Debug && window.Debug.VERSION && window.__debugAt === undefined) {
      window.__debugAt = performance.now();
      try { window.require('WAWebSignalStoreApi'); window.__early = 'no error'; }
      catch (e) { window.__early = e.message; }
    }
    for (const n of names) {
      if (window.__modules[n] === undefined) {
        try { window.require(n); window.__modules[n] = performance.now(); } catch (e) {}
      }
    }
    if (Object.keys(window.__modules).length < names.length) setTimeout(poll, 2);
  };
  poll();
})();
"""


async def test_modules_register_gradually(sandbox_at: Any, browser: Browser) -> None:
    sb = await sandbox_at()
    ctx = await browser.new_context()
    names = [*QR_MODULES, "WAWebSocketModel", "WAWebCmd", "WAWebOfflineHandler", "WAWebCollections",
             "WAWebSendMsgChatAction", "WAWebFindChatAction", "WAWebMsgKey", "WAWebWidFactory"]  # fmt: skip
    page = await open_page(ctx, sb.url, init_scripts=(MODULE_WATCH % json.dumps(names),))
    await page.wait_for_function(
        "(n) => Object.keys(window.__modules).length === n && window.__loadAt", arg=len(names)
    )
    seen = await page.evaluate(
        "() => ({modules: window.__modules, debugAt: window.__debugAt, loadAt: window.__loadAt,"
        " early: window.__early})"
    )
    assert seen["early"] == 'Requiring unknown module "WAWebSignalStoreApi"'
    times = sorted(seen["modules"].values())
    assert times[-1] - seen["debugAt"] >= 200  # spread over hundreds of ms after Debug.VERSION
    assert times[-1] > seen["loadAt"]  # some only after the load event
    assert sum(t > seen["loadAt"] for t in times) >= 3
    modules_map = await page.evaluate("() => Object.keys(window.require('__debug').modulesMap)")
    assert set(names) <= set(modules_map)
    assert await page.locator("div[data-ref]").count() == 0
    await wait_state(page, "UNPAIRED")
    assert await page.locator("div[data-ref]").count() == 0
    await ctx.close()


async def test_qr_rotation_refresh_and_legacy_dom(sandbox_at: Any, browser: Browser) -> None:
    sb = await sandbox_at(first_qr_ttl=1.0, qr_ttl=0.5, qr_count=3)
    ctx = await browser.new_context()
    page = await open_page(ctx, sb.url)
    await wait_state(page, "UNPAIRED_IDLE")
    log = await page_log(page)
    assert log[log.index("ref") :] == ["ref", "state:UNPAIRED", "ref", "ref", "state:UNPAIRED_IDLE"]
    assert await page.evaluate("() => window.require('WAWebConnModel').Conn.ref") is None
    # whatsapp-web.js refreshes an idle QR through Cmd.refreshQR().
    await page.evaluate("() => window.require('WAWebCmd').Cmd.refreshQR()")
    await wait_for(
        lambda: _count(page, "state:UNPAIRED_IDLE", 2),
        what="a second QR sequence",
    )
    assert (await page_log(page)).count("ref") == 6

    # The legacy knob puts the payload in div[data-ref], the same the modules give.
    sb.configure(legacy_qr_dom=True, first_qr_ttl=60.0)
    page = await open_page(ctx, sb.url)
    code = await qr_code(page)
    assert await page.get_attribute("div[data-ref]", "data-ref") == code
    await ctx.close()


async def _count(page: Page, entry: str, n: int) -> bool:
    return (await page_log(page)).count(entry) >= n


async def test_link_stores_the_login_as_the_real_page(sandbox_at: Any, browser: Browser) -> None:
    sb = await sandbox_at(sync_delay=0.3)
    ctx = await browser.new_context()
    errors: list[str] = []
    page = await open_page(ctx, sb.url, errors=errors)
    code = await qr_code(page)
    fields = code.split(",")
    assert fields[4] == "WEB" and all(len(base64.b64decode(f)) == 32 for f in fields[1:4])
    reply = await link(page, sb.url)
    assert reply == {"phone": PHONE, "device": 1, "wid": WID}
    log = await page_log(page)
    assert log[log.index("state:PAIRING") :][:2] == ["state:PAIRING", "state:CONNECTED"]
    progress = [int(e.split(":")[1]) for e in log if e.startswith("progress:")]
    assert progress[0] == 0 and progress[-1] == 100 and progress == sorted(progress)
    assert "offline-end" in log and log[-1] == "synced:true"
    assert "old-progress-event" not in log

    s = await page.evaluate(STORAGE)
    assert s["ls"]["last-wid-md"] == json.dumps(WID)
    assert s["lengths"] == {"salt": 128, "privKey": 48, "pubKey": 48, "recoveryToken": 32,
                            "ivs": [16, 16, 16]}  # fmt: skip
    assert s["noisePub"] == fields[1]  # the key the phone scanned
    assert s["keyPath"] == "id" and s["autoIncrement"] is True
    page_key = {"crypto": True, "type": "secret", "extractable": False, "algorithm": "HKDF",
                "usages": ["deriveKey"]}  # fmt: skip
    assert [r["key"] for r in s["enc"]["keys"]] == [page_key]
    for store in ("fts_hmac_keys", "worm_ear_keys"):
        assert [r["key"]["usages"] for r in s["enc"][store]] == [["deriveBits"]]
        assert s["enc"][store][0]["key"]["extractable"] is False
    assert all(r["expiration"] == "number" for rows in s["enc"].values() for r in rows)
    assert s["signal"]["cryptoKeys"] >= 1 and s["signal"]["maps"] >= 1
    assert s["model"]["stores"] >= 100 and s["model"]["messages"] > 0 and s["model"]["sealed"]
    assert {"wawc_db_enc", "signal-storage", "model-storage"} <= set(s["dbs"])

    _, devices = await phone_call(sb.url, "GET", f"phone/devices?phone={PHONE}")
    assert [(d["device"], d["online"]) for d in devices["devices"]] == [(1, True)]
    assert errors == []  # no CSP violation, no error on the way
    await ctx.close()


async def test_restore_in_same_context_and_not_from_storage_state(
    sandbox_at: Any, browser: Browser
) -> None:
    sb = await sandbox_at()
    ctx = await browser.new_context()
    page = await open_page(ctx, sb.url)
    await link(page, sb.url)

    # A reload restores from the page's own storage: no QR, straight to CONNECTED.
    await page.reload()
    await wait_synced(page)
    log = await page_log(page)
    assert "ref" not in log and "state:CONNECTED" in log and "state:UNPAIRED" not in log

    # The same login copied with Playwright's storage_state: the CryptoKey does not survive the
    # copy, so the fresh context shows a QR, as the real page would. Nothing is deleted and the
    # phone still has the device.
    snapshot = await ctx.storage_state(indexed_db=True)
    ctx2 = await browser.new_context(storage_state=snapshot)
    page2 = await open_page(ctx2, sb.url)
    await wait_state(page2, "UNPAIRED")
    assert "state:CONNECTED" not in await page_log(page2)
    kept = await page2.evaluate("() => Object.keys(localStorage)")
    assert sorted(kept) == ["WANoiseInfo", "WANoiseInfoIv", "WAWebEncKeySalt", "last-wid-md"]
    _, devices = await phone_call(sb.url, "GET", f"phone/devices?phone={PHONE}")
    assert [d["device"] for d in devices["devices"]] == [1]
    assert await socket_state(page) == "CONNECTED"  # the original is untouched
    await ctx2.close()

    # Two tabs of the same browser: the second restores, the first gets CONFLICT.
    tab2 = await open_page(ctx, sb.url)
    await wait_synced(tab2)
    await wait_state(page, "CONFLICT")
    assert sb.conflicts() == {PHONE: 1}
    # Socket.takeover() takes the login back; now the other tab stops.
    await page.evaluate("() => window.require('WAWebSocketModel').Socket.takeover()")
    await wait_state(page, "CONNECTED")
    await wait_state(tab2, "CONFLICT")
    assert sb.conflicts() == {PHONE: 2}
    await ctx.close()


async def test_restart_keeps_the_device_only_with_a_state_file(
    sandbox_at: Any, browser: Browser, tmp_path: Path
) -> None:
    state = tmp_path / "state" / "sandbox.json"
    sb = await sandbox_at(state_path=state)
    port = sb.port
    ctx = await browser.new_context()
    page = await open_page(ctx, sb.url)
    await link(page, sb.url)
    await sb.aclose()
    await wait_state(page, "TIMEOUT", "OPENING")
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert sorted(p.name for p in state.parent.iterdir()) == ["sandbox.json"]

    # The same server back: the page reconnects by itself and proves its key, no QR.
    sb2 = await sandbox_at(port=port, state_path=state)
    await wait_state(page, "CONNECTED")
    await page.reload()
    await wait_synced(page)
    assert "ref" not in await page_log(page)
    await sb2.aclose()

    # A server that forgot (no state file): the device is gone; the page logs out.
    await sandbox_at(port=port)
    await page.wait_for_url("**/?post_logout=1", timeout=60_000)
    await wait_state(page, "UNPAIRED")
    assert await page.evaluate("() => localStorage.getItem('WANoiseInfo')") is None
    await ctx.close()


@pytest.mark.parametrize("state", ["TOS_BLOCK", "SMB_TOS_BLOCK"])
async def test_account_end_states(sandbox_at: Any, browser: Browser, state: str) -> None:
    sb = await sandbox_at()
    ctx = await browser.new_context()
    page = await open_page(ctx, sb.url)
    await link(page, sb.url)
    status, reply = await phone_call(
        sb.url, "POST", "phone/state", {"phone": PHONE, "state": state}
    )
    assert status == 200 and reply["browsers"] == 1
    await wait_state(page, state)
    # The account stays blocked for a new load too; lifting it lets the login back in.
    await page.reload()
    await wait_state(page, state)
    await phone_call(sb.url, "POST", "phone/state", {"phone": PHONE, "state": None})
    await page.reload()
    await wait_synced(page)
    await ctx.close()


async def test_states_before_login(sandbox_at: Any, browser: Browser) -> None:
    sb = await sandbox_at()
    ctx = await browser.new_context()
    for state in ("DEPRECATED_VERSION", "PROXYBLOCK", "UNLAUNCHED"):
        sb.configure(initial_state=state)
        page = await open_page(ctx, sb.url)
        await page.wait_for_function(
            "(s) => window.__log.includes('state:' + s)", arg=state, timeout=60_000
        )
        assert await socket_state(page) == state
        assert "ref" not in await page_log(page)
        await page.close()
    await ctx.close()


async def test_missing_salt_logs_the_page_out(sandbox_at: Any, browser: Browser) -> None:
    """WAWebWorkerEncKeyHelper: "[DB ENC CRITICAL ERROR] null returned for local enc salt", then
    the app logs itself out. It cannot open its noise key, so the server is not told."""
    sb = await sandbox_at()
    ctx = await browser.new_context()
    page = await open_page(ctx, sb.url)
    await link(page, sb.url)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await page.evaluate("() => localStorage.removeItem('WAWebEncKeySalt')")
    await page.reload()
    await page.wait_for_url("**/?post_logout=1", timeout=60_000)
    await wait_state(page, "UNPAIRED")
    assert any("null returned for local enc salt" in e for e in errors)
    assert await page.evaluate("() => localStorage.getItem('WANoiseInfo')") is None
    _, devices = await phone_call(sb.url, "GET", f"phone/devices?phone={PHONE}")
    assert [d["device"] for d in devices["devices"]] == [1]
    await ctx.close()


async def test_logout_reloads_with_post_logout(sandbox_at: Any, browser: Browser) -> None:
    sb = await sandbox_at()
    ctx = await browser.new_context()
    page = await open_page(ctx, sb.url)
    await link(page, sb.url)
    status, reply = await phone_call(sb.url, "POST", "phone/logout", {"phone": PHONE})
    assert status == 200 and reply["browsers"] == 1
    await page.wait_for_url("**/?post_logout=1", timeout=60_000)
    await wait_state(page, "UNPAIRED")
    gone = await page.evaluate(
        "async () => ({ls: Object.keys(localStorage),"
        " dbs: (await indexedDB.databases()).map((d) => d.name)})"
    )
    assert gone["ls"] == []
    assert not {"wawc_db_enc", "signal-storage", "model-storage"} & set(gone["dbs"])

    # Socket.logout() from the page unlinks the device and reloads the same way.
    await link(page, sb.url)
    # The URL says post_logout already: wait for the new load, not for the URL.
    async with page.expect_navigation(url="**/?post_logout=1", timeout=60_000):
        await page.evaluate("() => window.require('WAWebSocketModel').Socket.logout()")
    await wait_state(page, "UNPAIRED")
    _, devices = await phone_call(sb.url, "GET", f"phone/devices?phone={PHONE}")
    assert devices["devices"] == []
    await ctx.close()


PASSKEY_WATCH = """
(() => {
  window.__passkey = [];
  const original = navigator.credentials.get.bind(navigator.credentials);
  navigator.credentials.get = (options) => {
    const call = { rpId: options && options.publicKey && options.publicKey.rpId };
    window.__passkey.push(call);
    return original(options).then(
      (v) => { call.result = 'resolved'; return v; },
      (e) => { call.result = e.name; throw e; });
  };
})();
"""


async def test_passkey_blocks_linking(sandbox_at: Any, browser: Browser) -> None:
    sb = await sandbox_at(passkey=True)
    ctx = await browser.new_context()
    page = await open_page(ctx, sb.url, init_scripts=(PASSKEY_WATCH,))
    code = await qr_code(page)
    status, reply = await phone_call(sb.url, "POST", "phone/scan", {"code": code, "phone": PHONE})
    assert status == 202 and reply == {"phone": PHONE, "pending": "passkey"}
    await page.wait_for_function("() => window.__passkey.length && window.__passkey[0].result")
    calls = await page.evaluate("() => window.__passkey")
    assert calls[0]["rpId"] == "whatsapp.com" and calls[0]["result"] != "resolved"
    assert await socket_state(page) == "PAIRING"
    _, devices = await phone_call(sb.url, "GET", f"phone/devices?phone={PHONE}")
    assert devices["devices"] == []
    await ctx.close()


async def test_calibrated_page_loads_its_weight(sandbox_at: Any, browser: Browser) -> None:
    """The default page parses its bundle and builds its heap before the first QR."""
    sb = await sandbox_at(page_weight="calibrated", idb_mb=1.0)
    ctx = await browser.new_context()
    page = await open_page(ctx, sb.url)
    await wait_state(page, "UNPAIRED")
    bundled = await page.evaluate(
        "() => Object.keys(window.require('__debug').modulesMap)"
        ".filter((n) => n.startsWith('WAWebBundled')).length"
    )
    assert bundled > 5000
    used = await page.evaluate("() => performance.memory.usedJSHeapSize")
    assert used > 100 * 1024 * 1024
    await wait_modules(page, QR_MODULES)
    await ctx.close()
