"""Everything the node knows about WhatsApp Web's page internals, and nothing else does.

It reads only what whatsapp-web.js (2026) reads, through the app's module loader
(`window.require`), once the page has fired `load` and the modules it needs are registered (they
register gradually after `window.Debug.VERSION` appears; a `require` too early throws):

- `WAWebSocketModel.Socket`: `state` (OPENING ... CONNECTED, CONFLICT, TIMEOUT, and the states
  that end a session: DEPRECATED_VERSION, TOS_BLOCK, SMB_TOS_BLOCK, PROXYBLOCK, UNLAUNCHED),
  `hasSynced`, `logout()`;
- `WAWebConnModel.Conn`: `ref`, and `change:ref` when the QR rotates;
- the QR payload, built from the modules as whatsapp-web.js builds it (ref, the noise static
  public key from `WAWebUserPrefsInfoStore.waNoiseInfo`, the identity public key from
  `WAWebSignalStoreApi.waSignalStore.getRegistrationInfo()`, the ADV secret from
  `WAWebUserPrefsMultiDevice.getADVSecretKey()`, the platform from
  `WAWebCompanionRegClientUtils.DEVICE_PLATFORM`, keys encoded by `WABase64.encodeB64`); the
  legacy `div[data-ref]` only as a fallback;
- loading progress: `WAWebCmd.Cmd`'s `offline_progress_update_from_bridge` (and the older
  `offline_progress_update`), read from `WAWebOfflineHandler.OfflineMessageHandler`;
- a passkey request after the scan (`navigator.credentials.get`), and the reload to
  `?post_logout=1` after a logout from the phone;
- the login's storage, to check a snapshot before it replaces the last good one:
  `WAWebEncKeySalt`, `WANoiseInfo` and `WANoiseInfoIv` in localStorage, the HKDF key in
  IndexedDB `wawc_db_enc`/`keys`; and `last-wid-md` for the linked number.

A compatibility canary checks each of these as the page loads (`canary`), so operators see which
hook a new WhatsApp Web build broke. `WA_URL=https://web.whatsapp.com` is the production
setting; the sandbox (`sandbox/`) models the same page offline.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from google.protobuf.timestamp_pb2 import Timestamp
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Frame, Page

from node import storage_state
from node.errors import InvalidRequest, PageError
from node.keyring import KeyRing
from sessionmesh.v1 import common_pb2 as pb

# Socket states (WAWebSocketModel.Socket.state).
OPENING = "OPENING"
PAIRING = "PAIRING"
UNPAIRED = "UNPAIRED"
UNPAIRED_IDLE = "UNPAIRED_IDLE"
CONNECTED = "CONNECTED"
CONFLICT = "CONFLICT"
TIMEOUT = "TIMEOUT"
LOGIN_NEEDED = frozenset({UNPAIRED, UNPAIRED_IDLE})

# States that end a session, with what happened and what to do about it.
END_STATES = {
    "DEPRECATED_VERSION": (
        "WhatsApp Web version too old: WhatsApp refuses the version this node loaded "
        "(DEPRECATED_VERSION); update the node's Chromium and check WA_URL"
    ),
    "TOS_BLOCK": (
        "account banned: WhatsApp blocked this account for its terms of service (TOS_BLOCK); "
        "the owner must appeal in the WhatsApp app"
    ),
    "SMB_TOS_BLOCK": (
        "account banned: WhatsApp blocked this business account for its terms of service "
        "(SMB_TOS_BLOCK); the owner must appeal in the WhatsApp Business app"
    ),
    "PROXYBLOCK": (
        "proxy blocked: WhatsApp refuses connections from this node's network or proxy "
        "(PROXYBLOCK); move the session to a node on another network"
    ),
    "UNLAUNCHED": (
        "WhatsApp Web did not launch (UNLAUNCHED): the app refused to start in this browser; "
        "check the node's Chromium and WA_URL"
    ),
}
PASSKEY_REASON = (
    "passkey required: this account asks for a passkey after the QR scan, which a hosted "
    "browser cannot give; turn off the passkey for linked devices on the phone, then link again"
)
SHOWED_QR = "WhatsApp Web showed a QR instead of the account"


def restore_failed(why: str) -> str:
    """The reason a session fails with when its saved login did not bring the account back."""
    return (
        f"saved login could not be restored: {why}; the saved copy is kept "
        "(log the session out to link it again)"
    )


BINDING = "__sessionMeshEvent"
POST_LOGOUT = re.compile(r"[?&]post_logout=1(&|$)")
WA_ME_PREFIX = "https://wa.me/settings/linked_devices#"

# What the node relies on, by the moment it needs it: module path -> kind ('function' or
# 'value'). The canary checks them; a missing one is named "<module>.<path>".
HOOKS_AT_LOAD = {
    "WAWebSocketModel.Socket.on": "function",
    "WAWebSocketModel.Socket.state": "value",
    "WAWebSocketModel.Socket.logout": "function",
    "WAWebConnModel.Conn.on": "function",
    "WAWebCmd.Cmd.on": "function",
    "WAWebOfflineHandler.OfflineMessageHandler.getOfflineDeliveryProgress": "function",
}
HOOKS_FOR_QR = {
    "WAWebSignalStoreApi.waSignalStore.getRegistrationInfo": "function",
    "WAWebUserPrefsInfoStore.waNoiseInfo.get": "function",
    "WABase64.encodeB64": "function",
    "WAWebUserPrefsMultiDevice.getADVSecretKey": "function",
    "WAWebCompanionRegClientUtils.DEVICE_PLATFORM": "value",
}
HOOKS_FOR_MESSAGES = {
    "WAWebCollections.Msg.on": "function",
    "WAWebCollections.Msg.get": "function",
    "WAWebSendMsgChatAction.addAndSendMsgToChat": "function",
    "WAWebFindChatAction.findOrCreateLatestChat": "function",
    "WAWebWidFactory.createWid": "function",
    "WAWebMsgKey": "value",
    "WAWebUserPrefsMeUser.getMaybeMePnUser": "function",
}
HOOKS_FOR_MEDIA = {
    "WAWebMediaOpaqueData": "value",
    "WAWebPrepRawMedia.prepRawMedia": "function",
    "WAWebMediaStorage.getOrCreateMediaObject": "function",
    "WAWebMmsMediaTypes.msgToMediaType": "function",
    "WAWebMediaMmsV4Upload.uploadMedia": "function",
    "WAWebDownloadManager.downloadManager": "value",
}
CORE_MODULES = ("WAWebSocketModel", "WAWebConnModel", "WAWebCmd", "WAWebOfflineHandler")
PROGRESS_EVENT = "WAWebCmd.Cmd:offline_progress_update_from_bridge"

# Runs at document start in every frame (an init script); acts in the top frame only. It
# watches for a passkey request at once, then waits for the page's `load` and for the modules
# it needs, subscribes to them and reports every change through the binding, starting with the
# state at that moment (a `hooked` event).
_INIT_JS = r"""
(() => {
  if (window.top !== window) return;
  const binding = '__BINDING__';
  const emit = (kind, value) => { try { window[binding](kind, value); } catch (e) {} };
  const creds = navigator.credentials;
  if (creds && typeof creds.get === 'function') {
    const proto = Object.getPrototypeOf(creds);
    proto.get = new Proxy(proto.get, {apply: (target, self, args) => {
      const options = args[0] || {};
      if (options.publicKey) emit('passkey', String(options.publicKey.rpId || ''));
      return Reflect.apply(target, self, args);
    }});
  }
  const need = (name) => { try { return window.require(name); } catch (e) { return undefined; } };
  const at = (path) => {
    const [name, ...rest] = path.split('.');
    let value = need(name);
    for (const part of rest) value = value == null ? undefined : value[part];
    return value;
  };
  window.__sessionMeshCanary = (hooks) => ({
    version: window.Debug && window.Debug.VERSION ? String(window.Debug.VERSION) : '',
    missing: Object.entries(hooks).filter(([path, kind]) => {
      const value = at(path);
      return kind === 'function' ? typeof value !== 'function' : value === undefined;
    }).map(([path]) => path),
  });
  const qrModulesReady = () => __QR_HOOKS__.every((path) => at(path) !== undefined);
  const fromDom = (ref) => {
    const el = document.querySelector('div[data-ref]');
    const code = el && el.getAttribute('data-ref');
    return code && code.startsWith(ref + ',') ? code : null;
  };
  const fromModules = async (ref) => {
    const registration = await need('WAWebSignalStoreApi').waSignalStore.getRegistrationInfo();
    const noise = await need('WAWebUserPrefsInfoStore').waNoiseInfo.get();
    const b64 = need('WABase64');
    const adv = await need('WAWebUserPrefsMultiDevice').getADVSecretKey();
    return [ref, b64.encodeB64(noise.staticKeyPair.pubKey),
            b64.encodeB64(registration.identityKeyPair.pubKey), adv,
            need('WAWebCompanionRegClientUtils').DEVICE_PLATFORM].join(',');
  };
  // The modules first; the legacy DOM at once if they are not registered yet (a QR may rotate
  // within seconds), else wait a little for them.
  const payload = async (ref) => {
    for (let i = 0; i < 100; i++) {
      if (qrModulesReady()) {
        try { return await fromModules(ref); } catch (e) { return fromDom(ref); }
      }
      const legacy = fromDom(ref);
      if (legacy) return legacy;
      await new Promise((ok) => setTimeout(ok, 50));
    }
    return null;
  };
  // Each ref's place in its series (a series ends at UNPAIRED_IDLE) and when it was first
  // shown: a page kept warm before a session takes it knows how long its QR has left.
  let series = 0;
  const shown = new Map();
  const qr = (ref) => {
    if (!ref) return;
    if (!shown.has(ref)) shown.set(ref, {n: ++series, at: Date.now()});
    const seen = shown.get(ref);
    payload(ref).then((code) => emit('qr', {ref, code, n: seen.n, at: seen.at}));
  };
  const hook = () => {
    const Socket = need('WAWebSocketModel').Socket;
    const Conn = need('WAWebConnModel').Conn;
    const Cmd = need('WAWebCmd').Cmd;
    const Offline = need('WAWebOfflineHandler').OfflineMessageHandler;
    Socket.on('change:state', (_m, state) => {
      if (state === 'UNPAIRED_IDLE') { series = 0; shown.clear(); }
      emit('state', state);
    });
    Socket.on('change:hasSynced', (_m, synced) => emit('synced', !!synced));
    Conn.on('change:ref', (_m, ref) => qr(ref));
    const progress = (name) => () => {
      emit('progress', {percent: Offline.getOfflineDeliveryProgress(), event: name});
    };
    for (const name of ['offline_progress_update_from_bridge', 'offline_progress_update']) {
      Cmd.on(name, progress(name));
    }
    const now = () => {
      emit('hooked', {state: Socket.state, synced: !!Socket.hasSynced,
                      version: String(window.Debug.VERSION)});
      qr(Conn.ref);
    };
    // A page kept warm tells its state again when a session takes it.
    Object.defineProperty(window, '__sessionMeshNow', {value: now, configurable: true});
    now();
    hookMessages();
  };
  // Messages: new ones (in, and out from the mesh or the phone) on Msg `add` with isNewMsg,
  // ack changes on `change:ack`; the collections register after the core modules.
  const wid = (w) => (w == null ? '' : String(w._serialized || w));
  const message = (m) => ({
    id: wid(m.id), fromMe: !!(m.id && m.id.fromMe), chat: wid(m.id && m.id.remote),
    from: wid(m.from), to: wid(m.to), author: wid(m.author), t: Number(m.t) || 0,
    type: String(m.type || ''), body: m.type === 'chat' ? String(m.body || '') : '',
    caption: String(m.caption || ''), mimetype: String(m.mimetype || ''),
    filename: String(m.filename || ''), size: Number(m.size) || 0,
    media: !!(m.directPath || m.mediaData), ack: Number(m.ack) || 0,
    quoted: String(m.quotedStanzaID || ''), quotedRemote: wid(m.quotedRemoteJid),
  });
  const hookMessages = () => {
    const collections = need('WAWebCollections');
    if (!collections || !collections.Msg) { setTimeout(hookMessages, 20); return; }
    const Msg = collections.Msg;
    Msg.on('add', (m) => { if (m && m.isNewMsg) emit('message', message(m)); });
    // Messages added before the hook (an offline sync can start at once) are in Msg already.
    for (const m of (Msg.getModelsArray ? Msg.getModelsArray() : Msg.models || [])) {
      if (m && m.isNewMsg) emit('message', message(m));
    }
    Msg.on('change:ack', (m, ack) => emit('ack', {id: wid(m.id), chat: wid(m.id && m.id.remote),
                                                  ack: Number(ack)}));
  };
  const ready = () => window.Debug && window.Debug.VERSION && typeof window.require === 'function'
    && __CORE__.every((name) => need(name) !== undefined);
  const wait = () => {
    if (!ready()) { setTimeout(wait, 50); return; }
    try { hook(); } catch (e) { emit('hook_error', String(e)); }
  };
  if (document.readyState === 'complete') wait();
  else window.addEventListener('load', wait, {once: true});
})();
"""
_INIT_JS = (
    _INIT_JS.replace("__BINDING__", BINDING)
    .replace("__QR_HOOKS__", json.dumps(list(HOOKS_FOR_QR)))
    .replace("__CORE__", json.dumps(list(CORE_MODULES)))
)

_WAIT_QR_JS = """
(ref) => {
  const el = document.querySelector('div[data-ref]');
  const code = el && el.getAttribute('data-ref');
  return code && code.startsWith(ref + ',') ? code : null;
}
"""

_LOGOUT_JS = "() => window.require('WAWebSocketModel').Socket.logout()"
_REFRESH_QR_JS = "() => window.require('WAWebCmd').Cmd.refreshQR()"

# Sends as whatsapp-web.js does: the chat from WAWebFindChatAction, a key from WAWebMsgKey,
# media through WAWebPrepRawMedia and WAWebMediaMmsV4Upload, then
# WAWebSendMsgChatAction.addAndSendMsgToChat. `id` (when given) is the id chosen earlier for
# this idempotency key: a message already in Msg under it is not sent again.
_SEND_JS = r"""
async (args) => {
  const need = (name) => { const m = window.require(name); return (m && m.default) || m; };
  const Msg = need('WAWebCollections').Msg;
  const MsgKey = need('WAWebMsgKey');
  const chatWid = need('WAWebWidFactory').createWid(args.to);
  const {chat} = await need('WAWebFindChatAction').findOrCreateLatestChat(chatWid);
  const me = need('WAWebUserPrefsMeUser').getMaybeMePnUser();
  const id = args.id || await MsgKey.newId();
  const key = new MsgKey({from: me, to: chat.id, id, selfDir: 'out',
                          participant: chat.id.isGroup && chat.id.isGroup() ? me : undefined});
  const existing = Msg.get(key._serialized);
  if (existing) return {id: key._serialized, key: id, ack: Number(existing.ack) || 0, existed: true};
  let content = args.text;
  let extra = {};
  if (args.media) try {
    const bytes = Uint8Array.from(atob(args.media.data), (c) => c.charCodeAt(0));
    const file = new File([bytes], args.media.filename || 'file', {type: args.media.mimetype});
    const OpaqueData = need('WAWebMediaOpaqueData');
    const opaque = await OpaqueData.createFromData(file, file.type);
    const prep = need('WAWebPrepRawMedia').prepRawMedia(opaque, {
      asDocument: args.media.kind === 'document'});
    const mediaData = await prep.waitForPrep();
    const mediaObject = need('WAWebMediaStorage').getOrCreateMediaObject(mediaData.filehash);
    const mediaType = need('WAWebMmsMediaTypes').msgToMediaType({
      type: mediaData.type, isGif: mediaData.isGif});
    if (args.media.kind === 'document') mediaData.type = 'document';
    if (!(mediaData.mediaBlob instanceof OpaqueData)) {
      mediaData.mediaBlob = await OpaqueData.createFromData(mediaData.mediaBlob,
                                                            mediaData.mediaBlob.type);
    }
    mediaData.renderableUrl = mediaData.mediaBlob.url();
    mediaObject.consolidate(mediaData.toJSON());
    mediaData.mediaBlob.autorelease();
    const uploaded = await need('WAWebMediaMmsV4Upload').uploadMedia({
      mimetype: mediaData.mimetype, mediaObject, mediaType});
    const entry = uploaded.mediaEntry;
    if (!entry) throw new Error('the media upload failed');
    mediaData.set({
      clientUrl: entry.mmsUrl, deprecatedMms3Url: entry.deprecatedMms3Url,
      directPath: entry.directPath, mediaKey: entry.mediaKey,
      mediaKeyTimestamp: entry.mediaKeyTimestamp, filehash: mediaObject.filehash,
      encFilehash: entry.encFilehash, uploadhash: entry.uploadHash, size: mediaObject.size,
      streamingSidecar: entry.sidecar, firstFrameSidecar: entry.firstFrameSidecar});
    content = mediaData.preview;
    extra = {...mediaData, ...(mediaData.toJSON ? mediaData.toJSON() : {})};
    if (args.media.caption) extra.caption = args.media.caption;
    if (args.media.filename) extra.filename = args.media.filename;
  } catch (e) {
    throw new Error('sessionmesh-media: ' + (e && e.message || e));
  }
  if (args.replyTo) {
    const quoted = Msg.get(args.replyTo);
    if (!quoted) throw new Error('reply_to: no message ' + args.replyTo + ' in this session');
    extra = {...extra, ...quoted.msgContextInfo(chat)};
  }
  const message = {id: key, ack: 0, body: content, from: me, to: chat.id, local: true,
                   self: 'out', t: Math.floor(Date.now() / 1000), isNewMsg: true, type: 'chat',
                   ...extra};
  await Promise.all(need('WAWebSendMsgChatAction').addAndSendMsgToChat(chat, message));
  const sent = Msg.get(key._serialized);
  return {id: key._serialized, key: id, ack: sent ? Number(sent.ack) || 0 : 0, existed: false};
}
"""

# The decrypted bytes of a media message, as whatsapp-web.js downloads them.
_MEDIA_JS = r"""
async (id) => {
  const need = (name) => { const m = window.require(name); return (m && m.default) || m; };
  const Msg = need('WAWebCollections').Msg;
  const msg = Msg.get(id) || ((await Msg.getMessagesById([id])).messages || [])[0];
  if (!msg) return {missing: 'message'};
  if (!msg.directPath || !msg.mediaKey) return {missing: 'media'};
  if (msg.mediaData && msg.mediaData.mediaStage !== 'RESOLVED' && msg.downloadMedia) {
    await msg.downloadMedia({downloadEvenIfExpensive: true, rmrReason: 1});
  }
  const mock = {addAnnotations() { return this; }, addPoint() { return this; }};
  const data = await need('WAWebDownloadManager').downloadManager.downloadAndMaybeDecrypt({
    directPath: msg.directPath, encFilehash: msg.encFilehash, filehash: msg.filehash,
    mediaKey: msg.mediaKey, mediaKeyTimestamp: msg.mediaKeyTimestamp, type: msg.type,
    signal: (new AbortController()).signal, downloadQpl: mock});
  const bytes = new Uint8Array(data);
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return {data: btoa(s), mimetype: String(msg.mimetype || ''),
          filename: String(msg.filename || ''), size: bytes.length};
}
"""

_NEW_ID_JS = """
async () => {
  const m = window.require('WAWebMsgKey');
  return String(await ((m && m.default) || m).newId());
}
"""

_ACK_JS = """
(id) => {
  const m = window.require('WAWebCollections').Msg.get(id);
  return m ? Number(m.ack) || 0 : null;
}
"""
_PHONE_JS = "() => window.localStorage.getItem('last-wid-md')"
_APP_JS = "() => ({debug: !!(window.Debug && window.Debug.VERSION), title: document.title})"
_WID_RE = re.compile(r"(\d{5,20})")


@dataclass(frozen=True)
class PageEvent:
    """One change the page reported: kind is state, synced, qr, progress, passkey, post_logout,
    crash or closed."""

    kind: str
    value: Any


@dataclass(frozen=True)
class Canary:
    """The WhatsApp Web build a page loaded, and which of the node's hooks it lacks."""

    version: str
    missing: tuple[str, ...]


