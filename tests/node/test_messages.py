"""Messages through a node: text and media both ways with acks, the phone's own messages, an
idempotent retry, the bytes of a media message, and bad sends refused with their field."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import mesh_pb2, node_pb2, node_pb2_grpc
from tests.helpers import phone, phone_get, wait_for

pytestmark = pytest.mark.browser

TENANT = "acme"
ME = "6281300000001"
FRIEND = "6281300000002"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture
async def node_stub(
    sandbox_factory: Any, node_factory: Any, watchers: Any
) -> AsyncIterator[tuple[Any, Any, Any, Any]]:
    sb = await sandbox_factory(ack_delay=0.2)
    node = await node_factory(sb.url, send_rate=50.0, send_burst=5)
    channel = grpc.aio.insecure_channel(node.address)
    stub = node_pb2_grpc.SessionNodeStub(channel)
    await stub.StartSession(node_pb2.StartSessionRequest(tenant=TENANT, session_id="m"))
    w = watchers(stub.WatchSession(node_pb2.NodeWatchRequest(tenant=TENANT, session_id="m")))
    qr = await w.wait_qr()
    status, body = await phone(sb.url, "scan", code=qr.code, phone=ME)
    assert status == 200, body
    await w.wait_state(pb.READY)
    yield sb, node, stub, w
    await channel.close()


def send(**fields: Any) -> node_pb2.NodeSendMessageRequest:
    request = mesh_pb2.SendMessageRequest(session_id="m", to=FRIEND, **fields)
    return node_pb2.NodeSendMessageRequest(tenant=TENANT, request=request)


def messages(w: Any) -> list[pb.Message]:
    return [e.message for e in w.events if e.WhichOneof("event") == "message"]


def acks(w: Any, message_id: str) -> list[int]:
    return [
        e.ack.ack
        for e in w.events
        if e.WhichOneof("event") == "ack" and e.ack.message_id == message_id
    ]


async def test_text_both_ways_with_acks_and_the_phones_own_message(
    node_stub: tuple[Any, Any, Any, Any],
) -> None:
    sb, _node, stub, w = node_stub
    reply = await stub.SendMessage(send(text="hello from the mesh", idempotency_key="t1"))
    assert reply.ack >= pb.ACK_SERVER and not reply.duplicate
    assert reply.message_id.startswith(f"true_{FRIEND}@c.us_")

    async def received() -> list[dict[str, Any]]:
        return (await phone_get(sb.url, "messages", phone=FRIEND))["messages"]

    inbox: list[dict[str, Any]] = []

    async def got_it() -> bool:
        inbox[:] = await received()
        return any(m["body"] == "hello from the mesh" for m in inbox)

    await wait_for(got_it, what="the friend's phone to receive the text")
    await w.wait(lambda w: pb.ACK_READ in acks(w, reply.message_id), "acks up to READ")
    assert acks(w, reply.message_id) == sorted(acks(w, reply.message_id))

    status, _ = await phone(sb.url, "send", phone=ME, **{"from": FRIEND, "body": "hi back"})
    assert status == 200
    await w.wait(lambda w: any(m.text == "hi back" for m in messages(w)), "the reply")
    back = next(m for m in messages(w) if m.text == "hi back")
    assert back.direction == pb.INBOUND and back.chat_id == f"{FRIEND}@c.us"
    assert back.type == pb.TEXT and back.timestamp.seconds > 0

    # A message the account's phone sends itself shows as an outgoing one.
    status, _ = await phone(sb.url, "send", phone=ME, to="6281300000003", body="from my phone")
    assert status == 200
    await w.wait(lambda w: any(m.text == "from my phone" for m in messages(w)), "the phone's own")
    own = next(m for m in messages(w) if m.text == "from my phone")
    assert own.direction == pb.OUTBOUND and own.chat_id == "6281300000003@c.us"
    ids = [m.id for m in messages(w)]
    assert len(ids) == len(set(ids)), "each message is told once"


async def test_a_retry_with_the_same_key_sends_nothing_new(
    node_stub: tuple[Any, Any, Any, Any],
) -> None:
    sb, _node, stub, w = node_stub
    first = await stub.SendMessage(send(text="only once", idempotency_key="same"))
    again = await stub.SendMessage(send(text="only once", idempotency_key="same"))
    assert again.duplicate and again.message_id == first.message_id
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SendMessage(send(text="another text", idempotency_key="same"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "idempotency_key" in (err.value.details() or "")

    async def copies() -> int:
        inbox = (await phone_get(sb.url, "messages", phone=FRIEND))["messages"]
        return sum(m["body"] == "only once" for m in inbox)

    await wait_for(lambda: copies(), what="the message to arrive")
    await w.wait(lambda w: any(m.text == "only once" for m in messages(w)), "its event")
    assert await copies() == 1
    assert sum(m.text == "only once" for m in messages(w)) == 1


async def test_media_both_ways_and_its_bytes(node_stub: tuple[Any, Any, Any, Any]) -> None:
    sb, _node, stub, w = node_stub
    media = mesh_pb2.MediaUpload(
        data=PNG, mimetype="image/png", filename="dot.png", caption="a dot"
    )
    reply = await stub.SendMessage(send(media=media, idempotency_key="img"))
    assert reply.ack >= pb.ACK_SERVER
    inbox: list[dict[str, Any]] = []

    async def got_it() -> bool:
        inbox[:] = (await phone_get(sb.url, "messages", phone=FRIEND))["messages"]
        return any(m.get("caption") == "a dot" for m in inbox)

    await wait_for(got_it, what="the image to arrive")
    image = next(m for m in inbox if m.get("caption") == "a dot")
    assert image["type"] == "image" and base64.b64decode(image["data"]) == PNG

    doc = base64.b64encode(b"%PDF-1.4 a small document").decode()
    status, _ = await phone(
        sb.url,
        "send",
        phone=ME,
        type="document",
        data=doc,
        mimetype="application/pdf",
        filename="terms.pdf",
        **{"from": FRIEND},
    )
    assert status == 200
    await w.wait(lambda w: any(m.type == pb.DOCUMENT for m in messages(w)), "the document")
    got = next(m for m in messages(w) if m.type == pb.DOCUMENT)
    assert got.media.mimetype == "application/pdf" and got.media.filename == "terms.pdf"
    assert got.media.downloadable
    chunks = [
        c
        async for c in stub.GetMessageMedia(
            node_pb2.NodeMediaRequest(tenant=TENANT, session_id="m", message_id=got.id)
        )
    ]
    assert b"".join(c.data for c in chunks) == b"%PDF-1.4 a small document"
    assert chunks[0].mimetype == "application/pdf" and chunks[0].size == 25


@pytest.mark.parametrize(
    ("fields", "field", "code"),
    [
        ({"text": "x" * 4097, "idempotency_key": "a"}, "text", grpc.StatusCode.INVALID_ARGUMENT),
        (
            {"text": "hi", "idempotency_key": "a", "to": "12ab"},
            "to",
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            {"text": "hi", "idempotency_key": ""},
            "idempotency_key",
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            {"media": mesh_pb2.MediaUpload(url="file:///etc/passwd"), "idempotency_key": "a"},
            "media.url",
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ],
)
async def test_bad_sends_name_the_field(
    node_stub: tuple[Any, Any, Any, Any], fields: dict[str, Any], field: str, code: Any
) -> None:
    _sb, _node, stub, _w = node_stub
    request = mesh_pb2.SendMessageRequest(session_id="m", to=fields.pop("to", FRIEND), **fields)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SendMessage(node_pb2.NodeSendMessageRequest(tenant=TENANT, request=request))
    assert err.value.code() == code
    assert (err.value.details() or "").startswith(field)


async def test_a_session_not_ready_refuses_sends_naming_its_state(
    node_stub: tuple[Any, Any, Any, Any],
) -> None:
    _sb, _node, stub, w = node_stub
    await stub.StopSession(node_pb2.NodeSessionRequest(tenant=TENANT, session_id="m"))
    await w.wait_state(pb.STOPPED)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SendMessage(send(text="hi", idempotency_key="late"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "STOPPED" in (err.value.details() or "")


@pytest.fixture
async def file_server() -> AsyncIterator[str]:
    from aiohttp import web

    async def image(_request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    app = web.Application()
    app.router.add_get("/dot.png", image)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_media_by_url_is_fetched_from_allowed_addresses_only(
    sandbox_factory: Any, node_factory: Any, watchers: Any, file_server: str
) -> None:
    from webhooks.settings import Allowlist, WebhookSettings

    sb = await sandbox_factory()
    allowed = await node_factory(
        sb.url, webhooks=WebhookSettings(allow=Allowlist.parse("127.0.0.0/8")), send_rate=50.0
    )
    refused = await node_factory(sb.url)
    for node, number in ((allowed, "6281300000011"), (refused, "6281300000012")):
        async with grpc.aio.insecure_channel(node.address) as channel:
            stub = node_pb2_grpc.SessionNodeStub(channel)
            await stub.StartSession(node_pb2.StartSessionRequest(tenant=TENANT, session_id="u"))
            w = watchers(
                stub.WatchSession(node_pb2.NodeWatchRequest(tenant=TENANT, session_id="u"))
            )
            qr = await w.wait_qr()
            status, body = await phone(sb.url, "scan", code=qr.code, phone=number)
            assert status == 200, body
            await w.wait_state(pb.READY)
            media = mesh_pb2.MediaUpload(url=f"{file_server}/dot.png", caption="by url")
            request = mesh_pb2.SendMessageRequest(
                session_id="u", to=FRIEND, idempotency_key=f"url-{number}", media=media
            )
            call = stub.SendMessage(node_pb2.NodeSendMessageRequest(tenant=TENANT, request=request))
            if node is refused:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert (err.value.details() or "").startswith("media.url: ")
                assert "not a public address" in (err.value.details() or "")
                continue
            reply = await call
            assert reply.ack >= pb.ACK_SERVER
    inbox = (await phone_get(sb.url, "messages", phone=FRIEND))["messages"]
    sent = [m for m in inbox if m.get("caption") == "by url"]
    assert len(sent) == 1 and base64.b64decode(sent[0]["data"]) == PNG
    assert sent[0]["mimetype"] == "image/png"


async def test_a_file_whatsapp_web_cannot_prepare_is_invalid_not_retried(
    node_stub: tuple[Any, Any, Any, Any],
) -> None:
    _sb, _node, stub, _w = node_stub
    broken = mesh_pb2.MediaUpload(data=b"not a png at all", mimetype="image/png", filename="x.png")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SendMessage(send(media=broken, idempotency_key="broken"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith("media.data: WhatsApp Web could not prepare")


async def test_remoteauth_on_a_node_without_redis_is_a_precondition_not_a_retry(
    sandbox: Any, node_factory: Any
) -> None:
    node = await node_factory(sandbox.url)
    async with grpc.aio.insecure_channel(node.address) as channel:
        stub = node_pb2_grpc.SessionNodeStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.StartSession(
                node_pb2.StartSessionRequest(tenant=TENANT, session_id="r", auth_strategy=pb.REMOTE)
            )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "needs Redis" in (err.value.details() or "")
