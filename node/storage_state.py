"""Load a saved login (Playwright storage state) into a context through the page it already has.

`browser.new_context(storage_state=...)` opens a page of its own in a new renderer, visits each
origin there, writes the storage and closes it; the session's page is a second renderer. Here
the session's own page (the node's warm spare) does that work: each origin is visited as an
empty document served by a route, its IndexedDB and localStorage are written, then the page goes
on to WhatsApp Web from the same renderer. About a renderer's start-up less per restore.

IndexedDB records come as Playwright writes them: plain JSON in `value`/`key`, else
`valueEncoded`/`keyEncoded` in Playwright's serialized form (dates, typed arrays and array
buffers, maps, sets, bigints, shared references), which `_RESTORE_JS` decodes. For a state with
parts this loader does not write (OPFS, WebAuthn credentials), `unsupported` says so and the
caller falls back to Playwright's own loading.
"""

from __future__ import annotations

from typing import Any

from playwright.async_api import BrowserContext, Page, Route

HANDLED_ORIGIN_KEYS = frozenset({"origin", "localStorage", "indexedDB"})
HANDLED_STATE_KEYS = frozenset({"cookies", "origins"})

_RESTORE_JS = """
async (state) => {
  const kinds = {i8: Int8Array, ui8: Uint8Array, ui8c: Uint8ClampedArray, i16: Int16Array,
                 ui16: Uint16Array, i32: Int32Array, ui32: Uint32Array, f32: Float32Array,
                 f64: Float64Array, bi64: BigInt64Array, bui64: BigUint64Array};
  const special = {undefined: undefined, null: null, NaN: NaN, Infinity: Infinity,
                   '-Infinity': -Infinity, '-0': -0};
  const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const decode = (v, refs) => {
    if (v === null || typeof v !== 'object') return v;
    if ('ref' in v) return refs.get(v.ref);
    if ('v' in v) return special[v.v];
    if ('d' in v) return new Date(v.d);
    if ('bi' in v) return BigInt(v.bi);
    if ('r' in v) return new RegExp(v.r.p, v.r.f);
    if ('e' in v) { const e = new Error(v.e.m); e.name = v.e.n; e.stack = v.e.s; return e; }
    if ('ta' in v) {
      const Kind = kinds[v.ta.k];
      if (!Kind) throw new Error('unknown typed array kind ' + v.ta.k);
      return new Kind(bytes(v.ta.b).buffer);
    }
    if ('ab' in v) return bytes(v.ab.b).buffer;
    if ('a' in v) {
      const out = []; refs.set(v.id, out);
      for (const item of v.a) out.push(decode(item, refs));
      return out;
    }
    if ('o' in v) {
      const out = {}; refs.set(v.id, out);
      for (const {k, v: item} of v.o) if (k !== '__proto__') out[k] = decode(item, refs);
      return out;
    }
    if ('m' in v) {
      const out = new Map(); refs.set(v.id, out);
      for (const {k, v: item} of v.m) out.set(decode(k, refs), decode(item, refs));
      return out;
    }
    if ('s' in v) {
      const out = new Set(); refs.set(v.id, out);
      for (const item of v.s) out.add(decode(item, refs));
      return out;
    }
    throw new Error('unsupported value in the saved IndexedDB: ' + Object.keys(v).join(','));
  };
  const done = (request) => new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  for (const info of state.indexedDB || []) {
    const open = indexedDB.open(info.name, info.version);
    open.onupgradeneeded = () => {
      for (const store of info.stores) {
        const made = open.result.createObjectStore(store.name, {
          autoIncrement: store.autoIncrement, keyPath: store.keyPathArray ?? store.keyPath});
        for (const index of store.indexes || []) {
          made.createIndex(index.name, index.keyPathArray ?? index.keyPath,
                           {unique: index.unique, multiEntry: index.multiEntry});
        }
      }
    };
    const db = await done(open);
    try {
      if (db.objectStoreNames.length === 0) continue;
      const tx = db.transaction(db.objectStoreNames, 'readwrite');
      const written = new Promise((resolve, reject) => {
        tx.oncomplete = resolve;
        tx.onabort = () => reject(tx.error || new Error('transaction aborted'));
      });
      for (const store of info.stores) {
        const target = tx.objectStore(store.name);
        for (const record of store.records) {
          const value = 'value' in record ? record.value : decode(record.valueEncoded, new Map());
          const key = 'key' in record ? record.key
            : (record.keyEncoded === undefined ? undefined : decode(record.keyEncoded, new Map()));
          target.add(value, key);
        }
      }
      await written;
    } finally {
      db.close();
    }
  }
  for (const {name, value} of state.localStorage || []) localStorage.setItem(name, value);
}
"""


def unsupported(state: dict[str, Any]) -> str:
    """What in `state` this loader does not write ('' when it writes all of it)."""
    extra = {k for k, v in state.items() if v} - HANDLED_STATE_KEYS
    for origin in state.get("origins") or []:
        extra |= {k for k, v in origin.items() if v} - HANDLED_ORIGIN_KEYS
    return f"the saved state has {', '.join(sorted(extra))}" if extra else ""


async def load(context: BrowserContext, page: Page, state: dict[str, Any]) -> None:
    """Write `state` into `context` using `page`, a fresh page of it (see `unsupported`). The
    page is left on the last origin's empty document."""
    cookies = state.get("cookies") or []
    if cookies:
        await context.add_cookies(cookies)
    for origin in state.get("origins") or []:
        url = str(origin["origin"]).rstrip("/")

        async def blank(route: Route) -> None:
            await route.fulfill(status=200, content_type="text/html", body="<html></html>")

        await page.route(f"{url}/**", blank)
        try:
            await page.goto(f"{url}/", wait_until="commit")
            await page.evaluate(_RESTORE_JS, origin)
        finally:
            await page.unroute(f"{url}/**", blank)