def qr_fields(code: str) -> list[str] | None:
    """The fields of a QR payload: 4 to 6 comma-separated, the optional wa.me prefix removed
    (the real component may add it, and a trailing FAQ-link field); None if it is not one."""
    parts = code.removeprefix(WA_ME_PREFIX).split(",")
    if not 4 <= len(parts) <= 6 or not all(parts[:4]):
        return None
    return parts


def is_qr_payload(code: str) -> bool:
    return qr_fields(code) is not None


class WhatsAppPage:
    """Drives one WhatsApp Web page: load it, hook its models, read the QR and the number."""

    def __init__(self, page: Page, on_event: Callable[[PageEvent], None]) -> None:
        self._page = page
        self._on_event = on_event
        self._hooked = asyncio.Event()
        self.version = ""

    async def open(self, url: str, *, navigation_timeout: float, timeout: float) -> None:
        """Load the app (`navigation_timeout` until its `load` event) and subscribe to it once
        its modules are there (`timeout`). The page's state at that moment arrives as events,
        then every change, in order, through `on_event`."""
        await self._page.expose_binding(BINDING, self._binding)
        await self._page.add_init_script(script=_INIT_JS)
        self._page.on("framenavigated", self._navigated)
        try:
            await self._page.goto(url, wait_until="load", timeout=navigation_timeout * 1000)
        except PlaywrightError as e:
            raise PageError(f"WhatsApp Web did not load from {url}: {_short(e)}") from e
        try:
            async with asyncio.timeout(timeout):
                await self._hooked.wait()
        except TimeoutError as e:
            raise PageError(await self._why_not_hooked(timeout)) from e

    async def _why_not_hooked(self, timeout: float) -> str:
        try:
            app = await self._page.evaluate(_APP_JS)
            canary = await self.canary(HOOKS_AT_LOAD)
        except PlaywrightError as e:
            return f"WhatsApp Web stopped answering while loading: {_short(e)}"
        if not app["debug"]:
            return (
                f"WhatsApp Web did not start its app within {timeout:g}s (page "
                f"{str(app['title'])[:80]!r}): it may be asking to update the browser"
            )
        if canary.missing:
            return (
                f"WhatsApp Web {canary.version} lacks what the node needs: "
                f"{', '.join(canary.missing)}"
            )
        return f"WhatsApp Web's modules were not ready within {timeout:g}s"

    async def canary(self, hooks: dict[str, str]) -> Canary:
        """Which of `hooks` this page lacks (HOOKS_AT_LOAD, HOOKS_FOR_QR, ...)."""
        result = await self._page.evaluate(
            "(hooks) => window.__sessionMeshCanary ? window.__sessionMeshCanary(hooks)"
            " : {version: '', missing: Object.keys(hooks)}",
            hooks,
        )
        return Canary(str(result.get("version", "")), tuple(result.get("missing", ())))

    def attach(self, on_event: Callable[[PageEvent], None]) -> None:
        """Send this page's events to `on_event` from now on (a warm page, taken by a session):
        its current state and QR come first, as if it had just been hooked."""
        self._on_event = on_event

    async def tell_state(self) -> None:
        await self._page.evaluate("() => window.__sessionMeshNow && window.__sessionMeshNow()")

    async def refresh_qr(self) -> None:
        """After the last QR of a series (UNPAIRED_IDLE): start a new one, as the page's own
        button does (WAWebCmd.Cmd.refreshQR)."""
        await self._page.evaluate(_REFRESH_QR_JS)

    async def logout(self) -> None:
        """Unlink this device, as WhatsApp Web's own menu does (Socket.logout)."""
        await self._page.evaluate(_LOGOUT_JS)

    async def qr_payload(self, ref: str, code: str | None, *, timeout: float = 5.0) -> str:
        """The payload for `ref`: the one built from the modules, else the legacy DOM's."""
        if code and code.removeprefix(WA_ME_PREFIX).startswith(ref + ",") and is_qr_payload(code):
            return code
        try:
            handle = await self._page.wait_for_function(
                _WAIT_QR_JS, arg=ref, timeout=timeout * 1000
            )
            value = await handle.json_value()
        except PlaywrightError as e:
            raise PageError(
                f"QR payload for ref {ref[:12]}... could not be built from WhatsApp Web's "
                "modules and is not in div[data-ref]"
            ) from e
        if not isinstance(value, str) or not is_qr_payload(value):
            raise PageError("div[data-ref] does not hold a QR payload of 4 to 6 fields")
        return value

    async def send(self, args: dict[str, Any]) -> dict[str, Any]:
        """Send one message (see _SEND_JS); {id, key, ack, existed}."""
        try:
            result = await self._page.evaluate(_SEND_JS, args)
        except PlaywrightError as e:
            if "sessionmesh-media: " in str(e):  # the file itself: no retry will help
                why = str(e).split("sessionmesh-media: ", 1)[1].splitlines()[0][:200]
                raise InvalidRequest(
                    "media.data", f"WhatsApp Web could not prepare this file: {why}"
                ) from e
            raise PageError(f"WhatsApp Web did not send the message: {_short(e)}") from e
        if not isinstance(result, dict) or not isinstance(result.get("id"), str):
            raise PageError("WhatsApp Web's send gave no message id")
        return result

    async def new_message_id(self) -> str:
        """A fresh id for a message key (WAWebMsgKey.newId), to record before sending."""
        try:
            return str(await self._page.evaluate(_NEW_ID_JS))
        except PlaywrightError as e:
            raise PageError(f"WhatsApp Web gave no message id: {_short(e)}") from e

    async def ack(self, message_id: str) -> int | None:
        """The message's ack now, or None if the page does not hold it."""
        value = await self._page.evaluate(_ACK_JS, message_id)
        return None if value is None else int(value)

    async def media(self, message_id: str) -> dict[str, Any]:
        """{data (base64), mimetype, filename, size}, or {missing: 'message' | 'media'}."""
        try:
            result = await self._page.evaluate(_MEDIA_JS, message_id)
        except PlaywrightError as e:
            raise PageError(f"WhatsApp Web did not give the media: {_short(e)}") from e
        if not isinstance(result, dict):
            raise PageError("WhatsApp Web's media download gave nothing")
        return result

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

    async def snapshot(self, ring: KeyRing) -> tuple[dict[str, Any], str]:
        """The login as it is now, and why it would not restore ('' when it would)."""
        materials = ring.materials()
        captured = await storage_state.capture(self._page, materials)
        cookies = await self._page.context.cookies()
        state = storage_state.state_of(list(cookies), captured, materials)
        if captured.unresolved:
            return state, "keys that were not recorded: " + "; ".join(captured.unresolved[:3])
        return state, unrestorable(state)

    def _navigated(self, frame: Frame) -> None:
        if frame.parent_frame is None and POST_LOGOUT.search(frame.url):
            self._on_event(PageEvent("post_logout", None))

    def _binding(self, _source: Any, kind: str, value: Any) -> None:
        if kind == "hooked" and isinstance(value, dict):
            self.version = str(value.get("version", ""))
            self._hooked.set()
            self._on_event(PageEvent("state", value.get("state")))
            if value.get("synced"):
                self._on_event(PageEvent("synced", True))
            return
        self._on_event(PageEvent(kind, value))


