"""The gateway's one channel to the router, shared by every request, and the calls made on it.

Each call carries the caller's own token (`authorization: Bearer ...`): the router
authenticates, picks the tenant and enforces its quotas; the gateway holds no token of its own.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.errors import Stopping, upstream_errors
from gateway.settings import GatewaySettings
from sessionmesh.tls import client_channel_security
from sessionmesh.v1 import common_pb2, mesh_pb2, mesh_pb2_grpc

# Seconds spent waiting on the router in the request being served (the Server-Timing header).
upstream_seconds: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar(
    "upstream_seconds", default=None
)

CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 16 << 20),
    ("grpc.max_send_message_length", 16 << 20),
]


class RouterClient:
    """Owns the channel: `async with RouterClient(settings) as router: ...`. `aclose()` ends
    open streams, then the channel; a closed client does not reopen."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self._channel: grpc.aio.Channel | None = None
        self._stub: mesh_pb2_grpc.SessionMeshStub | None = None
        self._streams: set[grpc.aio.Call] = set()
        self._ending = False
        self._state = "new"

    async def __aenter__(self) -> RouterClient:
        self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def open(self) -> None:
        if self._state != "new":
            raise RuntimeError(f"the router client cannot open: it is {self._state}")
        credentials = client_channel_security(
            self.settings.router,
            ca=self.settings.router_ca,
            allow_insecure=self.settings.allow_insecure,
        )
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(self.settings.router, CHANNEL_OPTIONS)
        else:
            self._channel = grpc.aio.secure_channel(
                self.settings.router, credentials, CHANNEL_OPTIONS
            )
        self._stub = mesh_pb2_grpc.SessionMeshStub(self._channel)
        self._state = "open"

    @property
    def closing(self) -> bool:
        return self._state != "open"

    def _live_stub(self) -> mesh_pb2_grpc.SessionMeshStub:
        if self._state != "open" or self._stub is None:
            raise Stopping("the gateway is stopping")
        return self._stub

    def end_streams(self) -> None:
        """Refuse new streams and end the open ones (the first step of a stop): their clients
        reconnect, to another gateway, and resume with Last-Event-ID."""
        self._ending = True
        for call in list(self._streams):
            call.cancel()

    async def aclose(self) -> None:
        if self._state in ("closing", "closed"):
            return
        self._state = "closing"
        self.end_streams()
        if self._channel is not None:
            await self._channel.close(grace=self.settings.grace)
        self._state = "closed"

    @staticmethod
    def metadata(token: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token}"),)

    async def call(
        self, method: str, request: Any, token: str, *, timeout: float | None = None
    ) -> Any:
        """A unary call; a gRPC error becomes `Upstream`. The time spent is added to the
        request's Server-Timing."""
        stub = self._live_stub()
        started = time.perf_counter()
        try:
            with upstream_errors():
                return await getattr(stub, method)(
                    request,
                    metadata=self.metadata(token),
                    timeout=timeout or self.settings.timeout,
                )
        finally:
            spent = upstream_seconds.get()
            if spent is not None:
                spent.append(time.perf_counter() - started)

    def watch(self, session_id: str, after_seq: int, token: str) -> grpc.aio.UnaryStreamCall:
        """An open WatchSession stream (no deadline); `aclose()` cancels it."""
        if self._ending:
            raise Stopping("the gateway is stopping")
        call = self._live_stub().WatchSession(
            mesh_pb2.WatchSessionRequest(session_id=session_id, after_seq=after_seq),
            metadata=self.metadata(token),
            timeout=None,
        )
        self._streams.add(call)
        call.add_done_callback(self._streams.discard)
        return call

    def media(self, session_id: str, message_id: str, token: str) -> grpc.aio.UnaryStreamCall:
        call = self._live_stub().GetMessageMedia(
            mesh_pb2.GetMessageMediaRequest(session_id=session_id, message_id=message_id),
            metadata=self.metadata(token),
            timeout=self.settings.send_timeout,
        )
        self._streams.add(call)
        call.add_done_callback(self._streams.discard)
        return call

    async def events_between(
        self, session_id: str, after_seq: int, until_seq: int, token: str
    ) -> AsyncIterator[common_pb2.SessionEvent]:
        """The session's events after `after_seq` up to `until_seq`, then the stream ends."""
        if until_seq <= after_seq:
            return
        call = self.watch(session_id, after_seq, token)
        try:
            with upstream_errors():
                async for event in call:
                    yield event
                    if event.seq >= until_seq:
                        return
        finally:
            call.cancel()

    async def serving(self) -> bool:
        """Whether the router answers its health check SERVING (no token needed)."""
        if self._state != "open" or self._channel is None:
            return False
        stub = health_pb2_grpc.HealthStub(self._channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
        except (TimeoutError, grpc.aio.AioRpcError):
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
