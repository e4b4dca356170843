"""An in-memory SessionNode over real gRPC, for router tests that need no browser.

It keeps the node contract: sessions per (tenant, id), StartSession returns a live session or
restarts a stopped one, RESOURCE_EXHAUSTED when full, NOT_FOUND for unknown ids, UNAVAILABLE
when draining, and WatchSession gives missed events first, then live ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio

from sessionmesh.rpc import queue_options
from sessionmesh.sending import chat_id
from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import mesh_pb2, node_pb2, node_pb2_grpc

LIVE = {pb.STARTING, pb.SCAN_QR_CODE, pb.AUTHENTICATED, pb.READY}


class FakeNode(node_pb2_grpc.SessionNodeServicer):  # type: ignore[misc]
    def __init__(
        self,
        node_id: str,
        capacity: int = 50,
        port: int = 0,
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        self.node_id = node_id
        self.credentials = credentials  # mutual TLS as a node serves it; None: plaintext
        self.capacity = capacity
        self.sent: list[Any] = []
        self.port = port
        self.draining = False
        self.drained = False
        self.starts: list[tuple[str, str]] = []
        self.takeovers: list[tuple[str, str]] = []
        self.handed_off: list[tuple[str, str]] = []
        self.list_calls = 0
        self.last_metadata: dict[str, Any] = {}  # of the last GetSession
        self.sessions: dict[tuple[str, str], pb.Session] = {}
        self.events: dict[tuple[str, str], list[pb.SessionEvent]] = {}
        self._changed = asyncio.Condition()
        self._server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        server = grpc.aio.server(options=queue_options(20_000))  # as a node's
        node_pb2_grpc.add_SessionNodeServicer_to_server(self, server)
        if self.credentials is not None:
            self.port = server.add_secure_port(f"127.0.0.1:{self.port}", self.credentials)
        else:
            self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        """Stop serving (open streams break); `start()` again brings it back on the same port."""
        if self._server is not None:
            await self._server.stop(0)
            self._server = None

    def held(self) -> int:
        return sum(1 for s in self.sessions.values() if s.state in LIVE)

    async def emit(self, tenant: str, sid: str, **event: Any) -> pb.SessionEvent:
        key = (tenant, sid)
        log = self.events.setdefault(key, [])
        ev = pb.SessionEvent(session_id=sid, seq=len(log) + 1, **event)
        log.append(ev)
        if "state" in event:
            self.sessions[key].state = event["state"].state
        self.sessions[key].last_seq = ev.seq
        async with self._changed:
            self._changed.notify_all()
        return ev

    async def _get(self, request: Any, context: grpc.aio.ServicerContext) -> pb.Session:
        session = self.sessions.get((request.tenant, request.session_id))
        if session is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"session {request.session_id!r} not found"
            )
        return session

    async def StartSession(self, request: Any, context: grpc.aio.ServicerContext) -> pb.Session:
        if self.draining:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"node {self.node_id} is draining")
        key = (request.tenant, request.session_id)
        session = self.sessions.get(key)
        if session is not None and session.state in LIVE:
            return session
        if self.held() >= self.capacity:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"node {self.node_id} is full ({self.held()}/{self.capacity} sessions)",
            )
        self.starts.append(key)
        if request.takeover:
            self.takeovers.append(key)
        if session is None:
            session = pb.Session(
                session_id=request.session_id,
                node_id=self.node_id,
                auth_strategy=request.auth_strategy,
                labels=dict(request.labels),
            )
            self.sessions[key] = session
        await self.emit(*key, state=pb.StateChange(state=pb.STARTING))
        return session

    async def GetSession(self, request: Any, context: grpc.aio.ServicerContext) -> pb.Session:
        self.last_metadata = dict(context.invocation_metadata() or ())
        return await self._get(request, context)

    async def StopSession(self, request: Any, context: grpc.aio.ServicerContext) -> pb.Session:
        await self._get(request, context)
        await self.emit(request.tenant, request.session_id, state=pb.StateChange(state=pb.STOPPED))
        return self.sessions[(request.tenant, request.session_id)]

    async def LogoutSession(self, request: Any, context: grpc.aio.ServicerContext) -> pb.Session:
        await self._get(request, context)
        await self.emit(
            request.tenant, request.session_id, state=pb.StateChange(state=pb.LOGGED_OUT)
        )
        return self.sessions[(request.tenant, request.session_id)]

    async def ListSessions(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.list_calls += 1
        return node_pb2.NodeListSessionsResponse(
            sessions=[
                node_pb2.NodeSession(tenant=tenant, session=session)
                for (tenant, _), session in self.sessions.items()
            ]
        )

    async def WatchSession(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SessionEvent]:
        await self._get(request, context)
        key = (request.tenant, request.session_id)
        after = request.after_seq
        last = len(self.events.get(key, []))
        if after > last:
            await context.abort(
                grpc.StatusCode.OUT_OF_RANGE,
                f"after_seq {after} is beyond the last event of session "
                f"{request.session_id!r} (seq {last})",
            )
        while True:
            for ev in list(self.events.get(key, [])):
                if ev.seq > after:
                    after = ev.seq
                    yield ev
            async with self._changed:
                await self._changed.wait_for(lambda n=after: len(self.events.get(key, [])) > n)

    async def Drain(self, request: Any, context: grpc.aio.ServicerContext) -> pb.NodeStatus:
        self.draining = True
        self.drained = self.drained or request.done
        return await self.GetNodeStatus(request, context)

    async def HandOffSession(self, request: Any, context: grpc.aio.ServicerContext) -> pb.Session:
        await self._get(request, context)
        self.handed_off.append((request.tenant, request.session_id))
        await self.emit(
            request.tenant,
            request.session_id,
            state=pb.StateChange(state=pb.STOPPED, reason="moved to another node"),
        )
        return self.sessions[(request.tenant, request.session_id)]

    async def SendMessage(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        inner = request.request
        await self._get(
            node_pb2.NodeSessionRequest(tenant=request.tenant, session_id=inner.session_id), context
        )
        chat = chat_id(inner.to)
        message_id = f"true_{chat}_FAKE{len(self.sent):016d}"
        self.sent.append(request)
        await self.emit(
            request.tenant,
            inner.session_id,
            message=pb.Message(
                id=message_id, direction=pb.OUTBOUND, chat_id=chat, type=pb.TEXT, text=inner.text
            ),
        )
        await self.emit(
            request.tenant,
            inner.session_id,
            ack=pb.MessageAck(message_id=message_id, ack=pb.ACK_SERVER),
        )
        return mesh_pb2.SendMessageResponse(message_id=message_id, ack=pb.ACK_SERVER)

    async def GetNodeStatus(self, request: Any, context: grpc.aio.ServicerContext) -> pb.NodeStatus:
        health = pb.SERVING
        if self.draining:
            health = pb.NOT_SERVING if self.drained else pb.DRAINING
        return pb.NodeStatus(
            node_id=self.node_id,
            address=self.address,
            health=health,
            sessions=self.held(),
            capacity=self.capacity,
            memory_bytes=1234,
        )
