"""The router's own tracing on its hot path: a server span per call that continues the caller's
trace, a client span toward the node under it, streams that end cleanly, polls untraced."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from sessionmesh import telemetry
from sessionmesh.procs import ProcessGroup, wait_serving
from sessionmesh.telemetry import setup_telemetry
from sessionmesh.v1 import mesh_pb2, mesh_pb2_grpc
from tests.conftest import TOKENS
from tests.helpers import free_port, wait_for

_spans = InMemorySpanExporter()
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
GET = "/sessionmesh.v1.SessionMesh/GetSession"
WATCH = "/sessionmesh.v1.SessionMesh/WatchSession"


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """Global providers are set once per process (tests/test_telemetry.py does the same)."""
    current = telemetry.installed()
    if current is None:
        setup_telemetry("mesh-tests", prometheus_port=free_port(), span_exporters=[_spans])
    else:
        current.tracer_provider.add_span_processor(SimpleSpanProcessor(_spans))
    return _spans


async def test_router_spans_continue_the_callers_trace_and_streams_end_cleanly(
    spans: InMemorySpanExporter,
    fake_nodes: Any,
    router_factory: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = await fake_nodes()
    router = await router_factory([node.address])
    metadata = (
        ("authorization", f"Bearer {TOKENS['acme']}"),
        ("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),
    )
    async with grpc.aio.insecure_channel(router.address) as channel:
        stub = mesh_pb2_grpc.SessionMeshStub(channel)
        await stub.CreateSession(mesh_pb2.CreateSessionRequest(session_id="t1"), metadata=metadata)
        spans.clear()
        await stub.GetSession(mesh_pb2.GetSessionRequest(session_id="t1"), metadata=metadata)
        await wait_for(
            lambda: any(s.name == GET for s in spans.get_finished_spans()),
            what="GetSession's server span",
        )
        found = spans.get_finished_spans()
        (server,) = [s for s in found if s.name == GET and s.kind == SpanKind.SERVER]
        (client,) = [s for s in found if s.kind == SpanKind.CLIENT]
        assert format(server.context.trace_id, "032x") == TRACE_ID
        assert server.parent is not None and format(server.parent.span_id, "016x") == PARENT_ID
        assert client.name == "/sessionmesh.v1.SessionNode/GetSession"
        assert client.parent is not None and client.parent.span_id == server.context.span_id
        assert server.attributes is not None and server.attributes["rpc.grpc.status_code"] == 0

        # Streams opened and cancelled: each server span ends, and nothing is logged (the
        # interceptor this replaces logged a traceback at the end of every stream).
        caplog.set_level(logging.WARNING)
        spans.clear()
        for _ in range(10):
            call = stub.WatchSession(
                mesh_pb2.WatchSessionRequest(session_id="t1"), metadata=metadata
            )
            assert (await call.read()).session_id == "t1"
            call.cancel()

        def watch_spans() -> list[Any]:
            return [s for s in spans.get_finished_spans() if s.name == WATCH]

        await wait_for(lambda: len(watch_spans()) == 10, what="10 ended WatchSession spans")
        assert all(s.context.trace_id == int(TRACE_ID, 16) for s in watch_spans())
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []

        # A refused call is traced with its status; polls and health checks are not traced.
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetSession(mesh_pb2.GetSessionRequest(session_id="nope"), metadata=metadata)
    # The server may end its span just after the client has the status: wait for it.
    not_found = grpc.StatusCode.NOT_FOUND.value[0]

    def refused() -> list[Any]:
        return [
            s
            for s in spans.get_finished_spans()
            if s.name == GET and (s.attributes or {}).get("rpc.grpc.status_code") == not_found
        ]

    await wait_for(lambda: len(refused()) == 1, what="the refused GetSession's span")
    names = {s.name for s in spans.get_finished_spans()}
    assert not {n for n in names if "GetNodeStatus" in n or "grpc.health" in n}


async def test_a_router_that_exports_nowhere_passes_the_callers_trace_on_untouched(
    tmp_path: Path, fake_nodes: Any
) -> None:
    """`mesh-router` with no exporter makes no spans on the RPC path (nothing would receive
    them), yet the node still gets the caller's trace context, as the caller sent it."""
    node = await fake_nodes()
    address = f"127.0.0.1:{free_port()}"
    group = ProcessGroup(tmp_path / "logs")
    env = {
        "MESH_ROUTER_LISTEN": address,
        "MESH_NODES": node.address,
        "MESH_API_TOKENS": f"acme:{TOKENS['acme']}",
        "MESH_NODE_POLL_INTERVAL": "0.1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
    }
    proc = group.spawn("router", ["mesh-router"], env)
    try:
        await asyncio.to_thread(wait_serving, address, proc, "router")
        metadata = (
            ("authorization", f"Bearer {TOKENS['acme']}"),
            ("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),
        )
        async with grpc.aio.insecure_channel(address) as channel:
            stub = mesh_pb2_grpc.SessionMeshStub(channel)

            async def created() -> bool:
                try:
                    request = mesh_pb2.CreateSessionRequest(session_id="t2")
                    await stub.CreateSession(request, metadata=metadata, timeout=10)
                except grpc.aio.AioRpcError as e:
                    if e.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
                    return False  # the router has not polled the node yet
                return True

            await wait_for(created, what="a session created through the router")
            await stub.GetSession(mesh_pb2.GetSessionRequest(session_id="t2"), metadata=metadata)
        assert node.last_metadata.get("traceparent") == f"00-{TRACE_ID}-{PARENT_ID}-01"
    finally:
        await asyncio.to_thread(group.stop_all, 10)
