"""A login kept under non-extractable keys, made in the page and in a worker, survives a snapshot.

The page below keeps what a real app keeps: an HKDF key imported from random bytes, keys made by
generateKey and deriveKey, a decrypt-only key, an X25519 private key, an extractable public key,
a Map holding a key, all in IndexedDB; some of them made in a dedicated worker, where an init
script never runs. Every key's behaviour is read before the snapshot and again after loading it
into a fresh context, and must be the same. Playwright's own storage state loses them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from node import storage_state
from node.browser import BrowserPool
from node.keyring import KeyRing, RealmHooks
from tests.helpers import wait_for

pytestmark = pytest.mark.browser

_COMMON = """
const done = (r) => new Promise((ok, bad) => { r.onsuccess = () => ok(r.result);
                                               r.onerror = () => bad(r.error); });
const FIX = new TextEncoder().encode('the same input for every key');
const openVault = () => {
  const r = indexedDB.open('vault', 2);
  r.onupgradeneeded = () => {
    r.result.createObjectStore('keys', {keyPath: 'id', autoIncrement: true});
    r.result.createObjectStore('worker', {keyPath: 'name'});
  };
  return done(r);
};
const put = async (store, value) => {
  const db = await openVault();
  const tx = db.transaction(store, 'readwrite');
  tx.objectStore(store).put(value);
  await new Promise((ok, bad) => { tx.oncomplete = ok; tx.onabort = () => bad(tx.error); });
  db.close();
};
"""

_WORKER = (
    _COMMON
    + """
(async () => {
  const s = crypto.subtle;
  const base = await s.importKey('raw', crypto.getRandomValues(new Uint8Array(64)), 'HKDF',
                                 false, ['deriveBits', 'deriveKey']);
  const aes = await s.deriveKey({name: 'HKDF', hash: 'SHA-256', salt: FIX, info: FIX}, base,
                                {name: 'AES-GCM', length: 256}, false, ['encrypt', 'decrypt']);
  const mac = await s.generateKey({name: 'HMAC', hash: 'SHA-256'}, false, ['sign', 'verify']);
  await put('worker', {name: 'base', key: base});
  await put('worker', {name: 'aes', key: aes, extra: new Map([['mac', mac]])});
  postMessage('stored');
})();
"""
)

_PAGE = (
    "<!doctype html><script src='page.js'></script>",
    _COMMON
    + """
(async () => {
  const s = crypto.subtle;
  const raw = crypto.getRandomValues(new Uint8Array(128));
  const login = await s.importKey('raw', raw, {name: 'HKDF'}, false, ['deriveKey']);
  const gcm = await s.generateKey({name: 'AES-GCM', length: 128}, false, ['encrypt']);
  const cbcBytes = crypto.getRandomValues(new Uint8Array(16));
  const cbc = await s.importKey('raw', cbcBytes, 'AES-CBC', false, ['decrypt']);
  const twin = await s.importKey('raw', cbcBytes, 'AES-CBC', false, ['encrypt']);
  const iv = new Uint8Array(16);
  const sealed = await s.encrypt({name: 'AES-CBC', iv}, twin, FIX);
  const pair = await s.generateKey({name: 'X25519'}, false, ['deriveBits']);
  const peer = await s.generateKey({name: 'X25519'}, true, ['deriveBits']);
  await put('keys', {key: login, _expiration: 0});
  await put('keys', {key: gcm, set: new Set(['a', 1])});
  await put('keys', {key: cbc, sealed, iv});
  await put('keys', {key: pair.privateKey, peer: peer.publicKey, when: new Date(1700000000000)});
  const worker = new Worker('worker.js');
  worker.onmessage = () => { window.stored = true; };
})();
""",
)

# What each stored key does, as data: the same table before and after means the same keys.
_TABLE_JS = (
    """
