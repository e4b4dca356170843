"""A session node's process: gRPC server (mutual TLS, no reflection), health, browser pool,
graceful stop.

With Redis configured it also runs RemoteAuth (node/remote.py) and membership
(node/membership.py); a graceful stop then hands RemoteAuth sessions off and deregisters."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from node.auth_store import LocalAuthStore
from node.browser import BrowserPool
from node.catalog import LocalCatalog
from node.guard import NodeGuard
from node.host import SessionHost
from node.lease import new_owner
from node.membership import Membership
from node.memory import BrowserMemory
from node.remote import RemoteAuth
from node.service import NodeService
from node.settings import NodeSettings
from node.warm import WarmPages
from sessionmesh import telemetry
from sessionmesh.config import join_address, split_address
from sessionmesh.latency import LatencyTable
from sessionmesh.probes import start_health_server
from sessionmesh.rpc import queue_options
from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import node_pb2, node_pb2_grpc
from webhooks.backend import NodeWebhooks, open_store

log = logging.getLogger(__name__)

SERVICE_NAME = node_pb2.DESCRIPTOR.services_by_name["SessionNode"].full_name

# Long-lived watch streams: ping idle connections, and let routers ping us.
SERVER_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 1 << 20),
]


class NodeServer:
    """Start with `await start()` (or `async with`); `aclose()` stops it gracefully, once."""

    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        self.node_id = settings.node_id
        self.address = ""
        self._server: grpc.aio.Server | None = None
        self._health_server: grpc.aio.Server | None = None
        self.health_address = ""  # MESH_HEALTH_LISTEN, once started; "": none
        self._health = health.aio.HealthServicer()
        self._pool = BrowserPool(executable=settings.chromium_path)
        self._memory = BrowserMemory()
        root = settings.storage_path
        self.owner = new_owner(settings.node_id)  # node_id:epoch, new on every start
        self.remote: RemoteAuth | None = None
        self.membership: Membership | None = None
        if settings.redis is not None:
            self.remote = RemoteAuth(settings, self.owner)
            self.membership = Membership(
                self.remote.redis,
                prefix=settings.mesh_prefix,
                node_id=settings.node_id,
                epoch=self.owner[len(settings.node_id) + 1 :],
                address=lambda: self.address,
                capacity=settings.max_sessions,
                health=self._health_name,
                interval=settings.heartbeat_interval,
                ttl=settings.heartbeat_ttl,
                keepalive=self.remote.keepalive,
                beat_redis=self.remote.keepalive_redis,
            )
        self.warm = WarmPages(self._pool, settings) if settings.warm_page else None
        self.host = SessionHost(
            settings,
            self._pool,
            warm=self.warm,
            local_store=LocalAuthStore(
                root, backups=settings.backup_count if settings.backup_enabled else 0
            ),
            catalog=LocalCatalog(root),
            remote=self.remote,
            membership=self.membership,
            address=lambda: self.address,
        )
        self.latency = LatencyTable()
        self.host.observers.append(telemetry.SessionTimings(table=self.latency))
        # Webhooks: every event some webhook wants goes to the outbox; this node delivers too.
        self.webhooks: NodeWebhooks | None = None
        store, why = open_store(
            settings.webhooks,
            settings.redis,
            prefix=settings.mesh_prefix,
            fallback_keys=settings.snapshot_keys,
        )
        if store is not None:
            self.webhooks = NodeWebhooks(store, settings.webhooks, owner=self.owner)
            self.host.observers.append(self.webhooks.publisher)
        else:
            log.debug("node %s: %s", settings.node_id, why)
        self._unwatch: Callable[[], None] | None = None
        self._serving = False
        self._closed = False
        self._service: NodeService | None = None

    async def __aenter__(self) -> NodeServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    @property
    def pool(self) -> BrowserPool:
        return self._pool

    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("node server is closed")
        await self._pool.start()
        if self.warm is not None:
            self.warm.start()
        if self.remote is not None:
            await self.remote.start()
        guard = NodeGuard(self.settings.security, SERVICE_NAME, (health.SERVICE_NAME,))
        if self.webhooks is not None:
            await self.webhooks.start()
        if self.remote is not None:
            self.remote.router_contact = lambda: guard.last_router_call
        server = grpc.aio.server(
            interceptors=[
                *telemetry.server_interceptors(SERVICE_NAME, count_rejections=False),
                guard,
            ],
            options=[*SERVER_OPTIONS, *queue_options(self.settings.max_concurrent_rpcs)],
            maximum_concurrent_rpcs=self.settings.max_concurrent_rpcs,
        )
        self._service = NodeService(
            self.host,
            address=lambda: self.address,
            serving=lambda: self._serving,
            drained=self.set_not_serving,
            memory=self._memory.get,
            latency=self.latency,
        )
        node_pb2_grpc.add_SessionNodeServicer_to_server(self._service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        # No server reflection: a node's API is for its routers, not for discovery.
        host, _ = split_address(self.settings.listen, "MESH_NODE_LISTEN", allow_port_zero=True)
        credentials = self.settings.security.node_server_credentials()
        if credentials is not None:
            port = server.add_secure_port(self.settings.listen, credentials)
        else:
            port = server.add_insecure_port(self.settings.listen)
        if port == 0:
            raise OSError(f"cannot listen on {self.settings.listen} (MESH_NODE_LISTEN)")
        self.address = join_address(host, port)
        await server.start()
        self._server = server
        if self.settings.security.health_listen:
            self._health_server, self.health_address = await start_health_server(
                self._health, self.settings.security.health_listen
            )
        self._unwatch = telemetry.mesh_metrics().watch_node(
            self.node_id, self.host, self._pool, self._memory.get
        )
        # Resumed sessions' runners inherit this span: one trace for the node's boot.
        with telemetry.phase("resume sessions", node_id=self.node_id) as span:
            resumed = await self.host.resume()
            span.set_attribute("mesh.resumed", resumed)
        self._serving = True
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.membership is not None:
            await self.membership.start()
        log.info("node %s serving on %s (%d sessions resumed)", self.node_id, self.address, resumed)

    def _health_name(self) -> str:
        if self._service is None:
            return "NOT_SERVING"
        return str(pb.NodeHealth.Name(self._service.health()))

    async def set_not_serving(self) -> None:
        """Drain done: NodeStatus and gRPC health report NOT_SERVING (the server keeps running)."""
        self._serving = False
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.membership is not None:
            await self.membership.beat()

    async def aclose(self) -> None:
        """Graceful stop: refuse new work, NOT_SERVING, final snapshots (RemoteAuth sessions are
        handed off), deregister, stop server, close browser and Redis."""
        if self._closed:
            return
        self._closed = True
        self.host.accepting = False
        self._serving = False
        await self._health.enter_graceful_shutdown()
        await asyncio.shield(self.host.shutdown())
        if self.webhooks is not None:  # the last events (STOPPED, ...) go to the outbox first
            await asyncio.shield(self.webhooks.aclose())
        if self.membership is not None:
            await asyncio.shield(self.membership.aclose(deregister=True))
        if self._server is not None:
            await self._server.stop(self.settings.shutdown_grace)
        if self._health_server is not None:
            await self._health_server.stop(None)
        if self.warm is not None:
            await self.warm.aclose()
        await self._pool.aclose()
        if self.remote is not None:
            await self.remote.aclose()
        if self._unwatch is not None:
            self._unwatch()
        log.info("node %s stopped", self.node_id)
