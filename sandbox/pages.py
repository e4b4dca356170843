"""Browser pages on the WebSocket: the server side of linking, logins, states and messages.

Server -> page messages (JSON, field `t` is the kind), applied by the page in order:
  qr {ref}                 show a new QR for `ref` (state UNPAIRED)
  idle                     the last QR expired (state UNPAIRED_IDLE; Cmd.refreshQR() asks again)
  pairing                  a phone scanned the QR (state PAIRING)
  passkey {challenge}      the account wants a passkey (navigator.credentials.get, rpId whatsapp.com)
  paired {wid}             the device is linked: store the login, then answer `stored`
  challenge {eph, nonce}   prove the stored noise key: answer `proof` with
                           HMAC-SHA-256(X25519(noise private key, eph), nonce)
  connected {wid, ...}     state CONNECTED
  offline {count}          how many messages wait from while the device was away
  progress {percent}       account loading, 0..100 (Cmd offline_progress_update_from_bridge)
  synced                   hasSynced = true
  creds_invalid            the stored login was not accepted: a QR flow follows (nothing deleted)
  logged_out {reason}      the device was unlinked: clear the login, reload with ?post_logout=1
  conflict                 the same login opened elsewhere: state CONFLICT, stop (the server closes)
  state {state}            an end state (TOS_BLOCK...): stop (the server closes)
  msg {msg}                a message (incoming, or the account's own from elsewhere)
  ack {id, remote, ack}    a new ack for a message this account sent
Page -> server: hello {login: {wid, noise} | null, keys: [noise, identity, adv]}, proof {mac},
stored, retry, logout (Socket.logout()), passkey_failed {error}, send {msg}.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sandbox import media as media_crypto
from sandbox.accounts import PHONE_RE, Accounts, Device, key_bytes
from sandbox.errors import BadRequest, Gone, NotFound, SandboxError
from sandbox.media import MediaError, MediaStore
from sandbox.messages import (
    ACK_DEVICE,
    ACK_ERROR,
    ACK_READ,
    ACK_SERVER,
    MAX_TEXT,
    MEDIA_TYPES,
    MESSAGE_TYPES,
    Mail,
    Media,
    Message,
    now,
)
from sandbox.settings import SandboxSettings

log = logging.getLogger(__name__)

PLATFORM = "WEB"
PROGRESS_STEPS = 10
EXPIRED_REFS_KEPT = 10_000
CLOSE_TIMEOUT = 2.0
CHALLENGE_TIMEOUT = 30.0
MSG_ID_MAX = 64


class Page:
    """One connected page, i.e. one WebSocket; a reload is a new Page."""

    def __init__(self, number: int, ws: web.WebSocketResponse) -> None:
        self.number = number
        self.ws = ws
        self.outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.greeted = False
        self.keys: tuple[str, str, str] | None = None
        # opening | unpaired | idle | pairing | passkey | paired | proving | connected | ended
        self.phase = "opening"
        self.ref: str | None = None
        self.device: Device | None = None
        self.flow: asyncio.Task[None] | None = None
        self.challenge: tuple[Device, bytes, bytes] | None = None  # device, shared, nonce

    def push(self, kind: str, **fields: Any) -> None:
        self.outbox.put_nowait({"t": kind, **fields})

    def payload(self, ref: str) -> str:
        """The QR payload this page shows for `ref`."""
        assert self.keys is not None
        return ",".join((ref, *self.keys, PLATFORM))


class Pages:
    """All connected pages, the QR refs on show and which page hosts which device."""

    def __init__(
        self,
        accounts: Accounts,
        mail: Mail,
        store: MediaStore,
        settings: Callable[[], SandboxSettings],
        mail_changed: Callable[[], None] = lambda: None,
    ) -> None:
        self._accounts = accounts
        self._mail = mail
        self._store = store
        self._settings = settings
        self._mail_changed = mail_changed
        self._pages: dict[int, Page] = {}
        self._opened = 0
        self._refs: dict[str, Page] = {}
        self._expired: OrderedDict[str, None] = OrderedDict()
        self._hosts: dict[tuple[str, int], Page] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    # --- the WebSocket ---

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """The `/ws` endpoint: one page's connection, until it closes."""
        # The heartbeat closes the connection of a page that stopped answering (a frozen
        # browser), so it stops hosting its device before another page takes the login over.
        ws = web.WebSocketResponse(
            heartbeat=self._settings().ws_heartbeat, timeout=CLOSE_TIMEOUT, max_msg_size=1 << 22
        )
        await ws.prepare(request)
        if self._closing:
            await ws.close(code=WSCloseCode.GOING_AWAY)
            return ws
        self._opened += 1
        page = Page(self._opened, ws)
        self._pages[page.number] = page
        sender = asyncio.create_task(self._send_loop(page))
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    self._on_message(page, msg.data)
        finally:
            self._drop(page)
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        return ws

    async def _send_loop(self, page: Page) -> None:
        while (msg := await page.outbox.get()) is not None:
            try:
                await page.ws.send_json(msg)
                if msg["t"] in ("conflict", "state"):
                    await page.ws.close(
                        code=WSCloseCode.POLICY_VIOLATION, message=msg["t"].encode()
                    )
                    return
            except (ConnectionError, RuntimeError):
                return

    def _on_message(self, page: Page, data: str) -> None:
        try:
            msg = json.loads(data)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        kind = msg.get("t")
        if kind == "hello" and not page.greeted:
            self._hello(page, msg)
        elif kind == "proof" and page.phase == "proving":
            self._proof(page, msg.get("mac"))
        elif kind == "stored" and page.phase == "paired" and page.device is not None:
            self._connected(page, page.device, restore=False)
        elif kind == "retry" and page.phase == "idle":
            self._start(page, self._qr_flow(page))
        elif kind == "logout" and page.device is not None:
            with contextlib.suppress(SandboxError):
                self.logout(page.device.phone, page.device.number, reason="page")
        elif kind == "passkey_failed" and page.phase == "passkey":
            log.info("page %d: passkey not given (%s)", page.number, str(msg.get("error"))[:200])
        elif kind == "send" and page.phase == "connected" and page.device is not None:
            self._page_sends(page, page.device, msg.get("msg"))

    def _hello(self, page: Page, msg: dict[str, Any]) -> None:
        page.greeted = True
        keys = msg.get("keys")
        if (
            isinstance(keys, list)
            and len(keys) == 3
            and all(isinstance(k, str) for k in keys)
            and key_bytes(keys[0]) is not None
            and key_bytes(keys[1]) is not None
            and key_bytes(keys[2]) is not None
        ):
            page.keys = (keys[0], keys[1], keys[2])
        initial = self._settings().initial_state
        if initial:
            self._end(page, initial)
            return
        login = msg.get("login")
        if isinstance(login, dict):
            device = self._accounts.device(login.get("wid"))
            if device is None:
                # The server has no such device (the phone unlinked it, or it never was):
                # the page logs out, as a real page does on a 401 at login.
                page.push("logged_out", reason="device_removed")
                return
            state = self._accounts.state(device.phone)
            if state is not None:
                self._end(page, state)
                return
            self._challenge(page, device)
            return
        if page.keys is None:
            page.push("creds_invalid")
            return
        self._start(page, self._qr_flow(page))

    # --- proving a stored login ---

    def _challenge(self, page: Page, device: Device) -> None:
        ephemeral = X25519PrivateKey.generate()
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(device.noise_pub))
        nonce = secrets.token_bytes(32)
        page.challenge = (device, shared, nonce)
        page.phase = "proving"
        eph_pub = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        page.push("challenge", eph=_b64(eph_pub), nonce=_b64(nonce))
        self._start(page, self._challenge_timeout(page))

    async def _challenge_timeout(self, page: Page) -> None:
        await asyncio.sleep(CHALLENGE_TIMEOUT)
        await page.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"no proof")

    def _proof(self, page: Page, mac: object) -> None:
        assert page.challenge is not None
        device, shared, nonce = page.challenge
        page.challenge = None
        expected = hmac.new(shared, nonce, hashlib.sha256).digest()
        given = _unb64(mac)
        if given is None or not hmac.compare_digest(given, expected):
            log.info("page %d: the stored noise key is not %s's", page.number, device.wid)
            page.phase = "opening"
            page.push("creds_invalid")
            if page.keys is not None:
                self._start(page, self._qr_flow(page))
            else:
                self._stop_flow(page)
            return
        if self._accounts.device(device.wid) is None:  # unlinked while proving
            page.push("logged_out", reason="device_removed")
            self._stop_flow(page)
            return
        self._connected(page, device, restore=True)

    # --- flows: one per page at a time ---

    def _start(self, page: Page, flow: Coroutine[Any, Any, None]) -> None:
        self._stop_flow(page)
        task = asyncio.create_task(flow)
        page.flow = task
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _stop_flow(self, page: Page) -> None:
        if page.flow is not None:
            page.flow.cancel()
            page.flow = None

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("page task failed", exc_info=task.exception())

    async def _qr_flow(self, page: Page) -> None:
        page.phase = "unpaired"
        await asyncio.sleep(self._settings().qr_delay)
        for attempt in range(self._settings().qr_count):
            ref = "2@" + base64.b64encode(secrets.token_bytes(36)).decode()
            self._show_ref(page, ref)
            page.push("qr", ref=ref)
            settings = self._settings()
            await asyncio.sleep(settings.first_qr_ttl if attempt == 0 else settings.qr_ttl)
        self._show_ref(page, None)
        page.phase = "idle"
        page.push("idle")

    def _connected(self, page: Page, device: Device, *, restore: bool) -> None:
        self._host(page, device)
        page.phase = "connected"
        page.push(
            "connected",
            wid=device.wid,
            phone=device.phone,
            lid=lid_of(device.phone),
            pushname=f"Sandbox {device.phone}",
            platform="android",
        )
        self._start(page, self._sync_flow(page, device, restore=restore))

    async def _sync_flow(self, page: Page, device: Device, *, restore: bool) -> None:
        """Account loading: progress 0..100 with what waited for the device, then synced."""
        held = self._mail.take(device.wid) if restore else []
        if held:
            self._mail_changed()
        page.push("offline", count=sum(1 for e in held if e.get("t") == "msg"))
        page.push("progress", percent=0)
        for step in range(1, PROGRESS_STEPS + 1):
            await asyncio.sleep(self._settings().sync_delay / PROGRESS_STEPS)
            share = held[: max(1, len(held) // (PROGRESS_STEPS - step + 1))] if held else []
            del held[: len(share)]
            for event in share:
                page.outbox.put_nowait(event)
            page.push("progress", percent=100 * step // PROGRESS_STEPS)
        page.push("synced")

    def _end(self, page: Page, state: str) -> None:
        """Switch the page to an end state; the server closes its connection."""
        self._stop_flow(page)
        self._show_ref(page, None)
        self._release(page)
        page.phase = "ended"
        page.push("state", state=state)

    # --- bookkeeping ---

    def _show_ref(self, page: Page, ref: str | None, *, expire: bool = True) -> None:
        old = page.ref
        if old is not None:
            self._refs.pop(old, None)
            if expire:
                self._expired[old] = None
                while len(self._expired) > EXPIRED_REFS_KEPT:
                    self._expired.popitem(last=False)
        page.ref = ref
        if ref is not None:
            self._refs[ref] = page

    def _host(self, page: Page, device: Device) -> None:
        """Make `page` the host of `device`; an older host of it is switched to CONFLICT."""
        key = (device.phone, device.number)
        older = self._hosts.get(key)
        if older is not None and older is not page:
            older.device = None
            older.phase = "ended"
            self._stop_flow(older)
            older.push("conflict")
            self._accounts.record_conflict(device.phone)
            log.info(
                "conflict: %s moved from page %d to page %d", device.wid, older.number, page.number
            )
        self._hosts[key] = page
        page.device = device

    def _release(self, page: Page) -> None:
        device = page.device
        if device is not None and self._hosts.get((device.phone, device.number)) is page:
            del self._hosts[(device.phone, device.number)]
        page.device = None

    def _drop(self, page: Page) -> None:
        self._pages.pop(page.number, None)
        self._show_ref(page, None, expire=False)
        self._release(page)
        self._stop_flow(page)

    # --- what the phone does ---

    def scan(self, fields: list[str], phone: str) -> Device | None:
        """Link the page showing this QR payload to `phone`. None when the account first wants
        a passkey (the page is asked for it; nothing is linked)."""
        ref = fields[0]
        page = self._refs.get(ref)
        if page is None:
            if ref in self._expired:
                raise Gone("code", "this QR code has expired; scan the one the browser shows now")
            raise NotFound("code", "no browser is showing this QR code")
        assert page.keys is not None
        if tuple(fields[1:4]) != page.keys or fields[4:5] not in ([], [PLATFORM]):
            raise BadRequest("code", "the keys do not match the QR code the browser shows")
        if self._settings().passkey:
            self._stop_flow(page)
            self._show_ref(page, None)
            page.phase = "passkey"
            page.push("pairing")
            page.push("passkey", challenge=_b64(secrets.token_bytes(32)))
            return None
        noise, identity = key_bytes(page.keys[0]), key_bytes(page.keys[1])
        assert noise is not None and identity is not None
        device = self._accounts.link(phone, noise, identity)
        self._stop_flow(page)
        self._show_ref(page, None)
        self._host(page, device)
        page.phase = "paired"
        page.push("pairing")
        page.push("paired", wid=device.wid)
        return device

    def logout(
        self, phone: str, number: int | None, *, reason: str = "phone"
    ) -> tuple[list[Device], int]:
        """Unlink devices; pages hosting them log out (they clear their login and reload).
        Returns the devices and how many pages hosted them."""
        devices = self._accounts.unlink(phone, number)
        pages = 0
        for device in devices:
            self._mail.forget(device.wid)
            page = self._hosts.pop((device.phone, device.number), None)
            if page is None:
                continue
            pages += 1
            page.device = None
            page.phase = "ended"
            self._stop_flow(page)
            page.push("logged_out", reason=reason)
        self._mail_changed()
        return devices, pages

    def set_state(self, phone: str, state: str | None) -> int:
        """Put the account in an end state (None lifts it); returns how many pages got it."""
        self._accounts.set_state(phone, state)
        if state is None:
            return 0
        pages = [p for (host, _), p in self._hosts.items() if host == phone]
        for page in pages:
            self._end(page, state)
        return len(pages)

    def send(self, message: Message, *, origin: Page | None = None) -> int:
        """Deliver a message; returns to how many of the receiver's pages it went at once."""
        self._mail.receive(message)
        delivered = 0
        for device in self._accounts.devices(message.to):
            delivered += self._deliver(device, {"t": "msg", "msg": message.wire(from_me=False)})
        if message.to != message.sender:
            for device in self._accounts.devices(message.sender):
                if origin is not None and self._hosts.get((device.phone, device.number)) is origin:
                    continue
                self._deliver(device, {"t": "msg", "msg": message.wire(from_me=True)})
        self._mail_changed()
        return delivered

    def _deliver(self, device: Device, event: dict[str, Any]) -> int:
        page = self._hosts.get((device.phone, device.number))
        if page is not None and page.phase == "connected":
            page.outbox.put_nowait(event)
            return 1
        self._mail.hold(device.wid, event)
        return 0

    # --- what a page sends ---

    def _page_sends(self, page: Page, device: Device, data: object) -> None:
        problem, message = self._message_from_page(device, data)
        if message is None:
            if isinstance(data, dict) and isinstance(data.get("id"), str):
                remote = data.get("to") if isinstance(data.get("to"), str) else ""
                page.push("ack", id=data["id"][:MSG_ID_MAX], remote=remote, ack=ACK_ERROR)
            log.info("page %d: message refused: %s", page.number, problem)
            return
        page.push("ack", id=message.id, remote=f"{message.to}@c.us", ack=ACK_SERVER)
        self.send(message, origin=page)
        self._spawn(self._ack_flow(device.phone, message))

    def _message_from_page(self, device: Device, data: object) -> tuple[str, Message | None]:
        if not isinstance(data, dict):
            return "not an object", None
        msg_id, to, kind = data.get("id"), data.get("to"), data.get("type")
        if not isinstance(msg_id, str) or not 0 < len(msg_id) <= MSG_ID_MAX:
            return "bad id", None
        if not isinstance(to, str) or not to.endswith("@c.us"):
            return "bad recipient", None
        to_phone = to.removesuffix("@c.us")
        if PHONE_RE.fullmatch(to_phone) is None:
            return "bad recipient", None
        if kind not in MESSAGE_TYPES:
            return f"type {kind!r} is not modelled", None
        body = data.get("body") or ""
        if not isinstance(body, str) or len(body) > MAX_TEXT:
            return "bad body", None
        fields: dict[str, Any] = {}
        for name in ("caption", "mimetype", "filename"):
            value = data.get(name)
            if isinstance(value, str):
                fields[name] = value[:MAX_TEXT]
        size = data.get("size")
        if isinstance(size, int) and not isinstance(size, bool):
            fields["size"] = size
        media: Media | None = None
        plain: bytes | None = None
        if kind in MEDIA_TYPES:
            problem, media, plain = self._fetch_media(kind, data.get("media"))
            if media is None:
                return problem, None
        elif not body:
            return "an empty text", None
        return "", Message(
            id=msg_id,
            sender=device.phone,
            to=to_phone,
            type=kind,
            body=body,
            t=now(),
            media=media,
            data=plain,
            **fields,
        )

    def _fetch_media(self, kind: str, ref: object) -> tuple[str, Media | None, bytes | None]:
        if not isinstance(ref, dict):
            return "media without its upload", None, None
        path, key_b64 = ref.get("directPath"), ref.get("mediaKey")
        key = _unb64(key_b64)
        if not isinstance(path, str) or not isinstance(key_b64, str) or key is None:
            return "media without its upload", None, None
        blob = self._store.get(path)
        if blob is None:
            return "media not uploaded", None, None
        try:
            plain = media_crypto.decrypt(blob, key, kind)
        except MediaError as e:
            return f"media does not decrypt: {e}", None, None
        filehash = media_crypto.b64sha256(plain)
        if ref.get("filehash") not in (None, filehash):
            return "filehash does not match the file", None, None
        stamp = ref.get("mediaKeyTimestamp")
        return (
            "",
            Media(
                direct_path=path,
                media_key=key_b64,
                filehash=filehash,
                enc_filehash=media_crypto.b64sha256(blob),
                media_key_timestamp=stamp if isinstance(stamp, int) else now(),
            ),
            plain,
        )

    async def _ack_flow(self, sender: str, message: Message) -> None:
        """The receiving phone gets the message, then reads it: acks 2 and 3 to the sender."""
        for ack in (ACK_DEVICE, ACK_READ):
            await asyncio.sleep(self._settings().ack_delay)
            self._mail.set_ack(message, ack)
            for device in self._accounts.devices(sender):
                self._deliver(
                    device,
                    {"t": "ack", "id": message.id, "remote": f"{message.to}@c.us", "ack": ack},
                )
            self._mail_changed()

    def online(self, device: Device) -> bool:
        return (device.phone, device.number) in self._hosts

    def count(self) -> int:
        return len(self._pages)

    async def aclose(self) -> None:
        """Stop every flow and close every page's WebSocket."""
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(
            *(
                page.ws.close(code=WSCloseCode.GOING_AWAY, message=b"sandbox stopping")
                for page in list(self._pages.values())
            ),
            return_exceptions=True,
        )


def lid_of(phone: str) -> str:
    """The account's LID user part: stable per phone, 15 digits."""
    digest = int.from_bytes(hashlib.sha256(b"lid:" + phone.encode()).digest()[:8], "big")
    return str(10**14 + digest % (9 * 10**14))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: object) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
