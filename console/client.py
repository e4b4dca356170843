"""A small synchronous client over the router's public API, shared by every page."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import grpc

from console.errors import ApiError
from console.settings import ConsoleSettings
from sessionmesh.tls import client_channel_security
from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import mesh_pb2, mesh_pb2_grpc

T = TypeVar("T")

CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
]
MAX_PAGES = 100  # ListSessions pages read at most (100 000 sessions at 1000 a page)


@contextmanager
def _translated(method: str) -> Iterator[None]:
    """The one place gRPC errors become ApiError."""
    try:
        yield
    except grpc.RpcError as e:
        code = e.code() if hasattr(e, "code") else None
        details = e.details() if hasattr(e, "details") else str(e)
        raise ApiError(code.name if code else "UNKNOWN", details or "", method) from e


class MeshClient:
    """The SessionMesh stub with the bearer token and a deadline on every call."""

    def __init__(self, settings: ConsoleSettings) -> None:
        self.settings = settings
        credentials = client_channel_security(
            settings.router, ca=settings.tls_ca, allow_insecure=settings.allow_insecure
        )
        if credentials is None:
            self._channel = grpc.insecure_channel(settings.router, options=CHANNEL_OPTIONS)
        else:
            self._channel = grpc.secure_channel(
                settings.router, credentials, options=CHANNEL_OPTIONS
            )
        self._stub = mesh_pb2_grpc.SessionMeshStub(self._channel)
        self._metadata = (("authorization", f"Bearer {settings.token}"),)
        self._closed = False

    def __repr__(self) -> str:
        return f"MeshClient(router={self.settings.router!r})"

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._channel.close()

    def _call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        with _translated(method):
            return getattr(self._stub, method)(
                request, metadata=self._metadata, timeout=timeout or self.settings.timeout
            )

    @property
    def can_drain(self) -> bool:
        """True once the API has a DrainNode call (coming with the RemoteAuth work)."""
        return hasattr(self._stub, "DrainNode") and hasattr(mesh_pb2, "DrainNodeRequest")

    def cluster(self) -> list[pb.NodeStatus]:
        status = self._call("GetClusterStatus", mesh_pb2.GetClusterStatusRequest())
        return list(status.nodes)

    def latency(self) -> mesh_pb2.Latency:
        """The tenant's latency histograms, summed over the nodes by the router."""
        result: mesh_pb2.Latency = self._call("GetLatency", mesh_pb2.GetLatencyRequest())
        return result

    def sessions(self) -> list[pb.Session]:
        """Every session of the token's tenant, all pages read."""
        found: list[pb.Session] = []
        token = ""
        for _ in range(MAX_PAGES):
            page = self._call(
                "ListSessions", mesh_pb2.ListSessionsRequest(page_size=1000, page_token=token)
            )
            found.extend(page.sessions)
            token = page.next_page_token
            if not token:
                break
        return found

    def session(self, session_id: str) -> pb.Session:
        result: pb.Session = self._call(
            "GetSession", mesh_pb2.GetSessionRequest(session_id=session_id)
        )
        return result

    def stop(self, session_id: str) -> pb.Session:
        result: pb.Session = self._call(
            "StopSession", mesh_pb2.StopSessionRequest(session_id=session_id)
        )
        return result

    def logout(self, session_id: str) -> pb.Session:
        result: pb.Session = self._call(
            "LogoutSession", mesh_pb2.LogoutSessionRequest(session_id=session_id)
        )
        return result

    def drain(self, node_id: str) -> Any:
        """Drain a node, once the API has DrainNode; ApiError UNIMPLEMENTED before that."""
        if not self.can_drain:
            raise ApiError("UNIMPLEMENTED", "the router API has no DrainNode yet", "DrainNode")
        request = mesh_pb2.DrainNodeRequest(node_id=node_id)
        return self._call("DrainNode", request)

    def history(self, session: pb.Session, timeout: float | None = None) -> list[pb.SessionEvent]:
        """The session's retained event log, replayed up to its last_seq, then the stream closed."""
        if session.last_seq == 0:
            return []
        request = mesh_pb2.WatchSessionRequest(session_id=session.session_id, after_seq=0)
        events: list[pb.SessionEvent] = []
        deadline = time.monotonic() + (timeout or self.settings.timeout)
        with _translated("WatchSession"):
            stream = self._stub.WatchSession(
                request, metadata=self._metadata, timeout=timeout or self.settings.timeout
            )
            try:
                for event in stream:
                    events.append(event)
                    if event.seq >= session.last_seq or time.monotonic() > deadline:
                        break
            finally:
                stream.cancel()
        return events


def attempt(call: Callable[[], T]) -> tuple[T | None, ApiError | None]:
    """Run `call`; return (result, None), or (None, the ApiError) when the router refused."""
    try:
        return call(), None
    except ApiError as e:
        return None, e
