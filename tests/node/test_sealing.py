"""What a reader of Redis may not learn or forge: event payloads (QR codes, messages), the
private fields of a directory entry (phone, labels, last error) and the send log's records are
sealed with the snapshot key, bound to their session (an event to its seq, a send record to its
idempotency key); a forged one is rejected. A whole session's life, searched byte by byte, shows
no phone number."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from node.crypto import SnapshotKeys
from node.lease import new_owner
from node.remote import RemoteAuth
from node.sends import SendRecord
from node.settings import NodeSettings
from router.directory import Directory
from sessionmesh.redis_conn import RedisClient
from sessionmesh.schema import DirEntry, SessionKeys
from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import mesh_pb2, node_pb2, node_pb2_grpc
from tests.helpers import phone
from tests.redis_server import key_spec, settings_for

pytestmark = pytest.mark.redis

PHONE = "6281234567890"
QR = "2@ref,noiseKeyB64,identityKeyB64,advSecretB64,1"


@pytest.fixture
async def remote(redis_server: str, key_prefix: str) -> AsyncIterator[RemoteAuth]:
    settings = NodeSettings(
        node_id="node-1",
        redis=dataclasses.replace(
            settings_for(redis_server, cluster=False), session_prefix=key_prefix
        ),
        snapshot_keys=SnapshotKeys.parse(key_spec("k1", 7)),
        mesh_prefix=key_prefix + "mesh:",
    )
    made = RemoteAuth(settings, new_owner("node-1"))
    await made.start()
    yield made
    async for key in made.redis.scan_iter(match=key_prefix + "*"):
        await made.redis.delete(key)
    await made.aclose()


def events() -> list[pb.SessionEvent]:
    return [
        pb.SessionEvent(session_id="s1", seq=1, state=pb.StateChange(state=pb.STARTING)),
        pb.SessionEvent(session_id="s1", seq=2, qr=pb.QrCode(code=QR, attempt=1)),
    ]


async def write(remote: RemoteAuth, evs: list[pb.SessionEvent]) -> Any:
    lease = await remote.leases.acquire("acme", "s1", remote.owner)
    assert lease is not None
    entry = DirEntry(
        node_id="node-1",
        auth_strategy=pb.REMOTE,
        state=pb.SCAN_QR_CODE,
        phone=PHONE,
        labels={"customer": "c-42"},
        last_seq=evs[-1].seq,
    )
    await remote.write(lease, evs, entry.encode(remote.seal_dir("acme", "s1")))
    return SessionKeys.of(remote.settings.redis.session_prefix, "acme", "s1")  # type: ignore[union-attr]


async def test_nothing_private_is_readable_in_redis(remote: RemoteAuth) -> None:
    keys = await write(remote, events())
    raw_events = await remote.redis.xrange(keys.events)
    raw_dir = await remote.redis.hgetall(keys.dir)
    blob = repr(raw_events) + repr(raw_dir)
    for secret in (PHONE, "noiseKeyB64", "c-42"):
        assert secret not in blob
    found, entry = await remote.read_history("acme", "s1")
    assert [e.seq for e in found] == [1, 2] and found[1].qr.code == QR
    assert entry is not None and entry.phone == PHONE and entry.labels == {"customer": "c-42"}
    # A router (no key) still routes by the entry; it learns nothing private from it.
    directory = Directory(remote.redis, session_prefix=keys.tag.split("{")[0], mesh_prefix="m:")
    seen = await directory.get("acme", "s1")
    assert seen is not None and seen.node_id == "node-1" and seen.state == pb.SCAN_QR_CODE
    assert seen.phone == "" and seen.labels == {}


async def test_a_forged_event_written_to_redis_is_rejected(remote: RemoteAuth) -> None:
    keys = await write(remote, events())
    forged = pb.SessionEvent(
        session_id="s1", seq=3, qr=pb.QrCode(code="2@attacker,ref,x,y,1", attempt=2)
    )
    await remote.redis.xadd(keys.events, {"e": forged.SerializeToString()}, id="3-0")
    # A genuine event copied to another seq (a replay) fails too.
    genuine = (await remote.redis.xrange(keys.events, "2-0", "2-0"))[0][1][b"e"]
    await remote.redis.xadd(keys.events, {"e": genuine}, id="4-0")
    # And one sealed for another session.
    other = remote.seal_event("acme", "s2", pb.SessionEvent(session_id="s1", seq=5))
    await remote.redis.xadd(keys.events, {"e": other}, id="5-0")
    found, _ = await remote.read_history("acme", "s1")
    assert [e.seq for e in found] == [1, 2]
    assert all("attacker" not in e.qr.code for e in found)


async def test_forged_private_fields_are_not_believed(remote: RemoteAuth) -> None:
    keys = await write(remote, events())
    await remote.redis.hset(keys.dir, mapping={"phone": "666", "sealed": "00" * 40})
    entry = await remote.directory("acme", "s1")
    assert entry is not None and entry.phone == "" and entry.node_id == "node-1"


async def test_the_send_log_is_sealed_and_keyed(remote: RemoteAuth) -> None:
    log = remote.send_log("acme", "s1")
    message_id = f"true_{PHONE}@c.us_3EB0AAAA"
    await log.put(SendRecord("order-42", "d1", message_id, "sent", ack=1, at=1.0))
    got = await log.get("order-42")
    assert got is not None and got.message_id == message_id and got.ack == 1
    assert await log.get("order-43") is None
    keys = SessionKeys.of(remote.settings.redis.session_prefix, "acme", "s1")  # type: ignore[union-attr]
    raw = await remote.redis.hgetall(keys.sends)
    assert PHONE not in repr(raw) and "order-42" not in repr(raw)
    # A record moved to another key, or to another session, does not open; nor does a forgery.
    ((field, blob),) = raw.items()
    other = remote.sealer.names("send", "acme/s1", "order-43")[0]
    await remote.redis.hset(keys.sends, other, blob)
    assert await remote.send_log("acme", "s1").get("order-43") is None
    keys2 = SessionKeys.of(remote.settings.redis.session_prefix, "acme", "s2")  # type: ignore[union-attr]
    await remote.redis.hset(
        keys2.sends, remote.sealer.names("send", "acme/s2", "order-42")[0], blob
    )
    assert await remote.send_log("acme", "s2").get("order-42") is None
    forged = SendRecord("order-42", "d1", "true_1@c.us_X", "sent").encode().encode()
    await remote.redis.hset(keys.sends, field, forged)
    assert await log.get("order-42") is None


async def everything_under(redis: RedisClient, prefix: str) -> bytes:
    """Every key under `prefix` and its value, as Redis holds them (DUMP, and each type read)."""
    out = bytearray()
    async for key in redis.scan_iter(match=prefix + "*", count=500):
        out += key + b"\n" + (await redis.dump(key) or b"")
        kind = (await redis.type(key)).decode()
        value: Any = {
            "string": redis.get,
            "hash": redis.hgetall,
            "stream": redis.xrange,
            "set": redis.smembers,
        }[kind](key)
        out += repr(await value).encode()
    return bytes(out)


@pytest.mark.browser
async def test_a_whole_session_leaves_no_phone_number_in_redis(
    redis_server: str, key_prefix: str, sandbox: Any, node_factory: Any, watchers: Any
) -> None:
    """Linked to one number, a message in from a second, one sent to a third: none of the
    three appears anywhere in Redis (the send log's message ids name the recipient)."""
    numbers = ("6281299887766", "6281255544433", "6281277766655")
    node = await node_factory(
        sandbox.url,
        redis=dataclasses.replace(
            settings_for(redis_server, cluster=False), session_prefix=key_prefix
        ),
        snapshot_keys=SnapshotKeys.parse(key_spec("k1", 7)),
        mesh_prefix=key_prefix + "mesh:",
        auth_strategy="remoteauth",
        snapshot_interval=1.0,
    )
    async with grpc.aio.insecure_channel(node.address) as channel:
        stub = node_pb2_grpc.SessionNodeStub(channel)
        await stub.StartSession(node_pb2.StartSessionRequest(tenant="acme", session_id="s1"))
        w = watchers(stub.WatchSession(node_pb2.NodeWatchRequest(tenant="acme", session_id="s1")))
        qr = await w.wait_qr()
        assert (await phone(sandbox.url, "scan", code=qr.code, phone=numbers[0]))[0] == 200
        await w.wait_state(pb.READY)
        status, _ = await phone(
            sandbox.url, "send", **{"phone": numbers[0], "from": numbers[1], "body": "hi"}
        )
        assert status == 200
        await w.wait(lambda w: any(e.HasField("message") for e in w.events), "the message")
        sent = await stub.SendMessage(
            node_pb2.NodeSendMessageRequest(
                tenant="acme",
                request=mesh_pb2.SendMessageRequest(
                    session_id="s1", to=numbers[2], idempotency_key="k1", text="yo"
                ),
            )
        )
        assert numbers[2] in sent.message_id
        binding = node.remote._bound[("acme", "s1")]
        assert await binding.flush()
    redis = node.remote.redis
    blob = await everything_under(redis, key_prefix)
    assert b":sends" in blob and b":events" in blob and b":snap" in blob
    for number in numbers:
        assert number.encode() not in blob, number
