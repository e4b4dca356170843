"""A simulated SessionNode: the node's gRPC API with no browser behind it.

`FakeNode` keeps the node contract in memory (sessions per (tenant, id), StartSession returns a
live session or restarts a stopped one, RESOURCE_EXHAUSTED when full, NOT_FOUND for unknown ids,
UNAVAILABLE when draining, WatchSession gives missed events first, then live ones); the router's
tests use it as is. `SimNode` adds what the load test needs: a session goes STARTING, shows a QR,
is "scanned" after a delay (no phone), syncs and is READY; a restart of a linked session restores
without a QR; it joins the mesh through Redis as a real node does (heartbeat, session set).

Figures measured against a SimNode are the control plane's (router, directory, streams, Redis),
never a browser's: it writes no snapshots, leases, directory entries or event streams to Redis.

    python -m loadtest.simnode --node-id sim-1 --listen 127.0.0.1:0 --redis-url redis://...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from node.membership import Membership
from sessionmesh.redis_conn import RedisSettings, create_redis
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
            raise AssertionError("abort raises")
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

                def grown(n: int = after) -> bool:
                    return len(self.events.get(key, [])) > n

                await self._changed.wait_for(grown)

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


class SimNode(FakeNode):
    """A FakeNode whose sessions link by themselves and which joins the mesh through Redis."""

    def __init__(
        self,
        node_id: str,
        capacity: int = 50,
        port: int = 0,
        *,
        qr_delay: float = 0.2,
        scan_delay: float = 1.0,
        sync_delay: float = 0.5,
    ) -> None:
        super().__init__(node_id, capacity, port)
        self.qr_delay = qr_delay
        self.scan_delay = scan_delay
        self.sync_delay = sync_delay
        self.linked: set[tuple[str, str]] = set()  # sessions with a (simulated) login
        self.membership: Membership | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._health = health.aio.HealthServicer()

    async def start(self) -> None:
        server = grpc.aio.server(options=queue_options(20_000))
        node_pb2_grpc.add_SessionNodeServicer_to_server(self, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self._server = server
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)

    async def join(self, redis_url: str, *, prefix: str = "mesh:", interval: float = 1.0) -> None:
        """Register in Redis as a node does, so routers learn this node and its sessions."""
        redis = create_redis(RedisSettings.from_env({"REDIS_URL": redis_url}))
        self.membership = Membership(
            redis,
            prefix=prefix,
            node_id=self.node_id,
            epoch=secrets.token_hex(8),
            address=lambda: self.address,
            capacity=self.capacity,
            health=lambda: "DRAINING" if self.draining else "SERVING",
            interval=interval,
            ttl=interval * 3,
        )
        await self.membership.start()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.membership is not None:
            await self.membership.aclose()
        await self._health.enter_graceful_shutdown()
        await self.stop()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def StartSession(self, request: Any, context: grpc.aio.ServicerContext) -> pb.Session:
        key = (request.tenant, request.session_id)
        before = self.sessions.get(key)
        was_live = before is not None and before.state in LIVE
        session = await super().StartSession(request, context)
        if not was_live:
            if request.takeover:  # a RemoteAuth takeover restores the login: no QR
                self.linked.add(key)
            if self.membership is not None:
                self.membership.place(f"{key[0]}/{key[1]}")
            self._spawn(self._lifecycle(key))
        return session

    async def _lifecycle(self, key: tuple[str, str]) -> None:
        """STARTING -> QR -> (simulated scan) -> AUTHENTICATED -> loading -> READY; a linked
        session skips the QR, as a restore does."""
        if key not in self.linked:
            await asyncio.sleep(self.qr_delay)
            if self.sessions[key].state != pb.STARTING:
                return
            await self.emit(*key, state=pb.StateChange(state=pb.SCAN_QR_CODE))
            await self.emit(
                *key, qr=pb.QrCode(code=f"sim,{secrets.token_urlsafe(16)},{key[1]}", attempt=1)
            )
            await asyncio.sleep(self.scan_delay)
            if self.sessions[key].state != pb.SCAN_QR_CODE:
                return
            self.linked.add(key)
        await self.emit(*key, state=pb.StateChange(state=pb.AUTHENTICATED))
        await asyncio.sleep(self.sync_delay)
        if self.sessions[key].state != pb.AUTHENTICATED:
            return
        await self.emit(*key, loading=pb.Loading(percent=100))
        self.sessions[key].ready_at.GetCurrentTime()
        await self.emit(*key, state=pb.StateChange(state=pb.READY))

    async def LogoutSession(self, request: Any, context: grpc.aio.ServicerContext) -> pb.Session:
        session = await super().LogoutSession(request, context)
        self.linked.discard((request.tenant, request.session_id))
        if self.membership is not None:
            self.membership.remove(f"{request.tenant}/{request.session_id}")
        return session


async def serve(args: argparse.Namespace) -> None:
    host, _, port = args.listen.rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        raise SystemExit("simnode: --listen must be on loopback (it has no transport security)")
    node = SimNode(
        args.node_id,
        args.capacity,
        int(port),
        qr_delay=args.qr_delay,
        scan_delay=args.scan_delay,
        sync_delay=args.sync_delay,
    )
    await node.start()
    if args.redis_url:
        await node.join(args.redis_url)
    print(f"simnode {args.node_id}: serving on {node.address}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            await node.aclose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="loadtest.simnode", description=__doc__)
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--capacity", type=int, default=500)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", ""))
    parser.add_argument("--qr-delay", type=float, default=0.2, help="s from start to the QR")
    parser.add_argument("--scan-delay", type=float, default=1.0, help="s from QR to the scan")
    parser.add_argument("--sync-delay", type=float, default=0.5, help="s from scan to READY")
    asyncio.run(serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
