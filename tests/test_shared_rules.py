"""The rules every process shares: addresses, booleans, log level, the Redis error map and
schema, retries, and cancellation that is never swallowed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from node.remote_store import RemoteSnapshotStore
from node.settings import NodeSettings
from router.directory import Directory
from router.errors import RedisUnavailable
from router.failover import Mover
from router.settings import RouterSettings
from sessionmesh.aio import cancel_and_wait
from sessionmesh.config import ConfigError, is_loopback, log_level, split_address
from sessionmesh.redis_conn import is_outage
from sessionmesh.retry import RetryPolicy
from sessionmesh.schema import DirEntry, Heartbeat, SessionKeys
from sessionmesh.v1 import common_pb2 as pb

KEY = "k1:" + "A" * 43 + "="


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:50051", ("127.0.0.1", 50051)),
        (" node-1.internal:7 ", ("node-1.internal", 7)),
        ("[::1]:50051", ("::1", 50051)),
    ],
)
def test_one_address_parser(text: str, expected: tuple[str, int]) -> None:
    assert split_address(text, "X") == expected


@pytest.mark.parametrize("bad", ["host", ":80", "host:", "host:65536", "::1:80", "a b:1", "h:0"])
def test_bad_addresses_name_the_variable(bad: str) -> None:
    with pytest.raises(ConfigError, match="MESH_THING"):
        split_address(bad, "MESH_THING")


def test_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1") and not is_loopback("node")


def test_redis_cluster_false_means_no_redis_for_router_and_node_alike() -> None:
    env = {"MESH_NODES": "127.0.0.1:50061", "MESH_API_TOKENS": "a:0123456789abcdef0123"}
    assert RouterSettings.from_env({**env, "REDIS_CLUSTER": "false"}).redis is None
    assert NodeSettings.from_env({"REDIS_CLUSTER": "false"}).redis is None
    assert RouterSettings.from_env({**env, "REDIS_CLUSTER": "true"}).redis is not None


def test_one_log_level_name() -> None:
    assert log_level({"LOG_LEVEL": "debug"}) == "DEBUG"
    assert log_level({}) == "INFO"
    with pytest.raises(ConfigError, match="LOG_LEVEL"):
        log_level({"LOG_LEVEL": "chatty"})


def test_one_redis_error_map() -> None:
    from node.remote_store import StoreUnavailable, map_redis_errors

    assert is_outage(RedisConnectionError()) and is_outage(TimeoutError())
    assert not is_outage(ResponseError("NOSCRIPT"))
    with pytest.raises(StoreUnavailable):
        with map_redis_errors("saving"):
            raise RedisConnectionError("refused")
    with pytest.raises(ResponseError):
        with map_redis_errors("saving"):
            raise ResponseError("NOSCRIPT")


class _Redis:
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def hgetall(self, key: str) -> Any:
        raise self.error

    async def set(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error


async def test_a_script_error_is_no_outage_for_the_router() -> None:
    directory = Directory(
        _Redis(ResponseError("ERR bad script")), session_prefix="p:", mesh_prefix="m:"
    )  # type: ignore[arg-type]
    with pytest.raises(ResponseError):
        await directory.get("acme", "s1")
    down = Directory(_Redis(RedisConnectionError("refused")), session_prefix="p:", mesh_prefix="m:")  # type: ignore[arg-type]
    with pytest.raises(RedisUnavailable):
        await down.get("acme", "s1")


class _DeadPool:
    def is_dead(self, node_id: str) -> bool:
        return True


async def test_a_script_error_ends_a_failover_instead_of_waiting_for_ever() -> None:
    directory = Directory(
        _Redis(ResponseError("ERR bad script")), session_prefix="p:", mesh_prefix="m:"
    )  # type: ignore[arg-type]
    mover = Mover(_DeadPool(), directory, 2)  # type: ignore[arg-type]
    async with asyncio.timeout(10):
        with pytest.raises(ResponseError):
            await mover.failover("node-1", "e1")


def test_dir_entry_round_trip_with_a_hand_off_field() -> None:
    entry = DirEntry(
        node_id="node-1",
        owner="node-1:e",
        auth_strategy=pb.REMOTE,
        labels={"team": "cs"},
        state=pb.STOPPED,
        phone="62811",
        last_error="moved to another node",
        last_seq=9,
        handed_off=True,
    )
    assert DirEntry.decode(entry.encode()) == entry
    assert not DirEntry.decode({**entry.encode(), "handed_off": "0"}).handed_off  # type: ignore[union-attr]
    beat = Heartbeat("127.0.0.1:1", "e1", capacity=5, started_at=1.5, health="SERVING", sessions=2)
    assert Heartbeat.decode(beat.encode()) == beat


def test_one_set_of_key_names() -> None:
    ours = SessionKeys.of("p:", "acme", "s1")
    assert (ours.snap, ours.prev, ours.lease, ours.fence) == (
        "p:{acme/s1}:snap",
        "p:{acme/s1}:snap:prev",
        "p:{acme/s1}:lease",
        "p:{acme/s1}:fence",
    )
    assert ours.dir == "p:{acme/s1}:dir" and ours.events == "p:{acme/s1}:events"
    with pytest.raises(ValueError):
        SessionKeys.of("p:", "acme", "s1\n")


class _Scripts:
    def register_script(self, source: str) -> None:
        return None


def test_the_snapshot_store_uses_the_schemas_keys_and_refuses_a_trailing_newline() -> None:
    """Its own copy of the key names matched ids with `re.match` and `$`, so `s1\n` passed."""
    from node.crypto import SnapshotCodec, SnapshotKeys

    store = RemoteSnapshotStore(_Scripts(), SnapshotCodec(SnapshotKeys.parse(KEY)), "p:")  # type: ignore[arg-type]
    assert store.session_keys("acme", "s1") == SessionKeys.of("p:", "acme", "s1")
    with pytest.raises(ValueError, match="session_id"):
        store.session_keys("acme", "s1\n")


async def test_retry_policy_retries_only_what_it_is_told() -> None:
    policy = RetryPolicy(first=0.001, cap=0.002)
    calls = 0
    with pytest.raises(ValueError):
        async for attempt in policy.retrying(on=(KeyError,), attempts=5):
            with attempt:
                calls += 1
                raise ValueError("not retried")
    assert calls == 1
    assert RetryPolicy(first=1, cap=4, jitter=0).delay(5) == 4


async def test_stopping_a_task_never_swallows_the_callers_cancellation() -> None:
    """The old `suppress(CancelledError)` around `await task` ran on after its caller was
    cancelled; cancel_and_wait lets that cancellation through."""
    release = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.shield(release.wait())  # cleanup that takes a while

    async def stopper(task: asyncio.Task[None]) -> str:
        await cancel_and_wait(task)
        return "ran on after being cancelled"

    inner = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    outer = asyncio.create_task(stopper(inner))
    await asyncio.sleep(0.01)
    outer.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await outer
    await asyncio.wait([inner])


async def test_remote_session_stop_writer_lets_its_callers_cancellation_through() -> None:
    from node.remote import RemoteSession

    release = asyncio.Event()

    async def writer() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.shield(release.wait())

    binding = RemoteSession.__new__(RemoteSession)
    binding._writer = asyncio.create_task(writer())
    await asyncio.sleep(0)
    caller = asyncio.create_task(binding.stop_writer())
    await asyncio.sleep(0.01)
    caller.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller


def test_retry_jitter_leaves_the_global_random_state_alone() -> None:
    """Background retries drew from the global generator, so a property-based test generating
    input on another thread saw its random state move and failed as flaky."""
    import random

    from sessionmesh.retry import RetryPolicy
    from webhooks.settings import RetryPolicy as WebhookRetryPolicy

    before = random.getstate()
    delays = [RetryPolicy(jitter=0.5).delay(n) for n in range(1, 20)]
    delays += [WebhookRetryPolicy(jitter=0.5).delay(n) or 0.0 for n in range(1, 9)]
    assert random.getstate() == before
    assert len(set(delays)) > 1  # still jittered
