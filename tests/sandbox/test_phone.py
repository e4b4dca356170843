"""The simulated phone's HTTP API and the server's page protocol, with a scripted WebSocket page
that holds real X25519 keys and proves them as the browser page does."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sandbox import media
from sandbox.browsers import refusal
from tests.helpers import DEADLINE, wait_for
from tests.sandbox.conftest import CHROME_UA

PHONE = "4915112345678"
OTHER = "4915100000001"
CHROME_HINTS = '"Chromium";v="156", "Google Chrome";v="156", "Not-A.Brand";v="99"'


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def raw(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


class FakePage:
    """Speaks the page's side of `/ws`, so server rules are tested without a browser."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, noise: X25519PrivateKey) -> None:
        self.ws = ws
        self.noise = noise
        self.identity = X25519PrivateKey.generate()
        self.adv = secrets.token_bytes(32)

    @classmethod
    async def open(
        cls,
        http: aiohttp.ClientSession,
        url: str,
        login: tuple[str, X25519PrivateKey] | None = None,
    ) -> FakePage:
        noise = login[1] if login else X25519PrivateKey.generate()
        page = cls(await http.ws_connect(url + "ws"), noise)
        hello: dict[str, Any] = {"t": "hello", "keys": page.keys(), "login": None}
        if login is not None:
            hello["login"] = {"wid": login[0], "noise": b64(raw(noise))}
        await page.ws.send_json(hello)
        return page

    def keys(self) -> list[str]:
        return [b64(raw(self.noise)), b64(raw(self.identity)), b64(self.adv)]

    def code(self, ref: str) -> str:
        return ",".join([ref, *self.keys(), "WEB"])

    async def next(self, kind: str | None = None) -> dict[str, Any]:
        """The next message (of `kind`, skipping others)."""
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), DEADLINE)
            assert msg.type is aiohttp.WSMsgType.TEXT, f"page socket ended: {msg}"
            data: dict[str, Any] = json.loads(msg.data)
            if kind is None or data["t"] == kind:
                return data

    async def prove(self, key: X25519PrivateKey | None = None) -> None:
        challenge = await self.next("challenge")
        eph = X25519PublicKey.from_public_bytes(base64.b64decode(challenge["eph"]))
        shared = (key or self.noise).exchange(eph)
        mac = hmac.new(shared, base64.b64decode(challenge["nonce"]), hashlib.sha256).digest()
        await self.ws.send_json({"t": "proof", "mac": b64(mac)})

    async def closed(self) -> bool:
        msg = await asyncio.wait_for(self.ws.receive(), DEADLINE)
        return msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def call(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None, **kw: Any
) -> tuple[int, Any]:
    data = body if isinstance(body, str) else None if body is None else json.dumps(body)
    async with http.request(method, url, data=data, **kw) as resp:
        return resp.status, await resp.json()


async def link(
    http: aiohttp.ClientSession, url: str, phone: str = PHONE
) -> tuple[FakePage, tuple[str, X25519PrivateKey]]:
    """A fake page, scanned, stored and synced; returns it and its login."""
    page = await FakePage.open(http, url)
    ref = (await page.next("qr"))["ref"]
    status, reply = await call(
        http, "POST", url + "phone/scan", {"code": page.code(ref), "phone": phone}
    )
    assert status == 200, reply
    assert (await page.next())["t"] == "pairing"
    paired = await page.next()
    assert paired["t"] == "paired"
    await page.ws.send_json({"t": "stored"})
    connected = await page.next("connected")
    assert connected["wid"] == paired["wid"] and connected["phone"] == phone
    await page.next("synced")
    return page, (paired["wid"], page.noise)


async def restore(
    http: aiohttp.ClientSession, url: str, login: tuple[str, X25519PrivateKey]
) -> FakePage:
    page = await FakePage.open(http, url, login)
    await page.prove()
    assert (await page.next())["t"] == "connected"
    return page


