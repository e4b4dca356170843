"""The gateway process: uvicorn serving the app, in-process:
`async with GatewayServer(settings) as gw: gw.url`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn

from gateway.app import create_app
from gateway.settings import GatewaySettings
from sessionmesh.config import join_address, split_address

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the process that runs the gateway owns them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class GatewayServer:
    """Binds MESH_GATEWAY_LISTEN (port 0 picks one), serves until `aclose()`: new connections
    stop, requests in flight get MESH_GATEWAY_GRACE seconds, open event streams end, and the
    channel to the router closes last."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._port = 0
        self._state = "new"

    @property
    def address(self) -> str:
        if not self._port:
            raise RuntimeError("the gateway is not started")
        host, _ = split_address(self.settings.listen, "MESH_GATEWAY_LISTEN", allow_port_zero=True)
        return join_address(host, self._port)

    @property
    def url(self) -> str:
        return f"{self.settings.scheme}://{self.address}"

    async def __aenter__(self) -> GatewayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _bind(self) -> socket.socket:
        host, port = split_address(
            self.settings.listen, "MESH_GATEWAY_LISTEN", allow_port_zero=True
        )
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP named, so asyncio sets TCP_NODELAY on accepted connections (it checks the
        # protocol): without it a reply written in two parts waits out a delayed ACK (40 ms).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            sock.close()
            raise OSError(
                f"cannot listen on {self.settings.listen} (MESH_GATEWAY_LISTEN): {e}"
            ) from e
        sock.listen(2048)
        sock.setblocking(False)
        return sock

    async def start(self) -> None:
        if self._state != "new":
            raise RuntimeError(f"the gateway cannot start: it is {self._state}")
        self._state = "starting"
        sock = self._bind()
        self._port = int(sock.getsockname()[1])
        s = self.settings
        config = uvicorn.Config(
            self.app,
            lifespan="on",
            access_log=s.access_log,
            log_config=None,
            timeout_graceful_shutdown=max(1, round(s.grace)),
            ssl_certfile=str(s.tls_cert) if s.tls_cert else None,
            ssl_keyfile=str(s.tls_key) if s.tls_key else None,
            backlog=2048,
            limit_concurrency=None,
            timeout_keep_alive=30,
            server_header=False,
            http="httptools",
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="gateway")
        while not self._server.started:
            if self._task.done():
                self._state = "closed"
                await self._task  # raises what stopped it
                raise OSError("the gateway stopped while starting (see the log)")
            await asyncio.sleep(0.01)
        self._state = "serving"
        log.info("gateway listening on %s, router %s", self.url, s.router)

    async def aclose(self) -> None:
        if self._state in ("closing", "closed", "new"):
            self._state = "closed"
            return
        self._state = "closing"
        if self._server is not None:
            # Event streams never end on their own: end them, then let uvicorn finish what is
            # in flight; the lifespan closes the channel to the router last.
            with contextlib.suppress(AttributeError):
                self.app.state.router.end_streams()
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._task)
        self._state = "closed"
        log.info("gateway stopped")

    async def wait_closed(self) -> None:
        if self._task is not None:
            await self._task

    def __repr__(self) -> str:
        return f"GatewayServer(listen={self.settings.listen!r}, state={self._state!r})"
