"""The node's gRPC servicer (sessionmesh.v1.SessionNode); node errors become status codes here."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from node.errors import (
    FailedPrecondition,
    InvalidRequest,
    NodeFull,
    NodeUnavailable,
    OutOfRange,
    PageError,
    SessionNotFound,
)
from node.host import SessionHost
from node.remote_store import StaleFence, StoreError
from sessionmesh.latency import LatencyTable
from sessionmesh.sending import MESSAGE_ID_RE, check_send
from sessionmesh.telemetry import mesh_metrics
from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import mesh_pb2, node_pb2, node_pb2_grpc
from sessionmesh.validation import InvalidArgument, check_labels, check_session_id

T = TypeVar("T")
MAX_MEDIA_BYTES = 64 << 20  # what the node takes from a router (which enforces its own limit)
MEDIA_CHUNK = 256 << 10
SETTLE_WAIT = 15.0  # s a watch waits for a taking-over session to adopt its events

_STATUS: list[tuple[type[Exception], grpc.StatusCode]] = [
    (SessionNotFound, grpc.StatusCode.NOT_FOUND),
    (NodeFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (NodeUnavailable, grpc.StatusCode.UNAVAILABLE),
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (StaleFence, grpc.StatusCode.FAILED_PRECONDITION),
    (StoreError, grpc.StatusCode.INTERNAL),
    (PageError, grpc.StatusCode.INTERNAL),
]


async def _mapped(
    context: grpc.aio.ServicerContext[Any, Any], call: Callable[[], Awaitable[T]]
) -> T:
    """Run `call`, turning the node's errors into gRPC status codes (the one place that does)."""
    try:
        return await call()
    except tuple(exc for exc, _ in _STATUS) as e:
        code = next(c for exc, c in _STATUS if isinstance(e, exc))
        await context.abort(code, str(e))
        raise  # unreachable: abort raises


def _check(tenant: str, session_id: str) -> None:
    check_session_id(tenant, "tenant")
    check_session_id(session_id)