async def wait_offline(http: aiohttp.ClientSession, url: str, phone: str = PHONE) -> None:
    """Wait until the server has seen the page go (its device no longer online)."""

    async def offline() -> bool:
        _, devices = await call(http, "GET", url + f"phone/devices?phone={phone}")
        return not any(d["online"] for d in devices["devices"])

    await wait_for(offline, what="the page's device to go offline")


async def test_bad_phone_requests_name_the_field(sandbox_factory: Any, http: Any) -> None:
    sb = await sandbox_factory()
    url = sb.url
    page = await FakePage.open(http, url)
    code = page.code("2@x")
    cases: list[tuple[str, str, Any, int, str]] = [
        ("POST", "phone/scan", "{not json", 400, "request"),
        ("POST", "phone/scan", [1, 2], 400, "request"),
        ("POST", "phone/scan", {"phone": PHONE}, 400, "code"),
        ("POST", "phone/scan", {"code": "a,b,c", "phone": PHONE}, 400, "code"),
        ("POST", "phone/scan", {"code": code.replace("WEB", "IOS"), "phone": PHONE}, 400, "code"),
        ("POST", "phone/scan", {"code": code, "phone": "12ab"}, 400, "phone"),
        ("POST", "phone/scan", {"code": code, "phone": "+4915"}, 400, "phone"),
        ("POST", "phone/scan", {"code": page.code("2@nobody"), "phone": PHONE}, 404, "code"),
        ("POST", "phone/logout", {"phone": PHONE}, 404, "phone"),
        ("POST", "phone/logout", {"phone": PHONE, "device": "one"}, 400, "device"),
        ("POST", "phone/send", {"phone": PHONE, "from": "1", "body": "hi"}, 400, "from"),
        ("POST", "phone/send", {"phone": PHONE, "from": OTHER}, 400, "body"),
        ("POST", "phone/send", {"phone": PHONE, "body": "hi"}, 400, "from"),
        ("POST", "phone/send", {"phone": PHONE, "from": OTHER, "to": OTHER}, 400, "from"),
        ("POST", "phone/send", {"phone": PHONE, "to": OTHER, "type": "sticker"}, 400, "type"),
        ("POST", "phone/send", {"phone": PHONE, "to": OTHER, "type": "image"}, 400, "data"),
        ("POST", "phone/send", {"phone": PHONE, "to": OTHER, "type": "image", "data": "%%"}, 400, "data"),
        ("POST", "phone/send", {"phone": PHONE, "to": OTHER, "type": "image", "data": "AAAA"}, 400, "mimetype"),
        ("POST", "phone/state", {"phone": PHONE, "state": "BANNED"}, 400, "state"),
        ("GET", "phone/devices?phone=abc", None, 400, "phone"),
        ("GET", "phone/messages?phone=abc", None, 400, "phone"),
        ("PUT", "sandbox/config", {"qr_ttl": -1}, 400, "qr_ttl"),
        ("PUT", "sandbox/config", {"qr_count": "3"}, 400, "qr_count"),
        ("PUT", "sandbox/config", {"passkey": 1}, 400, "passkey"),
        ("PUT", "sandbox/config", {"page_weight": "heavy"}, 400, "page_weight"),
        ("PUT", "sandbox/config", {"initial_state": "CONNECTED"}, 400, "initial_state"),
        ("PUT", "sandbox/config", {"bogus": 1}, 400, "bogus"),
        ("GET", "qr.png", None, 400, "code"),
        ("GET", "app/bundle.js?kb=0", None, 400, "kb"),
        ("GET", "static/..%2Fapp.py", None, 404, "path"),
        ("POST", "mms/sticker-pack", "x", 404, "kind"),
        ("GET", "v/t62.image/nothing.enc", None, 404, "path"),
    ]  # fmt: skip
    for method, path, body, want, field in cases:
        status, reply = await call(http, method, url + path, body)
        assert status == want, (path, body, reply)
        assert reply["error"].startswith(field + ":"), (path, body, reply)
    status, reply = await call(http, "GET", url + "no/such/thing")
    assert status == 404 and "error" in reply
    assert (await call(http, "GET", url + "healthz"))[0] == 200


