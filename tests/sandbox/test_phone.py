"""The simulated phone's HTTP API and the server's page protocol, with a scripted WebSocket page."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.helpers import DEADLINE

PHONE = "4915112345678"
KEYS = ["bm9pc2U=", "aWRlbnRpdHk=", "YWR2"]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class FakePage:
    """Speaks the page's side of `/ws`, so server rules are tested without a browser."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    @classmethod
    async def open(
        cls, http: aiohttp.ClientSession, url: str, creds: dict[str, str] | None = None
    ) -> FakePage:
        page = cls(await http.ws_connect(url + "ws"))
        await page.ws.send_json({"t": "hello", "creds": creds, "keys": KEYS})
        return page

    async def next(self, kind: str | None = None) -> dict[str, Any]:
        """The next message (of `kind`, skipping others)."""
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), DEADLINE)
            assert msg.type is aiohttp.WSMsgType.TEXT, f"page socket ended: {msg}"
            data: dict[str, Any] = json.loads(msg.data)
            if kind is None or data["t"] == kind:
                return data

    @staticmethod
    def code(ref: str) -> str:
        return ",".join([ref, *KEYS, "WEB"])


async def call(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None, **kw: Any
) -> tuple[int, Any]:
    data = body if isinstance(body, str) else None if body is None else json.dumps(body)
    async with http.request(method, url, data=data, **kw) as resp:
        return resp.status, await resp.json()


async def link(
    http: aiohttp.ClientSession, url: str, phone: str = PHONE
) -> tuple[FakePage, dict[str, str]]:
    """A fake page, scanned and synced; returns it and its credentials."""
    page = await FakePage.open(http, url)
    ref = (await page.next("qr"))["ref"]
    status, _ = await call(
        http, "POST", url + "phone/scan", {"code": page.code(ref), "phone": phone}
    )
    assert status == 200
    assert (await page.next())["t"] == "pairing"
    connected = await page.next("connected")
    await page.next("synced")
    return page, {"wid": connected["wid"], "token": connected["token"]}


async def test_bad_phone_requests_name_the_field(sandbox_factory: Any, http: Any) -> None:
    sb = await sandbox_factory()
    url = sb.url
    cases: list[tuple[str, str, Any, int, str]] = [
        ("POST", "phone/scan", "{not json", 400, "request"),
        ("POST", "phone/scan", [1, 2], 400, "request"),
        ("POST", "phone/scan", {"phone": PHONE}, 400, "code"),
        ("POST", "phone/scan", {"code": "a,b,c", "phone": PHONE}, 400, "code"),
        ("POST", "phone/scan", {"code": FakePage.code("2@x"), "phone": "12ab"}, 400, "phone"),
        ("POST", "phone/scan", {"code": FakePage.code("2@x"), "phone": "+4915"}, 400, "phone"),
        ("POST", "phone/scan", {"code": FakePage.code("2@nobody"), "phone": PHONE}, 404, "code"),
        ("POST", "phone/logout", {"phone": PHONE}, 404, "phone"),
        ("POST", "phone/logout", {"phone": PHONE, "device": "one"}, 400, "device"),
        ("POST", "phone/send", {"phone": PHONE, "from": "1", "body": "hi"}, 400, "from"),
        ("POST", "phone/send", {"phone": PHONE, "from": "4915100000001"}, 400, "body"),
        ("GET", "phone/devices?phone=abc", None, 400, "phone"),
        ("PUT", "sandbox/config", {"qr_ttl": -1}, 400, "qr_ttl"),
        ("PUT", "sandbox/config", {"qr_count": "3"}, 400, "qr_count"),
        ("PUT", "sandbox/config", {"bogus": 1}, 400, "bogus"),
        ("GET", "qr.png", None, 400, "code"),
    ]
    for method, path, body, want, field in cases:
        status, reply = await call(http, method, url + path, body)
        assert status == want, (path, body, reply)
        assert reply["error"].startswith(field + ":"), (path, body, reply)
    status, reply = await call(http, "GET", url + "no/such/thing")
    assert status == 404 and "error" in reply
    assert (await call(http, "GET", url + "healthz"))[0] == 200