async () => {
"""
    + _COMMON
    + """
  const s = crypto.subtle;
  const hex = (b) => Array.from(new Uint8Array(b), (x) => x.toString(16).padStart(2, '0')).join('');
  const db = await openVault();
  const all = (store) => done(db.transaction(store).objectStore(store).getAll());
  const [keys, worker] = [await all('keys'), await all('worker')];
  db.close();
  const out = [];
  const hkdf = {name: 'HKDF', hash: 'SHA-256', salt: FIX, info: new Uint8Array(1)};
  const login = await s.deriveKey(hkdf, keys[0].key, {name: 'AES-CBC', length: 128}, true,
                                  ['encrypt']);
  out.push(hex(await s.exportKey('raw', login)));
  out.push(hex(await s.encrypt({name: 'AES-GCM', iv: new Uint8Array(12)}, keys[1].key, FIX)));
  out.push([...keys[1].set].join());
  out.push(hex(await s.decrypt({name: 'AES-CBC', iv: keys[2].iv}, keys[2].key, keys[2].sealed)));
  out.push(hex(await s.deriveBits({name: 'X25519', public: keys[3].peer}, keys[3].key, 256)));
  out.push(keys[3].when.getTime());
  const byName = Object.fromEntries(worker.map((r) => [r.name, r]));
  out.push(hex(await s.deriveBits(hkdf, byName.base.key, 256)));
  out.push(hex(await s.encrypt({name: 'AES-GCM', iv: new Uint8Array(12)}, byName.aes.key, FIX)));
  out.push(hex(await s.sign('HMAC', byName.aes.extra.get('mac'), FIX)));
  out.push(keys.map((k) => k.key.extractable).concat(worker.map((w) => w.key.extractable)));
  return out;
}
"""
)


@pytest.fixture
async def vault_url() -> AsyncIterator[str]:
    html, script = _PAGE
    pages = {
        "/": (html, "text/html"),
        "/page.js": (script, "application/javascript"),
        "/worker.js": (_WORKER, "application/javascript"),
        "/check": ("<p>check</p>", "text/html"),
    }

    async def serve(request: web.Request) -> web.Response:
        text, kind = pages[request.path]
        return web.Response(text=text, content_type=kind)

    app = web.Application()
    for path in pages:
        app.router.add_get(path, serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def _made_keys(pool: BrowserPool, url: str) -> tuple[Any, Any, KeyRing]:
    context, page = await pool.open_page()
    ring = KeyRing()
    hooks = RealmHooks(page, ring)
    await hooks.install(context)
    await page.goto(url + "/")
    await page.wait_for_function("window.stored === true", timeout=60_000)
    return context, page, ring


async def test_keys_made_in_the_page_and_a_worker_come_back_the_same(vault_url: str) -> None:
    async with BrowserPool() as pool:
        context, page, ring = await _made_keys(pool, vault_url)
        before = await page.evaluate(_TABLE_JS)
        assert before[-1] == [False] * 6, "every stored key is non-extractable"

        captured = await storage_state.capture(page, ring.materials())
        assert captured.unresolved == []
        state = storage_state.state_of(await context.cookies(), captured, ring.materials())
        # Seven stored keys; the encrypt-only twin of the CBC key was made but never stored.
        assert (len(ring), len(state["keys"])) == (8, 7), "only the stored keys are saved"
        assert storage_state.unsupported(state) == ""
        await context.close()

        restored, page2 = await pool.open_page(state)
        try:
            await page2.goto(vault_url + "/check")
            assert await page2.evaluate(_TABLE_JS) == before
        finally:
            await restored.close()


async def test_a_key_made_where_nothing_recorded_it_is_reported_unresolved(
    vault_url: str,
) -> None:
    async with BrowserPool() as pool:
        context, page, ring = await _made_keys(pool, vault_url)
        try:
            worker_ids = {m["id"] for m in ring.materials() if m["algorithm"]["name"] == "HMAC"}
            assert worker_ids, "the worker's keys were recorded"
            partial = [m for m in ring.materials() if m["id"] not in worker_ids]
            captured = await storage_state.capture(page, partial)
            assert captured.unresolved == [
                "vault/worker: a HMAC key (sign, verify) made where it could not be recorded"
            ]
        finally:
            await context.close()


async def test_playwrights_own_storage_state_loses_the_keys(vault_url: str) -> None:
    async with BrowserPool() as pool:
        context, _page, _ring = await _made_keys(pool, vault_url)
        state = dict(await context.storage_state(indexed_db=True))
        await context.close()
        theirs = await pool.new_context(state)
        try:
            page2 = await theirs.new_page()
            await page2.goto(vault_url + "/check")
            with pytest.raises(Exception, match="CryptoKey"):
                await page2.evaluate(_TABLE_JS)
        finally:
            await theirs.close()


def test_the_ring_takes_only_materials() -> None:
    ring = KeyRing()
    ring.report(
        '{"id": "a.1", "format": "raw", "data": "AA==", "algorithm": {"name": "HKDF"},'
        ' "usages": ["deriveKey"], "type": "secret"}'
    )
    ring.report('{"id": "a.2", "format": "spki"}')
    ring.report("not json")
    ring.report('{"uncaptured": "deriveKey", "error": "SyntaxError"}')
    assert [m["id"] for m in ring.materials()] == ["a.1"]
    assert ring.uncaptured == 1


async def test_the_hook_reports_what_the_page_and_its_workers_write(vault_url: str) -> None:
    async with BrowserPool() as pool:
        context, page, ring = await _made_keys(pool, vault_url)
        try:
            # The page and its worker both wrote `vault` (the worker's report comes through
            # the page a moment later).
            await wait_for(lambda: "vault" in ring.changed, what="the write to be reported")
            assert "vault" in ring.take_changes()
            assert ring.changed == set()
            await page.evaluate("() => localStorage.setItem('k', 'v')")
            await wait_for(lambda: bool(ring.changed), what="the localStorage write")
            assert ring.take_changes() == {"localStorage"}
        finally:
            await context.close()