async def test_config_changes_live_settings(sandbox_factory: Any, http: Any) -> None:
    sb = await sandbox_factory()
    body = {"qr_ttl": 3, "qr_count": 2, "passkey": True, "page_weight": "light", "heap_mb": 9}
    status, reply = await call(http, "PUT", sb.url + "sandbox/config", body)
    assert status == 200 and reply["qr_ttl"] == 3.0 and reply["qr_count"] == 2
    assert reply["passkey"] is True and reply["heap_mb"] == 9.0
    assert sb.settings.weight.heap_mb == 9.0 and sb.settings.weight.idb_mb == 0.25
    sb.configure(sync_delay=0.5)
    assert (await call(http, "GET", sb.url + "sandbox/config"))[1]["sync_delay"] == 0.5


def test_browser_gate_rules() -> None:
    assert refusal(CHROME_UA, CHROME_HINTS) is None
    headless = CHROME_UA.replace("Chrome/", "HeadlessChrome/")
    assert refusal(headless, None) == "a headless browser"
    assert refusal(CHROME_UA, '"Chromium";v="156", "HeadlessChrome";v="156"') is not None
    assert refusal(CHROME_UA.replace("156.0.0.0", "119.0.0.0"), None) is not None
    assert refusal(CHROME_UA, '"Chromium";v="119", "Google Chrome";v="119"') is not None
    firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
    assert refusal(firefox, None) is None
    assert refusal("Python/3.11 aiohttp/3.11", None) == "not a supported browser"


async def test_page_is_served_only_to_a_current_browser(sandbox_factory: Any, http: Any) -> None:
    sb = await sandbox_factory(version="2.3000.1")
    headers = {"User-Agent": CHROME_UA, "Sec-CH-UA": CHROME_HINTS}
    async with http.get(sb.url, headers=headers) as resp:
        html = await resp.text()
        csp = resp.headers["Content-Security-Policy"]
    assert '"version": "2.3000.1"' in html and "/static/main.js" in html
    assert "<script>" not in html and "update-browser" not in html
    assert "script-src 'self'" in csp and "worker-src 'self'" in csp and "unsafe" not in csp
    async with http.get(sb.url, headers={"User-Agent": "HeadlessChrome/156"}) as resp:
        assert "update-browser" in await resp.text() and "main.js" not in await resp.text()
    async with http.get(sb.url + "static/main.js") as resp:
        assert resp.status == 200 and resp.content_type == "text/javascript"
        assert "Content-Security-Policy" in resp.headers
    async with http.get(sb.url + "app/bundle.js", params={"kb": "64"}) as resp:
        body = await resp.read()
    assert 64 * 1024 <= len(body) < 66 * 1024 and body.count(b"__d(") > 50
    async with http.get(sb.url + "qr.png", params={"code": "2@abc,x,y,z,WEB"}) as resp:
        assert resp.content_type == "image/png"
        assert (await resp.read()).startswith(b"\x89PNG")


async def test_expired_ref_is_gone(sandbox_factory: Any, http: Any) -> None:
    sb = await sandbox_factory(first_qr_ttl=0.2, qr_ttl=0.2, qr_count=2)
    page = await FakePage.open(http, sb.url)
    first = (await page.next("qr"))["ref"]
    second = (await page.next("qr"))["ref"]
    assert first != second
    body = {"code": page.code(first), "phone": PHONE}
    status, reply = await call(http, "POST", sb.url + "phone/scan", body)
    assert status == 410 and reply["error"].startswith("code:")
    await page.next("idle")
    body["code"] = page.code(second)
    assert (await call(http, "POST", sb.url + "phone/scan", body))[0] == 410