_TYPES = {
    "chat": pb.TEXT,
    "image": pb.IMAGE,
    "document": pb.DOCUMENT,
    "audio": pb.AUDIO,
    "ptt": pb.AUDIO,
    "video": pb.VIDEO,
    "sticker": pb.STICKER,
}


def message_of(value: dict[str, Any]) -> pb.Message:
    """A message as the page's hook reported it (see `message` in _INIT_JS)."""
    kind = _TYPES.get(str(value.get("type", "")), pb.OTHER)
    from_me = bool(value.get("fromMe"))
    media = None
    if kind not in (pb.TEXT, pb.OTHER) or value.get("media"):
        media = pb.MediaInfo(
            mimetype=str(value.get("mimetype", "")),
            filename=str(value.get("filename", "")),
            size=int(value.get("size") or 0),
            downloadable=bool(value.get("media")),
        )
    quoted = str(value.get("quoted", ""))
    reply_to = ""
    if quoted:
        remote = str(value.get("quotedRemote", "")) or str(value.get("chat", ""))
        reply_to = f"{str(from_me).lower()}_{remote}_{quoted}" if remote else quoted
    seconds = int(value.get("t") or 0)
    return pb.Message(
        id=str(value.get("id", "")),
        direction=pb.OUTBOUND if from_me else pb.INBOUND,
        chat_id=str(value.get("chat", "")),
        sender=str(value.get("author") or value.get("from", "")),
        timestamp=Timestamp(seconds=seconds) if seconds else None,
        type=kind,
        text=str(value.get("body") or value.get("caption") or ""),
        media=media,
        reply_to=reply_to,
        ack=int(value.get("ack") or 0),  # type: ignore[arg-type]
    )


