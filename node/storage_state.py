"""A context's login storage, saved with its non-extractable keys and loaded back through a page.

**Saving** (`capture`): the page dumps its origin's localStorage and every IndexedDB database
itself, in one read-only transaction per database, with its own encoding of structured-clone
values (Playwright's: dates, typed arrays and array buffers, maps, sets, bigints, regexps,
shared references; plus blobs, and CryptoKeys). Playwright's `storage_state(indexed_db=True)`
writes a CryptoKey as `{}` (it cannot read a non-extractable key), so a login kept under one
would come back to a QR. Here each non-extractable CryptoKey found in a record is matched against
the materials `node.keyring` recorded as the page made its keys: a key and a material are the
same when the same operation on both gives the same result (a derivation, a MAC, an encryption
with a fixed IV; for one-way uses, a round trip through the material). An extractable key is
exported inline. A key no material matches is listed as `unresolved`, and such a snapshot is
refused by the caller.

**Loading** (`load`): `browser.new_context(storage_state=...)` opens a page of its own in a new
renderer to write the storage; here the session's own page (the node's warm spare) does it:
each origin is visited as an empty document served by a route, the key materials are imported
back non-extractable, the IndexedDB records and localStorage are written, then the page goes on
to the app from the same renderer. Snapshots written by Playwright (older saved logins) load
the same way. For a state with parts this loader does not write (OPFS, WebAuthn credentials),
`unsupported` says so and the caller falls back to Playwright's own loading.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import BrowserContext, Page, Route

FORMAT = "sessionmesh/2"
HAND_OVER_PIECE = 128 << 10
HANDLED_ORIGIN_KEYS = frozenset({"origin", "localStorage", "indexedDB"})
HANDLED_STATE_KEYS = frozenset({"cookies", "origins", "keys", "format"})

# Shared by both scripts: base64 helpers and the original SubtleCrypto (node.keyring keeps the
# unhooked methods under a symbol; a page without the hook uses its own).
_PRELUDE_JS = r"""
  const subtle = crypto.subtle;
  const orig = globalThis[Symbol.for('sessionmesh.subtle')] || Object.getPrototypeOf(subtle);
  const call = (name, ...args) => orig[name].apply(subtle, args);
  const bytesOf = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const b64 = (data) => {
    const u = data instanceof ArrayBuffer ? new Uint8Array(data)
      : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    let s = '';
    for (let i = 0; i < u.length; i += 0x8000) {
      s += String.fromCharCode.apply(null, u.subarray(i, i + 0x8000));
    }
    return btoa(s);
  };
  const importMaterial = (m, usages, extractable) => call('importKey', m.format,
    m.format === 'jwk' ? m.data : bytesOf(m.data), m.algorithm, !!extractable, usages || m.usages);
  const kinds = {Int8Array: 'i8', Uint8Array: 'ui8', Uint8ClampedArray: 'ui8c', Int16Array: 'i16',
                 Uint16Array: 'ui16', Int32Array: 'i32', Uint32Array: 'ui32',
                 Float32Array: 'f32', Float64Array: 'f64', BigInt64Array: 'bi64',
                 BigUint64Array: 'bui64', DataView: 'dv'};
"""

_CAPTURE_JS = (
    r"""