async def test_scan_needs_the_page_keys_in_any_accepted_form(
    sandbox_factory: Any, http: Any
) -> None:
    sb = await sandbox_factory()
    page = await FakePage.open(http, sb.url)
    ref = (await page.next("qr"))["ref"]
    wrong = ",".join([ref, b64(bytes(32)), *page.keys()[1:], "WEB"])
    status, reply = await call(http, "POST", sb.url + "phone/scan", {"code": wrong, "phone": PHONE})
    assert status == 400 and reply["error"].startswith("code:")
    # The wa.me prefix, four fields (no platform) and a trailing link field are all accepted.
    four = "https://wa.me/settings/linked_devices#" + ",".join([ref, *page.keys()])
    status, reply = await call(http, "POST", sb.url + "phone/scan", {"code": four, "phone": PHONE})
    assert status == 200 and reply["device"] == 1
    other = await FakePage.open(http, sb.url)
    ref = (await other.next("qr"))["ref"]
    six = other.code(ref) + ",https://faq.whatsapp.com/1317564962315842"
    status, reply = await call(http, "POST", sb.url + "phone/scan", {"code": six, "phone": PHONE})
    assert status == 200 and reply["device"] == 2


async def test_link_restore_conflict_logout(sandbox_factory: Any, http: Any) -> None:
    sb = await sandbox_factory(sync_delay=0.1)
    url = sb.url
    first, login = await link(http, url)
    assert login[0] == f"{PHONE}:1@c.us"
    _, devices = await call(http, "GET", url + f"phone/devices?phone={PHONE}")
    assert [(d["device"], d["online"]) for d in devices["devices"]] == [(1, True)]

    # The same login opened elsewhere: the older page gets CONFLICT, once, and is closed.
    second = await restore(http, url, login)
    assert (await first.next())["t"] == "conflict"
    assert await first.closed()
    await second.next("synced")
    assert sb.conflicts() == {PHONE: 1}
    assert (await call(http, "GET", url + "phone/conflicts"))[1] == {PHONE: 1}

    # A page that cannot prove the noise key is told so, keeps its storage, and gets a QR.
    impostor = await FakePage.open(http, url, (login[0], X25519PrivateKey.generate()))
    await impostor.prove()
    assert (await impostor.next())["t"] == "creds_invalid"
    await impostor.next("qr")

    # Logout from the phone: the hosting page logs out; the login no longer opens.
    status, reply = await call(http, "POST", url + "phone/logout", {"phone": PHONE})
    assert status == 200 and reply["devices"] == [1] and reply["browsers"] == 1
    assert (await second.next("logged_out"))["reason"] == "phone"
    third = await FakePage.open(http, url, login)
    assert (await third.next())["t"] == "logged_out"
    _, devices = await call(http, "GET", url + f"phone/devices?phone={PHONE}")
    assert devices["devices"] == []
    assert (await call(http, "POST", url + "phone/logout", {"phone": PHONE}))[0] == 404


async def test_four_devices_per_phone(sandbox_factory: Any, http: Any) -> None:
    sb = await sandbox_factory()
    for _ in range(4):
        await link(http, sb.url)
    page = await FakePage.open(http, sb.url)
    ref = (await page.next("qr"))["ref"]
    body = {"code": page.code(ref), "phone": PHONE}
    status, reply = await call(http, "POST", sb.url + "phone/scan", body)
    assert status == 409 and reply["error"].startswith("phone:")
    status, reply = await call(http, "POST", sb.url + "phone/logout", {"phone": PHONE, "device": 2})
    assert status == 200 and reply["devices"] == [2]
    assert (await call(http, "POST", sb.url + "phone/scan", body))[1]["device"] == 5


async def test_page_logout_unlinks_its_device(sandbox_factory: Any, http: Any) -> None:
    sb = await sandbox_factory()
    page, _ = await link(http, sb.url)
    await page.ws.send_json({"t": "logout"})  # what Socket.logout() sends
    assert (await page.next())["t"] == "logged_out"
    _, devices = await call(http, "GET", sb.url + f"phone/devices?phone={PHONE}")
    assert devices["devices"] == []


