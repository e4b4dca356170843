"""Redis fixtures: a private redis-server (or REDIS_URL), a 3-master cluster, clients per backend."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from node.crypto import SnapshotCodec, SnapshotKeys
from sessionmesh.redis_conn import RedisClient, create_redis
from tests.redis_server import (
    RedisClusterServers,
    RedisServer,
    key_spec,
    random_prefix,
    settings_for,
)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    report = getattr(request.node, "rep_call", None)
    return report is not None and report.failed


@pytest.fixture(scope="session")
def _redis_standalone() -> Iterator[tuple[str, RedisServer | None]]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url, None
        return
    with RedisServer() as server:
        yield server.url, server


@pytest.fixture(scope="session")
def _redis_cluster() -> Iterator[tuple[str, RedisClusterServers | None]]:
    url = os.environ.get("REDIS_CLUSTER_URL")
    if url:
        yield url, None
        return
    if os.environ.get("REDIS_URL"):
        pytest.skip(
            "REDIS_URL points at an external server; set REDIS_CLUSTER_URL for cluster runs"
        )
    with RedisClusterServers() as cluster:
        yield cluster.url, cluster


@pytest.fixture
def redis_server(_redis_standalone: tuple[str, RedisServer | None]) -> str:
    """URL of the shared standalone server (private, unless REDIS_URL names one)."""
    return _redis_standalone[0]


@pytest.fixture
def key_prefix() -> str:
    """A prefix only this test uses; everything under it is deleted afterwards."""
    return random_prefix()


@pytest.fixture(params=["standalone", "cluster"])
async def redis_client(
    request: pytest.FixtureRequest, key_prefix: str
) -> AsyncIterator[RedisClient]:
    """A client per backend (standalone, then cluster); the test's keys are removed after it."""
    if request.param == "cluster":
        url, servers = request.getfixturevalue("_redis_cluster")
    else:
        url, servers = request.getfixturevalue("_redis_standalone")
    client = create_redis(settings_for(url, cluster=request.param == "cluster"))
    try:
        yield client
        async for key in client.scan_iter(match=key_prefix + "*", count=500):
            await client.delete(key)
    finally:
        await client.aclose()
        if _failed(request) and servers is not None:
            print(f"--- redis-server output ({request.param}) ---\n{servers.output()}")


@pytest.fixture
def private_redis(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it may stop, restart or pause."""
    with RedisServer() as server:
        yield server
        if _failed(request):
            print(f"--- private redis-server output ---\n{server.output()}")


@pytest.fixture
def codec() -> SnapshotCodec:
    return SnapshotCodec(SnapshotKeys.parse(key_spec("k1", 1)))


@pytest.fixture
async def channels() -> AsyncIterator[Any]:
    """`make(address)`: a SessionNode stub on a channel closed after the test."""
    import grpc

    from sessionmesh.v1 import node_pb2_grpc

    made: list[grpc.aio.Channel] = []

    def make(address: str) -> node_pb2_grpc.SessionNodeStub:
        channel = grpc.aio.insecure_channel(address)
        made.append(channel)
        return node_pb2_grpc.SessionNodeStub(channel)

    yield make
    for channel in made:
        await channel.close()
