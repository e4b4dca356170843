"""OpenTelemetry for every process: set-up, gRPC trace propagation, QR-timeline spans, metrics.

Components never hold a provider: they take tracers and meters from the global API, so
`setup_telemetry()` (once per process, from the CLI) decides where everything goes, and tests
running many routers and nodes in one process install one provider for all of them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from wsgiref.simple_server import WSGIServer

import grpc
import grpc.aio
from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from sessionmesh import latency
from sessionmesh.config import ConfigError, env_bool, env_int, env_str
from sessionmesh.v1 import common_pb2 as pb

log = logging.getLogger(__name__)

METER = "sessionmesh"
_S = TypeVar("_S")
_tracer = trace.get_tracer("sessionmesh")

# Values that must never reach a span attribute or a metric label.
_SECRET_WORDS = ("phone", "qr", "code", "token", "secret", "password", "snapshot_data")

SECONDS_BUCKETS = latency.BOUNDS
RPC_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


# -- set-up ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TelemetrySettings:
    """Where telemetry goes; read by the router and node settings from the environment.

    MESH_METRICS_PORT: Prometheus endpoint port (0 or unset: no endpoint).
    MESH_METRICS_HOST: address it binds (default 127.0.0.1).
    MESH_OTEL_CONSOLE: also print spans and metrics to stdout (default false).
    OTEL_EXPORTER_OTLP_ENDPOINT (read by `setup_telemetry`): export over OTLP/gRPC when set.
    """

    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    console: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TelemetrySettings:
        port = env_int(env, "MESH_METRICS_PORT", 0, minimum=0)
        if port > 65535:
            raise ConfigError(f"MESH_METRICS_PORT must be 0-65535, got {port}")
        host = env_str(env, "MESH_METRICS_HOST", "127.0.0.1").strip()
        if not host:
            raise ConfigError("MESH_METRICS_HOST must not be empty")
        return cls(port, host, env_bool(env, "MESH_OTEL_CONSOLE", False))


class Telemetry:
    """The providers of one process and what they export to; `shutdown()` flushes, once."""

    def __init__(
        self,
        tracer_provider: TracerProvider,
        meter_provider: MeterProvider,
        *,
        exporters: Sequence[str],
        metrics_server: tuple[WSGIServer, threading.Thread] | None = None,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.exporters = tuple(exporters)  # e.g. ("otlp", "prometheus", "console")
        self._metrics_server = metrics_server
        self._lock = threading.Lock()
        self._closed = False

    @property
    def metrics_address(self) -> str | None:
        """`host:port` of the Prometheus endpoint, if one is served."""
        if self._metrics_server is None:
            return None
        host, port = self._metrics_server[0].server_address[:2]
        return f"{host!s}:{port}"

    def shutdown(self) -> None:
        """Flush and stop exporters and the metrics endpoint; later calls do nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self.tracer_provider.shutdown()
        finally:
            self.meter_provider.shutdown()
            if self._metrics_server is not None:
                server, thread = self._metrics_server
                server.shutdown()
                server.server_close()
                thread.join(timeout=5)

    def __repr__(self) -> str:
        return f"Telemetry(exporters={self.exporters!r}, closed={self._closed})"


_installed: Telemetry | None = None
_install_lock = threading.Lock()