async def test_end_states(sandbox_factory: Any, http: Any) -> None:
    sb = await sandbox_factory()
    page, login = await link(http, sb.url)
    status, reply = await call(
        http, "POST", sb.url + "phone/state", {"phone": PHONE, "state": "TOS_BLOCK"}
    )
    assert status == 200 and reply == {"phone": PHONE, "state": "TOS_BLOCK", "browsers": 1}
    assert (await page.next()) == {"t": "state", "state": "TOS_BLOCK"}
    assert await page.closed()
    again = await FakePage.open(http, sb.url, login)
    assert (await again.next()) == {"t": "state", "state": "TOS_BLOCK"}
    _, devices = await call(http, "GET", sb.url + f"phone/devices?phone={PHONE}")
    assert devices["state"] == "TOS_BLOCK"
    await call(http, "POST", sb.url + "phone/state", {"phone": PHONE, "state": None})
    await restore(http, sb.url, login)

    sb.configure(initial_state="PROXYBLOCK")
    fresh = await FakePage.open(http, sb.url)
    assert (await fresh.next()) == {"t": "state", "state": "PROXYBLOCK"}


async def test_passkey_keeps_the_device_unlinked(sandbox_factory: Any, http: Any) -> None:
    sb = await sandbox_factory(passkey=True)
    page = await FakePage.open(http, sb.url)
    ref = (await page.next("qr"))["ref"]
    body = {"code": page.code(ref), "phone": PHONE}
    status, reply = await call(http, "POST", sb.url + "phone/scan", body)
    assert status == 202 and reply == {"phone": PHONE, "pending": "passkey"}
    assert (await page.next())["t"] == "pairing"
    assert len(base64.b64decode((await page.next("passkey"))["challenge"])) == 32
    await page.ws.send_json({"t": "passkey_failed", "error": "NotAllowedError"})
    _, devices = await call(http, "GET", sb.url + f"phone/devices?phone={PHONE}")
    assert devices["devices"] == []


async def test_messages_acks_and_offline_delivery(sandbox_factory: Any, http: Any) -> None:
    sb = await sandbox_factory(ack_delay=0.05)
    url = sb.url
    page, login = await link(http, url)

    # The session sends: acks 1, 2, 3; the other phone received it.
    await page.ws.send_json(
        {"t": "send", "msg": {"id": "3EB0AA", "to": f"{OTHER}@c.us", "type": "chat", "body": "hi"}}
    )
    acks = [(await page.next("ack"))["ack"] for _ in range(3)]
    assert acks == [1, 2, 3]
    _, inbox = await call(http, "GET", url + f"phone/messages?phone={OTHER}")
    assert [(m["id"], m["from"], m["body"], m["ack"]) for m in inbox["messages"]] == [
        ("3EB0AA", PHONE, "hi", 3)
    ]
    # A message the server cannot take gets ack -1.
    await page.ws.send_json(
        {"t": "send", "msg": {"id": "3EB0BB", "to": "123@g.us", "type": "chat", "body": "x"}}
    )
    assert (await page.next("ack"))["ack"] == -1

    # Incoming, and the phone's own message to someone else (fromMe).
    body = {"phone": PHONE, "from": OTHER, "body": "hello"}
    status, reply = await call(http, "POST", url + "phone/send", body)
    assert status == 200 and reply["delivered"] == 1
    incoming = (await page.next("msg"))["msg"]
    assert (incoming["fromMe"], incoming["remote"], incoming["body"]) == (
        False,
        f"{OTHER}@c.us",
        "hello",
    )
    await call(
        http, "POST", url + "phone/send", {"phone": PHONE, "to": OTHER, "body": "from phone"}
    )
    own = (await page.next("msg"))["msg"]
    assert (own["fromMe"], own["remote"], own["from"]) == (True, f"{OTHER}@c.us", f"{PHONE}@c.us")

    # While the page is away, messages wait and come with the offline sync.
    await page.ws.close()
    await wait_offline(http, url)
    _, reply = await call(http, "POST", url + "phone/send", {**body, "body": "while away"})
    assert reply["delivered"] == 0
    back = await FakePage.open(http, url, login)
    await back.prove()
    assert (await back.next("offline"))["count"] == 1
    assert (await back.next("msg"))["msg"]["body"] == "while away"


