"""Hostile input at the router: ids with a trailing newline, undecodable bytes, call shapes the
guard does not know, and watches that start beyond a session's last event."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import grpc.aio
import pytest

from router.interceptors import Guard
from sessionmesh.auth import parse_tokens
from sessionmesh.v1 import mesh_pb2
from tests.conftest import TOKENS

pytestmark = pytest.mark.asyncio


async def test_a_session_id_with_a_trailing_newline_is_refused(
    fake_nodes: Any, router_factory: Any, clients: Any
) -> None:
    node = await fake_nodes()
    router = await router_factory([node.address])
    api = clients(router.address)
    for bad in ("x\n", "x\r\n", "\nx"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await api.CreateSession(mesh_pb2.CreateSessionRequest(session_id=bad))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "session_id" in (err.value.details() or "")
    assert node.sessions == {}


async def test_undecodable_bytes_answer_invalid_argument_with_one_line_and_no_traceback(
    fake_nodes: Any, router_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    node = await fake_nodes()
    router = await router_factory([node.address])
    metadata = (("authorization", f"Bearer {TOKENS['acme']}"),)
    caplog.set_level(logging.INFO)
    async with grpc.aio.insecure_channel(router.address) as channel:
        for method in ("GetSession", "CreateSession", "WatchSession"):
            caplog.clear()
            path = f"/sessionmesh.v1.SessionMesh/{method}"
            if method == "WatchSession":
                call: Any = channel.unary_stream(path)(b"\xff\xff\xff", metadata=metadata)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    async for _ in call:
                        pass
            else:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await channel.unary_unary(path)(b"\xff\xff\xff", metadata=metadata)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
            assert method in (err.value.details() or "")
            lines = [r for r in caplog.records if "undecodable" in r.getMessage()]
            assert len(lines) == 1, [r.getMessage() for r in caplog.records]
            assert not any(r.exc_info for r in caplog.records), "a traceback was logged"
        # No token: refused before the bytes are even looked at.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary("/sessionmesh.v1.SessionMesh/GetSession")(b"\xff")
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


class _Details:
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


async def test_the_guard_refuses_call_shapes_it_does_not_know() -> None:
    guard = Guard(parse_tokens(",".join(f"{t}:{k}" for t, k in TOKENS.items())), ("open.Svc",))

    async def behavior(request_iterator: Any, context: Any) -> Any:
        return mesh_pb2.ListSessionsResponse()  # would answer anyone, unauthenticated

    shapes = [
        grpc.stream_unary_rpc_method_handler(behavior),
        grpc.stream_stream_rpc_method_handler(behavior),
    ]
    for shape in shapes:

        async def continuation(details: Any, found: Any = shape) -> Any:
            return found

        handler = await guard.intercept_service(
            continuation, _Details("/sessionmesh.v1.SessionMesh/Upload")
        )
        assert handler is not shape and handler.unary_unary is not None
        assert handler.stream_unary is None and handler.stream_stream is None
        # Another service that is neither guarded nor open is refused too.
        handler = await guard.intercept_service(continuation, _Details("/other.Svc/Call"))
        assert handler is not shape


async def test_after_seq_beyond_the_last_event_is_out_of_range(
    fake_nodes: Any, router_factory: Any, clients: Any
) -> None:
    node = await fake_nodes()
    router = await router_factory([node.address])
    api = clients(router.address)
    created = await api.CreateSession(mesh_pb2.CreateSessionRequest(session_id="s1"))
    last = len(node.events[("acme", "s1")])
    call = api.WatchSession(mesh_pb2.WatchSessionRequest(session_id="s1", after_seq=last + 5))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in call:
            pass
    assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert f"seq {last}" in (err.value.details() or "")
    assert created.session_id == "s1"
