"""Keys a page makes that cannot be exported, recorded as the page makes them.

A WebCrypto key made with `extractable: false` can never be read back: not by the page, not by
Playwright (`storage_state` writes it as `{}`), and such keys are what a web app keeps its login
under in IndexedDB. So every realm a session's page runs code in is hooked before its first
script runs: the page's frames by an init script; each dedicated or shared worker (and each
worker those start) by serving its script with the hook in front. The hook in the creating realm
marks a worker's URL with a query parameter the node routes (the worker's `location` hides it
again); a blob worker is started from a blob that runs the hook and then loads the app's blob.
(A second DevTools session that auto-attaches to workers cannot do this reliably: Playwright's
own session resumes each worker as soon as it has attached, often before the hook arrives.)

The hook also reports each database (and localStorage) written, so a snapshot of a login
that did not change is skipped. It makes each non-extractable key from material it can see (`importKey`'s bytes;
`generateKey`, `deriveKey` and `unwrapKey` made extractable first, exported, then imported
non-extractable) and reports that material: through a binding from the page, through a
BroadcastChannel to the page from workers. `node.storage_state` later matches the CryptoKeys it
finds in IndexedDB against these materials, and a restore imports them back, non-extractable,
before the app starts. Service workers are not hooked: a snapshot holding a key made in one is
refused as not restorable, never saved half.
"""

from __future__ import annotations

import json
import logging
import re
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from playwright.async_api import BrowserContext, Page, Route
from playwright.async_api import Error as PlaywrightError

log = logging.getLogger(__name__)

BINDING = "__sessionMeshKey"
WORKER_MARK = "__sessionmesh_worker"
MAX_MATERIALS = 20_000  # a session's recorded keys, newest kept; only stored ones are saved
FORMATS = frozenset({"raw", "pkcs8", "jwk"})

