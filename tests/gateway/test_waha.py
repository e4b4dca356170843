"""The WAHA-compatible routes, called as a WAHA client calls them (X-Api-Key, WAHA's names)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.conftest import TOKENS
from tests.gateway.conftest import Stack
from tests.helpers import phone, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.redis]

WAHA = {"X-Api-Key": TOKENS["acme"]}


async def test_a_waha_client_starts_scans_sends_and_stops(stack: Stack) -> None:
    async def call(method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        kwargs.setdefault("headers", WAHA)
        status, body, _ = await stack.call(method, path, **kwargs)
        return status, body

    assert await call("GET", "/ping") == (200, {"message": "pong"})
    status, created = await call("POST", "/api/sessions", json={"name": "default"})
    assert status == 201 and created["name"] == "default", created
    assert created["status"] in ("STARTING", "SCAN_QR_CODE")
    status, problem = await call("POST", "/api/sessions", json={"name": "default"})
    assert status == 422 and "already exists" in problem["detail"]

    async def scan_state() -> bool:
        return (await call("GET", "/api/sessions/default"))[1]["status"] == "SCAN_QR_CODE"

    await wait_for(scan_state, what="SCAN_QR_CODE", interval=0.2)
    status, raw = await call("GET", "/api/default/auth/qr?format=raw")
    assert status == 200 and raw["value"].count(",") >= 3, raw
    status, image = await call("GET", "/api/default/auth/qr")
    assert status == 200 and image.startswith(b"\x89PNG")
    status, as_json = await call(
        "GET", "/api/default/auth/qr", headers={**WAHA, "Accept": "application/json"}
    )
    assert status == 200 and as_json["mimetype"] == "image/png"
    assert base64.b64decode(as_json["data"]).startswith(b"\x89PNG")

    scanned, answer = await phone(
        stack.sandbox.url, "scan", code=raw["value"], phone="6281300000001"
    )
    assert scanned == 200, answer

    async def working() -> bool:
        return (await call("GET", "/api/sessions/default"))[1]["status"] == "WORKING"

    await wait_for(working, what="WORKING", interval=0.2)
    status, me = await call("GET", "/api/sessions/default/me")
    assert status == 200 and me == {"id": "6281300000001@c.us", "pushName": ""}
    status, listed = await call("GET", "/api/sessions")
    assert [s["name"] for s in listed] == ["default"] and listed[0]["status"] == "WORKING"

    # sendText as WAHA's clients send it: the session in the body, chatId, text.
    status, sent = await call(
        "POST",
        "/api/sendText",
        json={"session": "default", "chatId": "6281399999999@c.us", "text": "hi"},
    )
    assert status == 201, sent
    assert sent["id"]["fromMe"] is True and sent["id"]["remote"] == "6281399999999@c.us"
    assert sent["id"]["_serialized"].startswith("true_6281399999999@c.us_")
    assert sent["ack"] >= 1 and sent["body"] == "hi"
    status, doc = await call(
        "POST",
        "/api/sendFile",
        json={
            "session": "default",
            "chatId": "6281399999999@c.us",
            "file": {
                "mimetype": "application/pdf",
                "filename": "a.pdf",
                "data": base64.b64encode(b"%PDF-1.4 x").decode(),
            },
            "caption": "the file",
        },
    )
    assert status == 201 and doc["hasMedia"] is True, doc

    async def delivered() -> bool:
        async with stack.http.get(
            f"{stack.sandbox.url.rstrip('/')}/phone/messages", params={"phone": "6281399999999"}
        ) as resp:
            got = await resp.json()
        return [m["type"] for m in got["messages"]] == ["chat", "document"]

    await wait_for(delivered, what="the phone to receive both messages")

    # Errors name WAHA's fields.
    status, problem = await call(
        "POST", "/api/sendText", json={"session": "default", "chatId": "12ab", "text": "x"}
    )
    assert status == 400 and problem["errors"][0]["field"] == "chatId", problem
    status, problem = await call(
        "POST", "/api/sendText", json={"session": "nope", "chatId": "6281399999999", "text": "x"}
    )
    assert status == 404, problem

    status, stopped = await call("POST", "/api/sessions/default/stop")
    assert status == 200 and stopped["status"] == "STOPPED"
    status, listed = await call("GET", "/api/sessions")
    assert listed == []
    status, listed = await call("GET", "/api/sessions?all=true")
    assert [s["status"] for s in listed] == ["STOPPED"]
    status, started = await call("POST", "/api/sessions/default/start")
    assert status == 200 and started["status"] in ("STARTING", "WORKING")
    await wait_for(working, what="WORKING again, from the kept login", interval=0.2)
    status, _ = await call("DELETE", "/api/sessions/default")
    assert status == 204
    assert (await call("GET", "/api/sessions/default"))[0] == 404
    assert (await call("DELETE", "/api/sessions/default"))[0] == 204
    # As in WAHA, a deleted session does not come back by start or restart: only by a create.
    for action in ("start", "restart"):
        status, problem = await call("POST", f"/api/sessions/default/{action}")
        assert status == 404 and "POST /api/sessions" in problem["detail"], (action, problem)
        assert (await call("GET", "/api/sessions/default"))[0] == 404, action
    status, problem = await call("POST", "/api/sessions/never-made/start")
    assert status == 404, problem
    status, created = await call("POST", "/api/sessions", json={"name": "default"})
    assert status == 201 and created["status"] in ("STARTING", "SCAN_QR_CODE"), created
    assert (await call("GET", "/api/sessions/default"))[0] == 200