async def test_config_changes_live_settings(sandbox_factory: Any, http: Any) -> None:
    sb = await sandbox_factory()
    status, reply = await call(http, "PUT", sb.url + "sandbox/config", {"qr_ttl": 3, "qr_count": 2})
    assert status == 200 and reply["qr_ttl"] == 3.0 and reply["qr_count"] == 2
    assert sb.settings.qr_ttl == 3.0
    sb.configure(sync_delay=0.5)
    assert (await call(http, "GET", sb.url + "sandbox/config"))[1]["sync_delay"] == 0.5


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


async def test_scan_with_wrong_keys_is_refused(sandbox_factory: Any, http: Any) -> None:
    sb = await sandbox_factory()
    page = await FakePage.open(http, sb.url)
    ref = (await page.next("qr"))["ref"]
    code = ",".join([ref, "a", "b", "c", "WEB"])
    status, reply = await call(http, "POST", sb.url + "phone/scan", {"code": code, "phone": PHONE})
    assert status == 400 and reply["error"].startswith("code:")


async def test_link_send_devices_conflict_logout(sandbox_factory: Any, http: Any) -> None:
    sb = await sandbox_factory(sync_delay=0.1)
    url = sb.url
    first, creds = await link(http, url)
    assert creds["wid"] == f"{PHONE}:1@c.us"

    send = {"phone": PHONE, "from": "4915100000001", "body": "hello"}
    assert (await call(http, "POST", url + "phone/send", send))[1]["delivered"] == 1
    message = await first.next("message")
    assert (message["from"], message["body"]) == ("4915100000001", "hello")
    _, devices = await call(http, "GET", url + f"phone/devices?phone={PHONE}")
    assert [(d["device"], d["online"]) for d in devices["devices"]] == [(1, True)]

    # The same credentials opened elsewhere: the older page gets CONFLICT, once.
    second = await FakePage.open(http, url, creds)
    assert (await second.next())["t"] == "connected"
    assert (await first.next())["t"] == "conflict"
    assert (await first.ws.receive()).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    await second.next("synced")
    assert sb.conflicts() == {PHONE: 1}
    assert (await call(http, "GET", url + "phone/conflicts"))[1] == {PHONE: 1}

    # Logout: the hosting page drops to a new QR flow; the stored credentials stop working.
    status, reply = await call(http, "POST", url + "phone/logout", {"phone": PHONE})
    assert status == 200 and reply["devices"] == [1] and reply["browsers"] == 1
    assert (await second.next())["t"] == "logged_out"
    await second.next("qr")
    third = await FakePage.open(http, url, creds)
    assert (await third.next())["t"] == "creds_invalid"
    await third.next("qr")
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


async def test_page_and_qr_png_are_served(sandbox_factory: Any, http: Any) -> None:
    sb = await sandbox_factory(version="2.3000.1")
    async with http.get(sb.url) as resp:
        html = await resp.text()
    assert '"version": "2.3000.1"' in html and "wa.js" in html
    async with http.get(sb.url + "wa.js") as resp:
        assert resp.status == 200 and "WAWebSocketModel" in await resp.text()
    async with http.get(sb.url + "qr.png", params={"code": FakePage.code("2@abc")}) as resp:
        assert resp.content_type == "image/png"
        assert (await resp.read()).startswith(b"\x89PNG")


async def test_page_logout_unlinks_its_device(sandbox_factory: Any, http: Any) -> None:
    sb = await sandbox_factory()
    page, _ = await link(http, sb.url)
    await page.ws.send_json({"t": "logout"})  # what Socket.logout() sends
    assert (await page.next())["t"] == "logged_out"
    await page.next("qr")
    _, devices = await call(http, "GET", sb.url + f"phone/devices?phone={PHONE}")
    assert devices["devices"] == []


async def test_close_ends_open_pages(sandbox_factory: Any, http: Any) -> None:
    sb = await sandbox_factory()
    page = await FakePage.open(http, sb.url)
    await page.next("qr")
    await asyncio.wait_for(sb.aclose(), DEADLINE)
    msg = await asyncio.wait_for(page.ws.receive(), DEADLINE)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    await sb.aclose()  # idempotent
