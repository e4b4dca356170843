"""Browser pages on the WebSocket: the server owns QR rotation, linking, syncing and conflicts.

Server -> page messages (JSON, field `t` is the kind), in the order a page must apply them:
  qr {ref}            show a new QR for `ref` (state UNPAIRED)
  idle                the last QR expired (state UNPAIRED_IDLE, retry button)
  pairing             a phone scanned the QR (state PAIRING)
  progress {percent}  account loading, 0..100
  connected {wid, token}  store the credentials, then state CONNECTED
  synced              hasSynced = true
  creds_invalid       the stored credentials are not valid: clear them (a QR flow follows)
  logged_out          the phone unlinked this device: clear credentials, state UNPAIRED (QR follows)
  conflict            the same login opened elsewhere: state CONFLICT, stop (the server closes)
  message {from, body, ts}
Page -> server: hello {creds: {wid, token} | null, keys: [noise, identity, adv]}, retry, and
logout (Socket.logout(): unlink this page's device, as the phone's logout does).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from sandbox.accounts import Accounts, Device
from sandbox.errors import BadRequest, Gone, NotFound, SandboxError
from sandbox.settings import SandboxSettings

log = logging.getLogger(__name__)

PLATFORM = "WEB"
PROGRESS_STEPS = 5
EXPIRED_REFS_KEPT = 10_000
CLOSE_TIMEOUT = 2.0


class Page:
    """One connected page, i.e. one WebSocket; a reload is a new Page."""

    def __init__(self, number: int, ws: web.WebSocketResponse) -> None:
        self.number = number
        self.ws = ws
        self.outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.greeted = False
        self.keys: tuple[str, str, str] | None = None
        # opening | unpaired | idle | pairing | connected | conflict
        self.phase = "opening"
        self.ref: str | None = None
        self.device: Device | None = None
        self.flow: asyncio.Task[None] | None = None

    def push(self, kind: str, **fields: Any) -> None:
        self.outbox.put_nowait({"t": kind, **fields})

    def payload(self, ref: str) -> str | None:
        """The full QR payload this page shows for `ref`, if it told us its keys."""
        return None if self.keys is None else ",".join((ref, *self.keys, PLATFORM))


class Pages:
    """All connected pages, the QR refs on show and which page hosts which device."""

    def __init__(self, accounts: Accounts, settings: Callable[[], SandboxSettings]) -> None:
        self._accounts = accounts
        self._settings = settings
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
        ws = web.WebSocketResponse(heartbeat=self._settings().ws_heartbeat, timeout=CLOSE_TIMEOUT)
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
                if msg["t"] == "conflict":
                    await page.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"conflict")
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
        elif kind == "retry" and page.phase == "idle":
            self._start(page, self._qr_flow(page))
        elif kind == "logout" and page.device is not None:
            with contextlib.suppress(SandboxError):
                self.logout(page.device.phone, page.device.number)

    def _hello(self, page: Page, msg: dict[str, Any]) -> None:
        page.greeted = True
        keys = msg.get("keys")
        if (
            isinstance(keys, list)
            and len(keys) == 3
            and all(isinstance(k, str) and k and "," not in k for k in keys)
        ):
            page.keys = (keys[0], keys[1], keys[2])
        creds = msg.get("creds")
        if isinstance(creds, dict):
            device = self._accounts.verify(creds.get("wid"), creds.get("token"))
            if device is not None:
                self._host(page, device)
                page.phase = "connected"
                page.push("connected", wid=device.wid, token=device.token)
                self._start(page, self._sync_flow(page, device, restore=True))
                return
            page.push("creds_invalid")
        self._start(page, self._qr_flow(page))

    # --- flows: one per page at a time ---

    def _start(self, page: Page, flow: Coroutine[Any, Any, None]) -> None:
        self._stop_flow(page)
        task = asyncio.create_task(flow)
        page.flow = task
        self._tasks.add(task)
        task.add_done_callback(self._flow_done)

    def _stop_flow(self, page: Page) -> None:
        if page.flow is not None:
            page.flow.cancel()
            page.flow = None

    def _flow_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("page flow failed", exc_info=task.exception())

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

    async def _sync_flow(self, page: Page, device: Device, *, restore: bool) -> None:
        page.push("progress", percent=0)
        for step in range(1, PROGRESS_STEPS + 1):
            await asyncio.sleep(self._settings().sync_delay / PROGRESS_STEPS)
            page.push("progress", percent=100 * step // PROGRESS_STEPS)
        if not restore:
            page.phase = "connected"
            page.push("connected", wid=device.wid, token=device.token)
        page.push("synced")

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
            older.phase = "conflict"
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

    def scan(self, fields: list[str], phone: str) -> Device:
        """Link the page showing this QR payload to `phone`."""
        ref = fields[0]
        page = self._refs.get(ref)
        if page is None:
            if ref in self._expired:
                raise Gone("code", "this QR code has expired; scan the one the browser shows now")
            raise NotFound("code", "no browser is showing this QR code")
        expected = page.payload(ref)
        if expected is not None and ",".join(fields) != expected:
            raise BadRequest("code", "the keys do not match the QR code the browser shows")
        device = self._accounts.link(phone)
        self._stop_flow(page)
        self._show_ref(page, None)
        self._host(page, device)
        page.phase = "pairing"
        page.push("pairing")
        self._start(page, self._sync_flow(page, device, restore=False))
        return device

    def logout(self, phone: str, number: int | None) -> tuple[list[Device], int]:
        """Unlink devices; pages hosting them drop to a new QR flow. Returns (devices, pages)."""
        devices = self._accounts.unlink(phone, number)
        pages = 0
        for device in devices:
            page = self._hosts.pop((device.phone, device.number), None)
            if page is None:
                continue
            pages += 1
            page.device = None
            page.push("logged_out")
            self._start(page, self._qr_flow(page))
        return devices, pages

    def send(self, phone: str, sender: str, body: str) -> int:
        """Deliver a message to the phone's connected pages; returns how many got it."""
        delivered = 0
        for (host_phone, _), page in self._hosts.items():
            if host_phone == phone and page.phase == "connected":
                page.push("message", **{"from": sender, "body": body, "ts": time.time()})
                delivered += 1
        return delivered

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