def build_telemetry(
    service_name: str,
    *,
    prometheus_port: int | None,
    prometheus_host: str = "127.0.0.1",
    console: bool = False,
    instance_id: str | None = None,
    env: Mapping[str, str] | None = None,
    span_exporters: Sequence[SpanExporter] = (),
    metric_readers: Sequence[MetricReader] = (),
) -> Telemetry:
    """Providers for one process, not installed. OTLP only when OTEL_EXPORTER_OTLP_ENDPOINT
    (or a signal's own endpoint) is set; `span_exporters` are extra, synchronous ones (tests)."""
    env = os.environ if env is None else env
    resource = Resource.create(
        {SERVICE_NAME: service_name, SERVICE_INSTANCE_ID: instance_id or str(uuid.uuid4())}
    )
    processors: list[SpanProcessor] = [SimpleSpanProcessor(e) for e in span_exporters]
    readers: list[MetricReader] = list(metric_readers)
    exporters: list[str] = []
    if _otlp_endpoint(env, "TRACES") or _otlp_endpoint(env, "METRICS"):
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        if _otlp_endpoint(env, "TRACES"):
            processors.append(BatchSpanProcessor(OTLPSpanExporter()))
        if _otlp_endpoint(env, "METRICS"):
            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        exporters.append("otlp")
    if console:
        from opentelemetry.sdk.metrics.export import (
            ConsoleMetricExporter,
            PeriodicExportingMetricReader,
        )
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        processors.append(BatchSpanProcessor(ConsoleSpanExporter()))
        readers.append(
            PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=30_000)
        )
        exporters.append("console")
    server: tuple[WSGIServer, threading.Thread] | None = None
    if prometheus_port:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        readers.append(PrometheusMetricReader(registry=registry))
        server = start_http_server(prometheus_port, addr=prometheus_host, registry=registry)
        exporters.append("prometheus")
    tracer_provider = _TracerProvider(resource=resource)
    for processor in processors:
        tracer_provider.add_span_processor(processor)
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    return Telemetry(tracer_provider, meter_provider, exporters=exporters, metrics_server=server)


class _TracerProvider(TracerProvider):
    """The SDK's provider, knowing whether anything receives its spans: with no processor,
    the RPC hot path makes none (the trace context still passes through)."""

    has_processors = False

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        super().add_span_processor(span_processor)
        self.has_processors = True


def _recording() -> bool:
    """Whether spans made now would reach anything (another provider: assume they would)."""
    return bool(getattr(trace.get_tracer_provider(), "has_processors", True))


def setup_telemetry(
    service_name: str,
    *,
    prometheus_port: int | None,
    prometheus_host: str = "127.0.0.1",
    console: bool = False,
    instance_id: str | None = None,
    span_exporters: Sequence[SpanExporter] = (),
) -> Telemetry:
    """Build the providers and make them this process's global ones (allowed once)."""
    global _installed
    with _install_lock:
        if _installed is not None:
            raise RuntimeError("telemetry is already set up in this process")
        telemetry = build_telemetry(
            service_name,
            prometheus_port=prometheus_port,
            prometheus_host=prometheus_host,
            console=console,
            instance_id=instance_id,
            span_exporters=span_exporters,
        )
        trace.set_tracer_provider(telemetry.tracer_provider)
        metrics.set_meter_provider(telemetry.meter_provider)
        _installed = telemetry
    log.info(
        "telemetry for %s: exporting to %s",
        service_name,
        ", ".join(telemetry.exporters) or "nowhere",
    )
    return telemetry


def installed() -> Telemetry | None:
    """The telemetry `setup_telemetry` installed in this process, if any."""
    return _installed


def _otlp_endpoint(env: Mapping[str, str], signal: str) -> str:
    return (
        env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    ) or ""


# -- traces ----------------------------------------------------------------------------------

AttrValue = str | bool | int | float


def _safe(attrs: Mapping[str, AttrValue]) -> dict[str, AttrValue]:
    """Attributes with secret-looking keys dropped (QR payloads, phone numbers, tokens)."""
    safe: dict[str, AttrValue] = {}
    for key, value in attrs.items():
        if any(word in key.lower() for word in _SECRET_WORDS):
            log.warning("span attribute %r dropped: it may hold a secret", key)
            continue
        safe[key if "." in key else f"mesh.{key}"] = value
    return safe


def _fail(span: Span, reason: str) -> None:
    span.set_status(Status(StatusCode.ERROR, reason))


@contextlib.contextmanager
def phase(name: str, **attrs: AttrValue) -> Iterator[Span]:
    """A span for one phase, child of the current span; an escaping exception marks it failed.

    `failed(span, reason)` marks it failed when the code handles the error itself."""
    with _tracer.start_as_current_span(name, attributes=_safe(attrs)) as span:
        yield span


