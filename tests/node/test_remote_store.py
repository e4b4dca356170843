"""Snapshot codec, Redis settings and the fenced, encrypted snapshot store against a real Redis."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from node.crypto import MAGIC, SnapshotCodec, SnapshotError, SnapshotKeys, new_key_spec
from node.lease import LeaseManager
from node.remote_store import (
    RemoteSnapshotStore,
    SessionKeys,
    StaleFence,
    StoreError,
    StoreUnavailable,
)
from sessionmesh.config import ConfigError
from sessionmesh.redis_conn import RedisClient, RedisSettings, create_redis, ping
from tests.redis_server import (
    RedisServer,
    SentinelServer,
    free_port,
    key_spec,
    settings_for,
    wait_for,
)

SECRET = "WAToken-1:s3cr3t-credential-9f8e7d6c"
PHONE = "4915112345678"
ROOT = Path(__file__).resolve().parents[2]


def state(marker: str = "v1") -> dict[str, Any]:
    """A Playwright storage state shaped like a WhatsApp Web login."""
    return {
        "cookies": [
            {
                "name": "wa_token",
                "value": SECRET,
                "domain": ".web.whatsapp.com",
                "path": "/",
                "expires": -1,
                "httpOnly": True,
                "secure": True,
                "sameSite": "Lax",
            }
        ],
        "origins": [
            {
                "origin": "https://web.whatsapp.com",
                "localStorage": [
                    {"name": "last-wid-md", "value": f'"{PHONE}:12@c.us"'},
                    {"name": "marker", "value": marker},
                ],
                "indexedDB": [
                    {
                        "name": "wawc",
                        "version": 80,
                        "stores": [
                            {
                                "name": "user",
                                "keyPath": "key",
                                "records": [{"value": {"key": "me", "phone": f"+{PHONE}"}}],
                            }
                        ],
                    }
                ],
            }
        ],
    }


# ---- codec ----------------------------------------------------------------------------------


def test_codec_round_trip_and_header(codec: SnapshotCodec) -> None:
    blob = codec.encode("acme/support", state())
    assert blob.startswith(MAGIC + b"\x02k1")
    assert codec.decode("acme/support", blob) == state()
    assert SECRET.encode() not in blob and PHONE.encode() not in blob
    # A fresh nonce every time.
    assert codec.encode("acme/support", state()) != blob


def test_codec_rejects_tampering_and_other_sessions(codec: SnapshotCodec) -> None:
    blob = bytearray(codec.encode("acme/support", state()))
    for at in (len(blob) - 1, len(blob) // 2, len(MAGIC) + 4):  # tag, ciphertext, nonce
        bad = bytearray(blob)
        bad[at] ^= 0x01
        with pytest.raises(SnapshotError, match="failed authentication"):
            codec.decode("acme/support", bytes(bad))
    with pytest.raises(SnapshotError, match="failed authentication"):
        codec.decode("acme/sales", bytes(blob))  # replayed under another session
    with pytest.raises(SnapshotError, match="truncated"):
        codec.decode("acme/support", bytes(blob[:20]))
    with pytest.raises(SnapshotError, match="magic"):
        codec.decode("acme/support", b"PK\x03\x04" + bytes(blob[4:]))


def test_codec_unknown_kid_and_relabelled_kid() -> None:
    old = SnapshotCodec(SnapshotKeys.parse(key_spec("k1", 1)))
    other = SnapshotCodec(SnapshotKeys.parse(key_spec("k9", 9)))
    blob = old.encode("acme/support", state())
    with pytest.raises(SnapshotError, match=r"key id 'k1'.*does not hold"):
        other.decode("acme/support", blob)
    # Same key bytes under another id: the kid is bound by the associated data.
    relabelled = SnapshotCodec(SnapshotKeys.parse(key_spec("k2", 1) + "," + key_spec("k1", 1)))
    forged = blob.replace(b"\x02k1", b"\x02k2", 1)
    with pytest.raises(SnapshotError, match="failed authentication"):
        relabelled.decode("acme/support", forged)


def test_key_rotation_old_snapshots_stay_readable() -> None:
    old = SnapshotCodec(SnapshotKeys.parse(key_spec("k1", 1)))
    blob_old = old.encode("acme/support", state("old"))
    rotated = SnapshotCodec(SnapshotKeys.parse(f"{key_spec('k2', 2)}, {key_spec('k1', 1)}"))
    assert rotated.keys.primary == "k2"
    assert rotated.decode("acme/support", blob_old) == state("old")
    blob_new = rotated.encode("acme/support", state("new"))
    assert blob_new.startswith(MAGIC + b"\x02k2")
    assert rotated.decode("acme/support", blob_new) == state("new")
    with pytest.raises(SnapshotError, match="'k2'"):
        old.decode("acme/support", blob_new)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "is not set"),
        ("nokid", "must be kid:base64key"),
        ("k1:!!!notbase64!!!", "must be 32 bytes"),
        ("k1:" + "QUJD", "must be 32 bytes"),
        (key_spec("k1", 1) + "," + key_spec("k1", 2), "twice"),
        ("bad kid:" + key_spec("x", 1).split(":")[1], "must be kid:base64key"),
    ],
)
def test_bad_snapshot_key_names_the_variable(value: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        SnapshotCodec.from_env({"MESH_SNAPSHOT_KEY": value} if value else {})
    message = str(info.value)
    assert "MESH_SNAPSHOT_KEY" in message
    secret = value.partition(":")[2]
    assert not secret or secret.split(",")[0] not in message


def test_keys_never_in_repr() -> None:
    spec = new_key_spec("prod-2026")
    codec = SnapshotCodec.from_env({"MESH_SNAPSHOT_KEY": spec})
    key_text = spec.split(":", 1)[1]
    for text in (repr(codec), str(codec), repr(codec.keys)):
        assert key_text not in text
        assert "prod-2026" in text
    # URL-safe base64 without padding is accepted too.
    urlsafe = spec.split(":", 1)[1].replace("+", "-").replace("/", "_").rstrip("=")
    SnapshotKeys.parse(f"u:{urlsafe}")


# ---- settings -------------------------------------------------------------------------------


def test_redis_settings_from_env() -> None:
    s = RedisSettings.from_env({})
    assert (s.mode, s.host, s.port, s.session_prefix, s.session_ttl) == (
        "standalone",
        "localhost",
        6379,
        "whatsapp:session:",
        604800,
    )
    s = RedisSettings.from_env(
        {"REDIS_SENTINELS": "a:26379, b:26380", "REDIS_SENTINEL_MASTER": "m", "REDIS_DB": "2"}
    )
    assert s.mode == "sentinel" and s.sentinels == (("a", 26379), ("b", 26380)) and s.db == 2
    assert RedisSettings.from_env({"REDIS_CLUSTER": "true"}).mode == "cluster"


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"REDIS_PORT": "abc"}, "REDIS_PORT"),
        ({"REDIS_PORT": "70000"}, "REDIS_PORT"),
        ({"REDIS_DB": "-1"}, "REDIS_DB"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://:pw@host:notaport"}, "REDIS_URL"),
        ({"REDIS_SENTINELS": "hostonly"}, "REDIS_SENTINELS"),
        ({"REDIS_CLUSTER": "maybe"}, "REDIS_CLUSTER"),
        ({"REDIS_CLUSTER": "true", "REDIS_DB": "3"}, "REDIS_DB"),
        ({"REDIS_SESSION_TTL": "0"}, "REDIS_SESSION_TTL"),
        ({"REDIS_SESSION_PREFIX": "a{b}:"}, "REDIS_SESSION_PREFIX"),
        ({"REDIS_SOCKET_TIMEOUT": "x"}, "REDIS_SOCKET_TIMEOUT"),
    ],
)
def test_bad_redis_settings_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name) as info:
        RedisSettings.from_env(env)
    assert "pw" not in str(info.value)


def test_redis_password_never_in_repr() -> None:
    s = RedisSettings.from_env({"REDIS_PASSWORD": "hunter2secret"})
    assert "hunter2secret" not in repr(s) and "***" in repr(s)
    s = RedisSettings.from_env({"REDIS_URL": "redis://user:hunter2secret@db:6380/1"})
    assert "hunter2secret" not in repr(s) and "db" in repr(s)


async def test_ping_reports_a_dead_server_without_raising() -> None:
    client = create_redis(settings_for(f"redis://127.0.0.1:{free_port()}", cluster=False))
    try:
        started = time.monotonic()
        assert await ping(client, within=5.0) is False
        assert time.monotonic() - started < 5.0
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_sentinel_client_finds_the_master(private_redis: RedisServer) -> None:
    with SentinelServer(private_redis.port) as sentinel:
        settings = RedisSettings.from_env(
            {
                "REDIS_SENTINELS": f"127.0.0.1:{sentinel.port}",
                "REDIS_SENTINEL_MASTER": "mymaster",
                "REDIS_SOCKET_TIMEOUT": "1",
            }
        )
        client = create_redis(settings)
        try:
            await wait_for(lambda: ping(client), what="the master through Sentinel")
            await client.set("sentinel-probe", b"1", ex=60)
            assert await client.get("sentinel-probe") == b"1"
        finally:
            await client.aclose()


# ---- store ----------------------------------------------------------------------------------


def make_store(client: RedisClient, codec: SnapshotCodec, prefix: str, ttl: int = 3600) -> Any:
    return RemoteSnapshotStore(client, codec, prefix=prefix, ttl=ttl)


def test_session_keys_share_one_slot() -> None:
    keys = SessionKeys.of("whatsapp:session:", "acme", "support")
    assert keys.snap == "whatsapp:session:{acme/support}:snap"
    assert keys.lease == "whatsapp:session:{acme/support}:lease"
    slots = {key_slot(k.encode()) for k in (keys.snap, keys.prev, keys.lease, keys.fence)}
    assert len(slots) == 1
    for bad in ("a}b", "a{b", "a/b", ""):
        with pytest.raises(ValueError):
            SessionKeys.of("p:", bad, "s")


@pytest.mark.redis
async def test_round_trip_and_no_plaintext_in_redis(
    redis_client: RedisClient, key_prefix: str, codec: SnapshotCodec
) -> None:
    store = make_store(redis_client, codec, key_prefix)
    leases = LeaseManager(redis_client, key_prefix, 10_000)
    lease = await leases.acquire("acme", "support", "node-a:1")
    assert lease is not None
    assert await store.load("acme", "support") is None
    assert not await store.exists("acme", "support")
    await store.save("acme", "support", state(), owner=lease.owner, fence=lease.fence)
    assert await store.exists("acme", "support")
    assert await store.load("acme", "support") == state()
    raw = await redis_client.get(store.session_keys("acme", "support").snap)
    assert isinstance(raw, bytes) and raw.startswith(MAGIC)
    for needle in (SECRET, PHONE, "wa_token", "web.whatsapp.com", "last-wid-md"):
        assert needle.encode() not in raw, needle
    await store.aclose()
    await store.aclose()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        await store.load("acme", "support")


@pytest.mark.redis
async def test_ttl_set_and_renewed_on_save(
    redis_client: RedisClient, key_prefix: str, codec: SnapshotCodec
) -> None:
    store = make_store(redis_client, codec, key_prefix, ttl=1000)
    lease = await LeaseManager(redis_client, key_prefix, 10_000).acquire("acme", "s1", "n:1")
    assert lease is not None
    await store.save("acme", "s1", state(), owner=lease.owner, fence=lease.fence)
    keys = store.session_keys("acme", "s1")
    assert 990 <= await redis_client.ttl(keys.snap) <= 1000
    await redis_client.expire(keys.snap, 5)
    assert await store.ttl_of("acme", "s1") == 5
    await store.save("acme", "s1", state("v2"), owner=lease.owner, fence=lease.fence)
    assert 990 <= await redis_client.ttl(keys.snap) <= 1000
    assert 990 <= await redis_client.ttl(keys.prev) <= 1000


@pytest.mark.redis
async def test_previous_copy_kept_and_used_when_current_is_corrupt(
    redis_client: RedisClient, key_prefix: str, codec: SnapshotCodec
) -> None:
    store = make_store(redis_client, codec, key_prefix)
    lease = await LeaseManager(redis_client, key_prefix, 10_000).acquire("acme", "s2", "n:1")
    assert lease is not None
    await store.save("acme", "s2", state("first"), owner=lease.owner, fence=lease.fence)
    await store.save("acme", "s2", state("second"), owner=lease.owner, fence=lease.fence)
    keys = store.session_keys("acme", "s2")
    prev = await redis_client.get(keys.prev)
    assert isinstance(prev, bytes) and codec.decode("acme/s2", prev) == state("first")
    assert await store.load("acme", "s2") == state("second")
    # A corrupt current copy falls back to the previous one ...
    snap = await redis_client.get(keys.snap)
    assert isinstance(snap, bytes)
    current = bytearray(snap)
    current[-3] ^= 0xFF
    await redis_client.set(keys.snap, bytes(current))
    assert await store.load("acme", "s2") == state("first")
    # ... and with both corrupt the error says why.
    await redis_client.set(keys.prev, bytes(current))
    with pytest.raises(SnapshotError, match="failed authentication"):
        await store.load("acme", "s2")


@pytest.mark.redis
async def test_tampered_blob_and_unknown_kid_rejected_by_store(
    redis_client: RedisClient, key_prefix: str, codec: SnapshotCodec
) -> None:
    store = make_store(redis_client, codec, key_prefix)
    keys = store.session_keys("acme", "s3")
    blob = bytearray(codec.encode("acme/s3", state()))
    blob[-1] ^= 0x01
    await redis_client.set(keys.snap, bytes(blob))
    with pytest.raises(SnapshotError, match="failed authentication"):
        await store.load("acme", "s3")
    stranger = SnapshotCodec(SnapshotKeys.parse(key_spec("k7", 7)))
    await redis_client.set(keys.snap, stranger.encode("acme/s3", state()))
    with pytest.raises(SnapshotError, match="'k7'"):
        await store.load("acme", "s3")
    # A blob copied from another session does not open here.
    await redis_client.set(keys.snap, codec.encode("acme/other", state()))
    with pytest.raises(SnapshotError):
        await store.load("acme", "s3")


@pytest.mark.redis
async def test_stale_fence_write_refused_and_good_copy_untouched(
    redis_client: RedisClient, key_prefix: str, codec: SnapshotCodec
) -> None:
    store = make_store(redis_client, codec, key_prefix)
    leases = LeaseManager(redis_client, key_prefix, 10_000)
    old = await leases.acquire("acme", "s4", "node-a:1")
    assert old is not None
    await store.save("acme", "s4", state("a"), owner=old.owner, fence=old.fence)
    # node-a stalls; its lease goes (released here, expiry is tested with leases); node-b takes over.
    await redis_client.delete(leases.session_keys("acme", "s4").lease)
    new = await leases.acquire("acme", "s4", "node-b:1")
    assert new is not None and new.fence > old.fence
    await store.save("acme", "s4", state("b"), owner=new.owner, fence=new.fence)
    keys = store.session_keys("acme", "s4")
    good, good_prev = await redis_client.get(keys.snap), await redis_client.get(keys.prev)

    with pytest.raises(StaleFence, match="held by node-b:1") as info:
        await store.save("acme", "s4", state("stale"), owner=old.owner, fence=old.fence)
    assert info.value.holder == "node-b:1" and info.value.fence == new.fence
    # The same owner string with an old fence is refused as well.
    with pytest.raises(StaleFence):
        await store.save("acme", "s4", state("stale"), owner=new.owner, fence=old.fence)
    with pytest.raises(StaleFence):
        await store.delete("acme", "s4", owner=old.owner, fence=old.fence)
    assert await redis_client.get(keys.snap) == good
    assert await redis_client.get(keys.prev) == good_prev
    assert await store.load("acme", "s4") == state("b")

    # No lease at all (expired, nobody took it): refused too.
    await leases.release(new)
    with pytest.raises(StaleFence, match="expired"):
        await store.save("acme", "s4", state("late"), owner=new.owner, fence=new.fence)
    assert await store.load("acme", "s4") == state("b")


@pytest.mark.redis
async def test_delete_and_list_sessions_by_scan(
    redis_client: RedisClient, key_prefix: str, codec: SnapshotCodec
) -> None:
    store = make_store(redis_client, codec, key_prefix)
    leases = LeaseManager(redis_client, key_prefix, 10_000)
    names = [("acme", f"s{n}") for n in range(12)] + [("globex", "x")]
    for tenant, sid in names:
        lease = await leases.acquire(tenant, sid, "n:1")
        assert lease is not None
        await store.save(tenant, sid, state(), owner=lease.owner, fence=lease.fence)
        await store.save(tenant, sid, state(), owner=lease.owner, fence=lease.fence)  # a prev too
    listed = [item async for item in store.list_sessions(count=3)]
    assert sorted(listed) == sorted(names)
    lease = await leases.acquire("acme", "s0", "n:1")
    assert lease is not None
    await store.delete("acme", "s0", owner=lease.owner, fence=lease.fence)
    await store.delete("acme", "s1")
    assert not await store.exists("acme", "s0") and not await store.exists("acme", "s1")
    assert await redis_client.exists(store.session_keys("acme", "s0").prev) == 0
    listed = [item async for item in store.list_sessions()]
    assert len(listed) == len(names) - 2


@pytest.mark.redis
async def test_store_unavailable_while_redis_is_down(
    private_redis: RedisServer, key_prefix: str, codec: SnapshotCodec
) -> None:
    client = create_redis(settings_for(private_redis.url, cluster=False, timeout=0.5))
    store = RemoteSnapshotStore(client, codec, prefix=key_prefix, owns_client=True)
    leases = LeaseManager(client, key_prefix, 60_000)
    async with store:
        lease = await leases.acquire("acme", "down", "n:1")
        assert lease is not None
        await store.save("acme", "down", state(), owner=lease.owner, fence=lease.fence)
        private_redis.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="Redis is unreachable"):
            await store.load("acme", "down")
        with pytest.raises(StoreUnavailable, match="Redis is unreachable"):
            await store.save("acme", "down", state(), owner=lease.owner, fence=lease.fence)
        with pytest.raises(StoreUnavailable):
            await leases.acquire("acme", "other", "n:1")
        assert time.monotonic() - started < 20  # noticed in seconds, not minutes
        assert await ping(client, within=2.0) is False
        private_redis.start()  # same port; no persistence, so the data is gone
        await wait_for(lambda: ping(client), what="the client to reconnect")
        assert await store.load("acme", "down") is None


def test_no_keys_command_anywhere() -> None:
    sources = [
        ROOT / "node" / "remote_store.py",
        ROOT / "node" / "lease.py",
        ROOT / "node" / "crypto.py",
        ROOT / "sessionmesh" / "redis_conn.py",
    ]
    lua_keys = re.compile(r"""call\(\s*['"]keys['"]""", re.IGNORECASE)
    py_keys = re.compile(r"""\.keys\(|execute_command\(\s*['"]keys['"]""", re.IGNORECASE)
    for path in sources:
        text = path.read_text()
        assert not lua_keys.search(text), path
        assert not py_keys.search(text), path