class NodeService(node_pb2_grpc.SessionNodeServicer):  # type: ignore[misc]
    def __init__(
        self,
        host: SessionHost,
        *,
        address: Callable[[], str],
        serving: Callable[[], bool],
        drained: Callable[[], Awaitable[None]] | None = None,
        memory: Callable[[], int] = lambda: 0,
        latency: LatencyTable | None = None,
    ) -> None:
        self._host = host
        self._memory = memory
        self._latency = latency or LatencyTable()
        self._address = address
        self._serving = serving
        self._drained = drained

    @property
    def node_id(self) -> str:
        return self._host.settings.node_id

    async def StartSession(self, request: node_pb2.StartSessionRequest, context: Any) -> pb.Session:
        async def run() -> pb.Session:
            _check(request.tenant, request.session_id)
            labels = check_labels(dict(request.labels))
            try:
                session = await self._host.start(
                    request.tenant,
                    request.session_id,
                    request.auth_strategy,
                    labels,
                    takeover=request.takeover,
                )
            except NodeFull:
                mesh_metrics().reject("full")
                raise
            except NodeUnavailable:
                mesh_metrics().reject("draining" if not self._host.accepting else "unavailable")
                raise
            return session.to_proto(self.node_id)

        return await _mapped(context, run)

    async def GetSession(self, request: node_pb2.NodeSessionRequest, context: Any) -> pb.Session:
        async def run() -> pb.Session:
            _check(request.tenant, request.session_id)
            return self._host.get(request.tenant, request.session_id).to_proto(self.node_id)

        return await _mapped(context, run)

    async def ListSessions(
        self, request: node_pb2.NodeListSessionsRequest, context: Any
    ) -> node_pb2.NodeListSessionsResponse:
        return node_pb2.NodeListSessionsResponse(
            sessions=[
                node_pb2.NodeSession(tenant=s.info.tenant, session=s.to_proto(self.node_id))
                for s in self._host.all()
            ]
        )

    async def StopSession(self, request: node_pb2.NodeSessionRequest, context: Any) -> pb.Session:
        async def run() -> pb.Session:
            _check(request.tenant, request.session_id)
            session = await self._host.stop(request.tenant, request.session_id)
            return session.to_proto(self.node_id)

        return await _mapped(context, run)

    async def LogoutSession(self, request: node_pb2.NodeSessionRequest, context: Any) -> pb.Session:
        async def run() -> pb.Session:
            _check(request.tenant, request.session_id)
            session = await self._host.logout(request.tenant, request.session_id)
            return session.to_proto(self.node_id)

        return await _mapped(context, run)

    async def WatchSession(
        self, request: node_pb2.NodeWatchRequest, context: Any
    ) -> AsyncIterator[pb.SessionEvent]:
        async def find() -> Any:
            _check(request.tenant, request.session_id)
            session = self._host.get(request.tenant, request.session_id)
            # A session taking over waits for its previous owner's events before it can tell.
            last = await session.log.last_known(SETTLE_WAIT)
            if last is not None and request.after_seq > last:
                raise OutOfRange(
                    f"after_seq {request.after_seq} is beyond the last event of session "
                    f"{request.session_id!r} (seq {last})"
                )
            return session

        session = await _mapped(context, find)
        async for event in session.log.follow(request.after_seq):
            yield event

    async def HandOffSession(
        self, request: node_pb2.NodeSessionRequest, context: Any
    ) -> pb.Session:
        async def run() -> pb.Session:
            _check(request.tenant, request.session_id)
            session = await self._host.hand_off(request.tenant, request.session_id)
            return session.to_proto(self.node_id)

        return await _mapped(context, run)

    async def SendMessage(
        self, request: node_pb2.NodeSendMessageRequest, context: Any
    ) -> mesh_pb2.SendMessageResponse:
        async def run() -> mesh_pb2.SendMessageResponse:
            check_session_id(request.tenant, "tenant")
            send = check_send(request.request, max_media_bytes=MAX_MEDIA_BYTES)
            return await self._host.send(request.tenant, send)  # type: ignore[no-any-return]

        return await _mapped(context, run)

    async def GetMessageMedia(
        self, request: node_pb2.NodeMediaRequest, context: Any
    ) -> AsyncIterator[mesh_pb2.MediaChunk]:
        async def run() -> dict[str, Any]:
            _check(request.tenant, request.session_id)
            if MESSAGE_ID_RE.fullmatch(request.message_id) is None:
                raise InvalidArgument("message_id", "is not a message id")
            found = await self._host.media(request.tenant, request.session_id, request.message_id)
            if found.get("missing") == "message":
                raise SessionNotFound(f"message {request.message_id!r} not found in this session")
            if found.get("missing"):
                raise FailedPrecondition(f"message {request.message_id!r} has no media")
            return found

        found = await _mapped(context, run)
        data = base64.b64decode(found["data"])
        first = True
        for start in range(0, max(len(data), 1), MEDIA_CHUNK):
            chunk = mesh_pb2.MediaChunk(data=data[start : start + MEDIA_CHUNK])
            if first:
                chunk.mimetype, chunk.filename, chunk.size = (
                    found.get("mimetype", ""),
                    found.get("filename", ""),
                    len(data),
                )
                first = False
            yield chunk

    async def Drain(self, request: node_pb2.NodeDrainRequest, context: Any) -> pb.NodeStatus:
        """DRAINING: no new sessions (gRPC health stays SERVING, so routers can still reach
        the node to hand its sessions off); with `done`, NOT_SERVING everywhere."""
        self._host.drain()
        if request.done and self._drained is not None:
            await self._drained()
        return self.status()

    async def GetLatency(
        self, request: node_pb2.NodeLatencyRequest, context: Any
    ) -> node_pb2.NodeLatency:
        return self._latency.to_proto()

    async def GetNodeStatus(
        self, request: node_pb2.NodeStatusRequest, context: Any
    ) -> pb.NodeStatus:
        return self.status()

    def health(self) -> int:
        if not self._serving():
            return pb.NOT_SERVING
        return pb.DRAINING if self._host.draining else pb.SERVING

    def status(self) -> pb.NodeStatus:
        return pb.NodeStatus(
            node_id=self.node_id,
            address=self._address(),
            health=self.health(),  # type: ignore[arg-type]
            sessions=self._host.held(),
            capacity=self._host.settings.max_sessions,
            memory_bytes=self._memory(),
            missing_hooks=sorted(self._host.missing_hooks()),
            wa_version=next(iter(self._host.wa_versions()), ""),
        )