def failed(span: Span, reason: object) -> None:
    """Mark a phase span failed (for errors the caller handles itself)."""
    _fail(span, str(reason).splitlines()[0][:200] if str(reason) else type(reason).__name__)


@contextlib.contextmanager
def detached() -> Iterator[None]:
    """Spans started inside begin traces of their own (periodic work in long-lived tasks)."""
    token = otel_context.attach(trace.set_span_in_context(trace.INVALID_SPAN))
    try:
        yield
    finally:
        otel_context.detach(token)


class SessionLike(Protocol):
    tenant: str
    session_id: str
    auth_strategy: int


def session_attrs(info: SessionLike) -> dict[str, AttrValue]:
    """Span attributes that identify a session (ids only, never its phone or QR)."""
    return {
        "mesh.tenant": info.tenant,
        "mesh.session_id": info.session_id,
        "mesh.auth_strategy": _strategy_name(info.auth_strategy),
    }


class Phases:
    """The QR timeline of one session as sibling spans under the span current when each begins.

    One-shot phases use `phase()`; phases that end somewhere else (qr wait, auth restore) use
    `begin()` and `end()`; `close()` ends whatever is still open when a run ends."""

    def __init__(self, info: SessionLike) -> None:
        self._info = info
        self._open: dict[str, Span] = {}

    def phase(self, name: str, **attrs: AttrValue) -> contextlib.AbstractContextManager[Span]:
        return phase(name, **session_attrs(self._info), **attrs)

    def begin(self, name: str, **attrs: AttrValue) -> None:
        """Start phase `name` (ending an open one of that name first)."""
        self.end(name)
        self._open[name] = _tracer.start_span(
            name, attributes=_safe({**session_attrs(self._info), **attrs})
        )

    def end(self, name: str, *, error: str = "", **attrs: AttrValue) -> None:
        """End phase `name` if it is open; `error` marks it failed."""
        span = self._open.pop(name, None)
        if span is None:
            return
        if attrs:
            span.set_attributes(_safe(attrs))
        if error:
            _fail(span, error)
        span.end()

    def is_open(self, name: str) -> bool:
        return name in self._open

    def close(self, error: str = "") -> None:
        """End every open phase (marked failed with `error`, if given)."""
        for name in list(self._open):
            self.end(name, error=error)


# -- gRPC ------------------------------------------------------------------------------------

# Polls and health checks would drown the traces that matter.
_UNTRACED_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_UNTRACED_METHODS = ("/GetNodeStatus",)


def _traced(method: str) -> bool:
    return not (method.startswith(_UNTRACED_SERVICES) or method.endswith(_UNTRACED_METHODS))


def _rpc_attributes(method: str) -> dict[str, AttrValue]:
    service, _, name = method.lstrip("/").rpartition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


def server_interceptors(
    service: str, *, count_rejections: bool
) -> list[grpc.aio.ServerInterceptor]:
    """Interceptors for a grpc.aio server, outermost first: one that takes W3C trace context
    in, opens a server span, and records RPC latency (and, with `count_rejections`, refusals
    by status code) for `service`'s methods."""
    return [RpcTelemetry(service, count_rejections=count_rejections)]


Handler = Callable[[Any, Any], Awaitable[Any]]