# The hook, for any realm (window or worker global). `report` is the realm's way to send one
# JSON string to the node: a Playwright binding in pages, a Runtime binding in workers. It
# replaces SubtleCrypto's methods with Proxies of the originals (so `toString` still reads
# native), and keeps the originals under a symbol for node.storage_state's own use.
HOOK_JS = r"""
(function sessionMeshHook() {
  const g = globalThis;
  const TAG = Symbol.for('sessionmesh.subtle');
  if (g[TAG] || !g.crypto || !g.crypto.subtle) return;
  const binding = '__BINDING__';
  const channel = new BroadcastChannel('sessionmesh.keys');
  const isWorker = typeof WorkerGlobalScope !== 'undefined' && g instanceof WorkerGlobalScope;
  const send = (text) => {
    try {
      if (typeof g[binding] === 'function') g[binding](text);
      else channel.postMessage(text);
    } catch (e) { /* the node is gone */ }
  };
  if (!isWorker && g.top === g) channel.onmessage = (event) => send(event.data);

  // Workers: started from a marked URL the node serves with this hook in front (the mark is
  // hidden from the worker's location); blob workers from a blob that loads this hook first.
  const MARK = '__MARK__';
  if (isWorker && g.location.search.includes(MARK)) {
    const clean = (text) => text.replace(new RegExp('[?&]' + MARK + '=1$'), '')
      .replace(new RegExp(MARK + '=1&'), '');
    const proto = Object.getPrototypeOf(g.location);
    for (const name of ['href', 'search']) {
      const get = Object.getOwnPropertyDescriptor(proto, name).get;
      Object.defineProperty(proto, name, {configurable: true, enumerable: true,
                                          get() { return clean(get.call(this)); }});
    }
  }
  const source = '(' + sessionMeshHook + ')();';
  const marked = (url, options) => {
    const u = new URL(String(url), g.location.href);
    if (u.protocol === 'blob:') {
      const type = options && options.type === 'module' ? 'module' : 'classic';
      const load = type === 'module' ? 'import ' + JSON.stringify(u.href) + ';'
        : 'importScripts(' + JSON.stringify(u.href) + ');';
      return URL.createObjectURL(new Blob([source + '\n' + load], {type: 'text/javascript'}));
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') return url;
    u.searchParams.append(MARK, '1');
    return u.href;
  };
  for (const name of ['Worker', 'SharedWorker']) {
    const Kind = g[name];
    if (typeof Kind !== 'function') continue;
    g[name] = new Proxy(Kind, {construct: (target, args, newTarget) => {
      const copy = args.slice();
      try { copy[0] = marked(args[0], args[1]); } catch (e) { /* leave it as it was */ }
      return Reflect.construct(target, copy, newTarget);
    }});
  }

  // Writes: the node skips a snapshot when no storage changed since the last one. Each
  // database written in a readwrite or upgrade transaction (and localStorage) is reported,
  // at most once a second per name and realm.
  const reported = new Map();
  const changed = (name) => {
    const now = Date.now();
    if (now - (reported.get(name) || 0) < 1000) return;
    reported.set(name, now);
    send(JSON.stringify({changed: String(name)}));
  };
  if (typeof IDBDatabase !== 'undefined') {
    const transaction = IDBDatabase.prototype.transaction;
    IDBDatabase.prototype.transaction = new Proxy(transaction, {apply: (target, self, args) => {
      if (args[1] === 'readwrite') changed(self.name);
      return Reflect.apply(target, self, args);
    }});
    const open = IDBFactory.prototype.open;
    IDBFactory.prototype.open = new Proxy(open, {apply: (target, self, args) => {
      const request = Reflect.apply(target, self, args);
      request.addEventListener('upgradeneeded', () => changed(args[0]));
      return request;
    }});
    const remove = IDBFactory.prototype.deleteDatabase;
    IDBFactory.prototype.deleteDatabase = new Proxy(remove, {apply: (target, self, args) => {
      changed(args[0]);
      return Reflect.apply(target, self, args);
    }});
  }
  if (!isWorker && typeof Storage !== 'undefined') {
    for (const name of ['setItem', 'removeItem', 'clear']) {
      const method = Storage.prototype[name];
      Storage.prototype[name] = new Proxy(method, {apply: (target, self, args) => {
        if (self === g.localStorage) changed('localStorage');
        return Reflect.apply(target, self, args);
      }});
    }
  }

  const proto = Object.getPrototypeOf(g.crypto.subtle);
  const orig = {};
  for (const name of ['importKey', 'exportKey', 'generateKey', 'deriveKey', 'deriveBits',
                      'unwrapKey', 'wrapKey', 'encrypt', 'decrypt', 'sign', 'verify']) {
    orig[name] = proto[name];
  }
  const subtle = g.crypto.subtle;
  const call = (name, ...args) => orig[name].apply(subtle, args);
  Object.defineProperty(g, TAG, {value: orig});
  const realm = Math.random().toString(36).slice(2, 10);
  let counter = 0;
  const bytes = (data) => {
    if (data instanceof ArrayBuffer) return new Uint8Array(data);
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  };
  const b64 = (data) => {
    const u = bytes(data);
    let s = '';
    for (let i = 0; i < u.length; i += 0x8000) {
      s += String.fromCharCode.apply(null, u.subarray(i, i + 0x8000));
    }
    return btoa(s);
  };
  // The key's normalized algorithm, as importKey takes it back.
  const algorithm = (a) => {
    const out = {name: a.name};
    if (a.hash) out.hash = typeof a.hash === 'string' ? a.hash : a.hash.name;
    if (a.namedCurve) out.namedCurve = a.namedCurve;
    if (a.length !== undefined && a.name === 'HMAC') out.length = a.length;
    return out;
  };
  const report = (key, format, data) => send(JSON.stringify({
    id: realm + '.' + (++counter), format, data, algorithm: algorithm(key.algorithm),
    usages: key.usages, type: key.type}));
  const uncaptured = (what, error) =>
    send(JSON.stringify({uncaptured: what, error: String(error)}));
  const exported = async (made, format, usages) => {
    const data = await call('exportKey', format, made);
    const key = await call('importKey', format, data, algorithm(made.algorithm), false, usages);
    report(key, format, format === 'jwk' ? data : b64(data));
    return key;
  };
  // Makes the key extractable, records it, and hands the app a non-extractable copy.
  const remade = async (make, usages) => {
    const made = await make(true);
    if (made.privateKey) {
      const priv = await exported(made.privateKey, 'pkcs8', made.privateKey.usages);
      return {publicKey: made.publicKey, privateKey: priv};
    }
    return exported(made, made.type === 'secret' ? 'raw' : 'pkcs8', usages);
  };
  const wrap = (name, apply) => {
    proto[name] = new Proxy(orig[name], {apply: (target, self, args) => apply(target, self, args)});
  };
  wrap('importKey', (target, self, args) => {
    const [format, keyData, , extractable] = args;
    const made = Reflect.apply(target, self, args);
    if (extractable || !['raw', 'pkcs8', 'jwk'].includes(format)) return made;
    let data;
    try { data = format === 'jwk' ? JSON.parse(JSON.stringify(keyData)) : b64(keyData); }
    catch (e) { return made; }
    return made.then((key) => { report(key, format, data); return key; });
  });
  const remaking = (name, extractableAt, usagesAt) => wrap(name, (target, self, args) => {
    if (args[extractableAt]) return Reflect.apply(target, self, args);
    const make = (extractable) => {
      const copy = args.slice();
      copy[extractableAt] = extractable;
      return Reflect.apply(target, self, copy);
    };
    return remade(make, args[usagesAt]).catch(async (error) => {
      const key = await make(false);  // the app's own error, if it was one, rejects here
      uncaptured(name, error);
      return key;
    });
  });
  remaking('generateKey', 1, 2);
  remaking('deriveKey', 3, 4);
  remaking('unwrapKey', 5, 6);
})();
""".replace("__BINDING__", BINDING).replace("__MARK__", WORKER_MARK)


