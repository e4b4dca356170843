"""A saved login loaded through the session's own page gives the same storage as Playwright's
own loading: cookies, localStorage and IndexedDB with binary, dated and shared values."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import BrowserContext, Route

from node import storage_state
from node.browser import BrowserPool

pytestmark = pytest.mark.browser

# Fills the origin's storage with what a real app keeps: keys as ArrayBuffers, typed arrays,
# dates, maps, sets, bigints, one object referenced twice, out-of-line and compound keys,
# auto-increment and indexes.
_FILL_JS = """
async () => {
  const done = (r) => new Promise((ok, bad) => { r.onsuccess = () => ok(r.result);
                                                 r.onerror = () => bad(r.error); });
  const open = indexedDB.open('wawc', 3);
  open.onupgradeneeded = () => {
    const db = open.result;
    db.createObjectStore('user', {keyPath: 'key'});
    const keys = db.createObjectStore('keys');  // out-of-line keys
    keys.createIndex('by_kind', 'kind', {unique: false, multiEntry: true});
    db.createObjectStore('log', {autoIncrement: true});
    const pairs = db.createObjectStore('pairs', {keyPath: ['a', 'b']});
    pairs.createIndex('by_b', 'b', {unique: true});
  };
  const db = await done(open);
  const tx = db.transaction(['user', 'keys', 'log', 'pairs'], 'readwrite');
  const shared = {note: 'twice'};
  tx.objectStore('user').put({key: 'WAToken2', value: 'tok"en\\u00e9', n: -0, big: 12n ** 20n});
  tx.objectStore('user').put({key: 'when', at: new Date(1700000000123), nan: NaN,
                              inf: -Infinity, nothing: null, missing: undefined});
  tx.objectStore('keys').put({kind: ['noise', 'identity'], pub: new Uint8Array([0, 1, 254, 255]),
                              f: new Float64Array([1.5, -2.25]), raw: new ArrayBuffer(3)},
                             new Uint8Array([9, 8, 7]).buffer);
  tx.objectStore('keys').put({kind: ['adv'], m: new Map([['a', 1], ['b', shared]]),
                              s: new Set([1, 'two']), again: shared, re: /x+y/gi},
                             ['compound', 2]);
  tx.objectStore('keys').put({kind: [], when: new Date(0)}, new Date(86400000));
  tx.objectStore('log').add({line: 'first'});
  tx.objectStore('log').add({line: 'second', bytes: new Int16Array([-1, 300])});
  tx.objectStore('pairs').put({a: 1, b: 'x', v: [1, [2, [3]]]});
  await new Promise((ok, bad) => { tx.oncomplete = ok; tx.onabort = () => bad(tx.error); });
  db.close();
  localStorage.setItem('last-wid-md', '6281234567890:1@c.us');
  localStorage.setItem('WAToken1', '"quoted"');
}
"""

# Everything in the origin's storage, typed, as JSON that compares equal when the data is.
_DUMP_JS = """
async () => {
  const done = (r) => new Promise((ok, bad) => { r.onsuccess = () => ok(r.result);
                                                 r.onerror = () => bad(r.error); });
  const seen = new Map();
  const t = (v) => {
    if (v === undefined) return ['undefined'];
    if (typeof v === 'number') return ['number', Object.is(v, -0) ? '-0' : String(v)];
    if (typeof v === 'bigint') return ['bigint', String(v)];
    if (v === null || typeof v !== 'object') return [typeof v, v];
    if (seen.has(v)) return ['ref', seen.get(v)];
    seen.set(v, seen.size);
    if (v instanceof Date) return ['Date', v.getTime()];
    if (v instanceof RegExp) return ['RegExp', v.source, v.flags];
    if (v instanceof ArrayBuffer) return ['ArrayBuffer', Array.from(new Uint8Array(v))];
    if (ArrayBuffer.isView(v)) return [v.constructor.name, Array.from(v, String)];
    if (v instanceof Map) return ['Map', Array.from(v, ([k, x]) => [t(k), t(x)])];
    if (v instanceof Set) return ['Set', Array.from(v, t)];
    if (Array.isArray(v)) return ['Array', v.map(t)];
    return ['Object', Object.keys(v).sort().map((k) => [k, t(v[k])])];
  };
  const out = {localStorage: Object.keys(localStorage).sort().map(
    (k) => [k, localStorage.getItem(k)]), dbs: []};
  for (const info of (await indexedDB.databases()).sort((a, b) => a.name < b.name ? -1 : 1)) {
    const db = await done(indexedDB.open(info.name));
    const stores = [];
    for (const name of Array.from(db.objectStoreNames)) {
      const store = db.transaction(name).objectStore(name);
      const indexes = Array.from(store.indexNames).map((n) => {
        const ix = store.index(n); return [n, ix.keyPath, ix.unique, ix.multiEntry]; });
      const keys = await done(store.getAllKeys());
      const values = await done(db.transaction(name).objectStore(name).getAll());
      seen.clear();
      stores.push([name, store.keyPath, store.autoIncrement, indexes,
                   keys.map((k, i) => [t(k), t(values[i])])]);
    }
    out.dbs.push([info.name, db.version, stores]);
    db.close();
  }
  return out;
}
"""


async def blank(route: Route) -> None:
    """Serves any page of the origin as an empty document."""
    await route.fulfill(status=200, content_type="text/html", body="<html></html>")


async def dump(context: BrowserContext, origin: str) -> Any:
    page = context.pages[0] if context.pages else await context.new_page()
    await page.route(f"{origin}/**", blank)
    await page.goto(f"{origin}/")
    return await page.evaluate(_DUMP_JS)


async def saved_login(pool: BrowserPool, origin: str) -> tuple[dict[str, Any], Any]:
    """A context filled with _FILL_JS and a cookie: its storage state and its dump."""
    context, page = await pool.open_page()
    try:
        await context.add_cookies(
            [{"name": "wa_lang", "value": "en", "url": origin}]  # type: ignore[list-item]
        )
        await page.route(f"{origin}/**", blank)
        await page.goto(f"{origin}/")
        await page.evaluate(_FILL_JS)
        state: dict[str, Any] = dict(await context.storage_state(indexed_db=True))
        return state, await dump(context, origin)
    finally:
        await context.close()


async def test_loading_through_the_page_matches_playwrights_own(sandbox: Any) -> None:
    origin = sandbox.url.rstrip("/")
    async with BrowserPool() as pool:
        state, original = await saved_login(pool, origin)
        encoded = [
            r
            for o in state["origins"]
            for db in o["indexedDB"]
            for s in db["stores"]
            for r in s["records"]
        ]
        assert any("valueEncoded" in r for r in encoded), "the test must cover encoded values"
        assert any("keyEncoded" in r for r in encoded), "the test must cover encoded keys"
        assert storage_state.unsupported(state) == ""

        ours, _page = await pool.open_page(state)  # the warm spare, loaded by storage_state
        theirs = await pool.new_context(state)  # Playwright's own loading
        try:
            assert await dump(ours, origin) == original
            assert await dump(theirs, origin) == original
            assert [(c["name"], c["value"]) for c in await ours.cookies()] == [("wa_lang", "en")]
        finally:
            await ours.close()
            await theirs.close()


def test_parts_it_does_not_write_are_named() -> None:
    assert storage_state.unsupported({"cookies": [], "origins": []}) == ""
    assert storage_state.unsupported({"origins": [{"origin": "x", "opfs": []}]}) == ""
    reason = storage_state.unsupported(
        {"cookies": [], "origins": [{"origin": "x", "opfs": [{"path": "a"}]}], "credentials": [1]}
    )
    assert reason == "the saved state has credentials, opfs"