async (materialsJson) => {
"""
    + _PRELUDE_JS
    + r"""
  const materials = JSON.parse(materialsJson).reverse();  // newest first
  const done = (r) => new Promise((ok, bad) => { r.onsuccess = () => ok(r.result);
                                                 r.onerror = () => bad(r.error); });
  const FIX = new Uint8Array(32).map((_, i) => (i * 7 + 1) & 255);
  const equal = (a, b) => {
    if (!a || !b || a.byteLength !== b.byteLength) return false;
    const x = new Uint8Array(a), y = new Uint8Array(b);
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
    return true;
  };
  const peers = {};
  const peer = async (a) => {
    const id = a.name + (a.namedCurve || '');
    if (!peers[id]) {
      peers[id] = await call('generateKey', a.namedCurve ? {name: a.name, namedCurve: a.namedCurve}
                                                      : {name: a.name}, true, ['deriveBits']);
    }
    return peers[id].publicKey;
  };
  const bits = {'P-256': 256, 'P-384': 384, 'P-521': 528};
  // A result that only the same key gives, for keys with a deterministic use; else null.
  const probe = async (key) => {
    const a = key.algorithm, u = key.usages, n = a.name;
    const kdf = n === 'HKDF' ? {name: n, hash: 'SHA-256', salt: FIX, info: FIX}
      : {name: n, hash: 'SHA-256', salt: FIX, iterations: 1};
    if ((n === 'HKDF' || n === 'PBKDF2') && u.includes('deriveBits')) {
      return call('deriveBits', kdf, key, 256);
    }
    if ((n === 'HKDF' || n === 'PBKDF2') && u.includes('deriveKey')) {
      const k = await call('deriveKey', kdf, key, {name: 'HMAC', hash: 'SHA-256', length: 256},
                           true, ['sign']);
      return call('exportKey', 'raw', k);
    }
    if (n === 'HMAC' && u.includes('sign')) return call('sign', 'HMAC', key, FIX);
    if (n === 'AES-GCM' && u.includes('encrypt')) {
      return call('encrypt', {name: n, iv: FIX.slice(0, 12)}, key, FIX);
    }
    if (n === 'AES-CBC' && u.includes('encrypt')) {
      return call('encrypt', {name: n, iv: FIX.slice(0, 16)}, key, FIX);
    }
    if (n === 'AES-CTR' && u.includes('encrypt')) {
      return call('encrypt', {name: n, counter: FIX.slice(0, 16), length: 64}, key, FIX);
    }
    if (n === 'AES-KW' && u.includes('wrapKey')) {
      const k = await call('importKey', 'raw', FIX.slice(0, 16), 'AES-GCM', true, ['encrypt']);
      return call('wrapKey', 'raw', k, key, 'AES-KW');
    }
    if ((n === 'ECDH' || n === 'X25519') && u.includes('deriveBits')) {
      return call('deriveBits', {name: n, public: await peer(a)}, key,
                  n === 'X25519' ? 256 : bits[a.namedCurve]);
    }
    if (n === 'Ed25519' && u.includes('sign')) return call('sign', n, key, FIX);
    return null;
  };
  // For one-way uses: the material does the other half, the stored key must agree.
  const roundTrip = async (key, m) => {
    const n = key.algorithm.name, u = key.usages;
    if (n.startsWith('AES-') && n !== 'AES-KW' && u.includes('decrypt')) {
      const twin = await importMaterial(m, ['encrypt']);
      const params = n === 'AES-GCM' ? {name: n, iv: FIX.slice(0, 12)}
        : n === 'AES-CBC' ? {name: n, iv: FIX.slice(0, 16)}
        : {name: n, counter: FIX.slice(0, 16), length: 64};
      const sealed = await call('encrypt', params, twin, FIX);
      return equal(await call('decrypt', params, key, sealed), FIX.buffer);
    }
    if (n === 'HMAC' && u.includes('verify')) {
      const twin = await importMaterial(m, ['sign']);
      return call('verify', 'HMAC', key, await call('sign', 'HMAC', twin, FIX), FIX);
    }
    if (n === 'ECDSA' && u.includes('sign')) {
      const jwk = await call('exportKey', 'jwk', await importMaterial(m, null, true));
      const pub = await call('importKey', 'jwk', {kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y},
                             {name: n, namedCurve: key.algorithm.namedCurve}, true, ['verify']);
      const params = {name: n, hash: 'SHA-256'};
      return call('verify', params, pub, await call('sign', params, key, FIX), FIX);
    }
    return false;
  };
  const sameShape = (key, m) => {
    const a = key.algorithm, b = m.algorithm;
    if (key.type !== m.type || a.name !== b.name) return false;
    if ((a.hash && a.hash.name) !== b.hash || (a.namedCurve || undefined) !== b.namedCurve) {
      return false;
    }
    return [...key.usages].sort().join() === [...m.usages].sort().join();
  };
  const probes = new Map();  // material id -> its probe
  const resolve = async (key) => {
    const own = await probe(key).catch(() => null);
    for (const m of materials) {
      if (!sameShape(key, m)) continue;
      try {
        if (own) {
          if (!probes.has(m.id)) probes.set(m.id, await probe(await importMaterial(m)));
          if (equal(own, probes.get(m.id))) return m.id;
        } else if (await roundTrip(key, m)) {
          return m.id;
        }
      } catch (e) { /* not this one */ }
    }
    return null;
  };

  const pending = [];
  const unresolved = [];
  const used = new Set();
  const encoder = (where) => {
    const ids = new Map();
    const enc = (v) => {
      if (v === undefined) return {v: 'undefined'};
      if (v === null) return null;
      switch (typeof v) {
        case 'boolean': case 'string': return v;
        case 'number':
          if (Object.is(v, -0)) return {v: '-0'};
          if (Number.isNaN(v)) return {v: 'NaN'};
          if (v === Infinity) return {v: 'Infinity'};
          if (v === -Infinity) return {v: '-Infinity'};
          return v;
        case 'bigint': return {bi: v.toString()};
        case 'object': break;
        default: throw new Error('a ' + typeof v + ' cannot be stored');
      }
      if (ids.has(v)) return {ref: ids.get(v)};
      if (v instanceof Date) return {d: Number.isNaN(v.getTime()) ? 'Invalid Date' : v.toISOString()};
      if (v instanceof RegExp) return {r: {p: v.source, f: v.flags}};
      if (v instanceof Error) return {e: {n: v.name, m: v.message, s: v.stack || ''}};
      if (v instanceof ArrayBuffer) return {ab: {b: b64(v)}};
      if (ArrayBuffer.isView(v)) return {ta: {b: b64(v), k: kinds[v.constructor.name] || 'ui8'}};
      if (typeof CryptoKey !== 'undefined' && v instanceof CryptoKey) {
        const slot = {};
        pending.push(v.extractable
          ? (async () => {
              const format = v.type === 'secret' ? 'jwk' : v.type === 'public' ? 'spki' : 'pkcs8';
              const data = await call('exportKey', format, v);
              const a = {...v.algorithm};
              if (a.hash) a.hash = a.hash.name;
              slot.ckx = {format, data: format === 'jwk' ? data : b64(data), algorithm: a,
                          usages: v.usages};
            })()
          : resolve(v).then((id) => {
              slot.ck = id;
              if (id) used.add(id);
              else unresolved.push(where + ': a ' + v.algorithm.name + ' key (' +
                                   v.usages.join(', ') + ') made where it could not be recorded');
            }));
        return slot;
      }
      if (typeof Blob !== 'undefined' && v instanceof Blob) {
        const slot = {};
        pending.push(v.arrayBuffer().then((data) => {
          slot.blob = {b: b64(data), type: v.type};
          if (typeof File !== 'undefined' && v instanceof File) {
            slot.blob.name = v.name;
            slot.blob.lastModified = v.lastModified;
          }
        }));
        return slot;
      }
      const id = ids.size + 1;
      ids.set(v, id);
      if (Array.isArray(v)) return {a: Array.from(v, enc), id};
      if (v instanceof Map) return {m: Array.from(v, ([k, x]) => ({k: enc(k), v: enc(x)})), id};
      if (v instanceof Set) return {s: Array.from(v, enc), id};
      return {o: Object.keys(v).map((k) => ({k, v: enc(v[k])})), id};
    };
    return enc;
  };

  const databases = [];
  for (const info of await indexedDB.databases()) {
    if (!info.name) continue;
    const db = await done(indexedDB.open(info.name));
    try {
      const names = Array.from(db.objectStoreNames);
      const out = {name: db.name, version: db.version, stores: []};
      databases.push(out);
      if (names.length === 0) continue;
      const tx = db.transaction(names, 'readonly');
      for (const name of names) {
        const store = tx.objectStore(name);
        const inline = store.keyPath !== null;
        const [values, keys] = await Promise.all([
          done(store.getAll()), inline ? null : done(store.getAllKeys())]);
        const where = db.name + '/' + name;
        out.stores.push({
          name, keyPath: store.keyPath, autoIncrement: store.autoIncrement,
          indexes: Array.from(store.indexNames, (n) => {
            const ix = store.index(n);
            return {name: n, keyPath: ix.keyPath, unique: ix.unique, multiEntry: ix.multiEntry};
          }),
          records: values.map((value, i) => inline
            ? {valueEncoded: encoder(where)(value)}
            : {valueEncoded: encoder(where)(value), keyEncoded: encoder(where)(keys[i])}),
        });
      }
    } finally {
      db.close();
    }
  }
  await Promise.all(pending);
  const localStorageItems = [];
  for (let i = 0; i < localStorage.length; i++) {
    const name = localStorage.key(i);
    localStorageItems.push({name, value: localStorage.getItem(name)});
  }
  return JSON.stringify({localStorage: localStorageItems, indexedDB: databases,
                         used: [...used], unresolved});
}
"""
)

_RESTORE_JS = (
    r"""