async def test_media_from_the_phone_is_encrypted(sandbox_factory: Any, http: Any) -> None:
    sb = await sandbox_factory()
    page, _ = await link(http, sb.url)
    data = secrets.token_bytes(3000)
    body = {"phone": PHONE, "from": OTHER, "type": "document", "data": b64(data),
            "mimetype": "application/pdf", "filename": "a.pdf", "caption": "the file"}  # fmt: skip
    assert (await call(http, "POST", sb.url + "phone/send", body))[0] == 200
    msg = (await page.next("msg"))["msg"]
    assert (msg["type"], msg["filename"], msg["size"], msg["caption"]) == (
        "document", "a.pdf", 3000, "the file"
    )  # fmt: skip
    async with http.get(sb.url + msg["media"]["directPath"].lstrip("/")) as resp:
        blob = await resp.read()
    assert data not in blob
    assert media.decrypt(blob, base64.b64decode(msg["media"]["mediaKey"]), "document") == data
    assert msg["media"]["filehash"] == media.b64sha256(data)
    with pytest.raises(media.MediaError):
        media.decrypt(blob, secrets.token_bytes(32), "document")


async def test_restart_keeps_devices_states_and_waiting_messages(
    sandbox_at: Any, http: Any, tmp_path: Path
) -> None:
    state = tmp_path / "sandbox.json"
    sb = await sandbox_at(state_path=state)
    page, login = await link(http, sb.url)
    await call(http, "POST", sb.url + "phone/state", {"phone": OTHER, "state": "SMB_TOS_BLOCK"})
    await page.ws.close()
    await wait_offline(http, sb.url)
    await call(
        http, "POST", sb.url + "phone/send", {"phone": PHONE, "from": OTHER, "body": "later"}
    )
    await sb.aclose()
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    saved = json.loads(state.read_text())
    assert saved["format"] == 1 and saved["devices"][0]["phone"] == PHONE

    sb2 = await sandbox_at(state_path=state)
    back = await restore(http, sb2.url, login)
    assert (await back.next("msg"))["msg"]["body"] == "later"
    _, devices = await call(http, "GET", sb2.url + f"phone/devices?phone={OTHER}")
    assert devices["state"] == "SMB_TOS_BLOCK"
    # The next device number carries on from the saved one.
    _, second = await link(http, sb2.url)
    assert second[0] == f"{PHONE}:2@c.us"


async def test_a_foreign_state_file_is_refused(sandbox_at: Any, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text('{"something": "else"}')
    with pytest.raises(ValueError, match="not a sandbox state file"):
        await sandbox_at(state_path=state)
    assert state.read_text() == '{"something": "else"}'


async def test_a_page_that_stops_answering_pings_is_dropped(sandbox_factory: Any) -> None:
    sb = await sandbox_factory(ws_heartbeat=0.3)
    async with aiohttp.ClientSession() as http:
        keys = (await FakePage.open(http, sb.url)).keys()
        frozen = await http.ws_connect(sb.url + "ws", autoping=False)
        await frozen.send_json({"t": "hello", "login": None, "keys": keys})
        kinds = []
        while (msg := await asyncio.wait_for(frozen.receive(), DEADLINE)).type not in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
        ):
            kinds.append(msg.type)  # its QR, then pings it does not answer
    assert kinds[0] is aiohttp.WSMsgType.TEXT and aiohttp.WSMsgType.PING in kinds


async def test_close_ends_open_pages(sandbox_factory: Any, http: Any) -> None:
    sb = await sandbox_factory()
    page = await FakePage.open(http, sb.url)
    await page.next("qr")
    await asyncio.wait_for(sb.aclose(), DEADLINE)
    assert await page.closed()
    await sb.aclose()  # idempotent