class RpcTelemetry(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """A server span per call (a child of the caller's W3C `traceparent`), RPC latency, and
    optionally refusals counted by status code.

    One wrapper per call, written for the hot path: OpenTelemetry's own gRPC interceptor (a
    span) and a second one (the metrics) cost a router about 1 ms a call between them. Put it
    before the interceptor that aborts with domain errors. Health and reflection calls and
    status polls are neither traced nor measured."""

    def __init__(self, service: str, *, count_rejections: bool) -> None:
        self._prefix = f"/{service}/"
        self._count_rejections = count_rejections
        # method -> (the handler it wrapped, the wrapper): grpc asks for every call, and a
        # server's handler for a method does not change, so each is wrapped once.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or not method.startswith(self._prefix):
            return handler
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        traced = _traced(method)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, traced, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(method, traced, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _start(self, method: str, context: Any) -> tuple[Span | None, otel_context.Context | None]:
        """The call's server span (None when nothing would receive it) and the context to
        run it in: the span's, else the caller's trace context if it sent one, else None."""
        carrier = {k: v for k, v in context.invocation_metadata() or () if k in _TRACE_KEYS}
        parent = propagate.extract(carrier) if carrier else None
        if not _recording():
            return None, parent
        span = _tracer.start_span(
            method, context=parent, kind=SpanKind.SERVER, attributes=_rpc_attributes(method)
        )
        return span, trace.set_span_in_context(span, parent)

    def _unary(self, method: str, traced: bool, behavior: Handler) -> Handler:
        name = method.rpartition("/")[2]
        labels_ok = {"method": name, "code": "OK"}

        async def measured(request: Any, context: Any) -> Any:
            begin = time.perf_counter()
            span, ctx = self._start(method, context) if traced else (None, None)
            token = otel_context.attach(ctx) if ctx is not None else None
            code = "OK"
            try:
                return await behavior(request, context)
            except BaseException:
                code = _code_name(context)
                raise
            finally:
                if token is not None:
                    otel_context.detach(token)
                if span is not None:
                    _end_server_span(span, code)
                labels = labels_ok if code == "OK" else {"method": name, "code": code}
                mesh_metrics().rpc_duration.record(time.perf_counter() - begin, labels)
                if self._count_rejections and code != "OK":
                    mesh_metrics().reject(code, method=name)

        return measured

    def _streaming(self, method: str, traced: bool, behavior: Callable[[Any, Any], Any]) -> Any:
        name = method.rpartition("/")[2]

        async def counted(request: Any, context: Any) -> Any:
            span, ctx = self._start(method, context) if traced else (None, None)
            stream = behavior(request, context)
            code = "OK"
            try:
                while True:
                    # The span is current for each step alone: a stream's steps may run in
                    # different contexts, and a token must be detached where it was attached.
                    token = otel_context.attach(ctx) if ctx is not None else None
                    try:
                        item = await stream.__anext__()
                    except StopAsyncIteration:
                        break
                    finally:
                        if token is not None:
                            otel_context.detach(token)
                    yield item
            except BaseException:
                code = _code_name(context)
                if self._count_rejections and code not in ("OK", "CANCELLED"):
                    mesh_metrics().reject(code, method=name)
                raise
            finally:
                await stream.aclose()
                if span is not None:
                    _end_server_span(span, code)

        return counted


def _end_server_span(span: Span, code: str) -> None:
    span.set_attribute("rpc.grpc.status_code", _STATUS_NUMBERS.get(code, 2))
    if code not in ("OK", "CANCELLED"):
        span.set_status(Status(StatusCode.ERROR, code))
    span.end()


_STATUS_NUMBERS = {c.name: c.value[0] for c in grpc.StatusCode}
_TRACE_KEYS = frozenset(propagate.get_global_textmap().fields) | {"traceparent", "tracestate"}


def traced_stub(stub: _S) -> _S:
    """`stub` with a client span and W3C trace context on each call's metadata.

    In place of OpenTelemetry's client interceptors: any client interceptor puts grpc.aio on
    its slow path (a second task and call object per call), which cost the router's proxied
    calls more than the span itself. Unary calls answer a coroutine (await it); streaming
    calls answer grpc's own call object, whose span ends when the call is done."""
    for attr, callable_ in list(vars(stub).items()):
        method = getattr(callable_, "_method", b"")
        method = method.decode() if isinstance(method, bytes) else str(method)
        if not method or not _traced(method):
            continue
        if isinstance(callable_, grpc.aio.UnaryUnaryMultiCallable):
            setattr(stub, attr, _TracedUnary(callable_, method))
        elif isinstance(callable_, grpc.aio.UnaryStreamMultiCallable):
            setattr(stub, attr, _TracedStream(callable_, method))
    return stub


def _client_span(method: str, metadata: Any) -> tuple[Span | None, tuple[tuple[str, str], ...]]:
    """A client span (None when nothing would receive it) and the call's metadata with the
    trace context added: the span's, else the current one's, if any."""
    carrier: dict[str, str] = {}
    if not _recording():
        propagate.inject(carrier)
        return None, (*(metadata or ()), *carrier.items())
    span = _tracer.start_span(method, kind=SpanKind.CLIENT, attributes=_rpc_attributes(method))
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return span, (*(metadata or ()), *carrier.items())


class _TracedUnary:
    def __init__(self, inner: grpc.aio.UnaryUnaryMultiCallable, method: str) -> None:
        self._inner = inner
        self._method = method

    async def __call__(self, request: Any, *, metadata: Any = None, **kwargs: Any) -> Any:
        span, metadata = _client_span(self._method, metadata)
        if span is None:
            return await self._inner(request, metadata=metadata, **kwargs)
        try:
            return await self._inner(request, metadata=metadata, **kwargs)
        except grpc.aio.AioRpcError as e:
            span.set_attribute("rpc.grpc.status_code", e.code().value[0])
            span.set_status(Status(StatusCode.ERROR, e.code().name))
            raise
        except BaseException as e:
            span.set_status(Status(StatusCode.ERROR, type(e).__name__))
            raise
        finally:
            span.end()


class _TracedStream:
    def __init__(self, inner: grpc.aio.UnaryStreamMultiCallable, method: str) -> None:
        self._inner = inner
        self._method = method

    def __call__(self, request: Any, *, metadata: Any = None, **kwargs: Any) -> Any:
        span, metadata = _client_span(self._method, metadata)
        if span is None:
            return self._inner(request, metadata=metadata, **kwargs)
        try:
            call = self._inner(request, metadata=metadata, **kwargs)
        except BaseException:
            span.end()
            raise
        call.add_done_callback(lambda _call: span.end())
        return call


def _code_name(context: Any) -> str:
    try:
        code = context.code()
    except Exception:
        code = None
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    return "CANCELLED" if code is None else "UNKNOWN"


# -- metrics ---------------------------------------------------------------------------------


class HostLike(Protocol):
    settings: Any

    def held(self) -> int: ...
    def all(self) -> Sequence[Any]: ...
    def missing_hooks(self) -> dict[str, int]: ...


class PoolLike(Protocol):
    launches: int


class NodeClientLike(Protocol):
    address: str
    node_id: str
    health: int
    sessions: int
    capacity: int
    memory_bytes: int


def _strategy_name(value: int) -> str:
    try:
        return str(pb.AuthStrategy.Name(value))
    except ValueError:
        return str(value)


def _state_name(value: int) -> str:
    try:
        return str(pb.SessionState.Name(value))
    except ValueError:
        return str(value)


@dataclass
class _NodeSources:
    node_id: str
    host: HostLike
    pool: PoolLike
    memory: Callable[[], int]


class MeshMetrics:
    """The process's `mesh_*` instruments; routers and nodes register what they observe."""

    def __init__(self, meter: metrics.Meter) -> None:
        self._nodes: dict[int, _NodeSources] = {}
        self._routers: dict[int, Callable[[], Iterable[NodeClientLike]]] = {}
        self._lock = threading.Lock()
        m = meter
        self.time_to_first_qr = m.create_histogram(
            "mesh_time_to_first_qr",
            unit="s",
            description="From STARTING to the first QR of a linking attempt",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.time_to_ready = m.create_histogram(
            "mesh_time_to_ready",
            unit="s",
            description="From STARTING to READY (through a QR scan, or restored)",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.restores = m.create_counter(
            "mesh_restores", description="Sessions READY from a saved login, with no QR"
        )
        self.failovers = m.create_counter(
            "mesh_failovers", description="Sessions taken over from another node"
        )
        self.rejections = m.create_counter(
            "mesh_rejections", description="Requests refused, by reason"
        )
        self.snapshots_refused = m.create_counter(
            "mesh_snapshots_refused",
            description="Login snapshots not saved because they would not restore",
        )
        self.rpc_duration = m.create_histogram(
            "mesh_rpc_duration",
            unit="s",
            description="Server time of unary RPCs, by method and status code",
            explicit_bucket_boundaries_advisory=RPC_BUCKETS,
        )
        m.create_observable_gauge(
            "mesh_sessions", [self._sessions], description="Sessions on a node, by state"
        )
        m.create_observable_gauge(
            "mesh_node_sessions_held", [self._held], description="Sessions holding a browser"
        )
        m.create_observable_gauge(
            "mesh_node_capacity", [self._capacity], description="MAX_CONCURRENT_SESSIONS"
        )
        m.create_observable_gauge(
            "mesh_missing_hooks",
            [self._missing_hooks],
            description="Sessions whose WhatsApp Web page lacked a hook the node relies on",
        )
        m.create_observable_counter(
            "mesh_browser_restarts", [self._restarts], description="Chromium relaunches"
        )
        m.create_observable_gauge(
            "mesh_browser_memory",
            [self._memory],
            unit="By",
            description="PSS of the node's Chromium processes",
        )
        m.create_observable_gauge(
            "mesh_router_node_sessions", [self._r_sessions], description="Sessions per node"
        )
        m.create_observable_gauge(
            "mesh_router_node_capacity", [self._r_capacity], description="Capacity per node"
        )
        m.create_observable_gauge(
            "mesh_router_node_up", [self._r_up], description="1 when the node is SERVING"
        )
        m.create_observable_gauge(
            "mesh_router_node_memory",
            [self._r_memory],
            unit="By",
            description="Browser memory per node, as the node reports it",
        )

    # -- registration --------------------------------------------------------------------

    def watch_node(
        self, node_id: str, host: HostLike, pool: PoolLike, memory: Callable[[], int]
    ) -> Callable[[], None]:
        """Observe a node's host and browser pool (`memory`: a cheap reader, e.g. BrowserMemory.get);
        returns the function that stops it."""
        sources = _NodeSources(node_id, host, pool, memory)
        key = id(sources)
        with self._lock:
            self._nodes[key] = sources
        return lambda: self._drop(self._nodes, key)

    def watch_router(self, clients: Callable[[], Iterable[NodeClientLike]]) -> Callable[[], None]:
        """Observe the nodes a router polls; returns the function that stops it."""
        key = id(clients)
        with self._lock:
            self._routers[key] = clients
        return lambda: self._drop(self._routers, key)

    def _drop(self, table: dict[int, Any], key: int) -> None:
        with self._lock:
            table.pop(key, None)

    # -- recording -----------------------------------------------------------------------

    def snapshot_refused(self) -> None:
        self.snapshots_refused.add(1)

    def reject(self, reason: str, **attrs: str) -> None:
        self.rejections.add(1, {"reason": reason, **attrs})

    def failover(self, auth_strategy: int, reason: str = "") -> None:
        """Count a session taken over from another node (the RemoteAuth failover path)."""
        attrs = {"auth_strategy": _strategy_name(auth_strategy)}
        if reason:
            attrs["reason"] = reason
        self.failovers.add(1, attrs)

    # -- observations --------------------------------------------------------------------

    def _node_sources(self) -> list[_NodeSources]:
        with self._lock:
            return list(self._nodes.values())

    def _sessions(self, _options: CallbackOptions) -> Iterable[Observation]:
        states = [v for v in pb.SessionState.values() if v != pb.SESSION_STATE_UNSPECIFIED]
        for src in self._node_sources():
            counts = dict.fromkeys(states, 0)
            # Prometheus scrapes run on their own thread; host.all() copies the table at once.
            for session in src.host.all():
                counts[session.state] = counts.get(session.state, 0) + 1
            for state, count in counts.items():
                yield Observation(count, {"node": src.node_id, "state": _state_name(state)})

    def _held(self, _options: CallbackOptions) -> Iterable[Observation]:
        for src in self._node_sources():
            try:
                held = src.host.held()
            except RuntimeError:  # the event loop changed the table mid-count; skip a round
                continue
            yield Observation(held, {"node": src.node_id})

    def _capacity(self, _options: CallbackOptions) -> Iterable[Observation]:
        for src in self._node_sources():
            yield Observation(src.host.settings.max_sessions, {"node": src.node_id})

    def _missing_hooks(self, _options: CallbackOptions) -> Iterable[Observation]:
        for src in self._node_sources():
            for hook, count in src.host.missing_hooks().items():
                yield Observation(count, {"node": src.node_id, "hook": hook})

    def _restarts(self, _options: CallbackOptions) -> Iterable[Observation]:
        for src in self._node_sources():
            yield Observation(max(0, src.pool.launches - 1), {"node": src.node_id})

    def _memory(self, _options: CallbackOptions) -> Iterable[Observation]:
        for src in self._node_sources():
            yield Observation(src.memory(), {"node": src.node_id})

    def _clients(self) -> list[NodeClientLike]:
        with self._lock:
            sources = list(self._routers.values())
        return [c for clients in sources for c in clients()]

    def _r_sessions(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(c.sessions, _node_label(c)) for c in self._clients()]

    def _r_capacity(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(c.capacity, _node_label(c)) for c in self._clients()]

    def _r_up(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(int(c.health == pb.SERVING), _node_label(c)) for c in self._clients()]

    def _r_memory(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(c.memory_bytes, _node_label(c)) for c in self._clients()]


def _node_label(client: NodeClientLike) -> dict[str, str]:
    return {"node": client.node_id or client.address}


_metrics: MeshMetrics | None = None


def mesh_metrics() -> MeshMetrics:
    """The process's instruments, made on first use from the global meter provider."""
    global _metrics
    with _install_lock:
        if _metrics is None:
            _metrics = MeshMetrics(metrics.get_meter(METER))
        return _metrics


class SessionTimings:
    """A host observer: times STARTING to the first QR and to READY, and counts restores.

    Called after every change of a session; reads the event just appended to its log. With a
    `table`, each time also goes to it, by tenant (what GetLatency answers from)."""

    def __init__(
        self, recorder: MeshMetrics | None = None, table: latency.LatencyTable | None = None
    ) -> None:
        self._metrics = recorder or mesh_metrics()
        self._table = table
        # key -> (seq seen last, STARTING time, QR seen since)
        self._runs: dict[tuple[str, str], tuple[int, float | None, bool]] = {}

    def __call__(self, session: Any) -> None:
        event = session.log.last_event
        if event is None:
            return
        key = (session.info.tenant, session.info.session_id)
        seen, started, qr_seen = self._runs.get(key, (0, None, False))
        if event.seq <= seen:
            return  # a repeated notification of the same event
        at = event.time.ToNanoseconds() / 1e9
        attrs = {"auth_strategy": _strategy_name(session.info.auth_strategy)}
        kind = event.WhichOneof("event")
        if kind == "state":
            state = event.state.state
            if state == pb.STARTING:
                started, qr_seen = at, False
            elif state == pb.READY and started is not None:
                took = max(0.0, at - started)
                self._metrics.time_to_ready.record(
                    took, {**attrs, "restored": str(not qr_seen).lower()}
                )
                phase = latency.READY if qr_seen else latency.RESTORE
                self._observe(session, phase, took)
                if not qr_seen:
                    self._metrics.restores.add(1, attrs)
                started = None
            elif state in (pb.STOPPED, pb.LOGGED_OUT, pb.FAILED):
                self._runs.pop(key, None)
                return
        elif kind == "qr":
            if started is not None and not qr_seen:
                took = max(0.0, at - started)
                self._metrics.time_to_first_qr.record(took, attrs)
                self._observe(session, latency.FIRST_QR, took)
            qr_seen = True
        self._runs[key] = (event.seq, started, qr_seen)

    def _observe(self, session: Any, phase: str, seconds: float) -> None:
        if self._table is not None:
            self._table.observe(session.info.tenant, phase, session.info.auth_strategy, seconds)