async () => {
"""
    + _PRELUDE_JS
    + r"""
  const parts = globalThis[Symbol.for('sessionmesh.restore')];
  delete globalThis[Symbol.for('sessionmesh.restore')];
  const state = JSON.parse(parts.join(''));
  const types = {i8: Int8Array, ui8: Uint8Array, ui8c: Uint8ClampedArray, i16: Int16Array,
                 ui16: Uint16Array, i32: Int32Array, ui32: Uint32Array, f32: Float32Array,
                 f64: Float64Array, bi64: BigInt64Array, bui64: BigUint64Array, dv: DataView};
  const special = {undefined: undefined, null: null, NaN: NaN, Infinity: Infinity,
                   '-Infinity': -Infinity, '-0': -0};
  const keys = new Map();
  for (const m of state.keys || []) keys.set(m.id, await importMaterial(m));
  // Extractable keys are imported before decoding, which is synchronous.
  const inline = new Map();
  const found = [];
  const walk = (v) => {
    if (v === null || typeof v !== 'object') return;
    if (Array.isArray(v)) { for (const x of v) walk(x); return; }
    if ('ckx' in v) { found.push(v); return; }
    for (const x of Object.values(v)) walk(x);
  };
  const importInline = (nodes) => Promise.all(nodes.map(async (v) => {
    const c = v.ckx;
    inline.set(v, await call('importKey', c.format, c.format === 'jwk' ? c.data : bytesOf(c.data),
                             c.algorithm, true, c.usages));
  }));
  const decode = (v, refs) => {
    if (v === null || typeof v !== 'object') return v;
    if ('ref' in v) return refs.get(v.ref);
    if ('v' in v) return special[v.v];
    if ('d' in v) return new Date(v.d);
    if ('bi' in v) return BigInt(v.bi);
    if ('r' in v) return new RegExp(v.r.p, v.r.f);
    if ('e' in v) { const e = new Error(v.e.m); e.name = v.e.n; e.stack = v.e.s; return e; }
    if ('ta' in v) {
      const Kind = types[v.ta.k];
      if (!Kind) throw new Error('unknown typed array kind ' + v.ta.k);
      return new Kind(bytesOf(v.ta.b).buffer);
    }
    if ('ab' in v) return bytesOf(v.ab.b).buffer;
    if ('ck' in v) {
      if (!keys.has(v.ck)) throw new Error('the saved login lacks key ' + v.ck);
      return keys.get(v.ck);
    }
    if ('ckx' in v) return inline.get(v);
    if ('blob' in v) {
      const b = v.blob, parts = [bytesOf(b.b)];
      return b.name === undefined ? new Blob(parts, {type: b.type})
        : new File(parts, b.name, {type: b.type, lastModified: b.lastModified});
    }
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
  for (const info of state.origin.indexedDB || []) {
    found.length = 0;
    walk(info.stores);
    await importInline(found);
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
  for (const {name, value} of state.origin.localStorage || []) localStorage.setItem(name, value);
}
"""
)


@dataclass
class Captured:
    """One origin's storage as `capture` read it."""

    origin: dict[str, Any]
    used: list[str] = field(default_factory=list)  # key materials its records hold
    unresolved: list[str] = field(default_factory=list)  # keys no material matched


def unsupported(state: dict[str, Any]) -> str:
    """What in `state` this loader does not write ('' when it writes all of it)."""
    extra = {k for k, v in state.items() if v} - HANDLED_STATE_KEYS
    for origin in state.get("origins") or []:
        extra |= {k for k, v in origin.items() if v} - HANDLED_ORIGIN_KEYS
    return f"the saved state has {', '.join(sorted(extra))}" if extra else ""


async def capture(page: Page, materials: list[dict[str, Any]]) -> Captured:
    """The storage of `page`'s origin, its CryptoKeys matched against `materials`."""
    raw = await page.evaluate(_CAPTURE_JS, json.dumps(materials))
    dumped = await asyncio.to_thread(json.loads, raw)  # megabytes: off the event loop
    origin = {
        "origin": _origin(page.url),
        "localStorage": dumped["localStorage"],
        "indexedDB": dumped["indexedDB"],
    }
    return Captured(origin, list(dumped["used"]), list(dumped["unresolved"]))


def state_of(
    cookies: list[Any], captured: Captured, materials: list[dict[str, Any]]
) -> dict[str, Any]:
    """A whole snapshot: the cookies, the origin, and the key materials its records use."""
    wanted = set(captured.used)
    return {
        "format": FORMAT,
        "cookies": cookies,
        "origins": [captured.origin],
        "keys": [m for m in materials if m["id"] in wanted],
    }


async def load(context: BrowserContext, page: Page, state: dict[str, Any]) -> None:
    """Write `state` into `context` using `page`, a fresh page of it (see `unsupported`). The
    page is left on the last origin's empty document."""
    cookies = state.get("cookies") or []
    if cookies:
        await context.add_cookies(cookies)
    keys = state.get("keys") or []
    for origin in state.get("origins") or []:
        url = str(origin["origin"]).rstrip("/")

        async def blank(route: Route) -> None:
            await route.fulfill(status=200, content_type="text/html", body="<html></html>")

        await page.route(f"{url}/**", blank)
        try:
            await page.goto(f"{url}/", wait_until="commit")
            payload = await asyncio.to_thread(json.dumps, {"origin": origin, "keys": keys})
            await _hand_over(page, payload)
            await page.evaluate(_RESTORE_JS)
        finally:
            await page.unroute(f"{url}/**", blank)


async def _hand_over(page: Page, payload: str) -> None:
    """Put `payload` in the page in pieces, all sent at once: one big evaluate argument takes
    Playwright's pipe from the client to its driver about a minute for a real login's 40 MB,
    pieces of 128 KiB about a second."""
    await page.evaluate("() => { globalThis[Symbol.for('sessionmesh.restore')] = []; }")
    await asyncio.gather(
        *(
            page.evaluate(
                "([i, part]) => { globalThis[Symbol.for('sessionmesh.restore')][i] = part; }",
                [i, payload[start : start + HAND_OVER_PIECE]],
            )
            for i, start in enumerate(range(0, len(payload), HAND_OVER_PIECE))
        )
    )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
