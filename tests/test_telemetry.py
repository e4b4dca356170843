"""Telemetry with real parts: one trace per CreateSession, Prometheus metrics, OTLP only on request."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import aiohttp
import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from sessionmesh import telemetry
from sessionmesh.config import ConfigError
from sessionmesh.telemetry import Telemetry, TelemetrySettings, build_telemetry, setup_telemetry
from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import mesh_pb2, node_pb2, node_pb2_grpc
from tests.conftest import TOKENS
from tests.helpers import free_port, phone, wait_for

CREATE = "/sessionmesh.v1.SessionMesh/CreateSession"
START = "/sessionmesh.v1.SessionNode/StartSession"


# -- one provider for the whole test process ---------------------------------------------------

_spans = InMemorySpanExporter()


@pytest.fixture(scope="session")
def installed_telemetry() -> Telemetry:
    """Global providers can be set once per process: install them once, with an in-memory
    span exporter and a Prometheus endpoint, for every router and node the tests start."""
    current = telemetry.installed()
    if current is None:
        return setup_telemetry("mesh-tests", prometheus_port=free_port(), span_exporters=[_spans])
    current.tracer_provider.add_span_processor(SimpleSpanProcessor(_spans))
    return current


@pytest.fixture
def spans(installed_telemetry: Telemetry) -> Iterator[InMemorySpanExporter]:
    _spans.clear()
    yield _spans
    _spans.clear()


def watch(client: Any, sid: str) -> Any:
    return client.WatchSession(mesh_pb2.WatchSessionRequest(session_id=sid), timeout=None)


# -- settings and exporters ------------------------------------------------------------------


def test_settings_read_the_environment_and_name_bad_values() -> None:
    assert TelemetrySettings.from_env({}) == TelemetrySettings(0, "127.0.0.1", False)
    got = TelemetrySettings.from_env(
        {"MESH_METRICS_PORT": "9464", "MESH_METRICS_HOST": "0.0.0.0", "MESH_OTEL_CONSOLE": "true"}
    )
    assert got == TelemetrySettings(9464, "0.0.0.0", True)
    with pytest.raises(ConfigError, match="MESH_METRICS_PORT"):
        TelemetrySettings.from_env({"MESH_METRICS_PORT": "70000"})
    with pytest.raises(ConfigError, match="MESH_METRICS_PORT"):
        TelemetrySettings.from_env({"MESH_METRICS_PORT": "nine"})


class _Collector(
    trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer
):
    """A minimal OTLP/gRPC collector that keeps the names of the spans it is sent."""

    def __init__(self) -> None:
        self.span_names: list[str] = []
        self.metric_batches = 0

    def Export(self, request: Any, context: Any) -> Any:
        if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    self.span_names.extend(s.name for s in scope.spans)
            return trace_service_pb2.ExportTraceServiceResponse()
        self.metric_batches += 1
        return metrics_service_pb2.ExportMetricsServiceResponse()


@pytest.fixture
def collector() -> Iterator[tuple[_Collector, int]]:
    """The collector on the OTLP default port 4317 when it is free (so an exporter that fell
    back to the default would be caught), else on a free port."""
    found = _Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(found, server)  # type: ignore[no-untyped-call]

    class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            return found.Export(request, context)

    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)  # type: ignore[no-untyped-call]
    port = 0
    if _free(4317):
        port = server.add_insecure_port("127.0.0.1:4317")
    if not port:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield found, port
    server.stop(0)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_no_otlp_export_without_the_endpoint(
    collector: tuple[_Collector, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    found, _port = collector
    for name in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    quiet = build_telemetry("mesh-test", prometheus_port=None)
    quiet.tracer_provider.get_tracer("t").start_span("not exported").end()
    quiet.shutdown()
    quiet.shutdown()  # idempotent
    assert quiet.exporters == ()
    assert found.span_names == [] and found.metric_batches == 0


def test_otlp_export_when_the_endpoint_is_set(
    collector: tuple[_Collector, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    found, port = collector
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    loud = build_telemetry("mesh-test", prometheus_port=None)
    loud.tracer_provider.get_tracer("t").start_span("exported").end()
    loud.shutdown()  # flushes
    assert loud.exporters == ("otlp",)
    assert found.span_names == ["exported"]


# -- traces ----------------------------------------------------------------------------------


def _one(found: list[ReadableSpan], name: str, kind: SpanKind | None = None) -> ReadableSpan:
    matches = [s for s in found if s.name == name and (kind is None or s.kind == kind)]
    assert len(matches) == 1, f"expected one {name!r} span, got {[s.name for s in found]}"
    return matches[0]


def _parent_is(child: ReadableSpan, parent: ReadableSpan) -> None:
    assert child.parent is not None, f"{child.name!r} has no parent"
    assert child.parent.span_id == parent.context.span_id, (
        f"{child.name!r} is not a child of {parent.name!r}"
    )


@pytest.mark.browser
async def test_create_session_gives_one_connected_trace(
    spans: InMemorySpanExporter,
    installed_telemetry: Telemetry,
    sandbox: Any,
    node_factory: Any,
    router_factory: Any,
    clients: Any,
    watchers: Any,
) -> None:
    node = await node_factory(sandbox.url)
    router = await router_factory([node.address])
    acme = clients(router.address)
    spans.clear()  # start-up spans (node resume) are not this trace
    await acme.CreateSession(mesh_pb2.CreateSessionRequest(session_id="traced"))
    w = watchers(watch(acme, "traced"))
    qr = await w.wait_qr()
    status, body = await phone(sandbox.url, "scan", code=qr.code, phone="6281100000077")
    assert status == 200, body
    await w.wait_state(pb.READY)

    def names() -> set[str]:
        return {s.name for s in spans.get_finished_spans()}

    wanted = {CREATE, START, "auth restore", "browser context", "page load", "qr wait"}
    await wait_for(lambda: wanted | {"snapshot save"} <= names(), what=f"spans {wanted}")
    found = list(spans.get_finished_spans())
    router_span = _one(found, CREATE, SpanKind.SERVER)
    client_span = _one(found, START, SpanKind.CLIENT)
    node_span = _one(found, START, SpanKind.SERVER)
    assert router_span.parent is None
    _parent_is(client_span, router_span)
    _parent_is(node_span, client_span)
    trace_id = router_span.context.trace_id
    for name in ("auth restore", "browser context", "page load", "qr wait"):
        span = _one(found, name)
        _parent_is(span, node_span)
        assert span.attributes is not None
        assert span.attributes["mesh.session_id"] == "traced"
        assert span.attributes["mesh.tenant"] == "acme"
    saves = [s for s in found if s.name == "snapshot save"]
    assert saves and all(s.context.trace_id == trace_id for s in saves)
    # The QR wait ends at the first QR, which comes after the page load.
    page_load, qr_wait = _one(found, "page load"), _one(found, "qr wait")
    assert page_load.end_time is not None and qr_wait.start_time is not None
    assert qr_wait.start_time >= page_load.end_time
    assert {s.context.trace_id for s in found if s.name in wanted} == {trace_id}

    # Secrets stay out: no QR payload, phone number or token in any attribute.
    secrets = (qr.code, "6281100000077", TOKENS["acme"])
    for span in found:
        for value in (span.attributes or {}).values():
            assert not any(secret in str(value) for secret in secrets), span.name

    # Stopped and created again, it restores: "auth restore" lasts until READY, no QR wait.
    address = installed_telemetry.metrics_address
    assert address is not None
    before = await _scrape(address)
    await acme.StopSession(mesh_pb2.StopSessionRequest(session_id="traced"))
    spans.clear()
    await acme.CreateSession(mesh_pb2.CreateSessionRequest(session_id="traced"))
    await w.wait(lambda w: w.states().count(pb.READY) >= 2, "READY again, restored")
    await wait_for(lambda: "auth restore" in names(), what="the auth restore span")
    found = list(spans.get_finished_spans())
    restore = _one(found, "auth restore")
    assert restore.attributes is not None and restore.attributes["mesh.restored"] is True
    assert _one(found, START, SpanKind.SERVER).context.span_id == restore.parent.span_id  # type: ignore[union-attr]
    assert "qr wait" not in names()
    after = await _scrape(address)
    for name, labels in (
        ("mesh_restores_total", {"auth_strategy": "LOCAL"}),
        ("mesh_time_to_ready_seconds_count", {"restored": "true"}),
    ):
        grown = _value(after, name, **labels) - _value(before, name, **labels)
        assert grown == 1, name


# -- metrics ---------------------------------------------------------------------------------


async def _scrape(address: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    async with aiohttp.ClientSession() as http, http.get(f"http://{address}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def _value(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float:
    return sum(
        v for got, v in samples.get(name, []) if all(got.get(k) == x for k, x in labels.items())
    )


@pytest.mark.browser
async def test_prometheus_endpoint_serves_mesh_metrics(
    installed_telemetry: Telemetry,
    sandbox: Any,
    node_factory: Any,
    router_factory: Any,
    clients: Any,
    watchers: Any,
) -> None:
    address = installed_telemetry.metrics_address
    assert address is not None and address.startswith("127.0.0.1:")
    before = await _scrape(address)
    node = await node_factory(sandbox.url, max_sessions=1)
    router = await router_factory([node.address])
    acme = clients(router.address)
    await acme.CreateSession(mesh_pb2.CreateSessionRequest(session_id="measured"))
    w = watchers(watch(acme, "measured"))
    await w.wait_state(pb.SCAN_QR_CODE)
    await w.wait_qr()
    with pytest.raises(grpc.aio.AioRpcError) as full:
        await acme.CreateSession(mesh_pb2.CreateSessionRequest(session_id="no-room"))
    assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await clients(router.address, token="not-a-token-at-all").GetClusterStatus(
            mesh_pb2.GetClusterStatusRequest()
        )
    assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # The router does not ask a node it knows is full; asked directly, the node refuses.
    async with grpc.aio.insecure_channel(node.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await node_pb2_grpc.SessionNodeStub(channel).StartSession(
                node_pb2.StartSessionRequest(tenant="acme", session_id="no-room"), timeout=30
            )
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    async def router_saw_node() -> bool:
        got = await _scrape(address)
        return _value(got, "mesh_router_node_capacity", node=node.node_id) == 1

    await wait_for(router_saw_node, what="the router's view of the node in /metrics")
    after = await _scrape(address)
    node_id = node.node_id
    assert _value(after, "mesh_sessions", node=node_id, state="SCAN_QR_CODE") == 1
    assert _value(after, "mesh_sessions", node=node_id, state="READY") == 0
    assert _value(after, "mesh_node_capacity", node=node_id) == 1
    assert _value(after, "mesh_node_sessions_held", node=node_id) == 1
    assert _value(after, "mesh_browser_restarts_total", node=node_id) == 0
    assert _value(after, "mesh_browser_memory_bytes", node=node_id) > 0
    assert _value(after, "mesh_router_node_up", node=node_id) == 1

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert grew("mesh_time_to_first_qr_seconds_count", auth_strategy="LOCAL") == 1
    # GetLatency answers from the same recordings the exported histogram holds.
    got = await acme.GetLatency(mesh_pb2.GetLatencyRequest())
    (first,) = [h for h in got.histograms if h.phase == "first_qr"]
    assert first.count == 1 and first.auth_strategy == pb.LOCAL
    assert first.sum == pytest.approx(
        grew("mesh_time_to_first_qr_seconds_sum", auth_strategy="LOCAL"), abs=1e-6
    )
    assert grew("mesh_rpc_duration_seconds_count", method="CreateSession", code="OK") >= 1
    assert grew("mesh_rejections_total", reason="full") == 1
    assert grew("mesh_rejections_total", reason="RESOURCE_EXHAUSTED") == 1
    assert grew("mesh_rejections_total", reason="UNAUTHENTICATED") == 1
    # No QR payload in any label.
    qr = w.qrs()[0].code
    for name, rows in after.items():
        assert all(qr not in str(labels) for labels, _ in rows), name
