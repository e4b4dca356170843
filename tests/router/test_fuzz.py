"""A fuzz run of every public RPC: whatever a caller sends, the router answers a status it
means (never INTERNAL or UNKNOWN) and stays up."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.server import RouterServer
from sessionmesh.v1 import mesh_pb2, mesh_pb2_grpc
from tests.conftest import TOKENS, router_settings
from tests.router.fakes import FakeNode

BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
ids = st.one_of(st.text(max_size=80), st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True))
labels = st.dictionaries(st.text(max_size=70), st.text(max_size=300), max_size=40)


@pytest.fixture(scope="module")
def router_address() -> Iterator[str]:
    """A router and a fake node on a loop of their own, for a blocking client."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def serve() -> None:
        node = FakeNode("fuzz-node", capacity=10_000)
        await node.start()
        router = RouterServer(
            router_settings([node.address], admin_tenants=frozenset({"acme"}), grace=0.1)
        )
        await router.start()
        holder.update(node=node, router=router, stop=asyncio.Event())
        ready.set()
        await holder["stop"].wait()
        await router.aclose()
        await node.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(30)
    yield holder["router"].address
    loop.call_soon_threadsafe(holder["stop"].set)
    thread.join(30)
    loop.close()


@pytest.fixture(scope="module")
def stub(router_address: str) -> Iterator[mesh_pb2_grpc.SessionMeshStub]:
    with grpc.insecure_channel(router_address) as channel:
        yield mesh_pb2_grpc.SessionMeshStub(channel)


def requests() -> st.SearchStrategy[tuple[str, Any]]:
    return st.one_of(
        st.builds(
            lambda i, s, lb: ("CreateSession", mesh_pb2.CreateSessionRequest(session_id=i, auth_strategy=s, labels=lb)),
            ids, st.integers(-3, 5), labels,
        ),
        st.builds(lambda i: ("GetSession", mesh_pb2.GetSessionRequest(session_id=i)), ids),
        st.builds(lambda i: ("StopSession", mesh_pb2.StopSessionRequest(session_id=i)), ids),
        st.builds(lambda i: ("LogoutSession", mesh_pb2.LogoutSessionRequest(session_id=i)), ids),
        st.builds(
            lambda n, t: ("ListSessions", mesh_pb2.ListSessionsRequest(page_size=n, page_token=t)),
            st.integers(-(2**31), 2**31 - 1), st.text(max_size=100),
        ),
        st.builds(
            lambda i, a: ("WatchSession", mesh_pb2.WatchSessionRequest(session_id=i, after_seq=a)),
            ids, st.integers(0, 2**64 - 1),
        ),
        st.just(("GetClusterStatus", mesh_pb2.GetClusterStatusRequest())),
        st.just(("GetLatency", mesh_pb2.GetLatencyRequest())),
        st.builds(
            lambda i, p: ("DrainNode", mesh_pb2.DrainNodeRequest(node_id=i, parallelism=p)),
            st.text(max_size=40).filter(lambda t: t != "fuzz-node"), st.integers(-(2**31), 2**31 - 1),
        ),
    )  # fmt: skip


def call(stub: mesh_pb2_grpc.SessionMeshStub, method: str, request: Any, token: str) -> None:
    metadata = (("authorization", f"Bearer {token}"),)
    try:
        if method == "WatchSession":
            stream = stub.WatchSession(request, metadata=metadata, timeout=0.5)
            for _ in stream:
                break
            stream.cancel()
        else:
            getattr(stub, method)(request, metadata=metadata, timeout=10)
    except grpc.RpcError as e:
        code = e.code()  # type: ignore[attr-defined]
        if method == "WatchSession" and code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return  # a stream that was still open when the test stopped reading
        assert code not in BAD, f"{method}({request!r}) answered {code}: {e.details()}"  # type: ignore[attr-defined]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(requests(), st.sampled_from([TOKENS["acme"], TOKENS["globex"], "not-a-token-at-all-xyz"]))
def test_every_public_rpc_with_generated_messages(
    stub: mesh_pb2_grpc.SessionMeshStub, request: tuple[str, Any], token: str
) -> None:
    call(stub, *request, token)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.sampled_from(
        ["CreateSession", "GetSession", "StopSession", "LogoutSession", "ListSessions",
         "WatchSession", "GetClusterStatus", "GetLatency", "DrainNode"]
    ),
    st.binary(max_size=200),
)  # fmt: skip
def test_every_public_rpc_with_raw_bytes(router_address: str, method: str, raw: bytes) -> None:
    metadata = (("authorization", f"Bearer {TOKENS['acme']}"),)
    path = f"/sessionmesh.v1.SessionMesh/{method}"
    with grpc.insecure_channel(router_address) as channel:
        try:
            if method == "WatchSession":
                stream = channel.unary_stream(path)(raw, metadata=metadata, timeout=0.5)
                for _ in stream:
                    break
                stream.cancel()
            else:
                channel.unary_unary(path)(raw, metadata=metadata, timeout=10)
        except grpc.RpcError as e:
            code = e.code()  # type: ignore[attr-defined]
            if not (method == "WatchSession" and code == grpc.StatusCode.DEADLINE_EXCEEDED):
                assert code not in BAD, f"{method}({raw!r}) answered {code}"


def test_the_router_is_still_up_after_the_fuzz(stub: mesh_pb2_grpc.SessionMeshStub) -> None:
    metadata = (("authorization", f"Bearer {TOKENS['acme']}"),)
    status = stub.GetClusterStatus(
        mesh_pb2.GetClusterStatusRequest(), metadata=metadata, timeout=10
    )
    assert [n.node_id for n in status.nodes] == ["fuzz-node"]
