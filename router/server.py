"""The router process: a grpc.aio server with the public API, health and reflection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from router.affinity import Affinity
from router.directory import Directory
from router.failover import Mover
from router.interceptors import Guard
from router.nodes import NodePool
from router.service import SessionMeshService
from router.settings import RouterSettings
from sessionmesh import telemetry
from sessionmesh.config import join_address, split_address
from sessionmesh.probes import start_health_server
from sessionmesh.redis_conn import create_redis
from sessionmesh.rpc import queue_options
from sessionmesh.v1 import mesh_pb2, mesh_pb2_grpc
from webhooks.backend import open_store
from webhooks.guard import Guard as TargetGuard
from webhooks.registry import Registry

log = logging.getLogger(__name__)

SERVICE_NAME: str = mesh_pb2.DESCRIPTOR.services_by_name["SessionMesh"].full_name


def server_options(settings: RouterSettings) -> list[tuple[str, int]]:
    """Server-side options: refuse big requests; keepalive for long-lived WatchSession streams."""
    keepalive_ms = int(settings.keepalive_time * 1000)
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # Clients may ping as often as we do without being told to calm down.
        ("grpc.http2.min_recv_ping_interval_without_data_ms", min(keepalive_ms, 10_000)),
        ("grpc.http2.min_ping_interval_without_data_ms", min(keepalive_ms, 10_000)),
        *queue_options(settings.max_concurrent_rpcs),
    ]


class RouterServer:
    """Run the router in-process: `async with RouterServer(settings) as srv: srv.address`."""

    def __init__(self, settings: RouterSettings) -> None:
        self.settings = settings
        self.affinity = Affinity()
        self.directory: Directory | None = None
        if settings.redis is not None:
            self.directory = Directory(
                create_redis(settings.redis),
                session_prefix=settings.redis.session_prefix,
                mesh_prefix=settings.mesh_prefix,
                timeout=max(2.0, 2 * settings.redis.socket_timeout),
            )
        self.pool = NodePool(settings, self.affinity, self.directory)
        self.mover = Mover(self.pool, self.directory, settings.failover_parallelism)
        if self.directory is not None:
            self.pool.on_death = self.mover.failover_quietly
        self.service = SessionMeshService(
            self.pool,
            self.mover,
            settings.admin_tenants,
            max_sessions=settings.tenant_max_sessions,
            max_streams=settings.tenant_max_streams,
            list_cache_ttl=settings.list_cache_ttl,
        )
        store, why = open_store(settings.webhooks, settings.redis, prefix=settings.mesh_prefix)
        self.service.webhooks = Registry(store, TargetGuard(settings.webhooks.allow), why)
        self._health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._health_server: grpc.aio.Server | None = None
        self.health_address = ""  # MESH_HEALTH_LISTEN, once started; "": none
        self._port = 0
        self._state = "new"
        self._unwatch: Callable[[], None] | None = None

    @property
    def address(self) -> str:
        if self._state != "serving" and not self._port:
            raise RuntimeError("the router is not started")
        host, _ = split_address(self.settings.listen, "MESH_ROUTER_LISTEN", allow_port_zero=True)
        return join_address(host, self._port)

    async def __aenter__(self) -> RouterServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        if self._state != "new":
            raise RuntimeError(f"the router cannot start: it is {self._state}")
        self._state = "starting"
        try:
            await self.pool.start()
        except BaseException:
            await self._close_redis()
            raise
        # Outermost first: trace context and RPC metrics see what the Guard refuses.
        interceptors = [
            *telemetry.server_interceptors(SERVICE_NAME, count_rejections=True),
            Guard(self.settings.tokens, (health.SERVICE_NAME, reflection.SERVICE_NAME)),
        ]
        server = grpc.aio.server(
            interceptors=interceptors,
            options=server_options(self.settings),
            maximum_concurrent_rpcs=self.settings.max_concurrent_rpcs,
        )
        mesh_pb2_grpc.add_SessionMeshServicer_to_server(self.service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        credentials = self.settings.security.public_server_credentials()
        if credentials is not None:
            self._port = server.add_secure_port(self.settings.listen, credentials)
        else:
            self._port = server.add_insecure_port(self.settings.listen)
        if not self._port:
            await self.pool.aclose()
            await self._close_redis()
            raise OSError(f"cannot listen on {self.settings.listen} (MESH_ROUTER_LISTEN)")
        self._server = server
        await server.start()
        if self.settings.security.health_listen:
            self._health_server, self.health_address = await start_health_server(
                self._health, self.settings.security.health_listen
            )
        self._unwatch = telemetry.mesh_metrics().watch_router(lambda: self.pool.clients)
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._state = "serving"
        log.info(
            "router listening on %s for %d nodes%s",
            self.address,
            len(self.pool.clients),
            " (members from Redis)" if self.directory is not None else "",
        )

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def aclose(self) -> None:
        """Graceful stop: refuse new work, NOT_SERVING, let calls finish, cancel the rest."""
        if self._state in ("closing", "closed"):
            return
        self._state = "closing"
        self.service.admitting = False
        await self._health.enter_graceful_shutdown()
        if self._server is not None:
            # Open WatchSession streams never finish on their own; stop() cancels them at grace.
            await asyncio.shield(self._server.stop(self.settings.grace))
        if self._health_server is not None:
            await self._health_server.stop(None)
        await self.pool.aclose()
        await self._close_redis()
        if self._unwatch is not None:
            self._unwatch()
        self._state = "closed"
        log.info("router stopped")

    async def _close_redis(self) -> None:
        if self.directory is not None:
            await self.directory.aclose()
        if self.service.webhooks.store is not None:
            await self.service.webhooks.store.aclose()

    def __repr__(self) -> str:
        return f"RouterServer(listen={self.settings.listen!r}, state={self._state!r})"