class KeyRing:
    """The key materials one session's pages have made, by id, newest last; and the storage
    they wrote since `take_changes` was last called."""

    def __init__(self, materials: Iterable[dict[str, Any]] = ()) -> None:
        self._materials: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.uncaptured = 0  # keys the hook could not record (their snapshots are refused)
        self.changed: set[str] = set()  # databases (and "localStorage") written since
        for material in materials:
            self.add(material)

    def __len__(self) -> int:
        return len(self._materials)

    def add(self, material: Any) -> bool:
        """Record one material; False (and nothing recorded) if it is not one."""
        if not _is_material(material):
            return False
        self._materials[material["id"]] = material
        self._materials.move_to_end(material["id"])
        while len(self._materials) > MAX_MATERIALS:
            self._materials.popitem(last=False)
        return True

    def report(self, payload: str) -> None:
        """One message from a hooked realm (a JSON string)."""
        try:
            value = json.loads(payload)
        except (TypeError, ValueError):
            return
        if isinstance(value, dict) and isinstance(value.get("changed"), str):
            self.changed.add(value["changed"])
            return
        if isinstance(value, dict) and "uncaptured" in value:
            self.uncaptured += 1
            log.warning(
                "a %s key could not be recorded: %s",
                str(value.get("uncaptured"))[:40],
                str(value.get("error"))[:200],
            )
            return
        self.add(value)

    def take_changes(self) -> set[str]:
        """What was written since the last call (a snapshot that fails gives it back)."""
        taken, self.changed = self.changed, set()
        return taken

    def materials(self) -> list[dict[str, Any]]:
        return list(self._materials.values())

    def get(self, material_id: str) -> dict[str, Any] | None:
        return self._materials.get(material_id)


def _is_material(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("id"), str)
        and value.get("format") in FORMATS
        and isinstance(value.get("data"), str | dict)
        and isinstance(value.get("algorithm"), dict)
        and isinstance(value["algorithm"].get("name"), str)
        and isinstance(value.get("usages"), list)
    )


class RealmHooks:
    """Hooks a session's page and the workers it starts; `aclose` lets go of the context."""

    def __init__(self, page: Page, ring: KeyRing) -> None:
        self._page = page
        self._ring = ring
        self._context: BrowserContext | None = None

    async def install(self, context: BrowserContext) -> None:
        """Before the page loads the app: hook its frames (an init script), and serve the
        worker scripts it starts (marked by the hook) with the hook in front."""
        await self._page.expose_binding(
            BINDING, lambda _source, payload: self._ring.report(payload)
        )
        await self._page.add_init_script(script=HOOK_JS)
        await context.route(_MARKED, _serve_hooked)
        self._context = context

    async def aclose(self) -> None:
        context, self._context = self._context, None
        if context is not None:
            try:
                await context.unroute(_MARKED, _serve_hooked)
            except PlaywrightError:
                pass  # the context is gone already


_MARKED = re.compile(rf"[?&]{WORKER_MARK}=1(&|$)")


async def _serve_hooked(route: Route) -> None:
    """A worker's script, fetched from its real address, with the hook run first."""
    url = route.request.url
    real = re.sub(rf"[?&]{WORKER_MARK}=1$", "", url).replace(f"{WORKER_MARK}=1&", "")
    try:
        response = await route.fetch(url=real)
        body = HOOK_JS.encode() + b"\n" + await response.body()
        await route.fulfill(response=response, body=body)
    except PlaywrightError as e:
        log.debug("worker script %s not served: %s", real[:200], e)
        await route.abort()