def unrestorable(state: dict[str, Any]) -> str:
    """Why WhatsApp Web would not come back logged in from `state` ('' when it would): its
    HKDF key in `wawc_db_enc`/`keys` must decrypt both halves of `WANoiseInfo`."""
    keys = {m["id"]: m for m in state.get("keys") or []}
    for origin in state.get("origins") or []:
        items = {i["name"]: i["value"] for i in origin.get("localStorage") or []}
        if "WANoiseInfo" not in items:
            continue
        try:
            salt = _b64(json.loads(items["WAWebEncKeySalt"]))
            noise = json.loads(items["WANoiseInfo"])
            ivs = [_b64(iv) for iv in json.loads(items["WANoiseInfoIv"])]
            sealed = [_b64(noise["privKey"]), _b64(noise["pubKey"])]
        except (KeyError, TypeError, ValueError, binascii.Error):
            return "WANoiseInfo, WANoiseInfoIv or WAWebEncKeySalt is missing or has a new layout"
        candidates = [
            keys[ref]
            for ref in _login_key_refs(origin)
            if ref in keys and keys[ref]["format"] == "raw"
        ]
        if not candidates:
            return "no recorded key for wawc_db_enc/keys: WANoiseInfo cannot be decrypted"
        for material in candidates:
            aes = HKDF(algorithm=hashes.SHA256(), length=16, salt=salt, info=b"\x00").derive(
                base64.b64decode(material["data"])
            )
            if all(_decrypts(aes, ivs, part) for part in sealed):
                return ""
        return "the key in wawc_db_enc/keys does not decrypt WANoiseInfo"
    return "no WhatsApp login in it (no WANoiseInfo in localStorage)"


def _login_key_refs(origin: dict[str, Any]) -> Iterator[str]:
    for db in origin.get("indexedDB") or []:
        if db.get("name") != "wawc_db_enc":
            continue
        for store in db.get("stores") or []:
            if store.get("name") != "keys":
                continue
            for record in store.get("records") or []:
                value = record.get("valueEncoded") or {}
                for entry in value.get("o") or []:
                    if entry.get("k") == "key" and isinstance(entry.get("v"), dict):
                        ref = entry["v"].get("ck")
                        if isinstance(ref, str):
                            yield ref


def _decrypts(key: bytes, ivs: list[bytes], sealed: bytes) -> bool:
    for iv in ivs:
        if len(iv) != 16 or len(sealed) % 16:
            continue
        decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
        unpadder = padding.PKCS7(128).unpadder()
        try:
            plain = decryptor.update(sealed) + decryptor.finalize()
            if len(unpadder.update(plain) + unpadder.finalize()) == 32:
                return True
        except ValueError:
            continue
    return False


def _b64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise TypeError("not base64 text")
    return base64.b64decode(value, validate=True)


def _short(error: Exception) -> str:
    return str(error).splitlines()[0][:200]
