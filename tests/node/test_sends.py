"""SendMessage's rules, the send queue's order and rate, and the durable send log."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest

from node.sends import Closed, FileSendLog, SendQueue, SendRecord
from sessionmesh.sending import check_send
from sessionmesh.v1 import mesh_pb2
from sessionmesh.validation import InvalidArgument


def send(**fields: object) -> mesh_pb2.SendMessageRequest:
    base: dict[str, object] = {"session_id": "s1", "to": "6281234567890", "idempotency_key": "k-1"}
    base.update(fields)
    return mesh_pb2.SendMessageRequest(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"text": "hi", "session_id": "bad id"}, "session_id"),
        ({"text": "hi", "to": ""}, "to"),
        ({"text": "hi", "to": "12ab"}, "to"),
        ({"text": "hi", "to": "123@x.us"}, "to"),
        ({"text": "hi", "to": "6281234567890\n"}, "to"),
        ({"text": "hi", "idempotency_key": ""}, "idempotency_key"),
        ({"text": "hi", "idempotency_key": "has space"}, "idempotency_key"),
        ({"text": "hi", "idempotency_key": "k" * 129}, "idempotency_key"),
        ({}, "text"),
        ({"text": "   "}, "text"),
        ({"text": "x" * 4097}, "text"),
        ({"text": "hi", "reply_to": "nope"}, "reply_to"),
        ({"media": mesh_pb2.MediaUpload()}, "media.url"),
        ({"media": mesh_pb2.MediaUpload(url="ftp://x/y")}, "media.url"),
        ({"media": mesh_pb2.MediaUpload(url="http:///nohost")}, "media.url"),
        ({"media": mesh_pb2.MediaUpload(url="http://]:1/")}, "media.url"),
        ({"media": mesh_pb2.MediaUpload(url="http://example.com:99999/x")}, "media.url"),
        ({"media": mesh_pb2.MediaUpload(data=b"x")}, "media.mimetype"),
        ({"media": mesh_pb2.MediaUpload(data=b"x", mimetype="not a type")}, "media.mimetype"),
        ({"media": mesh_pb2.MediaUpload(data=b"x" * 11, mimetype="image/png")}, "media.data"),
        (
            {"media": mesh_pb2.MediaUpload(data=b"x", mimetype="a/b", filename="../etc")},
            "media.filename",
        ),
    ],
)
def test_each_bad_field_is_named(fields: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_send(send(**fields), max_media_bytes=10)
    assert caught.value.field == field


def test_numbers_become_chat_ids_and_the_digest_follows_the_message() -> None:
    a = check_send(send(text="hi", to="+62 812-3456-7890"), max_media_bytes=10)
    assert a.chat_id == "6281234567890@c.us"
    same = check_send(send(text="hi", idempotency_key="other"), max_media_bytes=10)
    assert a.digest == same.digest
    assert a.digest != check_send(send(text="hello"), max_media_bytes=10).digest
    media = check_send(
        send(media=mesh_pb2.MediaUpload(data=b"png", mimetype="Image/PNG", caption="c")),
        max_media_bytes=10,
    )
    assert media.media is not None and media.media.kind == "image"
    assert media.media.mimetype == "image/png"
    group = check_send(send(text="hi", to="120363025555555555@g.us"), max_media_bytes=10)
    assert group.chat_id == "120363025555555555@g.us"


async def test_the_queue_keeps_order_and_rate() -> None:
    queue = SendQueue(rate=20.0, burst=1)
    started: list[tuple[int, float]] = []

    async def job(i: int) -> int:
        started.append((i, time.monotonic()))
        await asyncio.sleep(0)
        return i

    results = await asyncio.gather(*(queue.run(lambda i=i: job(i)) for i in range(6)))
    assert results == list(range(6))
    assert [i for i, _ in started] == list(range(6))
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(started)]
    assert min(gaps) >= 1 / 20.0 * 0.95  # never faster than the rate (slower under load is fine)


async def test_a_closed_queue_refuses_waiting_jobs() -> None:
    queue = SendQueue(rate=1.0, burst=1)
    first = asyncio.ensure_future(queue.run(lambda: asyncio.sleep(0.01)))
    waiting = asyncio.ensure_future(queue.run(lambda: asyncio.sleep(0)))
    await first
    queue.close()
    with pytest.raises(Closed):
        await waiting


async def test_the_file_log_keeps_records_across_instances(tmp_path: Path) -> None:
    log = FileSendLog(tmp_path, "acme", "s1")
    assert await log.get("k") is None
    await log.put(SendRecord("k", "d", "true_1@c.us_ABC", "pending", at=time.time()))
    await log.put(SendRecord("k", "d", "true_1@c.us_ABC", "sent", ack=1, at=time.time()))
    again = FileSendLog(tmp_path, "acme", "s1")
    record = await again.get("k")
    assert record is not None and (record.state, record.ack) == ("sent", 1)
    assert (tmp_path / "acme" / "s1.sends.json").stat().st_mode & 0o777 == 0o600
