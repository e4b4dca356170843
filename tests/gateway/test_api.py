"""The HTTP API against a real mesh: sessions, QR, messages, media, errors, auth, tenants."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from typing import Any

import aiohttp
import pytest

from tests.gateway.conftest import ACME, GLOBEX, Stack, cancel, read_events
from tests.helpers import phone, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.redis]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny_png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


async def test_link_send_receive_and_media_over_http(stack: Stack) -> None:
    created = await stack.call(
        "POST", "/v1/sessions", json={"session_id": "s1", "labels": {"a": "b"}}
    )
    assert created[0] == 200, created
    assert created[1]["session_id"] == "s1" and created[1]["labels"] == {"a": "b"}
    code = await stack.qr_code("s1")
    status, raw, _ = await stack.call("GET", "/v1/sessions/s1/qr")
    assert status == 200 and raw["code"] == code and raw["seq"] >= 1 and raw["attempt"] >= 1
    status, image, headers = await stack.call("GET", "/v1/sessions/s1/qr?format=image")
    assert status == 200 and headers["Content-Type"] == "image/png" and image.startswith(PNG_MAGIC)
    status, b64, _ = await stack.call("GET", "/v1/sessions/s1/qr?format=base64")
    assert status == 200 and b64["mimetype"] == "image/png"
    assert base64.b64decode(b64["data"]).startswith(PNG_MAGIC)

    scanned, answer = await phone(stack.sandbox.url, "scan", code=code, phone="6281200000001")
    assert scanned == 200, answer
    await stack.wait_state("s1", "READY")
    status, body, _ = await stack.call("GET", "/v1/sessions/s1/qr")
    assert status == 409 and body["code"] == "FAILED_PRECONDITION" and "READY" in body["detail"]

    # Send with an idempotency key; the same key answers the same message, marked duplicate.
    key = {"Idempotency-Key": "order-42", **ACME}
    send = {"to": "6281299999999", "text": "hello from http"}
    status, sent, _ = await stack.call("POST", "/v1/sessions/s1/messages", json=send, headers=key)
    assert status == 200, sent
    assert sent["ack"] in ("ACK_SERVER", "ACK_DEVICE", "ACK_READ") and not sent["duplicate"]
    status, again, _ = await stack.call("POST", "/v1/sessions/s1/messages", json=send, headers=key)
    assert status == 200 and again["message_id"] == sent["message_id"] and again["duplicate"]

    async def received() -> bool:
        async with stack.http.get(
            f"{stack.sandbox.url.rstrip('/')}/phone/messages", params={"phone": "6281299999999"}
        ) as resp:
            got = await resp.json()
        return [m["body"] for m in got.get("messages", got) if m.get("type") == "chat"] == [
            "hello from http"
        ]

    await wait_for(received, what="the phone to receive the message once")

    # Media as base64, then as a multipart upload; download it back.
    png = tiny_png()
    media = {
        "to": "6281299999999",
        "media": {
            "data": base64.b64encode(png).decode(),
            "mimetype": "image/png",
            "filename": "a.png",
        },
    }
    status, sent_media, _ = await stack.call("POST", "/v1/sessions/s1/messages", json=media)
    assert status == 200, sent_media
    form = aiohttp.FormData()
    form.add_field("to", "6281299999999")
    form.add_field("caption", "the report")
    form.add_field("file", b"%PDF-1.4 test", filename="report.pdf", content_type="application/pdf")
    status, sent_doc, _ = await stack.call("POST", "/v1/sessions/s1/messages", data=form)
    assert status == 200, sent_doc
    # An inbound message appears on the event stream.
    events: list[dict[str, Any]] = []
    async with stack.http.get(
        stack.url + "/v1/sessions/s1/events", headers={**ACME, "Last-Event-ID": str(raw["seq"])}
    ) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        reader = asyncio.ensure_future(read_events(resp, events))
        status, _ = await phone(
            stack.sandbox.url,
            "send",
            phone="6281200000001",
            **{"from": "6281277777777"},
            body="hi there",
        )
        assert status == 200
        await wait_for(
            lambda: any(
                e.get("event") == "message" and e["data"]["message"]["text"] == "hi there"
                for e in events
            ),
            what="the inbound message on the stream",
        )
        await cancel(reader)
    seqs = [int(e["id"]) for e in events]
    assert seqs == list(range(raw["seq"] + 1, raw["seq"] + 1 + len(seqs))), seqs
    inbound = next(
        e
        for e in events
        if e.get("event") == "message" and e["data"]["message"]["direction"] == "INBOUND"
    )
    assert inbound["data"]["message"]["chat_id"] == "6281277777777@c.us"


async def test_media_download_streams_the_file(stack: Stack) -> None:
    await stack.link("dl", "6281200000009")
    form = aiohttp.FormData()
    form.add_field("to", "6281299999998")
    form.add_field("file", b"%PDF-1.4 test", filename="report.pdf", content_type="application/pdf")
    status, sent, _ = await stack.call("POST", "/v1/sessions/dl/messages", data=form)
    assert status == 200, sent
    status, data, headers = await stack.call(
        "GET", f"/v1/sessions/dl/messages/{sent['message_id']}/media"
    )
    assert status == 200, data
    assert data == b"%PDF-1.4 test" and headers["Content-Type"] == "application/pdf"
    assert "report.pdf" in headers["Content-Disposition"]


async def test_errors_are_problems_naming_the_field(stack: Stack) -> None:
    cases: list[tuple[str, str, dict[str, Any], int, str | None]] = [
        ("POST", "/v1/sessions", {"session_id": "bad id"}, 400, "session_id"),
        ("POST", "/v1/sessions", {"session_id": "ok", "labels": {"bad key!": "v"}}, 400, "labels"),
        ("POST", "/v1/sessions/nope/messages", {"to": "12ab", "text": "x"}, 400, "to"),
        ("POST", "/v1/sessions/nope/messages", {"to": "6281234567", "text": "x"}, 404, None),
        (
            "POST",
            "/v1/sessions/nope/messages",
            {"to": "6281234567", "media": {"url": "http://]:1/"}},
            400,
            "media.url",
        ),
        ("GET", "/v1/sessions?page_token=zzzz", {}, 400, "page_token"),
        ("GET", "/v1/sessions/unknown", {}, 404, None),
        ("POST", "/v1/nodes/no-such-node/drain", {}, 404, None),
    ]
    for method, path, body, status, field in cases:
        got, problem, headers = await stack.call(method, path, json=body or None)
        assert got == status, (path, problem)
        assert headers["Content-Type"] == "application/problem+json"
        assert {"type", "title", "status", "detail", "code"} <= set(problem)
        assert problem["status"] == status
        if field is not None:
            assert problem["errors"][0]["field"].startswith(field), problem
            assert problem["detail"].startswith(field), problem
    # A send to a session that is not READY names its state.
    await stack.call("POST", "/v1/sessions", json={"session_id": "waiting"})
    status, problem, _ = await stack.call(
        "POST", "/v1/sessions/waiting/messages", json={"to": "6281234567890", "text": "x"}
    )
    assert status == 409 and problem["code"] == "FAILED_PRECONDITION", problem
    # Media over the router's message limit is 413, not a quota's 429.
    big = {
        "to": "6281234567890",
        "media": {"data": base64.b64encode(b"x" * (1200 << 10)).decode(), "mimetype": "image/png"},
    }
    status, problem, headers = await stack.call(
        "POST",
        "/v1/sessions/waiting/messages",
        data=io.BytesIO(json.dumps(big).encode()),
        headers={**ACME, "Content-Type": "application/json"},
    )
    assert status == 413 and "Retry-After" not in headers, problem
    # Broken JSON, and an unknown route, are problems too; nothing shows a traceback.
    status, problem, _ = await stack.call(
        "POST",
        "/v1/sessions",
        data=b"{not json",
        headers={**ACME, "Content-Type": "application/json"},
    )
    assert status == 400 and problem["code"] == "INVALID_ARGUMENT"
    # A lone surrogate, which JSON can escape but protobuf cannot carry, is bad input too.
    for path, raw in (
        ("/v1/webhooks", b'{"url":"http://x.test/","events":["qr"],"headers":{"a":"\\ud800"}}'),
        ("/v1/sessions", b'{"session_id":"ok","labels":{"k":"\\ud800"}}'),
    ):
        status, problem, _ = await stack.call(
            "POST", path, data=raw, headers={**ACME, "Content-Type": "application/json"}
        )
        assert status == 400 and problem["code"] == "INVALID_ARGUMENT", (path, problem)
    status, problem, _ = await stack.call("GET", "/v1/nothing-here")
    assert status == 404 and problem["title"] == "Not Found"
    status, problem, headers = await stack.call("PUT", "/v1/sessions")
    assert status == 405 and "GET" in headers["Allow"]
    status, problem, _ = await stack.call("POST", "/v1/sessions", data=io.BytesIO(b"x" * (5 << 20)))
    assert status == 413 and problem["status"] == 413


async def test_tokens_tenants_and_quotas_are_the_routers(stack: Stack) -> None:
    status, problem, headers = await stack.call("GET", "/v1/sessions", headers={})
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    status, problem, _ = await stack.call(
        "GET", "/v1/sessions", headers={"Authorization": "Bearer not-a-token-0123456789"}
    )
    assert status == 401 and problem["detail"] == "invalid token"
    status, _, _ = await stack.call("POST", "/v1/sessions", json={"session_id": "mine"})
    assert status == 200
    # X-Api-Key works as WAHA sends it; another tenant's session is 404, not 403.
    status, problem, _ = await stack.call("GET", "/v1/sessions/mine", headers=GLOBEX)
    assert status == 404 and problem["code"] == "NOT_FOUND"
    status, listed, _ = await stack.call("GET", "/v1/sessions", headers=GLOBEX)
    assert status == 200 and listed["sessions"] == []
    status, listed, _ = await stack.call("GET", "/v1/sessions?page_size=1")
    assert [s["session_id"] for s in listed["sessions"]] == ["mine"]
    # The router's quota: acme may hold 3 live sessions.
    for sid in ("q2", "q3"):
        assert (await stack.call("POST", "/v1/sessions", json={"session_id": sid}))[0] == 200
    status, problem, headers = await stack.call("POST", "/v1/sessions", json={"session_id": "q4"})
    assert status == 429 and "MESH_TENANT_MAX_SESSIONS" in problem["detail"]
    assert headers["Retry-After"] == "1"
    # Paging.
    status, page, _ = await stack.call("GET", "/v1/sessions?page_size=2")
    assert len(page["sessions"]) == 2 and page["next_page_token"]
    status, rest, _ = await stack.call(
        "GET", f"/v1/sessions?page_size=2&page_token={page['next_page_token']}"
    )
    assert [s["session_id"] for s in page["sessions"] + rest["sessions"]] == ["mine", "q2", "q3"]
    # Stop and logout; the cluster; drain is for admins only.
    status, stopped, _ = await stack.call("POST", "/v1/sessions/q2/stop")
    assert status == 200 and stopped["state"] == "STOPPED"
    status, gone, _ = await stack.call("POST", "/v1/sessions/q3/logout")
    assert status == 200 and gone["state"] == "LOGGED_OUT"
    status, cluster, _ = await stack.call("GET", "/v1/cluster")
    assert status == 200 and cluster["nodes"][0]["health"] == "SERVING"
    status, problem, _ = await stack.call("POST", "/v1/nodes/node-1/drain", json={}, headers=GLOBEX)
    assert status == 403 and problem["code"] == "PERMISSION_DENIED"
    status, _, headers = await stack.call("GET", "/v1/sessions/mine")
    assert "router;dur=" in headers["Server-Timing"]
    # An admin drains the node: its LocalAuth sessions stay (their logins are on its disk).
    node_id = stack.nodes[0].node_id
    status, drained, _ = await stack.call(
        "POST", f"/v1/nodes/{node_id}/drain", json={"parallelism": 2}
    )
    assert status == 200 and drained["node_id"] == node_id and drained["moved"] == 0, drained
    assert drained["stayed"] >= 1 and drained["failed"] == []


async def test_event_stream_resumes_with_last_event_id_and_sends_heartbeats(stack: Stack) -> None:
    await stack.call("POST", "/v1/sessions", json={"session_id": "ev"})
    await stack.qr_code("ev")
    first: list[dict[str, Any]] = []
    comments: list[str] = []
    async with stack.http.get(stack.url + "/v1/sessions/ev/events", headers=ACME) as resp:
        reader = asyncio.ensure_future(read_events(resp, first, comments))
        await wait_for(lambda: len(first) >= 2, what="two events")
        await wait_for(lambda: len(comments) >= 1, what="a heartbeat on the stream")
        await cancel(reader)
    assert first[0]["id"] == "1" and first[0]["event"] == "state"
    cut = int(first[1]["id"])
    # Reconnect after the second event: the next one is the third, none doubled.
    second: list[dict[str, Any]] = []
    async with stack.http.get(
        stack.url + "/v1/sessions/ev/events", headers={**ACME, "Last-Event-ID": str(cut)}
    ) as resp:
        reader = asyncio.ensure_future(read_events(resp, second))
        await wait_for(lambda: len(second) >= 1, what="an event after the resume")
        await cancel(reader)
    assert int(second[0]["id"]) == cut + 1
    # follow=false: the backlog, then the stream ends.
    status, body, _ = await stack.call("GET", "/v1/sessions/ev/events?follow=false")
    assert status == 200 and body.count(b"\nevent: ") + body.startswith(b"event") >= 2
    # A Last-Event-ID from the future, or not a seq, is a 400 naming the header.
    for bad in ("999999", "abc"):
        status, problem, _ = await stack.call(
            "GET", "/v1/sessions/ev/events", headers={**ACME, "Last-Event-ID": bad}
        )
        assert status == 400 and problem["errors"][0]["field"] == "Last-Event-ID", problem
    status, problem, _ = await stack.call("GET", "/v1/sessions/ev/events", headers=GLOBEX)
    assert status == 404


async def test_webhook_routes_check_input_then_mirror_the_rpcs(stack: Stack) -> None:
    """Input is checked here, naming the field; the rest is the router's. While the router does
    not serve the webhook RPCs, each route answers its status as a problem (500 or 501)."""
    bad: list[tuple[str, str, dict[str, Any], str]] = [
        ("POST", "/v1/webhooks", {"url": "ftp://x.test/", "events": ["qr"]}, "url"),
        ("POST", "/v1/webhooks", {"url": "https://x.test/", "events": ["nope"]}, "events"),
        ("POST", "/v1/webhooks", {"url": "https://x.test/", "events": []}, "events"),
        ("PATCH", "/v1/webhooks/w1", {"enabled": "yes"}, "enabled"),
        ("POST", "/v1/dead-letters/replay", {"all": 1}, "all"),
    ]
    for method, path, body, field in bad:
        status, problem, _ = await stack.call(method, path, json=body)
        assert status == 400 and problem["errors"][0]["field"].startswith(field), (path, problem)
    status, hook, _ = await stack.call(
        "POST",
        "/v1/webhooks",
        json={
            "url": "http://127.0.0.1:9/in",  # loopback: allowed in these tests
            "events": ["message", "qr"],
            "headers": {"X-A": "1"},
        },
    )
    if status in (500, 501):
        assert hook["code"] in ("INTERNAL", "UNIMPLEMENTED") and "Traceback" not in str(hook)
        for method, path, body in (
            ("GET", "/v1/webhooks", None),
            ("PATCH", "/v1/webhooks/w1", {"enabled": False}),
            ("DELETE", "/v1/webhooks/w1", None),
            ("POST", "/v1/webhooks/w1/rotate-secret", None),
            ("GET", "/v1/deliveries", None),
            ("GET", "/v1/dead-letters", None),
            ("POST", "/v1/dead-letters/replay", {"all": True}),
        ):
            got, problem, headers = await stack.call(method, path, json=body)
            assert got == status and headers["Content-Type"] == "application/problem+json", path
            assert problem["code"] == hook["code"]
        return
    # Served: the whole cycle.
    assert status == 200, hook
    assert (
        hook["secret"].startswith("whsec_")
        and hook["enabled"]
        and hook["events"] == ["message", "qr"]
    )
    status, listed, _ = await stack.call("GET", "/v1/webhooks")
    assert [w["id"] for w in listed["webhooks"]] == [hook["id"]] and listed["webhooks"][0][
        "secret"
    ] == ""
    status, changed, _ = await stack.call(
        "PATCH", f"/v1/webhooks/{hook['id']}", json={"enabled": False}
    )
    assert status == 200 and changed["enabled"] is False and changed["url"] == hook["url"]
    status, rotated, _ = await stack.call("POST", f"/v1/webhooks/{hook['id']}/rotate-secret")
    assert status == 200 and rotated["secret"] not in ("", hook["secret"])
    assert (await stack.call("GET", f"/v1/deliveries?webhook_id={hook['id']}"))[0] == 200
    assert (await stack.call("GET", f"/v1/dead-letters?webhook_id={hook['id']}"))[0] == 200
    status, replayed, _ = await stack.call(
        "POST", "/v1/dead-letters/replay", json={"webhook_id": hook["id"], "all": True}
    )
    assert status == 200 and replayed["replayed"] == 0
    status, _, _ = await stack.call("DELETE", f"/v1/webhooks/{hook['id']}")
    assert status == 204
    status, listed, _ = await stack.call("GET", "/v1/webhooks")
    assert listed["webhooks"] == []
    status, _, _ = await stack.call("GET", "/v1/webhooks", headers=GLOBEX)
    assert status == 200


async def test_the_served_document_is_the_committed_one(stack: Stack) -> None:
    from gateway.openapi import DOCUMENT

    status, served, _ = await stack.call("GET", "/openapi.json", headers={})
    assert status == 200
    assert served == json.loads(DOCUMENT.read_text()), "run `make openapi` and commit it"
    assert served["openapi"].startswith("3.1")
    status, docs, _ = await stack.call("GET", "/docs", headers={})
    assert status == 200 and b"swagger" in docs.lower()
